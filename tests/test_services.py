"""The local servers really work, listen on loopback only, and really stop.

These are the guarantees the demo and every integration test lean on: if SSE-S3 or a multipart
mail did not survive the round trip here, a failing DAG test would be hunting the wrong bug.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import smtplib
import socket
import subprocess
import sys
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from dunning import services
from dunning.services import Service
from dunning.smtp_sink import ENVELOPE_FROM, ENVELOPE_TO, read_mailbox

pytestmark = pytest.mark.services

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# S3


def test_s3_put_get_list(s3_client: Any, s3_bucket: str) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="letters/a.txt", Body=b"first")
    s3_client.put_object(Bucket=s3_bucket, Key="letters/b.txt", Body=b"second")
    s3_client.put_object(Bucket=s3_bucket, Key="other.txt", Body=b"x")

    got = s3_client.get_object(Bucket=s3_bucket, Key="letters/b.txt")["Body"].read()
    listed = s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="letters/")

    assert got == b"second"
    assert [o["Key"] for o in listed["Contents"]] == ["letters/a.txt", "letters/b.txt"]


def test_s3_sse_put_reports_encryption(s3_client: Any, s3_bucket: str) -> None:
    put = s3_client.put_object(
        Bucket=s3_bucket, Key="ledger.parquet", Body=b"secret", ServerSideEncryption="AES256"
    )
    head = s3_client.head_object(Bucket=s3_bucket, Key="ledger.parquet")

    assert put["ServerSideEncryption"] == "AES256"
    assert head["ServerSideEncryption"] == "AES256"
    assert s3_client.get_object(Bucket=s3_bucket, Key="ledger.parquet")["Body"].read() == b"secret"


def test_s3_bucket_fixture_gives_fresh_buckets(s3_client: Any, s3_bucket: str) -> None:
    assert s3_client.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0


# --------------------------------------------------------------------------------------------
# SMTP


def test_smtp_multipart_lands_in_maildir(smtp_server: Service) -> None:
    tag = uuid.uuid4().hex
    msg = EmailMessage()
    msg["From"] = "collections@dunning.example"
    msg["To"] = "debtor@example.com"
    msg["Subject"] = f"Payment reminder {tag}"
    msg.set_content("Plain: please pay invoice INV-1.")
    msg.add_alternative("<p>HTML: please pay <b>INV-1</b>.</p>", subtype="html")

    with smtplib.SMTP("127.0.0.1", smtp_server.port, timeout=10) as client:
        client.send_message(msg, to_addrs=["debtor@example.com", "audit@dunning.example"])

    found = [
        m for m in read_mailbox(Path(smtp_server.extra["maildir"])) if tag in str(m["Subject"])
    ]
    assert len(found) == 1
    mail = found[0]
    assert mail["From"] == "collections@dunning.example"
    assert mail["To"] == "debtor@example.com"
    assert mail[ENVELOPE_FROM] == "collections@dunning.example"
    assert mail[ENVELOPE_TO] == "debtor@example.com, audit@dunning.example"
    assert mail.is_multipart()
    plain = mail.get_body(preferencelist=("plain",))
    html = mail.get_body(preferencelist=("html",))
    assert plain is not None and "please pay invoice INV-1" in plain.get_content()
    assert html is not None and "<b>INV-1</b>" in html.get_content()
    assert not list(Path(smtp_server.extra["maildir"], ".tmp").iterdir())  # nothing half-written


# --------------------------------------------------------------------------------------------
# PostgreSQL


def test_postgres_sqlalchemy_round_trip(pg_url: str) -> None:
    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE invoice (id text PRIMARY KEY, amount numeric)"))
            conn.execute(
                sa.text("INSERT INTO invoice VALUES (:id, :amount)"),
                [{"id": "INV-1", "amount": 10.5}, {"id": "INV-2", "amount": 4}],
            )
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, amount FROM invoice ORDER BY id")).all()
            server_addr = conn.execute(sa.text("SELECT inet_server_addr()::text")).scalar()
    finally:
        engine.dispose()
    assert [(r.id, float(r.amount)) for r in rows] == [("INV-1", 10.5), ("INV-2", 4.0)]
    assert server_addr.startswith("127.0.0.1")


def test_pg_url_gives_each_test_its_own_database(pg_url: str) -> None:
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            tables = conn.execute(
                sa.text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            ).scalar()
    finally:
        engine.dispose()
    assert tables == 0


# --------------------------------------------------------------------------------------------
# Airflow connections built from the servers


def test_airflow_hooks_reach_the_servers(
    s3_server: Service, smtp_server: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in services.airflow_connection_env(s3_server, smtp_server).items():
        monkeypatch.setenv(key, value)
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    tag = uuid.uuid4().hex
    with SmtpHook() as hook:
        hook.send_email_smtp(to="debtor@example.com", subject=tag, html_content="<p>Pay</p>")
    s3 = S3Hook(aws_conn_id="dunning_s3")
    bucket = f"hook-{tag[:12]}"
    s3.create_bucket(bucket_name=bucket)
    s3.load_bytes(b"abc", key="k.txt", bucket_name=bucket, encrypt=True)

    mails = read_mailbox(Path(smtp_server.extra["maildir"]))
    assert [m["From"] for m in mails if m["Subject"] == tag] == [services.SMTP_FROM]
    assert s3.read_key("k.txt", bucket) == "abc"
    assert s3.head_object("k.txt", bucket)["ServerSideEncryption"] == "AES256"
    services.s3_client(s3_server.url).delete_object(Bucket=bucket, Key="k.txt")
    services.s3_client(s3_server.url).delete_bucket(Bucket=bucket)


def test_airflow_connection_env_shape() -> None:
    s3 = Service("s3", 1, 8333, "http://127.0.0.1:8333", Path("/x"), {"aws_access_key_id": "k"})
    smtp = Service("smtp", 2, 2525, "smtp://127.0.0.1:2525", Path("/y"), {"maildir": "/y/m"})

    env = services.airflow_connection_env(s3, smtp)

    s3_conn = json.loads(env["AIRFLOW_CONN_DUNNING_S3"])
    smtp_conn = json.loads(env["AIRFLOW_CONN_SMTP_DEFAULT"])
    assert s3_conn["conn_type"] == "aws"
    assert s3_conn["login"] == "k"
    assert s3_conn["extra"] == {"endpoint_url": "http://127.0.0.1:8333", "region_name": "us-east-1"}
    assert (smtp_conn["host"], smtp_conn["port"]) == ("127.0.0.1", 2525)
    assert smtp_conn["extra"]["disable_tls"] is True
    assert smtp_conn["extra"]["disable_ssl"] is True
    assert services.airflow_connection_env(None, None) == {}
    assert json.loads(json.dumps(s3.to_dict())) == s3.to_dict()


# --------------------------------------------------------------------------------------------
# loopback only


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: [state, ppid, pgrp, ...]."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None


def _gone(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is None or stat[0] in ("Z", "X")  # a zombie waits for init to reap it


def _family_pids(pid: int) -> set[int]:
    """The service's pid, its process group and its children (postgres puts each in a session)."""
    pids = {pid}
    for entry in Path("/proc").iterdir():
        stat = _proc_stat(int(entry.name)) if entry.name.isdigit() else None
        if stat and pid in (int(stat[1]), int(stat[2])):
            pids.add(int(entry.name))
    return pids


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _proc_listeners(pids: set[int]) -> list[tuple[str, str, int]]:
    """(proto, local ip, port) of every TCP listener and bound UDP socket owned by ``pids``."""
    inodes: set[str] = set()
    for pid in pids:
        inodes |= _socket_inodes(pid)
    found = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        path = Path(f"/proc/net/{proto}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if inode not in inodes or (proto.startswith("tcp") and state != "0A"):
                continue
            hex_ip, hex_port = local.split(":")
            if proto.endswith("6"):
                ip = "v6:" + hex_ip
            else:
                ip = ".".join(str(b) for b in reversed(bytes.fromhex(hex_ip)))
            found.append((proto, ip, int(hex_port, 16)))
    return found


def _ss_listeners(pids: set[int]) -> list[str]:
    out = subprocess.run(["ss", "-H", "-ltunp"], capture_output=True, text=True, check=True).stdout
    return [
        line.split()[4] for line in out.splitlines() if any(f"pid={pid}," in line for pid in pids)
    ]


def test_every_listener_is_on_loopback(
    request: pytest.FixtureRequest, s3_server: Service, smtp_server: Service
) -> None:
    started = [s3_server, smtp_server]
    with contextlib.suppress(pytest.skip.Exception):
        started.append(request.getfixturevalue("postgres_server"))

    for service in started:
        pids = _family_pids(service.pid)
        listeners = _proc_listeners(pids)
        assert listeners, f"{service.name}: no listening socket found"
        assert all(ip == "127.0.0.1" for _, ip, _ in listeners), (service.name, listeners)
        assert service.port in {port for _, _, port in listeners}
        if service.name == "s3":
            assert {p for _, _, p in listeners} == set(service.extra["ports"].values())
        if shutil.which("ss"):
            ss = _ss_listeners(pids)
            assert ss and all(addr.startswith("127.0.0.1:") for addr in ss), (service.name, ss)


# --------------------------------------------------------------------------------------------
# stop


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _assert_stopped(service: Service) -> None:
    assert not services.is_running(service), f"{service.name} pid {service.pid} still running"
    assert not _port_open(service.port), f"{service.name} port {service.port} still open"


def test_stop_ends_smtp_and_is_idempotent(tmp_path: Path) -> None:
    smtp = services.start_smtp(tmp_path / "smtp")
    services.stop(smtp)
    _assert_stopped(smtp)
    services.stop(smtp)  # already gone: no error


def test_stop_ends_s3_and_data_survives_a_restart(tmp_path: Path) -> None:
    s3 = services.start_s3(tmp_path / "s3")
    try:
        client = services.s3_client(s3.url)
        client.create_bucket(Bucket="keep")
        client.put_object(Bucket="keep", Key="plain", Body=b"p")
        client.put_object(Bucket="keep", Key="sealed", Body=b"s", ServerSideEncryption="AES256")
    finally:
        services.stop(s3)
    _assert_stopped(s3)
    for kind in ("master", "volume", "filer", "s3"):
        grpc = s3.extra["ports"][f"{kind}_grpc"]
        assert not Path(f"/tmp/seaweedfs-{kind}-grpc-{grpc}.sock").exists()

    again = services.start_s3(tmp_path / "s3")  # new ports, same data, same SSE key
    try:
        client = services.s3_client(again.url)
        assert client.get_object(Bucket="keep", Key="plain")["Body"].read() == b"p"
        assert client.get_object(Bucket="keep", Key="sealed")["Body"].read() == b"s"
    finally:
        services.stop(again)
    _assert_stopped(again)


def test_stop_ends_postgres(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    request.getfixturevalue("postgres_server")  # same skip/fail rule when not installed
    pg = services.start_postgres(tmp_path / "pg")
    backends = _family_pids(pg.pid)
    services.stop(pg)
    _assert_stopped(pg)
    assert backends - {pg.pid}, "expected postgres background processes"
    assert all(_gone(p) for p in backends)
    if pg.extra["scratch"]:
        assert not Path(pg.extra["scratch"]).exists()
    services.stop(pg)


# --------------------------------------------------------------------------------------------
# CLI


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "plugins"), env.get("PYTHONPATH", "")) if p
    )
    return subprocess.run(
        [sys.executable, "-m", "dunning", "services", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def test_cli_start_stop_round_trip(tmp_path: Path) -> None:
    state = tmp_path / "state"
    started = _cli("start", "--which", "smtp", "--state-dir", str(state))
    assert started.returncode == 0, started.stderr
    try:
        exports = dict(
            line.removeprefix("export ").split("=", 1)
            for line in started.stdout.splitlines()
            if line.startswith("export ")
        )
        recorded = services.load_state(state)
        assert [s.name for s in recorded] == ["smtp"]
        smtp = recorded[0]
        assert services.is_running(smtp)
        assert "AIRFLOW_CONN_SMTP_DEFAULT" in exports
        with smtplib.SMTP("127.0.0.1", smtp.port, timeout=5) as client:
            assert client.ehlo()[0] == 250

        again = _cli("start", "--which", "smtp", "--state-dir", str(state))
        assert again.returncode != 0
        assert "already running" in again.stderr
    finally:
        stopped = _cli("stop", "--state-dir", str(state))
    assert stopped.returncode == 0, stopped.stderr
    assert not (state / services.STATE_FILE).exists()
    _assert_stopped(smtp)


def test_cli_rejects_unknown_service(tmp_path: Path) -> None:
    result = _cli("start", "--which", "ftp", "--state-dir", str(tmp_path))
    assert result.returncode != 0
    assert "ftp" in result.stderr
    assert not (tmp_path / services.STATE_FILE).exists()


def test_running_context_stops_on_error(tmp_path: Path) -> None:
    seen: dict[str, Service] = {}

    def crash_while_running() -> None:
        with services.running(tmp_path, "smtp") as up:
            seen.update(up)
            assert services.is_running(up["smtp"])
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        crash_while_running()
    _assert_stopped(seen["smtp"])
    assert not (tmp_path / services.STATE_FILE).exists()


def test_start_refuses_a_port_in_use(smtp_server: Service, tmp_path: Path) -> None:
    with pytest.raises(services.ServiceError, match="already in use"):
        services.start_smtp(tmp_path / "smtp", port=smtp_server.port)
