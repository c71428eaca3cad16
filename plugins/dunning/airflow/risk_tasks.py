"""Task callables of the weekly risk-training DAG: load history, train, report.

Glue only, like ``dunning.airflow.tasks`` (whose lake, ledger and retry helpers it reuses): each
task calls one core function and returns a small dict of lake keys and figures for XCom.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from airflow.sdk import CronTriggerTimetable, task

from dunning import config as dconfig
from dunning.airflow.tasks import DATA_ERRORS, _as_of, _ledger_url, lake_root, parse_time_config

log = logging.getLogger("airflow.task")

# Sunday 04:00 in the portfolio's zone: before Monday's daily run picks up the new model.
WEEKLY_CRON = "0 4 * * 0"


def weekly_schedule() -> CronTriggerTimetable:
    """Weekly, in the config's time zone; UTC when no config exists yet (fresh UI)."""
    cfg = parse_time_config()
    zone = cfg.schedule.timezone if cfg else "UTC"
    return CronTriggerTimetable(WEEKLY_CRON, timezone=zone)


@task(retry_policy=DATA_ERRORS, execution_timeout=timedelta(hours=2))
def load_history(run: dict) -> dict:
    """Replace the ledger's history tables with the configured exports (bad rows quarantined)."""
    from dunning import history, ledger

    cfg = dconfig.load_config()
    with ledger.ledger(_ledger_url()) as engine:
        result = history.load_history(cfg, engine, lake_root(), _as_of(run))
    log.info(
        "History loaded %s; quarantined %s (%s)",
        result["loaded"],
        result["quarantined"],
        result["quarantine"],
    )
    return result


@task(retry_policy=DATA_ERRORS, execution_timeout=timedelta(hours=2))
def train(run: dict, loaded: dict) -> dict:
    """Backtest and refit the model; approve it only if it beats the rules and ``min_auc``."""
    from dunning import ledger, risk

    cfg = dconfig.load_config()
    with ledger.ledger(_ledger_url()) as engine:
        meta = risk.train(cfg, engine, lake_root(), _as_of(run))
    m = meta["metrics"]
    log.info(
        "Model %s: AUC %.3f (best single feature %s %.3f), Brier %.3f, lift %.2f, approved=%s",
        meta["version"],
        m["auc"],
        m["best_single_feature"],
        m["best_single_feature_auc"],
        m["brier"],
        m["top_decile_lift"],
        meta["approved"],
    )
    return {
        "version": meta["version"],
        "approved": meta["approved"],
        "latest_updated": meta["latest_updated"],
        "auc": m["auc"],
        "best_single_feature_auc": m["best_single_feature_auc"],
        "model_key": meta["model_key"],
        "meta_key": meta["meta_key"],
    }


@task
def report(run: dict, loaded: dict, trained: dict) -> dict:
    """One JSON per training run, next to the daily summaries, for the team and the UI logs."""
    from dunning import lake

    key = lake.partition("reports", _as_of(run)) + "/risk_training.json"
    meta = lake.read_json(lake_root() / trained["meta_key"])
    lake.write_json(
        lake_root() / key,
        {
            "as_of": run["as_of"],
            "run_id": run["run_id"],
            "history": {k: loaded[k] for k in ("read", "loaded", "quarantined", "quarantine")},
            "model": {k: meta[k] for k in ("version", "approved", "test_dates", "rows", "metrics")},
            "latest_updated": trained["latest_updated"],
        },
    )
    log.info("Risk training report at %s", key)
    return {"key": key, "version": trained["version"], "approved": trained["approved"]}
