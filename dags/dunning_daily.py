"""
### Dunning — daily collections run

One run is one **business date** (`as_of`). Today it:

1. **extract** each configured AR source (one mapped task per source: ERP exports, SQL systems,
   the customer master) into the lake as-is;
2. **validate** the rows: bad rows are *quarantined* with file, line, field and reason (see
   `quarantine/as_of=…/quarantine.csv` in the lake), and a source that is empty, stale, off its
   control totals or jumped against the previous snapshot **stops the run** before anyone is
   contacted;
3. **load_ledger** the clean snapshot into the ledger (re-running a date replaces it), and
   **load_history** the AR history exports (payments, contacts, closed invoices);
4. **age** every open invoice and debtor (buckets, days past due; bucket history in the ledger);
5. **score** behaviour features and the risk model (the newest approved one, else rules);
6. **agency_returns** loads the agencies' acknowledgements (control totals checked), payments
   (commission computed) and closures; **place** sends accounts past the cut-off to their agency
   (`placements/agency=…/as_of=…/`: placement and recall files, then `manifest.json`, SSE on
   S3, PGP when configured) -- placed debtors leave the reminders; a backfill or dry run only
   writes the selection (`placement_selection/as_of=…`); **cutoff_report** computes from the
   history the break-even day past due per segment (`reports/as_of=…/cutoff_*.csv`);
7. **plan** segments and the contacts due today (`plans/as_of=…/planned_contacts.parquet`);
8. **comply**: every planned contact through the compliance gate (bankruptcy, cease, disputes,
   opt-outs, consent, hours in all the debtor's time zones, designated times, Reg F and state
   frequency caps). A contact held back only by the clock is scheduled into the next allowed
   window; the others are blocked with every reason (`decisions/as_of=…/decisions.parquet` and
   the ledger's `contact_decisions`, with the rule-set version and snapshot ids);
9. **collect_feedback** first brings in bounces, unsubscribes and STOP replies, so the gate
   already respects them;
10. **render_shard** (one mapped task per debtor shard, `channels.render_shards`, so several
   workers share a large wave) renders one message per debtor and channel (en/fr/ar, money and
   dates per locale, disputed invoices left out) and publishes each debtor's payment page;
   **prepare_wave** merges the shards into the day's wave;
11. **send_email / send_sms / send_letters / queue_calls** ask the gate again at the real clock
   and send exactly once (ledger `messages`: claimed before the provider call, confirmed after;
   a crash leaves `unknown` for review, never a resend). Letters are one PDF for the print
   vendor, calls a dialer queue file, both in the outbox. Pools `dunning_smtp`, `dunning_sms`,
   `dunning_files` throttle the providers;
12. **summarize** into `reports/as_of=…/summary.json` (contract C3) -- also when a gate stopped
   the run, with the reasons.

**Params**: leave *as_of* empty for the scheduled date; a past date is a backfill. *sources*
limits the run to some sources. *accept_gates* accepts a known jump for this run only.
*dry_run* renders previews and
sends nothing; a past date (backfill) does the same unless *force_send* is ticked with a
*force_reason*, which is recorded on every message.

Config, ledger and lake come from `DUNNING_CONFIG`, `DUNNING_LEDGER_URL`, `DUNNING_LAKE`.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag

from dunning.airflow import alerts
from dunning.airflow import tasks as t
from dunning.airflow.risk_tasks import load_history


@dag(
    dag_id="dunning_daily",
    schedule=t.daily_schedule(),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=t.DEFAULT_ARGS,
    params={
        "as_of": t.as_of_param(
            "Empty: the scheduled date. A past date recomputes that day and "
            "contacts nobody (backfill)."
        ),
        "sources": t.sources_param(),
        "accept_gates": Param(
            [],
            type="array",
            items={"type": "string", "enum": ["ROW_CHANGE", "BALANCE_CHANGE", "QUARANTINE_SHARE"]},
            title="Accept these gates for this run",
            description_md="A known jump (month-end, a migration) would stop every run from "
            "now on: accept it here for this run only. Recorded in the summary.",
            section="What to run",
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description_md="Compute and report everything, render every message as a preview "
            "in the lake (`previews/as_of=…/`), send nothing.",
            section="What to run",
        ),
        **t.force_params(),
    },
    tags=["dunning", "collections", "daily"],
    doc_md=__doc__,
    on_failure_callback=alerts.on_failure(),
    deadline=alerts.deadline("dunning_daily"),
)
def dunning_daily() -> None:
    run = t.resolve_run(hold_date=True)
    extracts = t.extract.partial(run=run).expand(source=t.select_sources())
    validated = t.validate(run=run, extracts=extracts)
    loaded = t.load_ledger(run=run, validated=validated)
    reconciled = t.reconcile(run=run, validated=validated, loaded=loaded)
    aged = t.age(run=run, validated=validated, loaded=loaded, reconciled=reconciled)
    scored = t.score(run=run, aged=aged, history=load_history(run=run))
    returns = t.agency_returns(run=run, loaded=loaded)
    placed = t.place(run=run, validated=validated, scored=scored, returns=returns)
    planned = t.plan(run=run, scored=scored)
    placed >> planned  # placed debtors leave today's plan
    feedback = t.collect_feedback(run=run, loaded=loaded)
    decided = t.comply(run=run, planned=planned)
    feedback >> decided
    rendered = t.render_shard.partial(run=run, planned=planned, decided=decided).expand(
        shard=t.wave_shards()
    )
    wave = t.prepare_wave(run=run, rendered=rendered)
    sent = [
        t.send_email(run=run, wave=wave),
        t.send_sms(run=run, wave=wave),
        t.send_letters(run=run, wave=wave),
        t.queue_calls(run=run, wave=wave),
    ]
    t.summarize(
        run=run,
        validated=validated,
        loaded=loaded,
        aged=aged,
        planned=planned,
        decided=decided,
        wave=wave,
        sent=sent,
        feedback=feedback,
        reconciled=reconciled,
        returns=returns,
        placed=placed,
        cutoff=t.cutoff_report(run=run, scored=scored),
    )


dunning_daily()
