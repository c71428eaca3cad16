"""
### Dunning — later waves of the day

The daily run sends what may go out when it runs. A contact that was outside its hours then
(a debtor in another time zone, a designated inconvenient time) waits; this DAG, every hour,
sends the waiting contacts of **today's** wave whose moment has come:

1. **todays_wave** finds the wave `dunning_daily` prepared for the date (none yet: skip);
2. **send_email / send_sms / send_letters / queue_calls** -- the same tasks as the daily run:
   the gate decides again at the real clock, and the ledger's claims make sure nobody gets a
   message twice, however often this runs;
3. **refresh_summary** brings `reports/as_of=…/summary.json`'s message counts up to date.

**Params**: leave *as_of* empty for today. A past date sends nothing (it is a backfill) unless
*force_send* with a *force_reason*, exactly as in `dunning_daily`.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag

from dunning.airflow import tasks as t


@dag(
    dag_id="dunning_waves",
    schedule=t.waves_schedule(),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=t.DEFAULT_ARGS,
    params={
        "as_of": t.as_of_param("Empty: today. A past date sends nothing unless forced."),
        **t.force_params(),
    },
    tags=["dunning", "collections", "waves"],
    doc_md=__doc__,
)
def dunning_waves() -> None:
    run = t.resolve_run()
    wave = t.todays_wave(run=run)
    sent = [
        t.send_email(run=run, wave=wave),
        t.send_sms(run=run, wave=wave),
        t.send_letters(run=run, wave=wave),
        t.queue_calls(run=run, wave=wave),
    ]
    t.refresh_summary(run=run, sent=sent)


dunning_waves()
