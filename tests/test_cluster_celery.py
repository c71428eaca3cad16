"""Scale-out and the UI on a real CeleryExecutor deployment: Redis, PostgreSQL, two workers.

Where Docker cannot run, ``dunning.cluster`` starts what ``docker-compose.yaml`` describes as
plain processes on 127.0.0.1: Debian's ``redis-server`` as the Celery broker, the session's
PostgreSQL for the metadata DB (and the Celery result backend), the API server, scheduler,
DAG processor and triggerer, and two ``airflow celery worker`` with their own node names
(``dunning-1@127.0.0.1``, ``dunning-2@127.0.0.1``).  They run as separate processes rather
than ``airflow standalone`` on purpose: standalone's log servers bind every interface (their
host is hard-coded), so the components run with ``--skip-serve-logs`` and the API server reads
the task logs from local disk; the last test checks that nothing listens beyond loopback.

The ledger is on PostgreSQL, the lake on the session's SeaweedFS bucket, the SMTP server and
SMS provider are the real local ones, and the portfolio is a small generated one for today's
business date.  Runs are dry runs: nobody is contacted and the ledger claims nothing, so the
single-process re-render below sees the same contacts as the cluster did.

What it shows:

* the debtor shards of one run (``render_shard``, ``channels.render_shards`` = 2) ran on the
  two different workers -- the task instances record the worker's node name as their hostname
  (``AIRFLOW__CORE__HOSTNAME_CALLABLE=dunning.cluster.celery_worker_hostname``), and each
  worker's own log names the shard it executed -- and their merged wave is the wave one
  process renders for the same day;
* a finance user's path in headless Chromium: sign in, fill the trigger form, press Trigger,
  the run goes green in the graph, and its Report tab shows the day's KPIs.  Screenshots go
  to ``var/screenshots/ui-*.png``.

Without Redis, Chromium or PostgreSQL the tests skip with the reason; under ``CI=true`` they
fail instead (``scripts/test.sh`` installs all three as root).
"""

from __future__ import annotations

import io
import json
import re
import shutil
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from dunning import lake, ledger, waves
from dunning.cluster import Cluster, running_cluster
from dunning.config import load_config
from dunning.demo import demo_clock, use_sms_feedback
from dunning.generate import generate
from dunning.reports import summary_key
from dunning.services import LOOPBACK
from tests.cluster_support import deployment_inputs
from tests.pinned import TODAY
from tests.services_fixtures import _in_ci

pytestmark = [
    pytest.mark.services,
    pytest.mark.airflow,
    pytest.mark.cluster,
    pytest.mark.timeout(900),
]

DAG_ID = "dunning_daily"
DEBTORS = 150  # small and fast; about the least for every feed to have rows
WORKERS = 2
SHARDS = 2  # channels.render_shards of the generated config
SCREENSHOTS = Path(__file__).resolve().parents[1] / "var" / "screenshots"
# Wave columns that do not depend on the random page tokens (the text is compared with them masked).
STABLE = ["contact_key", "debtor_id", "channel", "template", "recipient", "subject", "balance"]
# What a Celery worker logs when it starts a task instance (celery provider, execute_workload).
_WORKLOAD = re.compile(
    r"Executing workload in Celery: .*?log_path='dag_id=(?P<dag>[^/]+)/run_id=(?P<run>[^/]+)/"
    r"task_id=(?P<task>[^/]+)/(?:map_index=(?P<index>\d+)/)?attempt="
)


def _missing(message: str) -> None:
    """Skip on a laptop without the part; fail under CI, which must run these tests."""
    if _in_ci():
        pytest.fail(f"{message}; CI must run the Celery and UI tests", pytrace=False)
    pytest.skip(message)


def _node(worker: str) -> str:
    """The Celery node name ``dunning.cluster`` gives component ``worker-N``."""
    return f"dunning-{worker.removeprefix('worker-')}@{LOOPBACK}"


@pytest.fixture(scope="module")
def celery_setup(
    tmp_path_factory, postgres_server, s3_server, smtp_server, sms_server
) -> Iterator[dict]:
    """Today's portfolio, an empty migrated PostgreSQL ledger and a fresh bucket."""
    if shutil.which("redis-server") is None:
        _missing("redis-server is not installed (apt-get install -y redis-server)")
    root = tmp_path_factory.mktemp("celery")
    generate(root / "portfolio", debtors=DEBTORS, as_of=TODAY, seed=11)
    config = root / "portfolio" / "config.yaml"
    use_sms_feedback(config, Path(sms_server.extra["dir"]))
    assert load_config(config).channels.render_shards == SHARDS
    with deployment_inputs(
        "celery", config, demo_clock(TODAY), postgres_server, s3_server, smtp_server, sms_server
    ) as inputs:
        # Task instances record which worker ran them (both share this machine's hostname).
        inputs["env"]["AIRFLOW__CORE__HOSTNAME_CALLABLE"] = "dunning.cluster.celery_worker_hostname"
        yield {**inputs, "root": root, "config": config}


@pytest.fixture(scope="module")
def cluster(celery_setup, postgres_server) -> Cluster:
    with running_cluster(
        celery_setup["root"] / "deployment",
        env=celery_setup["env"],
        executor="CeleryExecutor",
        workers=WORKERS,
        postgres=postgres_server,
    ) as deployment:
        deployment.wait_for_dag(DAG_ID)
        deployment.unpause(DAG_ID)
        print(f"\nCelery deployment up: {deployment.timings}")
        yield deployment


def finished(cluster: Cluster, run_id: str, timeout: float = 480) -> dict[str, Any]:
    """Wait until every run of the DAG so far (``max_active_runs`` is 1) has finished; the run."""
    runs = cluster.wait_for_runs(
        DAG_ID, len(cluster.dag_runs(DAG_ID)), run_type=None, timeout=timeout
    )
    return next(r for r in runs if r["dag_run_id"] == run_id)


def workers_in_logs(cluster: Cluster, run_id: str, task_id: str) -> dict[int, set[str]]:
    """map index -> the workers (``worker-N``) whose own log says they executed it."""
    found: dict[int, set[str]] = {}
    for name, log in cluster.logs.items():
        if not name.startswith("worker-"):
            continue
        for match in _WORKLOAD.finditer(log.read_text(errors="replace")):
            if (match["dag"], match["run"], match["task"]) == (DAG_ID, run_id, task_id):
                found.setdefault(int(match["index"] or -1), set()).add(name)
    return found


def read_parquet(client, bucket: str, key: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(client.get_object(Bucket=bucket, Key=key)["Body"].read()))


def masked_text(wave: pd.DataFrame) -> list[str | None]:
    """Message texts with each message's random page token replaced by a placeholder."""
    tokens = wave["page_key"].str.split("/").str[1]
    out: list[str | None] = []
    for text, token in zip(wave["text"], tokens, strict=True):
        if not isinstance(text, str):
            out.append(None)  # a channel without text (NaN and None alike)
        else:
            out.append(text.replace(token, "<token>") if isinstance(token, str) else text)
    return out


def single_process_wave(setup: dict, summary: dict, workdir: Path) -> pd.DataFrame:
    """The day's wave rendered in one process (shard 0 of 1) from the run's plan and decisions,
    into a local lake of its own so the cluster's artefacts stay as they are."""
    client, bucket = setup["client"], setup["bucket"]
    for key in (summary["plan_file"], summary["decisions_file"]):
        target = workdir / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    root = lake.root(workdir.as_uri())
    with ledger.ledger(setup["ledger_url"]) as engine:
        one = waves.prepare_wave(
            load_config(setup["config"]),
            TODAY,
            root,
            engine,
            plan_key=summary["plan_file"],
            decisions_key=summary["decisions_file"],
            mode=waves.Mode(False, "dry_run"),
            shard=(0, 1),
        )
    return lake.read_parquet(root / one["wave"])


def test_debtor_shards_of_one_run_spread_over_both_workers_with_the_single_worker_result(
    cluster, celery_setup, tmp_path
):
    client, bucket = celery_setup["client"], celery_setup["bucket"]
    run_id = cluster.api(
        "POST",
        f"dags/{DAG_ID}/dagRuns",
        {
            "logical_date": None,
            "run_after": demo_clock(TODAY),  # due on the pinned day, as the product clock says
            "conf": {"as_of": TODAY.isoformat(), "dry_run": True},
        },
    )["dag_run_id"]
    run = finished(cluster, run_id)
    tasks = cluster.task_states(DAG_ID)[run_id]
    assert run["state"] == "success", {t: s for t, s in tasks.items() if s != "success"}

    # Which worker ran each shard: the task instances' hostnames (what the UI shows) ...
    shards = sorted(
        (
            ti
            for ti in cluster.task_instances(DAG_ID)
            if ti["dag_run_id"] == run_id and ti["task_id"] == "render_shard"
        ),
        key=lambda ti: ti["map_index"],
    )
    assert [ti["map_index"] for ti in shards] == list(range(SHARDS))
    hosts = {ti["map_index"]: ti["hostname"] for ti in shards}
    nodes = {_node(f"worker-{n}") for n in range(1, WORKERS + 1)}
    timing = {ti["map_index"]: (ti["hostname"], ti["start_date"], ti["end_date"]) for ti in shards}
    assert set(hosts.values()) <= nodes, hosts
    assert len(set(hosts.values())) == SHARDS, f"both shards ran on one worker: {timing}"
    # ... and each worker's own log, which names the shard it executed.
    logged = workers_in_logs(cluster, run_id, "render_shard")
    assert {k: {_node(w) for w in ws} for k, ws in logged.items()} == {
        k: {h} for k, h in hosts.items()
    }, logged
    print(f"\nrender_shard on: {timing}")

    summary = json.loads(client.get_object(Bucket=bucket, Key=summary_key(TODAY))["Body"].read())
    assert summary["run_id"] == run_id
    assert summary["status"] == "complete", summary
    assert summary["dry_run"] is True and summary["messages_sent"] == {}, summary
    assert sum(summary["messages_previewed"].values()) > 0, "the day has contacts due"

    # Each shard rendered its own debtors, and both had some: the work really was split.
    parts = [
        read_parquet(client, bucket, waves.wave_key(TODAY, sending=False, shard=k))
        for k in range(SHARDS)
    ]
    assert all(len(part) > 0 for part in parts), [len(p) for p in parts]
    debtors = [set(part["debtor_id"]) for part in parts]
    assert not debtors[0] & debtors[1]
    for k, ids in enumerate(debtors):
        assert (waves.shard_of(pd.Series(sorted(ids), dtype="str"), SHARDS) == k).all()

    # The merged wave the senders read is the wave a single worker renders for the day.
    merged = read_parquet(client, bucket, waves.wave_key(TODAY, sending=False))
    merged = merged.sort_values("contact_key", ignore_index=True)
    single = single_process_wave(celery_setup, summary, tmp_path / "single")
    single = single.sort_values("contact_key", ignore_index=True)
    assert len(merged) == sum(len(part) for part in parts) == len(single) > 0
    pd.testing.assert_frame_equal(merged[STABLE], single[STABLE])
    assert masked_text(merged) == masked_text(single)


# ---- the UI, in headless Chromium


def sign_in(page, cluster: Cluster, url: str) -> None:
    """Open ``url`` in a fresh browser context: the UI sends it to SimpleAuthManager's sign-in
    form, and after signing in as the cluster's admin, back to ``url``."""
    page.goto(url)
    page.get_by_label("Username").fill(cluster.username)
    page.get_by_label("Password").fill(cluster.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(url)


def form_conf(dialog) -> dict:
    """The JSON the trigger form will send, as its *Advanced Options* editor shows it."""
    dialog.get_by_role("button", name="Advanced Options").click()
    lines = dialog.locator(".monaco-editor .view-lines")
    lines.wait_for()
    return json.loads(lines.inner_text().replace("\xa0", " "))


def test_trigger_form_in_chromium_runs_the_dag_and_shows_the_report(cluster):
    from playwright.sync_api import expect, sync_playwright

    from tests.browser import CHROMIUM_ARGS, TIMEOUT_MS, chromium_path

    executable = chromium_path()
    if executable is None:
        _missing("Chromium is not installed (apt-get install --no-install-recommends chromium)")
    expect.set_options(timeout=TIMEOUT_MS)  # a loaded 2-core machine renders slowly
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    dag_page = f"{cluster.url}/dags/{DAG_ID}"
    started, phases = time.monotonic(), {}

    def phase(name: str) -> None:
        phases[name] = round(time.monotonic() - started - sum(phases.values()), 1)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=list(CHROMIUM_ARGS)
        )
        try:
            context = browser.new_context(
                viewport={"width": 1280, "height": 1600}, device_scale_factor=1
            )
            context.set_default_timeout(TIMEOUT_MS)
            page = context.new_page()
            sign_in(page, cluster, dag_page)

            # The trigger form: today's date, dry run; everything else as the form offers it.
            page.get_by_test_id("trigger-dag-button").click()
            dialog = page.get_by_role("dialog")
            expect(dialog).to_contain_text(f"Trigger Dag - {DAG_ID}")
            dialog.get_by_role("button", name="What to run").click()
            dialog.locator("#element_as_of").fill(TODAY.isoformat())
            dialog.locator("label:has(input[name=element_dry_run])").click()
            expect(dialog.locator("input[name=element_dry_run]")).to_be_checked()
            conf = form_conf(dialog)
            assert conf["as_of"] == TODAY.isoformat() and conf["dry_run"] is True, conf
            assert conf["force_send"] is False, conf
            dialog.screenshot(path=str(SCREENSHOTS / "ui-trigger-form.png"))
            submit = dialog.get_by_test_id("trigger-dag-submit")
            # A typed param whose default is empty (a "" string) counts as missing: the form
            # marks it required and keeps Trigger disabled until one types something in.
            assert submit.is_enabled(), f"Trigger stays disabled for the form's conf {conf}"
            submit.click()
            phase("sign in, fill, trigger")
            # The UI goes to the new run's page.
            page.wait_for_url(re.compile(rf"/dags/{DAG_ID}/runs/[^/]+$"))
            run_id = urllib.parse.unquote(page.url.rsplit("/", 1)[1])

            run = finished(cluster, run_id)
            assert run["run_type"] == "manual" and run["conf"]["dry_run"] is True, run
            assert run["state"] == "success", cluster.task_states(DAG_ID)[run_id]
            phase("run")

            # The run page, as the user sees it after the run: green, with a Report tab.
            page.reload()
            expect(page.get_by_text("Success").first).to_be_visible()
            report_tab = page.get_by_role("link", name="Report", exact=True)
            expect(report_tab).to_be_visible()
            assert report_tab.get_attribute("href").endswith("/plugin/dunning_report")
            report_tab.click()
            report = page.frame_locator("iframe").first.locator("body")
            expect(report).to_contain_text("Dunning report")
            expect(report).to_contain_text("DSO")
            expect(report).to_contain_text(run_id)  # this run's report, not another's
            page.screenshot(path=str(SCREENSHOTS / "ui-report.png"))
            phase("report tab")

            # The graph of the run, top to bottom so a screenshot can show every task.
            page.get_by_role("button", name="Show Graph").click()
            page.get_by_role("button", name="Options").click()
            page.get_by_role("combobox", name="Graph Direction").click()
            page.get_by_role("option", name="Top to Bottom").click()
            page.keyboard.press("Escape")
            page.get_by_role("button", name="Collapse Details Panel").click()
            page.get_by_role("button", name="Fit View").click()
            nodes = page.locator(".react-flow__node")
            expect(nodes.filter(has_text="summarize")).to_contain_text("success")
            expect(nodes.filter(has_text="render_shard")).to_contain_text(f"[{SHARDS}]")
            texts = nodes.all_inner_texts()
            names = {text.split()[0] for text in texts}
            assert {"resolve_run", "render_shard", "prepare_wave", "summarize"} <= names, texts
            assert all("success" in text for text in texts), texts
            page.wait_for_timeout(500)  # the fit-view transition
            page.screenshot(path=str(SCREENSHOTS / "ui-run-graph.png"))
            phase("graph")
            context.close()
        finally:
            browser.close()
    print(f"\nUI test phases (s): {phases}")


def test_nothing_listens_beyond_loopback(cluster):
    found = cluster.listeners()
    assert {address for address, _, _ in found} == {LOOPBACK}, found
    owners = {owner for _, _, owner in found}
    assert {"api-server", "redis"} <= owners, found
    # Neither the workers nor the scheduler serve logs (they would bind 0.0.0.0:8793).
    assert not {"scheduler", "triggerer", "worker-1", "worker-2"} & owners, found
