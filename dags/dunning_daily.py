"""
### Dunning — daily collections run

One run is one **business date** (`as_of`). Today it:

1. **extract** each configured AR source (one mapped task per source: ERP exports, SQL systems,
   the customer master) into the lake as-is;
2. **validate** the rows: bad rows are *quarantined* with file, line, field and reason (see
   `quarantine/as_of=…/quarantine.csv` in the lake), and a source that is empty, stale, off its
   control totals or jumped against the previous snapshot **stops the run** before anyone is
   contacted;
3. **load_ledger** the clean snapshot into the ledger (re-running a date replaces it);
4. **summarize** into `reports/as_of=…/summary.json` (contract C3).

**Params**: leave *as_of* empty for the scheduled date; a past date is a backfill. *sources*
limits the run to some sources. *dry_run* records that nothing may be sent.

Config, ledger and lake come from `DUNNING_CONFIG`, `DUNNING_LEDGER_URL`, `DUNNING_LAKE`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag

from dunning.airflow import tasks as t


@dag(
    dag_id="dunning_daily",
    schedule=t.daily_schedule(),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "collections", "retries": 2, "retry_delay": timedelta(minutes=5)},
    params={
        "as_of": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Business date (as of)",
            description_md="Empty: the scheduled date. A past date recomputes that day and "
            "contacts nobody (backfill).",
        ),
        "sources": Param(
            [],
            type="array",
            items={"type": "string"},
            title="Sources",
            description_md="Names of the configured sources to run; empty runs them all.",
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description_md="Compute and report everything, send nothing.",
        ),
    },
    tags=["dunning", "collections", "daily"],
    doc_md=__doc__,
)
def dunning_daily() -> None:
    run = t.resolve_run()
    extracts = t.extract.partial(run=run).expand(source=t.select_sources())
    validated = t.validate(run=run, extracts=extracts)
    loaded = t.load_ledger(run=run, validated=validated)
    t.summarize(run=run, validated=validated, loaded=loaded)


dunning_daily()
