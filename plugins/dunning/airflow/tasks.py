"""Task callables of the Dunning DAGs: each resolves context, calls one core stage, returns keys.

Everything here is glue.  Frames never cross a task boundary: tasks return lake keys and counts,
so XCom stays small and a retried task reads exactly what its upstream wrote.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

from airflow.sdk import (
    Asset,
    BaseHook,
    CronTriggerTimetable,
    ExceptionRetryPolicy,
    ObjectStoragePath,
    Param,
    RetryAction,
    RetryRule,
    get_current_context,
    task,
)

from dunning import clock
from dunning import config as dconfig
from dunning.runs import acts, run_mode

log = logging.getLogger("airflow.task")

# Bad data does not heal in five minutes: fail at once and tell the operator, don't retry.
# A file that has not arrived yet keeps the normal retries (a late drop).
DATA_ERRORS = ExceptionRetryPolicy(
    rules=[
        RetryRule(exception="dunning.errors.SourceMissing", action=RetryAction.RETRY),
        *(
            RetryRule(
                exception=f"dunning.errors.{name}",
                action=RetryAction.FAIL,
                reason="bad source data",
            )
            for name in ("SourceError", "SourceGateError", "ConfigError", "DateBusy")
        ),
        RetryRule(exception="dunning.errors.NotEnoughHistory", action=RetryAction.FAIL),
    ]
)


# A provider refusing message after message (the circuit breaker tripped) will not be back in a
# minute: fail at once so the alert goes out; the hourly dunning_waves sends the rest later.
# Anything else (a timeout, a 4xx) gets the normal retries.
OUTAGES = ExceptionRetryPolicy(
    rules=[
        RetryRule(
            exception="dunning.channels.ChannelOutage",
            action=RetryAction.FAIL,
            reason="the provider refuses everything",
        )
    ]
)

DEFAULT_ARGS = {"owner": "collections", "retries": 2, "retry_delay": timedelta(minutes=5)}


def as_of_param(description_md: str) -> Param:
    """The business date every Dunning DAG takes: nullable, so a run without one still works."""
    return Param(
        None,
        type=["null", "string"],
        format="date",
        title="Business date (as of)",
        description_md=description_md,
        section="What to run",
    )


def parse_time_config() -> dconfig.Config | None:
    """The config as a DAG file is parsed, or None before one exists (a fresh UI still parses).

    The schedule, the params and the alerts all ask for it on every parse: it is read and
    validated once per version of the file, not once per question."""
    path = dconfig.config_path()
    if not path.exists():
        return None
    stat = path.stat()
    return _config_version(str(path), stat.st_mtime_ns, stat.st_size)


@cache
def _config_version(path: str, mtime_ns: int, size: int) -> dconfig.Config:
    return dconfig.load_config(path)


def sources_param() -> Param:
    """Which sources to run: a pick list of the configured ones (the form validates the
    names); the run checks again, since the config may change after the DAG was parsed."""
    cfg = parse_time_config()
    names = [src.name for src in cfg.sources] if cfg else []
    return Param(
        [],
        type="array",
        items={"type": "string", **({"enum": names} if names else {})},
        title="Sources",
        description_md="Names of the configured sources to run (a late file, a re-delivered "
        "export); empty runs them all.",
        section="What to run",
    )


def force_params() -> dict[str, Param]:
    """Sending for a past date: off unless ticked, and then only with a reason (recorded)."""
    return {
        "force_send": Param(
            False,
            type="boolean",
            title="Send although the date is past",
            description_md="A backfill (or a run started after its day) acts on nothing. Tick "
            "this only to deliver a past day's wave on purpose; it needs a reason. A forced run "
            "acts fully for that day: it also places accounts, publishes payment pages and "
            "instructs the card processor.",
            section="Sending for a past date",
        ),
        "force_reason": Param(
            None,  # a typed param with an empty default reads as a required field in the form
            type=["null", "string"],
            title="Why send for a past date",
            description_md="Required when *Send although the date is past* is ticked: "
            "recorded on every message this run sends and in the summary.",
            section="Sending for a past date",
        ),
    }


def daily_schedule() -> CronTriggerTimetable:
    """The config's cron in the config's zone; defaults when no config exists yet (fresh UI)."""
    cfg = parse_time_config()
    sched = cfg.schedule if cfg else dconfig.Schedule()
    return CronTriggerTimetable(sched.cron, timezone=sched.timezone)


def waves_schedule() -> CronTriggerTimetable:
    """Every hour at :30 in the config's zone: later waves of the day (``dunning_waves``)."""
    cfg = parse_time_config()
    zone = cfg.schedule.timezone if cfg else "UTC"
    return CronTriggerTimetable("30 * * * *", timezone=zone)


def lake_root() -> ObjectStoragePath:
    return ObjectStoragePath(dconfig.lake_url().rstrip("/") + "/")


def resolve_url(url: str) -> str:
    """``conn:<id>`` in config names an Airflow connection, so SQL passwords stay out of YAML."""
    if not url.startswith("conn:"):
        return url
    hook = BaseHook.get_connection(url.removeprefix("conn:")).get_hook()
    return hook.sqlalchemy_url.render_as_string(hide_password=False)


@cache
def _migrated(url: str) -> str:
    from dunning import ledger

    ledger.migrate(url)
    return url


def _ledger_url() -> str:
    """The ledger URL, migrated once per URL per worker process."""
    return _migrated(dconfig.ledger_url())


def _as_of(run: dict) -> date:
    return date.fromisoformat(run["as_of"])


# Every task with a side effect, and what it is.  Each asks ``acts(run)`` (the senders and the
# page publisher through ``_mode(run)``); a DAG-integrity test holds new ones to that.
SIDE_EFFECTS = {
    "reconcile": "instructs the card processor to retry failed payments",
    "agency_returns": "takes the agencies' returned files into the ledger",
    "place": "publishes placement and recall files to the agencies (and the Asset event)",
    "render_shard": "publishes the debtors' payment pages",
    "send_email": "emails debtors",
    "send_sms": "texts debtors",
    "send_letters": "hands letters to the print vendor",
    "queue_calls": "queues calls for the agents",
}


@task(retry_policy=DATA_ERRORS)
def resolve_run(hold_date: bool = False) -> dict:
    """Fix the business date and mode once, so every later task of the run agrees on them.

    ``as_of`` comes from the trigger form, else the logical date, else (a run without a logical
    date) the time the run was due -- never the wall clock.  A run for a past date is a backfill;
    a run for a date the product clock has left behind (started late, a cleared old run) is
    late.  ``mode`` (``run_mode``) says whether the run may act on the world at all.
    ``hold_date``: take the DAG's lease on the date (``ledger.take_lease``), so a run for another
    date is refused while this one works; ``summarize`` gives it back.
    """
    ctx = get_current_context()
    cfg = dconfig.load_config()
    if (pin := clock.pinned()) is not None:
        log.warning(
            "The product clock is pinned to %s by %s: a replay, a demo or a test. "
            "Production never pins it.",
            pin.isoformat(),
            clock.PIN,
        )
    zone = ZoneInfo(cfg.schedule.timezone)
    params, dag_run = ctx["params"], ctx["dag_run"]
    due: datetime = dag_run.run_after
    logical: datetime | None = ctx.get("logical_date")
    as_of = (
        dconfig.parse_date(params["as_of"])
        if params.get("as_of")
        else (logical or due).astimezone(zone).date()
    )
    due_day = due.astimezone(zone).date()
    if as_of > due_day:
        raise dconfig.ConfigError(
            f"as_of {as_of} is after the day this run is for ({due_day}): no run for the future"
        )
    run_type = str(getattr(dag_run, "run_type", "")).lower()
    backfill = "backfill" in run_type or as_of < due_day
    force, reason = bool(params.get("force_send")), (params.get("force_reason") or "").strip()
    if force and not reason:
        raise dconfig.ConfigError(
            "force_send needs a force_reason: sending for a past date is recorded with why"
        )
    run = {
        "as_of": as_of.isoformat(),
        "backfill": backfill,
        "dry_run": bool(params.get("dry_run")),
        "force_send": force,
        "force_reason": reason or None,
        "accept_gates": list(params.get("accept_gates") or []),
        "run_id": dag_run.run_id,
    }
    run["mode"] = run_mode(run, clock.today(cfg.schedule.timezone))
    if hold_date:
        from dunning import ledger

        with ledger.ledger(_ledger_url()) as engine:
            ledger.take_lease(
                engine,
                dag_run.dag_id,
                as_of,
                dag_run.run_id,
                clock.utcnow(),
                cfg.schedule.run_lease_hours,
            )
    log.info("Run %s", run)
    return run


@task(retry_policy=DATA_ERRORS)
def select_sources() -> list[str]:
    """The sources this run extracts: the ``sources`` param checked against the config."""
    cfg = dconfig.load_config()
    names = [s.name for s in cfg.sources]
    wanted = get_current_context()["params"].get("sources") or names
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        raise dconfig.ConfigError(
            f"{cfg.source_file}: sources: no source named {unknown}; configured: {names}"
        )
    return [n for n in names if n in wanted]


@task(map_index_template="{{ source_name }}", retry_policy=DATA_ERRORS)
def extract(run: dict, source: str) -> dict:
    from dunning.sources import extract_to_lake

    get_current_context()["source_name"] = source  # type: ignore[typeddict-unknown-key]
    result = extract_to_lake(
        dconfig.load_config(), source, _as_of(run), lake_root(), resolve_url=resolve_url
    )
    log.info("Extracted %s rows from %s into %s", result["rows"], source, result["key"])
    return result


@task(retry_policy=DATA_ERRORS)
def validate(run: dict, extracts: list[dict]) -> dict:
    from dunning import ledger
    from dunning.quality import validate_to_lake

    with ledger.ledger(_ledger_url()) as engine:
        previous = ledger.previous_snapshots(engine, _as_of(run))
    result = validate_to_lake(
        dconfig.load_config(),
        _as_of(run),
        lake_root(),
        list(extracts),
        previous,
        accept_gates=run.get("accept_gates"),
        run_id=run.get("run_id"),
    )
    log.info(
        "Validated: %s rows quarantined %s; quarantine at %s",
        result["rows_quarantined"],
        result["quarantine_by_reason"],
        result["quarantine"],
    )
    return result


@task(retry_exponential_backoff=True, retry_delay=timedelta(seconds=30))
def load_ledger(run: dict, validated: dict) -> dict:
    from dunning import ledger

    with ledger.ledger(_ledger_url()) as engine:
        return ledger.load_from_lake(engine, _as_of(run), lake_root(), validated)


@task(retry_policy=DATA_ERRORS)
def reconcile(run: dict, validated: dict, loaded: dict) -> dict:
    """Payment feeds matched to the snapshot's open invoices before anything is planned, so
    money that came in stops the reminders today; the rest goes to the exceptions queue."""
    from dunning import ledger
    from dunning.reconcile import reconcile_to_lake

    with ledger.ledger(_ledger_url()) as engine:
        result = reconcile_to_lake(
            dconfig.load_config(),
            _as_of(run),
            lake_root(),
            engine,
            instruct=acts(run),
            validated=validated,
        )
    log.info(
        "Payments: %s matched, %s to review %s; retries %s; exceptions at %s",
        result["payments_matched"],
        result["payments_unmatched"],
        result["exceptions_by_reason"],
        result["retries_by_action"],
        result["exceptions"],
    )
    return result


@task(retry_policy=DATA_ERRORS)
def age(run: dict, validated: dict, loaded: dict, reconciled: dict) -> dict:
    """Aging per invoice and per debtor, on open amounts net of today's reconciled payments;
    the day's buckets go to the ledger (roll rates)."""
    from dunning import ledger
    from dunning.segmentation import aging_to_lake

    with ledger.ledger(_ledger_url()) as engine:
        return aging_to_lake(
            dconfig.load_config(), _as_of(run), lake_root(), validated, engine, reconciled
        )


def _stage(stage: Callable[..., dict], run: dict, key: str) -> dict:
    """A ledger-and-lake stage as every daily task calls it: config, date, lake, ledger, input."""
    from dunning import ledger

    with ledger.ledger(_ledger_url()) as engine:
        return stage(dconfig.load_config(), _as_of(run), lake_root(), engine, key)


@task(retry_policy=DATA_ERRORS)
def score(run: dict, aged: dict, history: dict) -> dict:
    """Behaviour features and the newest approved risk model (rules when there is none)."""
    from dunning.planning import score_to_lake

    result = _stage(score_to_lake, run, aged["debtor_view"])
    log.info("Scored %s debtors by %s", result["debtors"], result["score_source"])
    return result


# Published placement files: a downstream DAG (dunning_agency_notify) is scheduled on it.
PLACEMENT_FILES = Asset(name="dunning_placement_files", uri="dunning://placements")


@task(retry_policy=DATA_ERRORS)
def agency_returns(run: dict, loaded: dict) -> dict:
    """The agencies' acknowledgements, payments and closures, before today's placing reads the
    placement ledger.  A rejected file is recorded with its error; the summary then fails the run
    (after everything else has run) so someone looks at it.  Backfills and dry runs read none."""
    from dunning import lake, ledger
    from dunning.placement.returns import load_returns

    if not acts(run):
        return {"mode": "skipped"}
    with ledger.ledger(_ledger_url()) as engine:
        loaded_files = load_returns(dconfig.load_config(), engine, _as_of(run))
    result = {k: v for k, v in vars(loaded_files).items() if k != "quarantine"}
    if loaded_files.quarantine:
        key = lake.partition("quarantine", _as_of(run)) + "/agency_returns.parquet"
        lake.write_parquet(lake_root() / key, _records_frame(loaded_files.quarantine))
        result["quarantine_file"] = key
    result["quarantined"] = len(loaded_files.quarantine)
    for rejected in loaded_files.rejected:
        log.error("Agency file rejected: %s", rejected["error"])
    log.info("Agency returns: %s", result)
    return {"mode": "loaded", **result}


@task(retry_policy=DATA_ERRORS, outlets=[PLACEMENT_FILES])
def place(run: dict, validated: dict, scored: dict, returns: dict) -> dict:
    """Accounts past the cut-off to their agency: placement and recall files, then the manifest,
    on S3 with server-side encryption (PGP too when the agency has a key).  A backfill or dry
    run only writes the selection for review (``placement_selection/as_of=…``)."""
    from dunning import ledger
    from dunning.placement import place_to_lake

    cfg = dconfig.load_config()
    root = lake_root()
    with ledger.ledger(_ledger_url()) as engine:
        result = place_to_lake(
            cfg,
            _as_of(run),
            root,
            engine,
            validated=validated,
            view_key=scored["scored_view"],
            out_root=_object_root(cfg.placement.root, root),
            publish=acts(run),
        )
    outlet = get_current_context()["outlet_events"][PLACEMENT_FILES]
    outlet.extra = {"as_of": run["as_of"], "manifests": result.get("manifest_keys", [])}
    log.info(
        "Placement %s: %s placed %s, %s recalled; excluded %s; files %s",
        result["mode"],
        result.get("accounts_placed"),
        result.get("by_agency"),
        result.get("accounts_recalled"),
        result.get("excluded"),
        result.get("placement_files"),
    )
    return result


@task(retry_policy=DATA_ERRORS)
def cutoff_report(run: dict, scored: dict) -> dict:
    """From the ledger's history, the day past due after which an agency beats collecting
    in-house, per segment next to the configured cut-off (``reports/as_of=…/cutoff_*.csv``)."""
    from dunning.placement.economics import economics_to_lake

    result = _stage(economics_to_lake, run, scored["scored_view"])
    log.info("Cut-off per segment (configured -> break-even): %s", result["by_segment"])
    return result


@task(retry_exponential_backoff=True, retry_delay=timedelta(minutes=1))
def notify_agencies() -> dict:
    """Each new delivery checked against its manifest, then its agency told by email (counts,
    totals and keys only)."""
    from dunning.channels.email import SmtpSender
    from dunning.placement import notify

    cfg = dconfig.load_config()
    root = _object_root(cfg.placement.root, lake_root())
    agencies = {a.name: a for a in cfg.placement.agencies}
    events = get_current_context()["triggering_asset_events"][PLACEMENT_FILES]
    keys = [key for event in events for key in (event.extra or {}).get("manifests", [])]
    manifests = [(key, notify.verify(root, key)) for key in keys]
    told = [
        (key, m)
        for key, m in manifests
        if agencies.get(m["agency"]) and agencies[m["agency"]].notify_email
    ]
    if told:
        with SmtpSender(smtp_settings(cfg.channels.email.connection, cfg)) as smtp:
            for key, m in told:
                to = agencies[m["agency"]].notify_email
                smtp.send(notify.notice(m, key, cfg.channels.email.sender, to), to)
    log.info("Verified %s deliveries, notified %s", len(manifests), [k for k, _ in told])
    return {"verified": [k for k, _ in manifests], "notified": [k for k, _ in told]}


@task(retry_policy=DATA_ERRORS)
def plan(run: dict, scored: dict) -> dict:
    """Segments and the contacts due today (not to debtors an agency now has), written to the
    lake for the compliance step."""
    from dunning.planning import plan_to_lake

    result = _stage(plan_to_lake, run, scored["scored_view"])
    log.info(
        "%s debtors due, %s contacts planned; segments %s",
        result["debtors_due"],
        result["contacts_planned"],
        result["by_segment"],
    )
    return result


@task(retry_policy=DATA_ERRORS)
def comply(run: dict, planned: dict) -> dict:
    """Every planned contact through the compliance gate: allowed, scheduled into the next
    allowed window, or blocked with all its reasons; decisions to the lake and the ledger."""
    from dunning.compliance import comply_to_lake

    result = _stage(comply_to_lake, run, planned["plan"])
    log.info(
        "%s allowed, %s scheduled later today, %s blocked %s (rules %s)",
        result["contacts_allowed"],
        result["contacts_scheduled"],
        result["contacts_blocked"],
        result["contacts_suppressed"],
        result["rules_version"],
    )
    return result


@task(retry_policy=DATA_ERRORS)
def collect_feedback(run: dict, loaded: dict) -> dict:
    """Bounces, unsubscribes and STOP replies since the last run, into the ledger, so today's
    gate already respects them."""
    from dunning import ledger
    from dunning.feedback import collect_feedback as collect

    cfg = dconfig.load_config()
    fb = cfg.feedback
    with ledger.ledger(_ledger_url()) as engine:
        result = collect(
            engine,
            _as_of(run),
            bounce_dir=cfg.resolve(fb.bounce_mailbox) if fb.bounce_mailbox else None,
            sms_events=[cfg.resolve(p) for p in fb.sms_events],
            email_events=[cfg.resolve(p) for p in fb.email_events],
        )
    issues = result.pop("quarantine", [])
    if issues:  # a malformed feed line is kept with its file, line and field, not dropped
        from dunning import lake

        key = lake.partition("quarantine", _as_of(run)) + "/feedback.parquet"
        lake.write_parquet(lake_root() / key, _records_frame(issues))
        result["quarantine_file"] = key
    result["quarantined"] = len(issues)
    log.info("Feedback: %s", result)
    return result


def _records_frame(records: list[dict]):  # -> pandas.DataFrame, imported only when there is one
    import pandas as pd

    return pd.DataFrame(records).astype(str)


def _mode(run: dict):  # -> waves.Mode
    from dunning import waves

    return waves.sending_mode(run, clock.now(), dconfig.load_config().schedule.timezone)


def _object_root(url: str | None, default: ObjectStoragePath) -> ObjectStoragePath:
    return ObjectStoragePath(url.rstrip("/") + "/") if url else default


@task(retry_policy=DATA_ERRORS)
def wave_shards() -> list[int]:
    """The shards today's wave renders in (``channels.render_shards``): one mapped task each."""
    return list(range(dconfig.load_config().channels.render_shards))


@task(map_index_template="shard {{ shard }}", retry_policy=DATA_ERRORS)
def render_shard(run: dict, planned: dict, decided: dict, shard: int) -> dict:
    """Render one shard of the day's messages and publish its payment pages -- or, for a dry
    run, a backfill or a late run, write them as previews and send nothing."""
    import socket

    from dunning import ledger, waves

    cfg, mode = dconfig.load_config(), _mode(run)
    root = lake_root()
    with ledger.ledger(_ledger_url()) as engine:
        result = waves.prepare_wave(
            cfg,
            _as_of(run),
            root,
            engine,
            plan_key=planned["plan"],
            decisions_key=decided["decisions"],
            mode=mode,
            portal_root=_object_root(cfg.portal.root, root / "portal"),
            shard=(shard, cfg.channels.render_shards),
        )
    result["worker"] = socket.gethostname()
    log.info(
        "Shard %s on %s: %s messages %s",
        shard,
        result["worker"],
        result["contacts"],
        result["by_channel"],
    )
    return result


@task(retry_policy=DATA_ERRORS)
def prepare_wave(run: dict, rendered: list[dict]) -> dict:
    """The day's wave from its rendered shards: the one file the senders read."""
    from dunning import waves

    result = waves.merge_shards(lake_root(), _as_of(run), list(rendered))
    log.info(
        "Wave %s: %s messages %s in %s shard(s) (%s)",
        result["wave"],
        result["contacts"],
        result["by_channel"],
        len(result["shards"]),
        result["mode"],
    )
    return result


def smtp_settings(conn_id: str, cfg: dconfig.Config):  # -> dunning.channels.email.SmtpSettings
    """The Airflow SMTP connection read the way the smtp provider's SmtpHook reads it."""
    from dunning.channels.email import SmtpSettings

    conn = BaseHook.get_connection(conn_id)
    extra = conn.extra_dejson
    use_ssl = not extra.get("disable_ssl", False)
    return SmtpSettings(
        host=conn.host or "localhost",
        port=conn.port or (465 if use_ssl else 25),
        user=conn.login or None,
        password=conn.password or None,
        ssl=use_ssl,
        starttls=not use_ssl and not extra.get("disable_tls", False),
        timeout=float(extra.get("timeout", 30)),
        messages_per_connection=cfg.channels.email.messages_per_connection,
        rate_per_second=cfg.channels.email.rate_per_second,
    )


def sms_settings(conn_id: str, cfg: dconfig.Config):  # -> dunning.channels.sms.SmsSettings
    """An HTTP connection to a Twilio-style API: login = account, password = token,
    extra ``from`` = the sender number."""
    from dunning.channels.sms import SmsSettings

    return SmsSettings.from_connection(
        BaseHook.get_connection(conn_id), rate_per_second=cfg.channels.sms.rate_per_second
    )


def _send(run: dict, wave: dict, channel: str) -> dict:
    from dunning import ledger, waves

    cfg, mode = dconfig.load_config(), _mode(run)
    transports = {
        "email": lambda: waves.EmailTransport(
            cfg, smtp_settings(cfg.channels.email.connection, cfg)
        ),
        "sms": lambda: waves.SmsTransport(sms_settings(cfg.channels.sms.connection, cfg)),
    }
    outbox = getattr(cfg.channels, channel).outbox if channel in ("letter", "call") else None
    with ledger.ledger(_ledger_url()) as engine:
        result = waves.send_wave(
            cfg,
            _as_of(run),
            lake_root(),
            engine,
            wave["wave"],
            channel,
            mode=mode,
            claim=waves.new_claim(run["run_id"], channel),
            transport=transports.get(channel),
            outbox=_object_root(outbox, lake_root() / "outbox"),
        )
    log.info("%s wave: %s", channel, result)
    return result


# Providers throttle per account: a pool per provider caps how many senders run at once, the
# channel's rate_per_second caps each sender.  Create them once: `airflow pools set NAME N DESC`.
POOLS = {
    "email": "dunning_smtp",
    "sms": "dunning_sms",
    "letter": "dunning_files",
    "call": "dunning_files",
}


@task(
    pool=POOLS["email"],
    retry_exponential_backoff=True,
    retry_delay=timedelta(seconds=30),
    retry_policy=OUTAGES,
)
def send_email(run: dict, wave: dict) -> dict:
    """Email part of the wave: claim, send over one SMTP session, confirm -- exactly once."""
    return _send(run, wave, "email")


@task(
    pool=POOLS["sms"],
    retry_exponential_backoff=True,
    retry_delay=timedelta(seconds=30),
    retry_policy=OUTAGES,
)
def send_sms(run: dict, wave: dict) -> dict:
    """SMS part of the wave through the provider's REST API -- exactly once."""
    return _send(run, wave, "sms")


@task(pool=POOLS["letter"])
def send_letters(run: dict, wave: dict) -> dict:
    """The day's letters as one print-ready PDF and manifest for the print vendor."""
    return _send(run, wave, "letter")


@task(pool=POOLS["call"])
def queue_calls(run: dict, wave: dict) -> dict:
    """The agents' dialer queue, each call with the window it may be made in."""
    return _send(run, wave, "call")


@task(retry_policy=DATA_ERRORS)
def todays_wave(run: dict) -> dict:
    """The wave the daily run prepared for this date; none yet (the daily run has not got that
    far) skips the senders."""
    from airflow.sdk.exceptions import AirflowSkipException

    from dunning import waves

    key = waves.wave_key(_as_of(run), sending=True)
    if not (lake_root() / key).exists():
        raise AirflowSkipException(f"no wave for {run['as_of']} yet ({key})")
    return {"wave": key}


@task(trigger_rule="none_failed_min_one_success")
def refresh_summary(run: dict, sent: list[dict | None]) -> dict | None:
    """The day's summary counts what this wave sent too."""
    from dunning import ledger, reports, waves

    with ledger.ledger(_ledger_url()) as engine:
        messages = waves.day_counts(engine, _as_of(run))
    summary = reports.refresh_messages(lake_root(), _as_of(run), messages)
    log.info("Messages of %s: %s", run["as_of"], messages)
    return summary and {"messages_sent": summary["messages_sent"]}


@task(trigger_rule="all_done", retries=0)
def summarize(
    run: dict,
    validated: dict | None,
    loaded: dict | None,
    aged: dict | None,
    planned: dict | None,
    decided: dict | None,
    wave: dict | None = None,
    sent: list[dict] | None = None,
    feedback: dict | None = None,
    reconciled: dict | None = None,
    returns: dict | None = None,
    placed: dict | None = None,
    cutoff: dict | None = None,
) -> dict:
    """Runs whatever happened upstream: a run stopped by a gate still gets its summary (with
    the reasons) and its KPI report, then this task fails so the run shows as failed."""
    from dunning import lake, ledger, reports, waves
    from dunning.reports import daily

    root = lake_root()
    with ledger.ledger(_ledger_url()) as engine:
        try:
            messages = waves.day_counts(engine, _as_of(run))
            result = reports.write_summary(
                root,
                run,
                validated,
                loaded,
                aged,
                planned,
                decided,
                wave=wave,
                sent=sent,
                messages=messages,
                feedback=feedback,
                reconciled=reconciled,
                returns=returns,
                placed=placed,
                cutoff=cutoff,
            )
            summary = lake.read_json(root / result["key"])
            log.info("%s", reports.format_summary(summary))
            published = daily.report_to_lake(engine, root, dconfig.load_config(), summary)
        finally:  # the date is free for the next run, whatever happened to this one
            ledger.release_lease(engine, get_current_context()["dag_run"].dag_id, run["run_id"])
    log.info("Report: %s (tables in %s)", root / published["report"], published["tables"])
    result["report"] = published["report"]
    if result["status"] != "complete":
        raise RuntimeError(f"run {result['status']}; summary at {result['key']}")
    return result
