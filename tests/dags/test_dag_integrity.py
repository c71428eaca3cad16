"""Every DAG imports, and follows the team's policy: tags, owner, retries, documented params."""

from __future__ import annotations

import ast
import copy
from datetime import date
from pathlib import Path

import pytest

from tests.conftest import REPO

DAG_FILES = sorted((REPO / "dags").glob("*.py"))
# Tasks that write the run's outcome and then fail on purpose when it stopped: a retry would
# only repeat that.
REPORTS_OUTCOME = {"summarize"}


def test_dags_import_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "dunning_daily" in dagbag.dag_ids


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_files_are_thin(path: Path):
    """DAG files wire tasks; logic lives in plugins/dunning, so no function bodies do work here."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imports = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not {"pandas", "sqlalchemy", "boto3"} & imports


def test_every_task_retries_and_is_owned(dagbag):
    for dag in dagbag.dags.values():
        assert dag.tags, dag.dag_id
        assert dag.doc_md and len(dag.doc_md) > 200, dag.dag_id
        for task in dag.tasks:
            if task.task_id not in REPORTS_OUTCOME:
                assert task.retries >= 2, f"{dag.dag_id}.{task.task_id}"
            assert task.owner == "collections"


def test_daily_dag_shape(dagbag):
    dag = dagbag.dags["dunning_daily"]
    assert set(dag.tags) >= {"dunning", "daily"}
    assert dag.max_active_runs == 1 and not dag.catchup
    order = [t.task_id for t in dag.topological_sort()]
    assert order.index("extract") < order.index("validate") < order.index("load_ledger")
    assert order.index("load_ledger") < order.index("summarize")
    # money that came in is reconciled before anyone is aged, planned or contacted
    assert order.index("load_ledger") < order.index("reconcile") < order.index("age")
    assert "reconcile" in dag.get_task("age").upstream_task_ids
    assert dag.get_task("extract").is_mapped  # one task per configured source
    # nobody is contacted before the gate, and the gate sees the channels' feedback first
    assert order.index("collect_feedback") < order.index("comply") < order.index("prepare_wave")
    for sender in ("send_email", "send_sms", "send_letters", "queue_calls"):
        assert order.index("prepare_wave") < order.index(sender) < order.index("summarize")
    # agencies' returns are in before placing; placed debtors are out before anyone is planned
    assert order.index("agency_returns") < order.index("place") < order.index("plan")
    assert "place" in dag.get_task("plan").upstream_task_ids


def test_placement_files_are_an_asset_the_notify_dag_consumes(dagbag):
    from airflow.sdk import Asset

    place = dagbag.dags["dunning_daily"].get_task("place")
    (outlet,) = place.outlets
    assert isinstance(outlet, Asset) and outlet.name == "dunning_placement_files"
    notify = dagbag.dags["dunning_agency_notify"]
    assert list(notify.timetable.asset_condition.objects) == [outlet]
    assert [t.task_id for t in notify.tasks] == ["notify_agencies"]


def test_senders_run_in_provider_pools(dagbag):
    """Pools cap concurrent calls per provider; the demo and the README create them."""
    from dunning.airflow.tasks import POOLS
    from dunning.demo import POOLS as CREATED

    dag = dagbag.dags["dunning_daily"]
    pools = {
        dag.get_task(t).pool for t in ("send_email", "send_sms", "send_letters", "queue_calls")
    }
    assert pools == set(POOLS.values())
    assert pools <= {name for name, _, _ in CREATED}


def test_daily_dag_params_for_finance(dagbag):
    params = dagbag.dags["dunning_daily"].params
    assert set(params.keys()) >= {"as_of", "sources", "dry_run", "force_send", "force_reason"}
    as_of = params.get_param("as_of")
    assert as_of.value is None  # a run without a date uses the scheduled date
    assert as_of.schema["format"] == "date"
    assert "null" in as_of.schema["type"]
    for name in ("as_of", "sources", "dry_run", "force_send", "force_reason"):
        assert params.get_param(name).schema.get("description_md"), name
        assert params.get_param(name).schema.get("section"), name  # grouped in the form
    assert "enum" not in params.get_param("sources").schema["items"]  # no config yet: free


def test_sources_are_a_pick_list_of_the_configured_ones(tmp_path, monkeypatch):
    from tests.factories import invoice, write_portfolio

    monkeypatch.setenv("DUNNING_CONFIG", str(write_portfolio(tmp_path, [invoice("INV-1")])))
    from dunning import config as dconfig
    from dunning.airflow.tasks import sources_param

    names = [s.name for s in dconfig.load_config().sources]
    assert sources_param().schema["items"]["enum"] == names


def test_bad_params_are_refused(dagbag):
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dagbag.dags["dunning_daily"].params)
    with pytest.raises(ParamValidationError):
        params["dry_run"] = "notabool"
        params.validate()


def test_schedule_follows_config_time_zone(tmp_path, monkeypatch):
    from tests.factories import invoice, write_portfolio

    cfg = write_portfolio(tmp_path, [invoice("INV-1")])
    cfg.write_text(cfg.read_text() + "schedule: {cron: '30 5 * * 1-5', timezone: Europe/Paris}\n")
    monkeypatch.setenv("DUNNING_CONFIG", str(cfg))
    from dunning.airflow.tasks import daily_schedule

    timetable = daily_schedule()
    assert (timetable.expression, str(timetable.timezone)) == ("30 5 * * 1-5", "Europe/Paris")


def test_alerts_follow_config(tmp_path, monkeypatch):
    """Recipients in config: one failure mail per run and a deadline after the configured time;
    without recipients, neither (the UI still shows the run's state)."""
    from tests.factories import invoice, write_portfolio

    cfg = write_portfolio(tmp_path, [invoice("INV-1")])
    base = cfg.read_text()
    monkeypatch.setenv("DUNNING_CONFIG", str(cfg))
    from dunning.airflow import alerts

    assert alerts.on_failure() == [] and alerts.deadline("dunning_daily") is None
    cfg.write_text(base + "alerts: {email_to: [ops@example.com], finish_within_minutes: 45}\n")
    assert len(alerts.on_failure()) == 1
    late = alerts.deadline("dunning_daily")
    assert late.interval.total_seconds() == 45 * 60
    assert type(late.reference).__name__ == "DagRunQueuedAtDeadline"
    assert late.callback.kwargs["to"] == ["ops@example.com"]
    assert "45 minutes" in late.callback.kwargs["subject"]
    assert late.callback.path.endswith("SmtpNotifier")  # the triggerer imports it by path


def test_report_tab_serves_the_runs_report(tmp_path, monkeypatch):
    """The plugin adds a Report tab to DAG runs and its app serves the report from the lake."""
    from fastapi.testclient import TestClient

    monkeypatch.setenv("DUNNING_LAKE", (tmp_path / "lake").as_uri())
    from dunning import lake
    from dunning.reports import daily
    from dunning_ui import DunningReports

    (view,) = DunningReports.external_views
    assert view["destination"] == "dag_run" and "{RUN_ID}" in view["href"]
    (mounted,) = DunningReports.fastapi_apps
    root = lake.root((tmp_path / "lake").as_uri())
    run_id = "scheduled__2026-03-31T10:00:00+00:00"
    key = daily.report_key(date(2026, 3, 31))
    lake.write_bytes(root / key, b"<html><title>Dunning report 2026-03-31</title></html>")
    lake.write_json(root / daily.run_index_key(run_id), {"as_of": "2026-03-31", "report": key})
    client = TestClient(mounted["app"])
    found = client.get(f"/runs/{run_id}")
    assert found.status_code == 200 and "Dunning report 2026-03-31" in found.text
    assert client.get("/reports/2026-03-31").text == found.text
    missing = client.get("/runs/manual__other")
    assert missing.status_code == 404 and "summarize" in missing.text
    assert client.get("/reports/not-a-date").status_code == 400


def test_readme_run_confs_fill_valid_params(dagbag):
    """The README's run confs for finance still match the form: known params, valid values,
    and a reason wherever sending is forced."""
    import json
    import re

    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Ad-hoc runs and backfills") :]
    confs = [json.loads(c) for c in re.findall(r"^\| [^|]+ \| `(\{.*\})` \|$", section, re.M)]
    assert len(confs) >= 4
    for conf in confs:
        params = copy.deepcopy(dagbag.dags["dunning_daily"].params)
        assert set(conf) <= set(params.keys()), conf
        for key, value in conf.items():
            params[key] = value
        params.validate()
        assert not conf.get("force_send") or conf.get("force_reason"), conf


def test_every_side_effect_asks_the_run_mode(dagbag):
    """One definition of "may act": every task that reaches outside the lake (an outlet, a
    provider pool, a publish) is listed in ``SIDE_EFFECTS`` and asks the run's mode, so a dry
    run, a backfill or a late run cannot send, place, publish or instruct by way of a new task."""
    import inspect
    import re

    from dunning.airflow import tasks

    def with_helpers(source: str) -> str:  # the task's own helpers too (``_send``)
        names = set(re.findall(r"\b(_[a-z]\w*)\(", source)) - {"_mode"}
        helpers = [getattr(tasks, n) for n in sorted(names) if callable(getattr(tasks, n, None))]
        return "\n".join([source, *(inspect.getsource(h) for h in helpers)])

    for dag in dagbag.dags.values():
        if not dag.dag_id.startswith("dunning_"):
            continue
        for task in dag.tasks:
            source = with_helpers(inspect.getsource(task.python_callable))
            reaches_out = (
                bool(task.outlets)
                or task.pool != "default_pool"
                or any(
                    word in source
                    for word in (
                        "publish=",
                        "portal_root=",
                        "send_wave",
                        "instruct=",
                        "load_returns",
                    )
                )
            )
            if task.task_id == "notify_agencies":  # runs only on a published delivery's event
                continue
            if reaches_out:
                assert task.task_id in tasks.SIDE_EFFECTS, f"{dag.dag_id}.{task.task_id}"
            if task.task_id in tasks.SIDE_EFFECTS:
                assert "acts(run)" in source or "_mode(run)" in source, task.task_id


@pytest.mark.parametrize(
    ("run", "today", "mode"),
    [
        ({"as_of": "2026-11-23"}, date(2026, 11, 23), "live"),
        ({"as_of": "2026-11-23", "dry_run": True}, date(2026, 11, 23), "dry_run"),
        ({"as_of": "2026-11-20", "backfill": True}, date(2026, 11, 23), "backfill"),
        # a scheduled run cleared and started days later: not a backfill, but its day is over
        ({"as_of": "2026-11-20"}, date(2026, 11, 23), "late"),
        ({"as_of": "2026-11-20", "force_send": True}, date(2026, 11, 23), "forced"),
        (
            {"as_of": "2026-11-20", "backfill": True, "force_send": True},
            date(2026, 11, 23),
            "forced",
        ),
        (
            {"as_of": "2026-11-20", "dry_run": True, "force_send": True},
            date(2026, 11, 23),
            "dry_run",
        ),
    ],
)
def test_the_run_mode_decides_once_whether_a_run_may_act(run, today, mode):
    from dunning.runs import acts, run_mode

    full = {"backfill": False, "dry_run": False, "force_send": False, **run}
    assert run_mode(full, today) == mode
    assert acts({**full, "mode": mode}) is (mode in ("live", "forced"))
