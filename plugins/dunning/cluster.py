"""A real Airflow deployment on loopback (PostgreSQL metadata DB, LocalExecutor or Celery), by pid.

Why: ``dag.test()`` runs a DAG in one process against a scratch DB, which proves the task code
but not what finance and operators actually use -- the scheduler creating and queueing backfill
runs, tasks in separate worker processes talking to the execution API, pools, the REST API,
Celery workers fed through Redis.  Backfills in particular are fragile on SQLite (see
``airflow3-notes`` 1.6), so this deployment always puts the metadata DB on PostgreSQL.

What runs, each as its own process group started here and stopped here by pid:

* ``airflow db migrate`` against a fresh PostgreSQL database (on a given server, or on one
  started for the purpose);
* ``api-server`` on 127.0.0.1 and a free port (the execution API URL follows it), ``scheduler``
  and ``triggerer`` with ``--skip-serve-logs``, ``dag-processor``;
* with ``CeleryExecutor``: ``redis-server`` on 127.0.0.1 as broker (no persistence), the
  PostgreSQL DB as result backend, and N ``airflow celery worker`` with distinct hostnames and
  ``--skip-serve-logs``.  Flower is not started.

Nothing listens anywhere but 127.0.0.1: Airflow's log servers (which bind every interface,
their host being hard-coded) are skipped -- logs are on local disk, where the API server reads
them -- and :meth:`Cluster.listeners` reports every listening socket of the deployment so a test
can check it.  Every process also carries a ``DUNNING_CLUSTER`` marker in its environment; on
stop, anything still holding the marker (a grandchild that left its process group) is killed
too, so a deployment never outlives its ``with`` block, also when a test fails.

Core module: no Airflow import; it drives the ``airflow`` CLI and the REST API (``/api/v2``
with a JWT from SimpleAuthManager's ``/auth/token``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dunning import services
from dunning.demo import POOLS, airflow_env
from dunning.services import LOOPBACK, Service, ServiceError

# services' process helpers: the same spawn / group-signal / reap discipline as the servers.
from dunning.services import _alive as alive
from dunning.services import _forget as forget
from dunning.services import _log_tail as log_tail
from dunning.services import _signal_group as signal_group
from dunning.services import _spawn as spawn

EXECUTORS = ("LocalExecutor", "CeleryExecutor")
ADMIN = "admin"
TERMINAL_RUN_STATES = frozenset({"success", "failed"})
_MARKER = "DUNNING_CLUSTER"

# Inherited variables that would point the deployment somewhere else (the test session's own
# AIRFLOW_HOME and SQLite DB, a demo's DUNNING_* settings): dropped before the caller's env.
_INHERITED_PREFIXES = ("AIRFLOW_", "AIRFLOW__", "DUNNING_")
# Settings of demo.airflow_env that the cluster's defaults and the caller may change.
_TUNABLE = frozenset({"AIRFLOW__CORE__PARALLELISM", "AIRFLOW__CORE__LOAD_EXAMPLES"})


class ClusterError(RuntimeError):
    """A component that would not start or died, a CLI call that failed, a wait that timed out."""


@dataclass
class Component:
    """One long-running Airflow process (``api-server``, ``worker-1``...): command, process, log."""

    name: str
    cmd: list[str]
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclass
class Cluster:
    """A running deployment: where it is (``url``, ``env``), what runs (``pids``, ``logs``), and
    helpers to drive it the way an operator would (CLI, REST API)."""

    workdir: Path
    home: Path
    executor: str
    url: str
    env: dict[str, str]
    username: str
    password: str
    metadata_url: str
    components: dict[str, Component] = field(default_factory=dict)
    redis: Service | None = None
    # Seconds per start-up phase (migrate, start, ready, pools): where a slow start went.
    timings: dict[str, float] = field(default_factory=dict)
    _token: str | None = field(default=None, repr=False)

    # ---- what runs

    @property
    def pids(self) -> dict[str, int]:
        """Component name -> pid (``worker-1``, ``worker-2`` for Celery workers)."""
        out = {name: c.pid for name, c in self.components.items()}
        if self.redis is not None:
            out["redis"] = self.redis.pid
        return out

    @property
    def logs(self) -> dict[str, Path]:
        """Component name -> its log file (stdout and stderr)."""
        out = {name: c.log for name, c in self.components.items()}
        if self.redis is not None:
            out["redis"] = self.redis.workdir / "redis.log"
        return out

    @property
    def task_logs(self) -> Path:
        """Where the task-instance logs are (local disk, read by the API server)."""
        return self.home / "logs"

    def check_alive(self) -> None:
        """Raise with the log tail of any component that has exited."""
        for comp in self.components.values():
            if comp.proc.poll() is not None:
                raise ClusterError(
                    f"Airflow {comp.name} exited with code {comp.proc.returncode}\n"
                    f"--- last lines of {comp.log} ---\n{log_tail(comp.log, 40)}"
                )

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) per component so far, with its live descendants and the
        children they reaped (under LocalExecutor the task processes count to the scheduler):
        where a slow run's time went."""
        import psutil

        out = {}
        for name, pid in self.pids.items():
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                total = 0.0
                for proc in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        t = proc.cpu_times()
                        total += t.user + t.system + t.children_user + t.children_system
                out[name] = round(total, 1)
        return out

    def listeners(self) -> list[tuple[str, int, str]]:
        """Every listening TCP socket of the deployment's processes: (address, port, component).

        The promise is that all addresses are 127.0.0.1; a test asserts it.
        """
        import psutil

        owner: dict[int, str] = {}
        for name, pid in self.pids.items():
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                owner[pid] = name
                for child in proc.children(recursive=True):
                    owner[child.pid] = name
        found = []
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.pid in owner:
                found.append((conn.laddr.ip, conn.laddr.port, owner[conn.pid]))
        return sorted(set(found))

    # ---- the CLI

    def airflow(
        self, *args: str, timeout: float = 180, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``airflow ARGS`` against this deployment (about 7 s of imports per call)."""
        cmd = [_airflow_bin(), *args]
        try:
            done = subprocess.run(
                cmd,
                cwd=self.home,
                env=self.env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(f"`airflow {' '.join(args)}` timed out after {timeout:g} s") from exc
        if check and done.returncode != 0:
            raise ClusterError(
                f"`airflow {' '.join(args)}` failed with code {done.returncode}\n"
                f"--- stdout ---\n{_tail(done.stdout)}\n--- stderr ---\n{_tail(done.stderr)}"
            )
        return done

    # ---- the REST API

    def token(self, *, refresh: bool = False) -> str:
        """A JWT from SimpleAuthManager (``POST /auth/token``), cached."""
        if self._token is None or refresh:
            body = _http(
                "POST",
                f"{self.url}/auth/token",
                {"username": self.username, "password": self.password},
            )
            self._token = str(body["access_token"])
        return self._token

    def api(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        """``METHOD /api/v2/PATH`` with the JWT; JSON in and out.  A 401 refreshes the token once."""
        url = f"{self.url}/api/v2/{path.lstrip('/')}"
        if query:
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        try:
            return _http(method, url, body, token=self.token())
        except _HTTPStatusError as exc:
            if exc.status != 401:
                raise
        return _http(method, url, body, token=self.token(refresh=True))

    def health(self) -> dict[str, Any]:
        """``/api/v2/monitor/health`` (no auth): metadatabase, scheduler, triggerer, dag_processor."""
        return dict(_http("GET", f"{self.url}/api/v2/monitor/health", timeout=5))

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> dict[str, Any]:
        """Until the DAG processor has parsed and serialized ``dag_id``; an import error of the
        DAG file fails at once with the error text."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                return dict(self.api("GET", f"dags/{dag_id}"))
            except _HTTPStatusError as exc:
                if exc.status != 404:
                    raise
            errors = self.api("GET", "importErrors").get("import_errors", [])
            # This repo's convention: dags/<dag_id>.py.  Other files' errors go into the timeout.
            mine = [e for e in errors if Path(str(e.get("filename"))).stem == dag_id]
            if mine:
                raise ClusterError(f"DAG {dag_id} does not import: {mine}")
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"DAG {dag_id} not parsed after {timeout:g} s (import errors: {errors})\n"
                    f"--- dag-processor log ---\n{log_tail(self.logs['dag-processor'], 30)}"
                )
            time.sleep(1)

    def unpause(self, dag_id: str) -> None:
        """Backfill runs (like all runs) only start while the DAG is unpaused."""
        self.api("PATCH", f"dags/{dag_id}", {"is_paused": False})

    def dag_runs(self, dag_id: str, run_type: str | None = None) -> list[dict[str, Any]]:
        """The DAG's runs (REST ``dagRuns``), oldest logical date first."""
        query: dict[str, Any] = {"order_by": "logical_date"}
        if run_type:
            query["run_type"] = run_type
        return self._pages(f"dags/{dag_id}/dagRuns", "dag_runs", query)

    def wait_for_runs(
        self,
        dag_id: str,
        count: int,
        *,
        run_type: str | None = "backfill",
        timeout: float = 600,
        poll: float = 3,
        fail_fast: bool = True,
    ) -> list[dict[str, Any]]:
        """Until ``count`` runs exist and all have finished (success or failed); returns them.

        Polls the REST API (milliseconds a call), not the CLI (seconds of imports a call).  A
        component that dies meanwhile fails the wait at once with its log.  With ``fail_fast``,
        so does a task instance that failed or waits for a retry (the DAG's retry delay is
        minutes): the error names it and quotes the errors of its log.
        """
        deadline = time.monotonic() + timeout
        runs: list[dict[str, Any]] = []
        while True:
            self.check_alive()
            if fail_fast:
                self._raise_on_failed_tasks(dag_id)
            runs = self.dag_runs(dag_id, run_type)
            if len(runs) >= count and all(r["state"] in TERMINAL_RUN_STATES for r in runs):
                return runs
            if time.monotonic() > deadline:
                states = {r["dag_run_id"]: r["state"] for r in runs}
                raise ClusterError(
                    f"{dag_id}: {len(runs)}/{count} runs, not all finished after {timeout:g} s: "
                    f"{states}\n--- scheduler log ---\n{log_tail(self.logs['scheduler'], 30)}"
                )
            time.sleep(poll)

    def _raise_on_failed_tasks(self, dag_id: str) -> None:
        bad = self.api(
            "GET",
            f"dags/{dag_id}/dagRuns/~/taskInstances",
            state=["failed", "up_for_retry"],
            limit=5,
        )["task_instances"]
        if bad:
            report = "\n".join(
                f"{ti['dag_run_id']} {ti['task_id']}[{ti.get('map_index', -1)}] {ti['state']} "
                f"(try {ti.get('try_number')}):\n{self.task_log_errors(ti)}"
                for ti in bad
            )
            raise ClusterError(f"{dag_id}: task instances failed:\n{report}")

    def task_log_errors(self, ti: dict[str, Any], limit: int = 10) -> str:
        """The error lines of a task instance's log (Airflow 3 writes JSON lines), exceptions
        as ``type: message``; the raw tail when the log is not JSON."""
        run = self.task_logs / f"dag_id={ti['dag_id']}" / f"run_id={ti['dag_run_id']}"
        folder = run / f"task_id={ti['task_id']}"
        index = ti.get("map_index")
        if index is not None and index >= 0:
            folder = folder / f"map_index={index}"
        path = folder / f"attempt={max(1, int(ti.get('try_number') or 1))}.log"
        lines: list[str] = []
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return f"  (no log at {path})"
        for raw in text.splitlines():
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if entry.get("level") not in ("error", "critical"):
                continue
            lines.append(f"  {entry.get('event')}")
            for exc in entry.get("error_detail") or []:
                lines.append(f"    {exc.get('exc_type')}: {exc.get('exc_value')}")
        return "\n".join(lines[-limit:]) or _tail(text, limit)

    def task_instances(self, dag_id: str) -> list[dict[str, Any]]:
        """Every task instance of every run of the DAG, as the REST API gives them (state,
        queued/start/end times, try number, pool, hostname...)."""
        return self._pages(f"dags/{dag_id}/dagRuns/~/taskInstances", "task_instances", {})

    def task_states(self, dag_id: str) -> dict[str, dict[str, str | None]]:
        """run id -> {task id (``task[i]`` when mapped): state} for every run of the DAG."""
        states: dict[str, dict[str, str | None]] = {}
        for ti in self.task_instances(dag_id):
            index = ti.get("map_index", -1)
            task = ti["task_id"] if index is None or index < 0 else f"{ti['task_id']}[{index}]"
            states.setdefault(ti["dag_run_id"], {})[task] = ti["state"]
        return states

    def _pages(self, path: str, key: str, query: dict[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            page = self.api("GET", path, limit=100, offset=len(items), **query)
            items.extend(page[key])
            if not page[key] or len(items) >= page["total_entries"]:
                return items


# --------------------------------------------------------------------------------------------
# HTTP


class _HTTPStatusError(ClusterError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _http(
    method: str, url: str, body: Any = None, *, token: str | None = None, timeout: float = 30
) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:2000]
        raise _HTTPStatusError(exc.code, f"{method} {url}: HTTP {exc.code}: {detail}") from exc
    return json.loads(raw) if raw else None


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------------------------
# Redis (the Celery broker)


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(
    workdir: Path, *, env: dict[str, str] | None = None, timeout: float = 20
) -> Service:
    """``redis-server`` on 127.0.0.1 and a free port, no snapshots, no append-only file: a
    broker for one test run, nothing written to disk, nothing reachable from the network."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceError(
            "redis-server not found; install it with `apt-get install -y redis-server` "
            "(scripts/test.sh does when run as root)"
        )
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    port = services.free_port()
    log = workdir / "redis.log"
    cmd = [
        binary,
        "--bind",
        LOOPBACK,
        "--port",
        str(port),
        "--protected-mode",
        "yes",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        "--daemonize",
        "no",
    ]
    proc = spawn(cmd, log, cwd=workdir, env=env)
    deadline = time.monotonic() + timeout
    while not _redis_answers(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop_pids({"redis": proc.pid}, grace=2)
            raise ServiceError(f"redis-server did not start\n--- {log} ---\n{log_tail(log)}")
        time.sleep(0.1)
    return Service(
        name="redis", pid=proc.pid, port=port, url=f"redis://{LOOPBACK}:{port}/0", workdir=workdir
    )


# --------------------------------------------------------------------------------------------
# stopping


def _stop_pids(pids: dict[str, int], grace: float = 15) -> None:
    """SIGTERM every process group at once, SIGKILL what is left after ``grace``; reap."""
    for pid in pids.values():
        signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(alive(pid) for pid in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids.values():
        # Also when the leader is gone: members of its group may remain (a task's supervisor).
        signal_group(pid, signal.SIGKILL)
    for pid in pids.values():
        forget(pid)


def _marked_pids(marker: str) -> list[int]:
    """Processes whose environment has ``DUNNING_CLUSTER=marker``: only ours can (we put it
    there, a fresh random value per deployment)."""
    needle = f"{_MARKER}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _sweep(marker: str) -> None:
    for pid in _marked_pids(marker):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------------------------
# start


def _airflow_bin() -> str:
    # The venv's own entry point, next to the interpreter running us.
    return str(Path(sys.executable).parent / "airflow")


def _cluster_env(
    home: Path, metadata_url: str, port: int, executor: str, marker: str, caller: dict[str, str]
) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED_PREFIXES)}
    knobs = {
        # A 2-core machine: few task slots.  LocalExecutor forks this many workers (each ~130 MB),
        # and the tasks are pandas work that would only queue for the CPU beyond it.
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        # One API worker process: enough for a UI user and the tests' polling.
        "AIRFLOW__API__WORKERS": "1",
        # The bundle (the dags folder) is listed at start-up anyway; a short refresh lets a DAG
        # file added later show up within seconds.  Re-parsing each file costs a process
        # importing the DAG module, so unchanged files are re-parsed only every 2 minutes.
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "120",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        # The scheduler heartbeats every 5 s (default); health turns "healthy" after the first.
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "5",
        # A downstream task is queued on the scheduler's first loop after its upstream ended;
        # while tasks run, the loop is idle and sleeps this long (default 1 s).  A daily run is
        # a chain of ~15 short tasks, so the default adds ~8 s a run; a loop is a few queries.
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.25",
        # The health-check server would bind 0.0.0.0; off (the API's /monitor/health suffices).
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }
    repo = airflow_env(home, sql_alchemy_conn=metadata_url, port=port)
    # Where the deployment is and how its parts find each other: not overridable by the caller.
    essentials = {
        **{k: v for k, v in repo.items() if k not in _TUNABLE},
        "AIRFLOW__CORE__EXECUTOR": executor,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        # Shared by every component explicitly (not left to whichever writes airflow.cfg first):
        # the scheduler signs the tokens tasks present to the API server's execution API.
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        _MARKER: marker,
    }
    return {**base, **repo, **knobs, **caller, **essentials}


def _celery_env(redis: Service, metadata_url: str, workers: int) -> dict[str, str]:
    backend = "db+" + metadata_url.replace("postgresql+psycopg2://", "postgresql://", 1)
    return {
        "AIRFLOW__CELERY__BROKER_URL": redis.url,
        "AIRFLOW__CELERY__RESULT_BACKEND": backend,
        # Two task slots per worker: N workers on a 2-core machine share the CPU anyway.
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        # The scheduler sends task state queries with a pool of this many processes.
        "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
        "AIRFLOW__CORE__PARALLELISM": str(max(4, 2 * workers)),
    }


def celery_worker_hostname() -> str:
    """``[core] hostname_callable`` for several Celery workers on one machine.

    A task instance records the hostname of the machine that ran it (the UI and the REST API
    show it); workers sharing a machine would all record the same name.  Inside a Celery task
    (where the worker's supervisor and its task process call this) the answer is the worker's
    node name instead (``dunning-1@127.0.0.1``), elsewhere (scheduler, API server) the FQDN.
    Set it with ``AIRFLOW__CORE__HOSTNAME_CALLABLE=dunning.cluster.celery_worker_hostname``.
    """
    try:
        from celery import current_task
    except ImportError:
        current_task = None
    name = getattr(getattr(current_task, "request", None), "hostname", None)
    return str(name) if name else socket.getfqdn()


def _write_password(home: Path) -> str:
    """Known password for ``admin``: SimpleAuthManager keeps users already in its file."""
    password = secrets.token_urlsafe(18)
    path = home / "passwords.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({ADMIN: password}, fh)
    return password


def _migrate(cluster: Cluster, timeout: float) -> None:
    log = cluster.home / "db-migrate.log"
    started = time.monotonic()
    done = cluster.airflow("db", "migrate", timeout=timeout, check=False)
    log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise ClusterError(
            f"`airflow db migrate` failed ({time.monotonic() - started:.0f} s)\n"
            f"--- last lines of {log} ---\n{log_tail(log, 40)}"
        )


def _start_components(cluster: Cluster, port: int, workers: int, triggerer: bool) -> None:
    # airflow standalone is not used: it would start log servers on every interface.
    commands: dict[str, list[str]] = {
        "api-server": ["api-server", "--host", LOOPBACK, "--port", str(port)],
        "scheduler": ["scheduler", "--skip-serve-logs"],
        "dag-processor": ["dag-processor"],
    }
    if triggerer:
        commands["triggerer"] = ["triggerer", "--skip-serve-logs"]
    if cluster.executor == "CeleryExecutor":
        for n in range(1, workers + 1):
            commands[f"worker-{n}"] = [
                "celery",
                "worker",
                "--celery-hostname",
                f"dunning-{n}@{LOOPBACK}",
                "--concurrency",
                cluster.env["AIRFLOW__CELERY__WORKER_CONCURRENCY"],
                "--skip-serve-logs",  # its log server would listen on 0.0.0.0:8793
                "--without-mingle",  # no start-up sync round with the other workers
                "--without-gossip",  # nor a subscription to their heartbeats
            ]
    for name, args in commands.items():
        log = cluster.home / f"{name}.log"
        proc = spawn([_airflow_bin(), *args], log, cwd=cluster.home, env=cluster.env)
        cluster.components[name] = Component(name, [_airflow_bin(), *args], proc, log)


def _celery_workers_ready(broker: str, hostnames: set[str]) -> bool:
    """Every worker answers a broadcast ping over the broker (what Celery's own check does)."""
    from celery import Celery

    app = Celery(broker=broker)
    try:
        replies = app.control.ping(timeout=1.0)
    except Exception:
        return False
    finally:
        app.close()
    answered = {name for reply in replies for name in reply}
    return hostnames <= answered


def _wait_ready(cluster: Cluster, triggerer: bool, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    wanted = {"scheduler", "dag_processor"} | ({"triggerer"} if triggerer else set())
    health: dict[str, Any] = {}
    while True:
        cluster.check_alive()
        with contextlib.suppress(OSError, ClusterError, ValueError):
            health = cluster.health()
        healthy = {
            k for k, v in health.items() if isinstance(v, dict) and v.get("status") == "healthy"
        }
        if health and wanted <= healthy:
            break
        if time.monotonic() > deadline:
            lagging = sorted(wanted - healthy) or ["api-server"]
            name = lagging[0].replace("_", "-")
            log = cluster.logs.get(name, cluster.logs["api-server"])
            raise ClusterError(
                f"Airflow not ready after {timeout:g} s: {lagging} not healthy ({health})\n"
                f"--- last lines of {log} ---\n{log_tail(log, 40)}"
            )
        time.sleep(0.5)
    workers = {n: c for n, c in cluster.components.items() if n.startswith("worker-")}
    if workers and cluster.redis is not None:
        hostnames = {f"dunning-{n.removeprefix('worker-')}@{LOOPBACK}" for n in workers}
        while not _celery_workers_ready(cluster.redis.url, hostnames):
            cluster.check_alive()
            if time.monotonic() > deadline:
                log = next(iter(workers.values())).log
                raise ClusterError(
                    f"Celery workers {sorted(hostnames)} did not answer a ping after {timeout:g} s"
                    f"\n--- last lines of {log} ---\n{log_tail(log, 40)}"
                )
            time.sleep(0.5)


def _create_pools(cluster: Cluster) -> None:
    # Through the REST API (milliseconds) rather than `airflow pools set` (seconds each).
    for name, slots, description in POOLS:
        cluster.api(
            "POST",
            "pools",
            {"name": name, "slots": slots, "description": description, "include_deferred": False},
        )


@contextlib.contextmanager
def _timed(cluster: Cluster, phase: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    cluster.timings[phase] = round(time.monotonic() - started, 1)


@contextlib.contextmanager
def running_cluster(
    workdir: Path,
    *,
    env: dict[str, str],
    executor: str = "LocalExecutor",
    workers: int = 1,
    postgres: Service | None = None,
    triggerer: bool = True,
    timeout: float = 180,
) -> Iterator[Cluster]:
    """Start the deployment, yield it, always stop it (also on failure, Ctrl-C or a failed start).

    ``env``: the DAGs' settings (``DUNNING_*``, ``AIRFLOW_CONN_*``) and any Airflow knob to
    override (e.g. ``AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE=False`` for a deployment that runs only
    backfills and triggered runs); the metadata DB, executor, ports and auth are the cluster's.
    ``postgres``: a running server to create the metadata database on (dropped at the end);
    without one, a server is started in ``workdir`` and stopped at the end.
    ``workers``: Celery workers (``CeleryExecutor`` only).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, not {executor!r}")
    if executor == "CeleryExecutor" and workers < 1:
        raise ValueError("CeleryExecutor needs at least one worker")
    workdir = Path(workdir).resolve()
    home = workdir / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    marker = uuid.uuid4().hex
    own_postgres: Service | None = None
    db_name = f"airflow_{uuid.uuid4().hex[:12]}"
    cluster: Cluster | None = None
    try:
        if postgres is None:
            own_postgres = postgres = services.start_postgres(workdir / "postgres")
        metadata_url = services.create_database(postgres, db_name)
        port = services.free_port()
        caller = dict(env)
        redis = None
        if executor == "CeleryExecutor":
            redis = start_redis(workdir / "redis", env={**os.environ, _MARKER: marker})
            caller = {**_celery_env(redis, metadata_url, workers), **caller}
        cluster = Cluster(
            workdir=workdir,
            home=home,
            executor=executor,
            url=f"http://{LOOPBACK}:{port}",
            env=_cluster_env(home, metadata_url, port, executor, marker, caller),
            username=ADMIN,
            password=_write_password(home),
            metadata_url=metadata_url,
            redis=redis,
        )
        with _timed(cluster, "migrate"):
            _migrate(cluster, timeout=max(timeout, 300))
        with _timed(cluster, "start"):
            _start_components(cluster, port, workers, triggerer)
        with _timed(cluster, "ready"):
            _wait_ready(cluster, triggerer, timeout)
        with _timed(cluster, "pools"):
            _create_pools(cluster)
        yield cluster
    finally:
        try:
            if cluster is not None:
                _stop_pids({n: c.pid for n, c in cluster.components.items()})
                if cluster.redis is not None:
                    _stop_pids({"redis": cluster.redis.pid}, grace=5)
            _sweep(marker)
        finally:
            if own_postgres is not None:
                services.stop(own_postgres)
            elif postgres is not None:
                with contextlib.suppress(Exception):
                    services.drop_database(postgres, db_name)
