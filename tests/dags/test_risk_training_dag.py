"""dunning_risk_training: DAG policy, and a weekly run end to end through ``dag.test()``."""

from __future__ import annotations

import json
from datetime import date

import pytest
import yaml

from dunning.generate import generate

AS_OF = date(2026, 11, 23)


def test_risk_dag_shape_and_policy(dagbag):
    assert dagbag.import_errors == {}
    dag = dagbag.dags["dunning_risk_training"]
    assert set(dag.tags) == {"dunning", "risk", "weekly"}
    assert dag.doc_md and "latest_approved" in dag.doc_md
    assert dag.max_active_runs == 1 and not dag.catchup
    order = [t.task_id for t in dag.topological_sort()]
    assert order.index("load_history") < order.index("train") < order.index("report")
    for task in dag.tasks:
        assert task.retries >= 2 and task.owner == "collections"
    as_of = dag.params.get_param("as_of")
    assert as_of.value is None and "null" in as_of.schema["type"]
    assert as_of.schema["format"] == "date" and as_of.schema.get("description_md")


def test_weekly_schedule_in_config_time_zone(tmp_path, monkeypatch):
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "portfolio": {"name": "T"},
                "schedule": {"timezone": "Europe/Paris"},
                "sources": [{"name": "erp", "path": "a.csv", "columns": {"a": "invoice_id"}}],
            }
        )
    )
    monkeypatch.setenv("DUNNING_CONFIG", str(config))
    from dunning.airflow.risk_tasks import WEEKLY_CRON, weekly_schedule

    timetable = weekly_schedule()
    assert (timetable.expression, str(timetable.timezone)) == (WEEKLY_CRON, "Europe/Paris")


@pytest.mark.airflow
def test_weekly_training_run_end_to_end(airflow_db, tmp_path, monkeypatch):
    from dunning.airflow.run import run_dag

    folder = tmp_path / "portfolio"
    generate(folder, debtors=1500, as_of=AS_OF, seed=3)
    config = folder / "config.yaml"
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw["history"] = {  # not written by the generator yet
        "invoices": "invoice_history.csv",
        "payments": "payments.csv",
        "contacts": "contact_history.csv",
        "compliance_events": "compliance_events.csv",
    }
    config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    lake_dir = tmp_path / "lake"
    monkeypatch.setenv("DUNNING_CONFIG", str(config))
    monkeypatch.setenv("DUNNING_LAKE", lake_dir.as_uri())
    monkeypatch.setenv("DUNNING_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.sqlite'}")

    state, tasks = run_dag("dunning_risk_training", {"as_of": AS_OF.isoformat()})
    assert state == "success", tasks
    assert set(tasks) == {"resolve_run", "load_history", "train", "report"}

    report = json.loads(
        (lake_dir / "reports" / f"as_of={AS_OF}" / "risk_training.json").read_text()
    )
    assert report["history"]["loaded"]["invoices"] > 10_000
    assert (lake_dir / report["history"]["quarantine"]).exists()
    version = report["model"]["version"]
    assert (lake_dir / "models" / "risk" / f"version={version}" / "model.joblib").exists()
    if report["model"]["approved"]:
        latest = json.loads((lake_dir / "models" / "risk" / "latest_approved.json").read_text())
        assert latest["version"] == version
