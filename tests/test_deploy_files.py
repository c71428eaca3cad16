"""The deployment files: docker-compose.yaml, docker/Dockerfile and their helpers.

No Docker engine runs on these machines, so these tests read the files and hold them to what
the application needs: the services of the production set-up, one executor / metadata DB /
broker for every Airflow component, ports on loopback only, the pools and connections the tasks
use (taken from the code, not copied), the three C0 variables, secrets only as placeholders,
and an image that installs the lock and carries the code.  When a Compose v2 binary is found
(``docker compose``, a v2 ``docker-compose``, or ``$DUNNING_COMPOSE``) it also validates the file
with ``docker compose config``; otherwise that test is skipped, saying so.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from dunning import demo, services
from dunning.airflow import tasks

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / "docker" / "Dockerfile.dockerignore"
ENV_EXAMPLE = REPO / "docker" / "env.example"
PG_INIT = REPO / "docker" / "postgres-init"

AIRFLOW_SERVICES = (
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)
LONG_RUNNING = (
    "postgres",
    "redis",
    "seaweedfs",
    "mailpit",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)
SHARED_AIRFLOW_ENV = (
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
)
C0_VARIABLES = ("DUNNING_CONFIG", "DUNNING_LEDGER_URL", "DUNNING_LAKE")
# ${NAME}, ${NAME:-default}, ${NAME:?message}
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    doc = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict)
    return doc


@pytest.fixture(scope="module")
def svc(compose: dict) -> dict[str, dict]:
    return compose["services"]


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def substitute(text: str, values: dict[str, str] | None = None) -> str:
    """Compose-style interpolation with dummy values, so JSON and URLs can be parsed here."""

    def one(m: re.Match) -> str:
        name, op, arg = m["name"], m["op"], m["arg"]
        if values and name in values:
            return values[name]
        if op in (":-", "-"):
            return arg
        return f"x{name.lower().replace('_', '')}"

    return INTERPOLATION.sub(one, text.replace("$$", "\0")).replace("\0", "$")


def command_text(service: dict) -> str:
    cmd = service.get("command") or ""
    return cmd if isinstance(cmd, str) else "\n".join(str(c) for c in cmd)


def published(service: dict) -> list[str | dict]:
    return list(service.get("ports") or [])


def required_variables(text: str) -> set[str]:
    return {m["name"] for m in INTERPOLATION.finditer(text) if m["op"] in (":?", "?")}


# --------------------------------------------------------------------------------------------
# docker-compose.yaml: shape


def test_compose_has_the_production_services(svc: dict) -> None:
    for name in (*AIRFLOW_SERVICES, "postgres", "redis", "seaweedfs", "mailpit"):
        assert name in svc, f"docker-compose.yaml: service {name} missing"
    assert "postgres" in svc["postgres"]["image"]
    assert svc["redis"]["image"].startswith("redis:")
    assert "seaweedfs" in svc["seaweedfs"]["image"]
    assert "-s3" in command_text(svc["seaweedfs"]).split()
    assert "mailpit" in svc["mailpit"]["image"]
    # pinned images: a `latest` tag makes two deployments of the same commit differ
    for name, service in svc.items():
        image = service.get("image", "")
        assert image and not image.endswith(":latest"), f"{name}: pin the image tag ({image!r})"


def test_airflow_components_run_the_right_commands(svc: dict) -> None:
    expected = {
        "airflow-apiserver": ["airflow", "api-server"],
        "airflow-scheduler": ["airflow", "scheduler"],
        "airflow-dag-processor": ["airflow", "dag-processor"],
        "airflow-triggerer": ["airflow", "triggerer"],
        "airflow-worker": ["airflow", "celery", "worker"],
    }
    for name, command in expected.items():
        assert svc[name]["command"] == command, name
    assert "airflow db migrate" in command_text(svc["airflow-init"])


def test_every_airflow_service_shares_executor_database_broker_and_keys(svc: dict) -> None:
    envs = {
        name: env_of(service)
        for name, service in svc.items()
        if name in AIRFLOW_SERVICES or any(k.startswith("AIRFLOW__") for k in env_of(service))
    }
    assert set(AIRFLOW_SERVICES) <= set(envs)
    first = envs[AIRFLOW_SERVICES[0]]
    for name, env in envs.items():
        assert env.get("AIRFLOW__CORE__EXECUTOR") == "CeleryExecutor", name
        for key in SHARED_AIRFLOW_ENV:
            assert env.get(key), f"{name}: {key} not set"
            assert env[key] == first[key], f"{name}: {key} differs from airflow-init's"
        assert svc[name].get("image") == svc["airflow-init"]["image"], f"{name}: another image"
    db = urlsplit(substitute(first["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]))
    assert db.scheme.startswith("postgresql") and db.hostname == "postgres"
    backend = urlsplit(substitute(first["AIRFLOW__CELERY__RESULT_BACKEND"]).removeprefix("db+"))
    assert (backend.hostname, backend.path) == (db.hostname, db.path)
    broker = urlsplit(substitute(first["AIRFLOW__CELERY__BROKER_URL"]))
    assert broker.scheme == "redis" and broker.hostname == "redis"


def test_tasks_reach_the_execution_api_on_the_api_server(svc: dict) -> None:
    url = urlsplit(env_of(svc["airflow-worker"])["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert url.hostname == "airflow-apiserver" and url.path == "/execution/"
    container_ports = {
        str(p["target"]) if isinstance(p, dict) else str(p).rsplit(":", 1)[-1]
        for p in published(svc["airflow-apiserver"])
    }
    assert str(url.port) in container_ports


def test_published_ports_bind_loopback_only(svc: dict) -> None:
    seen = 0
    for name, service in svc.items():
        assert service.get("network_mode") != "host", f"{name}: host networking bypasses this"
        for port in published(service):
            seen += 1
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
            else:
                assert str(port).startswith("127.0.0.1:"), f"{name}: {port!r} is not loopback"
    assert seen >= 3  # UI, Mailpit, S3
    assert "127.0.0.1:" in str(published(svc["airflow-apiserver"])[0])


def test_worker_scales_out(svc: dict) -> None:
    worker = svc["airflow-worker"]
    assert "container_name" not in worker  # a fixed name forbids --scale
    assert not published(worker)  # so does a fixed host port
    replicas = substitute(str(worker["deploy"]["replicas"]))
    assert int(replicas) >= 2
    assert worker.get("stop_grace_period"), "give Celery time for a warm shutdown"


def test_services_have_healthchecks_and_start_in_order(svc: dict) -> None:
    for name in LONG_RUNNING:
        health = svc[name].get("healthcheck") or {}
        assert health.get("test") and not health.get("disable"), f"{name}: no healthcheck"
    for name in AIRFLOW_SERVICES[1:]:
        deps = svc[name]["depends_on"]
        assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
        for base in ("postgres", "redis"):
            assert deps[base]["condition"] == "service_healthy", f"{name} -> {base}"
    assert svc["airflow-worker"]["depends_on"]["airflow-apiserver"]["condition"] == (
        "service_healthy"
    )


# --------------------------------------------------------------------------------------------
# docker-compose.yaml: what the application reads


def test_airflow_init_creates_the_pools_the_send_tasks_use(svc: dict) -> None:
    text = command_text(svc["airflow-init"])
    found = {
        m[1]: (int(m[2]), m[3])
        for m in re.finditer(r'airflow pools set (\S+) (\d+) "([^"]*)"', text)
    }
    assert found == {name: (slots, what) for name, slots, what in demo.POOLS}
    assert set(tasks.POOLS.values()) <= set(found)


def test_airflow_init_script_is_valid_python_and_migrates_the_ledger(svc: dict) -> None:
    text = command_text(svc["airflow-init"])
    body = re.search(r"<<'PY'\n(.*?)\nPY\b", text, re.S)
    assert body, "airflow-init: the python heredoc is missing"
    compile(body[1], "airflow-init", "exec")
    assert "ledger.migrate(config.ledger_url())" in body[1]
    assert text.index("airflow db migrate") < text.index("airflow pools set")


def test_c0_variables_are_set_for_every_airflow_service(svc: dict) -> None:
    for name in AIRFLOW_SERVICES:
        env = env_of(svc[name])
        for key in C0_VARIABLES:
            assert env.get(key), f"{name}: {key} not set"
        assert "DUNNING_NOW" not in env, f"{name}: the demo clock must not reach production"
    env = env_of(svc["airflow-worker"])
    assert env["DUNNING_LAKE"] == f"s3://dunning_s3@{demo.LAKE_BUCKET}/"
    ledger = urlsplit(substitute(env["DUNNING_LEDGER_URL"]))
    metadata = urlsplit(substitute(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]))
    assert ledger.scheme.startswith("postgresql"), "the ledger runs on PostgreSQL here"
    assert ledger.path != metadata.path, "the ledger has its own database"
    config_dir = env["DUNNING_CONFIG"].rsplit("/", 1)[0]
    mounts = [str(v) for v in svc["airflow-worker"]["volumes"]]
    assert any(m.split(":")[-2:] == [config_dir, "ro"] for m in mounts), mounts


def test_ledger_database_and_role_come_from_the_postgres_init_script(svc: dict) -> None:
    ledger = urlsplit(substitute(env_of(svc["airflow-worker"])["DUNNING_LEDGER_URL"]))
    mounts = [str(v) for v in svc["postgres"]["volumes"]]
    assert any(m.startswith("./docker/postgres-init:/docker-entrypoint-initdb.d") for m in mounts)
    scripts = sorted(PG_INIT.glob("*.sh")) + sorted(PG_INIT.glob("*.sql"))
    text = "\n".join(p.read_text(encoding="utf-8") for p in scripts)
    assert f"CREATE ROLE {ledger.username} LOGIN" in text
    assert f"CREATE DATABASE {ledger.path.lstrip('/')} OWNER {ledger.username}" in text
    assert "DUNNING_DB_PASSWORD" in env_of(svc["postgres"])
    assert not re.search(r"PASSWORD\s+'", text), "the ledger password must come from the env"


def _fake_service(name: str, port: int, **extra: str) -> services.Service:
    return services.Service(name, 0, port, f"http://h:{port}", Path("."), dict(extra))


@pytest.mark.parametrize("conn", ["AIRFLOW_CONN_DUNNING_S3", "AIRFLOW_CONN_SMTP_DEFAULT"])
def test_connections_have_the_form_the_application_writes(svc: dict, conn: str) -> None:
    reference = services.airflow_connection_env(
        _fake_service("s3", 8333), _fake_service("smtp", 1025)
    )
    expected = json.loads(reference[conn])
    for name in AIRFLOW_SERVICES:
        raw = env_of(svc[name]).get(conn)
        assert raw, f"{name}: {conn} not set"
        got = json.loads(substitute(raw))
        assert got["conn_type"] == expected["conn_type"], name
        assert set(got) == set(expected), f"{name}: {conn} keys {sorted(got)}"
        assert set(got["extra"]) == set(expected["extra"]), f"{name}: {conn} extra"
    lake_conn = urlsplit(env_of(svc["airflow-worker"])["DUNNING_LAKE"]).username
    assert f"AIRFLOW_CONN_{lake_conn.upper()}" in env_of(svc["airflow-worker"])


def test_sms_connection_points_at_the_sms_service(svc: dict) -> None:
    sms = _fake_service("sms", 8026, account="AC0", token="t")
    expected = json.loads(
        services.airflow_connection_env(None, None, sms=sms)["AIRFLOW_CONN_SMS_DEFAULT"]
    )
    conn = json.loads(substitute(env_of(svc["airflow-worker"])["AIRFLOW_CONN_SMS_DEFAULT"]))
    assert conn["conn_type"] == expected["conn_type"] == "http"
    assert set(conn) == set(expected) and set(conn["extra"]) == set(expected["extra"])
    assert conn["host"] in svc
    assert f"--port={conn['port']}" in command_text(svc[conn["host"]])


def test_s3_and_smtp_connections_point_at_the_compose_services(svc: dict) -> None:
    env = env_of(svc["airflow-worker"])
    s3 = json.loads(substitute(env["AIRFLOW_CONN_DUNNING_S3"]))
    endpoint = urlsplit(s3["extra"]["endpoint_url"])
    assert endpoint.hostname == "seaweedfs"
    assert f"-s3.port={endpoint.port}" in command_text(svc["seaweedfs"])
    smtp = json.loads(substitute(env["AIRFLOW_CONN_SMTP_DEFAULT"]))
    assert smtp["host"] == "mailpit" and smtp["port"] == 1025
    # the S3 server accepts exactly the identity the connection uses, and can do SSE-S3
    weed = env_of(svc["seaweedfs"])
    assert weed["AWS_ACCESS_KEY_ID"] in env["AIRFLOW_CONN_DUNNING_S3"]
    assert weed["AWS_SECRET_ACCESS_KEY"] in env["AIRFLOW_CONN_DUNNING_S3"]
    assert "WEED_S3_SSE_KEK" in weed


# --------------------------------------------------------------------------------------------
# secrets


SECRET_KEYS = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|SSE_KEK")


def test_no_secret_is_written_in_the_compose_file(svc: dict) -> None:
    """Every secret is a ${VAR:?} reference to .env: passwords, keys, and the credentials
    inside database/broker URLs and connection JSON."""
    checked = 0
    for name, service in svc.items():
        for key, value in env_of(service).items():
            if SECRET_KEYS.search(key) and not key.endswith("_FILE"):
                assert INTERPOLATION.fullmatch(value), f"{name}: {key} must be ${{VAR:?}}"
                checked += 1
            marked = INTERPOLATION.sub(lambda m: f"<{m['name']}>", value)
            if "://" in marked:
                password = urlsplit(marked).password
                assert password is None or re.fullmatch(r"<\w+>", password), f"{name}: {key}"
            if key.startswith("AIRFLOW_CONN_"):
                conn = json.loads(value)
                if "password" in conn:
                    assert INTERPOLATION.fullmatch(conn["password"]), f"{name}: {key} password"
                    checked += 1
    assert checked >= 10


def test_env_example_lists_every_required_variable_with_placeholders() -> None:
    needed = required_variables(COMPOSE.read_text(encoding="utf-8"))
    assert {"AIRFLOW_DB_PASSWORD", "DUNNING_DB_PASSWORD", "AIRFLOW_FERNET_KEY"} <= needed
    given = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            given[key] = value
    assert needed <= set(given), f"docker/env.example lacks {sorted(needed - set(given))}"
    for key, value in given.items():
        if SECRET_KEYS.search(key):
            assert value.startswith("replace-with-"), f"env.example: {key} must be a placeholder"


def test_no_env_file_is_committed() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", ".env", "docker/.env"], cwd=REPO, capture_output=True, text=True
    )
    assert tracked.returncode != 0 or not tracked.stdout.strip(), ".env holds secrets"


# --------------------------------------------------------------------------------------------
# docker/Dockerfile


@pytest.fixture(scope="module")
def dockerfile() -> str:
    # comments dropped, continuation lines joined: one instruction per line
    lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()
    text = "\n".join(ln for ln in lines if not ln.lstrip().startswith("#"))
    return re.sub(r"\\\n\s*", " ", text)


def instructions(dockerfile: str, op: str) -> list[str]:
    return [ln.split(None, 1)[1] for ln in dockerfile.splitlines() if ln.startswith(op + " ")]


def test_compose_builds_the_dockerfile(svc: dict) -> None:
    for name in (*AIRFLOW_SERVICES, "sms-sink"):
        build = svc[name]["build"]
        assert (REPO / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


def test_dockerfile_python_matches_the_project(dockerfile: str) -> None:
    (base,) = instructions(dockerfile, "FROM")
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base), base
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert 'requires-python = ">=3.11,<3.12"' in pyproject


def test_dockerfile_installs_the_lock_with_uv(dockerfile: str) -> None:
    copies = instructions(dockerfile, "COPY")
    assert any(c.split()[0] == "requirements.txt" for c in copies)
    runs = " ".join(instructions(dockerfile, "RUN"))
    assert re.search(r"uv\S* pip sync .*requirements\.txt", runs)
    assert "uv==$(sed -n 's/^uv==//p'" in runs  # uv itself at the lock's version
    assert re.search(r"^uv==", (REPO / "requirements.txt").read_text(), re.M)


def test_dockerfile_carries_the_code_where_the_package_finds_it(dockerfile: str) -> None:
    copies = {
        c.split()[-2].rstrip("/"): c.split()[-1].rstrip("/")
        for c in instructions(dockerfile, "COPY")
    }
    for folder in ("dags", "plugins", "include"):
        assert folder in copies, f"Dockerfile does not copy {folder}/"
    root = copies["plugins"].rsplit("/", 1)[0]
    # dunning.config.REPO_ROOT is plugins/..: templates and SQL must sit beside plugins/
    assert copies["include"] == f"{root}/include" and copies["dags"] == f"{root}/dags"
    env = " ".join(instructions(dockerfile, "ENV"))
    assert f"PYTHONPATH={copies['plugins']}" in env
    assert f"AIRFLOW__CORE__DAGS_FOLDER={copies['dags']}" in env
    assert f"AIRFLOW__CORE__PLUGINS_FOLDER={copies['plugins']}" in env
    assert "AIRFLOW_HOME=" in env


def test_dockerfile_runs_as_a_non_root_user(dockerfile: str) -> None:
    users = instructions(dockerfile, "USER")
    assert users and users[-1] not in ("root", "0", "0:0")


def test_dockerfile_has_the_system_packages_letters_and_pgp_need(dockerfile: str) -> None:
    runs = " ".join(instructions(dockerfile, "RUN"))
    # the libraries weasyprint.text.ffi dlopens, and the gpg binary python-gnupg runs
    for package in (
        "libpango-1.0-0",
        "libpangoft2-1.0-0",
        "libharfbuzz0b",
        "libharfbuzz-subset0",
        "libfontconfig1",
        "gnupg",
        "tini",
    ):
        assert re.search(rf"(?<![\w.-]){re.escape(package)}(?![\w.-])", runs), package
    css = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "include").rglob("*.css"))
    if "DejaVu" in css:
        assert "fonts-dejavu-core" in runs
    spec = importlib.util.find_spec("weasyprint")
    assert spec and spec.origin
    ffi = Path(spec.origin).parent / "text" / "ffi.py"
    for lib in ("pango-1.0", "pangoft2-1.0", "harfbuzz-subset", "fontconfig"):
        assert lib in ffi.read_text(encoding="utf-8"), f"weasyprint no longer loads {lib}?"


def test_dockerignore_keeps_what_the_image_copies(dockerfile: str) -> None:
    lines = [
        ln.strip()
        for ln in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    if "*" in lines:
        for source in ("requirements.txt", "dags", "plugins", "include"):
            assert f"!{source}" in lines or f"!{source}/" in lines, source
    assert not {".venv", "var"} & {ln.rstrip("/") for ln in lines if ln.startswith("!")}


# --------------------------------------------------------------------------------------------
# docker compose itself


def compose_command() -> list[str] | None:
    """A Compose v2 CLI: $DUNNING_COMPOSE, `docker compose`, or a v2 `docker-compose`."""
    candidates: list[list[str]] = []
    if os.environ.get("DUNNING_COMPOSE"):
        candidates.append(os.environ["DUNNING_COMPOSE"].split())
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    for exe in (shutil.which("docker-compose"), Path(sys.executable).parent / "docker-compose"):
        if exe and Path(exe).exists():
            candidates.append([str(exe)])
    for cmd in candidates:
        try:
            out = subprocess.run(
                [*cmd, "version"], capture_output=True, text=True, timeout=30, check=False
            )
        except OSError:
            continue
        if out.returncode == 0 and re.search(r"version v?2\.\d+", out.stdout):
            return cmd
    return None


def run_compose(cmd: list[str], *args: str) -> subprocess.CompletedProcess:
    # a clean environment: compose interpolates from the process env before the env file
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    return subprocess.run(
        [*cmd, "--project-directory", str(REPO), "-f", str(COMPOSE), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def compose_cli() -> list[str]:
    cmd = compose_command()
    if cmd is None:
        pytest.skip(
            "no Docker Compose v2 CLI here (`docker compose` plugin or v2 `docker-compose`; "
            "set DUNNING_COMPOSE=/path/to/docker-compose): `docker compose config` not run"
        )
    return cmd


def test_docker_compose_config_accepts_the_file(compose_cli: list[str]) -> None:
    done = run_compose(compose_cli, "--env-file", str(ENV_EXAMPLE), "config", "-q")
    assert done.returncode == 0, done.stderr
    rendered = run_compose(compose_cli, "--env-file", str(ENV_EXAMPLE), "config")
    doc = yaml.safe_load(rendered.stdout)
    assert doc["services"]["airflow-worker"]["deploy"]["replicas"] == 2
    for service in doc["services"].values():
        for port in service.get("ports") or []:
            assert port["host_ip"] == "127.0.0.1", port


def test_docker_compose_refuses_to_start_without_the_secrets(
    compose_cli: list[str], tmp_path: Path
) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    done = run_compose(compose_cli, "--env-file", str(empty), "config", "-q")
    assert done.returncode != 0
    assert "in .env" in done.stderr, done.stderr
