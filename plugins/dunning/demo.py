"""``python -m dunning demo``: the main job on a fresh machine, end to end, with real parts.

Generates a portfolio (an ERP "A/R Aging Detail" export, a SQL AR database and a customer
master), starts SeaweedFS (S3) and an SMTP server on loopback, points Airflow connections at them,
runs ``dunning_daily`` through ``dag.test()`` with the lake on S3, prints the run summary, and
stops the servers by pid.  Airflow runs in a child process because it reads its configuration
from the environment this module sets up.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from dunning import reports, services
from dunning.config import REPO_ROOT
from dunning.generate import business_today
from dunning.reports import daily

VAR = REPO_ROOT / "var"
LAKE_BUCKET = "dunning-lake"


def airflow_env(
    home: Path, *, sql_alchemy_conn: str | None = None, port: int | None = None
) -> dict[str, str]:
    """Airflow on loopback with the repo's DAGs and plugins, no examples, few workers.

    The demo's metadata DB is a SQLite file in ``home`` on port ``DUNNING_UI_PORT`` (8080);
    ``dunning.cluster`` passes a PostgreSQL URL and a free port, so both deployments share one
    definition of "Airflow with this repo".  The execution API URL follows the port: tasks call
    it, and a mismatch fails every task with ``Connection refused``.
    """
    bindir = str(Path(sys.executable).parent)
    api_port = str(port) if port is not None else os.environ.get("DUNNING_UI_PORT", "8080")
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
            sql_alchemy_conn or f"sqlite:///{home / 'airflow.db'}"
        ),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": api_port,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "plugins"), str(REPO_ROOT)]),
        "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
    }


def ensure_bucket(client: Any, bucket: str) -> None:
    """Create once; SeaweedFS keeps buckets across restarts but may not list them at once."""
    try:
        client.create_bucket(Bucket=bucket)
    except client.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


def prepare(debtors: int, as_of: date, seed: int, svc: dict) -> dict[str, str]:
    """Portfolio, bucket, metadata DB; returns the environment for Airflow processes."""
    from dunning.generate import generate

    portfolio = VAR / "demo"
    print(f"Generating {debtors} debtors as of {as_of} into {portfolio} ...", flush=True)
    generated = generate(portfolio, debtors=debtors, as_of=as_of, seed=seed)
    print(f"  {json.dumps(generated['counts'])}", flush=True)
    if "sms" in svc:  # the local SMS provider's delivery receipts and replies are its feedback
        use_sms_feedback(portfolio / "config.yaml", Path(svc["sms"].extra["dir"]))
    ensure_bucket(services.s3_client(svc["s3"].url), LAKE_BUCKET)
    env = {
        **os.environ,
        **airflow_env(VAR / "airflow"),
        **services.service_env(svc),
        "DUNNING_CONFIG": str(portfolio / "config.yaml"),
        "DUNNING_LAKE": f"s3://dunning_s3@{LAKE_BUCKET}/",
        "DUNNING_LEDGER_URL": os.environ.get(
            "DUNNING_LEDGER_URL", f"sqlite:///{VAR / 'ledger.sqlite'}"
        ),
        "DUNNING_NOW": os.environ.get("DUNNING_NOW", demo_clock(as_of)),
    }
    print("Migrating the Airflow metadata DB (SQLite) ...", flush=True)
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    for pool, slots, what in POOLS:
        subprocess.run(
            [sys.executable, "-m", "airflow", "pools", "set", pool, str(slots), what],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return env


# The send tasks' pools (dunning.airflow.tasks.POOLS): one sender per provider at a time.
POOLS = (
    ("dunning_smtp", 1, "SMTP senders (one session each)"),
    ("dunning_sms", 1, "SMS provider API callers"),
    ("dunning_files", 2, "letter and dialer batch writers"),
)


def use_sms_feedback(config: Path, sink_dir: Path) -> None:
    """Point the portfolio's SMS feedback at the local provider's event file."""
    doc = yaml.safe_load(config.read_text(encoding="utf-8"))
    doc.setdefault("feedback", {})["sms_events"] = [str(sink_dir / "events.jsonl")]
    config.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")


def demo_clock(as_of: date) -> str:
    """The demo's pinned clock: 16:30 UTC is inside 08:00-21:00 in every zone the generated
    portfolio uses (Los Angeles 08:30 ... Dubai 20:30), so the wave goes out whatever the hour
    the demo is run; a real deployment runs on the real clock."""
    return f"{as_of.isoformat()}T16:30:00Z"


def main(debtors: int = 2000, as_of: date | None = None, seed: int = 7) -> int:
    as_of = as_of or business_today()
    with services.running(VAR / "services", "s3,smtp,sms") as svc:
        print(f"S3 (SeaweedFS) at {svc['s3'].url}, SMTP at 127.0.0.1:{svc['smtp'].port}")
        env = prepare(debtors, as_of, seed, svc)
        print(f"Running dunning_daily for {as_of} with dag.test() ...", flush=True)
        log, result_file = VAR / "demo-run.log", VAR / "demo-run.json"
        result_file.unlink(missing_ok=True)
        with log.open("w") as fh:
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "dunning.airflow.run",
                    "--conf",
                    json.dumps({"as_of": as_of.isoformat()}),
                    "--result",
                    str(result_file),
                ],
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        result = json.loads(result_file.read_text()) if result_file.exists() else {}
        print(f"DAG run: {result.get('state', 'crashed')}; tasks: {result.get('tasks')}")
        if proc.returncode != 0:
            print(f"The run failed; the full Airflow log is in {log}", file=sys.stderr)
            print(log.read_text()[-3000:], file=sys.stderr)
            return 1
        client = services.s3_client(svc["s3"].url)
        key = reports.summary_key(as_of)
        body = client.get_object(Bucket=LAKE_BUCKET, Key=key)["Body"].read()
        summary = json.loads(body)
        print()
        print(reports.format_summary(summary))
        print(f"\nSummary: s3://{LAKE_BUCKET}/{key}   Airflow log: {log}")
        print(f"Report (KPIs, plots): s3://{LAKE_BUCKET}/{daily.report_key(as_of)}")
        snapshots = client.list_objects_v2(Bucket=LAKE_BUCKET, Prefix="snapshots/")
        print(f"Snapshot objects on S3: {[o['Key'] for o in snapshots.get('Contents', [])]}")
        show_deliveries(client, svc, as_of)
    return 0


def show_deliveries(client: Any, svc: dict, as_of: date) -> None:
    """Where the wave went: the SMTP server's mailbox, the SMS provider's log, the outbox."""
    from dunning import sms_sink

    maildir = Path(svc["smtp"].extra["maildir"])
    texts = sms_sink.read_messages(Path(svc["sms"].extra["dir"]))
    print(
        f"Emails received by the local SMTP server: {len(list(maildir.glob('*.eml')))} in {maildir}"
    )
    print(f"SMS received by the local provider: {len(texts)} (log: {svc['sms'].extra['dir']})")
    for area in ("letters", "calls"):
        found = client.list_objects_v2(Bucket=LAKE_BUCKET, Prefix=f"outbox/{area}/as_of={as_of}/")
        print(f"Outbox {area}: {[o['Key'] for o in found.get('Contents', [])] or 'none today'}")
    pages = client.list_objects_v2(Bucket=LAKE_BUCKET, Prefix="portal/pages/")
    print(f"Payment pages published: {pages.get('KeyCount', 0)} under s3://{LAKE_BUCKET}/portal/")


# airflow standalone would also start log servers that bind every interface (their host is
# hard-coded); with logs on local disk the API server reads them directly, so they are skipped.
UI_COMPONENTS = (
    ["scheduler", "--skip-serve-logs"],
    ["dag-processor"],
    ["triggerer", "--skip-serve-logs"],
)


def ui(debtors: int = 2000, as_of: date | None = None, seed: int = 7) -> int:
    """The Airflow UI on 127.0.0.1 with the demo portfolio, S3 and SMTP; Ctrl-C stops it all."""
    as_of = as_of or business_today()
    with services.running(VAR / "services", "s3,smtp,sms") as svc:
        env = prepare(debtors, as_of, seed, svc)
        port = env["AIRFLOW__API__PORT"]
        home = Path(env["AIRFLOW_HOME"])
        commands = [["api-server", "--host", "127.0.0.1", "--port", port], *UI_COMPONENTS]
        procs = []
        try:
            for cmd in commands:
                log = (home / f"{cmd[0]}.log").open("w")
                procs.append(
                    subprocess.Popen(
                        ["airflow", *cmd],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            print(
                f"Airflow UI: http://127.0.0.1:{port}  (user admin, password in "
                f"{home / 'simple_auth_manager_passwords.json.generated'}); component logs in "
                f"{home}/*.log; Ctrl-C stops everything.",
                flush=True,
            )
            while all(p.poll() is None for p in procs):
                time.sleep(1)
            failed = [c[0] for c, p in zip(commands, procs, strict=True) if p.poll() is not None]
            print(f"Airflow component(s) exited: {failed}; see {home}/*.log", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
        finally:
            for proc in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
