"""
### Dunning — weekly risk-model training

Learns, from the AR system's history, the probability that a debtor pays the overdue balance
within `risk.horizon_days` (config) without escalation. One run is one **business date**
(`as_of`):

1. **load_history** replaces the ledger's history tables (invoices, payments, contacts,
   compliance events) with the exports named in the config's `history:` section; bad rows are
   quarantined with file, line, field and reason in `quarantine/as_of=…/history.parquet`;
2. **train** builds point-in-time snapshots at month ends, backtests on the last
   `risk.test_months` months, and writes `models/risk/version=…/` (model + `meta.json` with AUC,
   Brier score, calibration, top-decile lift and the best single-feature AUC). A model is
   **approved** only if its AUC reaches `risk.min_auc` *and* beats the best single feature; only
   then does `models/risk/latest_approved.json` point at it. The daily run scores with the newest
   approved model and falls back to a rules score when there is none;
3. **report** writes `reports/as_of=…/risk_training.json`.

**Params**: leave *as_of* empty for the scheduled date; a past date trains as of that date
(labels only from before it), which does not demote a newer approved model.

Config, ledger and lake come from `DUNNING_CONFIG`, `DUNNING_LEDGER_URL`, `DUNNING_LAKE`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag

from dunning.airflow import risk_tasks as r
from dunning.airflow import tasks as t


@dag(
    dag_id="dunning_risk_training",
    schedule=r.weekly_schedule(),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={**t.DEFAULT_ARGS, "retry_delay": timedelta(minutes=10)},
    params={
        "as_of": t.as_of_param(
            "Empty: the scheduled date. A past date trains on history before it."
        ),
    },
    tags=["dunning", "risk", "weekly"],
    doc_md=__doc__,
)
def dunning_risk_training() -> None:
    run = t.resolve_run()
    loaded = r.load_history(run=run)
    trained = r.train(run=run, loaded=loaded)
    r.report(run=run, loaded=loaded, trained=trained)


dunning_risk_training()
