"""
### Dunning — tell the agencies about new placement files

Scheduled on the **placement files** Asset that `dunning_daily`'s `place` task updates. For each
delivery that run published (`placements/agency=…/as_of=…/manifest.json`, contract C4):

1. **notify_agencies** re-reads every file the manifest lists and checks its sha256 (a reader's
   check that the publish was complete and untouched), then emails the agency's `notify_email`
   (config `placement.agencies`) through the SMTP connection: file names, row counts, money
   totals and checksums -- never debtor data.

An agency without `notify_email` is checked but not emailed (it polls its bucket). A mismatch
fails the task with the file and both hashes, and nobody is told about a broken delivery.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag

from dunning.airflow import tasks as t


@dag(
    dag_id="dunning_agency_notify",
    schedule=[t.PLACEMENT_FILES],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args=t.DEFAULT_ARGS,
    tags=["dunning", "placement", "agency"],
    doc_md=__doc__,
)
def dunning_agency_notify() -> None:
    t.notify_agencies()


dunning_agency_notify()
