"""``python -m dunning bench``: time and peak memory of each pipeline stage on generated portfolios.

Each stage runs in a fresh spawned process so its peak resident memory is its own (interpreter
and imports included, as in a real Airflow task), not whatever an earlier stage left behind.
The stages are the real ones: the same functions the DAG calls, writing to a local lake and a
SQLite ledger.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import resource
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

STAGES = (
    "generate",
    "extract",
    "validate",
    "load_ledger",
    "history",
    "age",
    "score",
    "plan",
    "comply",
    "comply_engine",
    "render_emails",
    "send_email",
    "reconcile",
    "place",
    "report",
)
TARGETS = {  # the issues' budgets at size 1M, per group of stages
    "extract+validate": (("extract", "validate"), 30),
    "segment+plan": (("age", "score", "plan"), 20),
    "comply N x 5N": (("comply_engine",), 30),
    "render N/10 emails": (("render_emails",), 60),
    "match N payments": (("reconcile.match",), 60),
    "place N/10 accounts": (("place",), 60),
    "daily report": (("report",), 60),
}
EMAILS_PER_INVOICE = 0.1  # render_emails: 1M open invoices -> "rendering 100k emails"
SEND_MESSAGES = 2000  # send_email: a wave this long to the local SMTP server (target 200/s)
HISTORY_PER_CONTACT = 5  # comply_engine: "1M planned contacts with 5M history rows"
AS_OF = date(2026, 11, 23)


def _stage(name: str, workdir: str, size: int, debtors: int, queue: mp.Queue) -> None:
    """One stage, exactly as the DAG task runs it, reading what the previous stages recorded."""

    from dunning import compliance, history, lake, ledger, planning, segmentation, waves
    from dunning.config import load_config
    from dunning.generate import generate
    from dunning.quality import validate_to_lake
    from dunning.sources import extract_to_lake

    work = Path(workdir)
    state_file = work / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    url = f"sqlite:///{work / 'ledger.sqlite'}"
    start = time.perf_counter()
    if name == "generate":
        result = generate(work / "portfolio", debtors=debtors, as_of=AS_OF, seed=0)["counts"]
    else:
        cfg = load_config(work / "portfolio" / "config.yaml")
        root = lake.root((work / "lake").as_uri())
        ledger.migrate(url)
        with ledger.ledger(url) as engine:
            if name == "extract":
                result = [extract_to_lake(cfg, s.name, AS_OF, root) for s in cfg.sources]
            elif name == "validate":
                result = validate_to_lake(cfg, AS_OF, root, state["extract"], {})
            elif name == "load_ledger":
                result = ledger.load_from_lake(engine, AS_OF, root, state["validate"])
            elif name == "history":
                result = history.load_history(cfg, engine, root, AS_OF)
            elif name == "age":
                result = segmentation.aging_to_lake(cfg, AS_OF, root, state["validate"], engine)
            elif name == "score":
                view = state["age"]["debtor_view"]
                result = planning.score_to_lake(cfg, AS_OF, root, engine, view)
            elif name == "plan":
                view = state["score"]["scored_view"]
                result = planning.plan_to_lake(cfg, AS_OF, root, engine, view)
            elif name == "comply":
                result = compliance.comply_to_lake(cfg, AS_OF, root, engine, state["plan"]["plan"])
            elif name == "render_emails":
                due, debtors, invoices = wave_inputs(int(size * EMAILS_PER_INVOICE))
                start = time.perf_counter()  # rendering alone, not building its input
                wave, pages = waves.build_wave(cfg, AS_OF, due, debtors, invoices, link=_link)
                result = {"emails": len(wave), "pages": len(pages)}
            elif name == "send_email":
                result, start = _send_email(work, cfg)
            elif name == "reconcile":
                from dunning.reconcile import reconcile_to_lake

                cfg = payment_feed(cfg, work, engine)
                start = time.perf_counter()  # reading, matching and recording, not writing the feed
                found = reconcile_to_lake(cfg, AS_OF, root, engine, validated=state["validate"])
                keep = ("lines_read", "payments_matched", "by_method", "seconds")
                result = {k: found[k] for k in keep}
            elif name == "place":
                from dunning.placement import place_to_lake

                cfg = every_overdue_account(cfg, work, engine, root)
                start = time.perf_counter()  # selecting, writing, encrypting, publishing
                found = place_to_lake(
                    cfg,
                    AS_OF,
                    root,
                    engine,
                    validated=state["validate"],
                    view_key=state["score"]["scored_view"],
                    out_root=root,
                    publish=True,
                )
                result = {k: found[k] for k in ("accounts_placed", "placement_files")}
            elif name == "report":
                from dunning.reports import daily

                summary = {"as_of": AS_OF.isoformat(), "run_id": "bench", "status": "complete"}
                result = daily.report_to_lake(engine, root, cfg, summary)
            else:
                batch = compliance_batch(size, HISTORY_PER_CONTACT * size)
                start = time.perf_counter()  # the engine alone, not building its input
                decided = compliance.evaluate(batch, cfg.compliance, in_batch=True)
                result = {"contacts": len(decided), "allowed": int(decided["allowed"].sum())}
    seconds = time.perf_counter() - start
    state_file.write_text(json.dumps({**state, name: result}, default=str))
    record = {"seconds": round(seconds, 3), "peak_mb": round(_peak_rss_mb(), 1)}
    if name == "send_email":
        record["messages_per_second"] = round(result["sent"] / seconds, 1)
    if name == "reconcile":  # matching and recording, as the stage measured them
        record["phases"] = result["seconds"]
    if name == "place":
        record["accounts"] = result["accounts_placed"]
    queue.put(record)


def payment_feed(cfg: Any, work: Path, engine: Any, seed: int = 0) -> Any:
    """One processor-export line per open invoice of the day (1M payments against 1M open
    invoices at size 1M), in the mix a collections team sees: by reference with and without the
    customer id, customer id and amount only, part payments, keying errors, payer name only, and
    money nobody can place.  Returns ``cfg`` reading that feed."""
    import numpy as np
    import pandas as pd
    import sqlalchemy as sa

    from dunning import ledger
    from dunning.config import PaymentFeed
    from dunning.feedgen import _money, _typo

    inv, d = ledger.InvoiceSnapshot.__table__.c, ledger.Debtor.__table__.c
    with engine.connect() as conn:
        items = pd.read_sql(
            sa.select(inv.invoice_id, inv.debtor_id, inv.currency, inv.open_minor, d.name)
            .join(ledger.Debtor.__table__, d.debtor_id == inv.debtor_id)
            .where(inv.as_of == AS_OF, inv.open_minor > 0, inv.doc_type == "invoice"),
            conn,
        )
    rng = np.random.default_rng(seed)
    n = len(items)
    case = rng.choice(7, n, p=[0.5, 0.15, 0.1, 0.1, 0.05, 0.05, 0.05])
    amount = items["open_minor"].where(case != 3, items["open_minor"] // 2)
    amount = amount.where(case != 6, rng.integers(100, 10_000_000, n))
    reference = "Invoice " + items["invoice_id"].where(case != 4, _typo(items["invoice_id"]))
    reference = reference.where(~np.isin(case, [2, 5, 6]), "card payment")
    feed = work / "payments" / f"charges_{AS_OF}.csv"
    feed.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "id": "ch_" + pd.Series(np.arange(n)).astype(str),
            "type": "charge",
            "status": "succeeded",
            "created": f"{AS_OF}T08:00:00Z",
            "amount": _money(amount),
            "currency": items["currency"],
            "customer": items["debtor_id"].where(np.isin(case, [0, 2, 3]), ""),
            "customer_name": items["name"].where(case != 6, "UNKNOWN"),
            "description": reference,
        }
    ).to_csv(feed, index=False)
    spec = PaymentFeed(name="bench", format="processor_csv", path=str(feed))
    return cfg.model_copy(update={"payments": cfg.payments.model_copy(update={"feeds": [spec]})})


def _link(key: str, token: str) -> str:
    return f"https://pay.example.com/{token}/"


def wave_inputs(emails: int, seed: int = 0) -> tuple[Any, Any, Any]:
    """``emails`` debtors due an email today (en/fr/ar in the generator's mix), three open
    invoices each, one of them disputed now and then: build_wave's input at scale."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    ids = np.char.add("D", np.arange(emails).astype(str)).astype(object)
    kind = rng.choice(3, emails, p=[0.7, 0.12, 0.18])
    loc = np.array(["en", "fr", "ar"], dtype=object)[kind]
    country = np.array(["US", "FR", "SA"], dtype=object)[kind]
    currency = np.array(["USD", "EUR", "SAR"], dtype=object)[kind]
    debtors = pd.DataFrame(
        {
            "debtor_id": ids,
            "name": "Debtor " + pd.Series(ids),
            "locale": loc,
            "country": country,
            "region": "",
            "city": "City",
            "postal_code": "00000",
            "email": pd.Series(ids) + "@example.com",
            "phone": None,
            "timezones": np.array(["America/New_York", "Europe/Paris", "Asia/Riyadh"])[kind],
        }
    )
    templates = np.array(["reminder_nudge", "reminder_overdue", "reminder_firm", "final_notice"])
    due = pd.DataFrame(
        {
            "contact_key": pd.Series(ids) + ":standard:step:email:" + AS_OF.isoformat(),
            "debtor_id": ids,
            "channel": "email",
            "template": templates[rng.integers(0, len(templates), emails)],
            "currency": currency,
            "send_at": pd.Timestamp(f"{AS_OF}T14:00:00Z"),
        }
    )
    n = 3 * emails
    invoices = pd.DataFrame(
        {
            "debtor_id": np.repeat(ids, 3),
            "invoice_id": np.char.add("INV-", np.arange(n).astype(str)).astype(object),
            "reference": None,
            "due_date": pd.Timestamp("2026-09-01") + pd.to_timedelta(rng.integers(0, 80, n), "D"),
            "currency": np.repeat(currency, 3),
            "open_minor": rng.integers(1_000, 500_000, n),
            "disputed": rng.random(n) < 0.03,
            "doc_type": "invoice",
        }
    )
    return due, debtors, invoices


def _send_email(work: Path, cfg: Any) -> tuple[dict, float]:
    """A wave of SEND_MESSAGES emails through the real SMTP path (claim, send, confirm per
    message) to the local SMTP server, started here and stopped by pid; on a fresh SQLite
    ledger each time, or the claims of the previous bench would (rightly) send nothing."""

    from dunning import ledger, services, waves
    from dunning.channels.email import SmtpSettings

    url = f"sqlite:///{work / 'send-bench.sqlite'}"
    (work / "send-bench.sqlite").unlink(missing_ok=True)
    ledger.migrate(url)
    due, debtors, invoices = wave_inputs(SEND_MESSAGES, seed=1)
    wave, _ = waves.build_wave(cfg, AS_OF, due, debtors, invoices, link=_link)
    smtp = services.start_smtp(work / "smtp")
    try:
        settings = SmtpSettings(host="127.0.0.1", port=smtp.port, ssl=False)
        with ledger.ledger(url) as engine:
            start = time.perf_counter()
            counts = waves.send_each(
                engine,
                wave,
                waves.EmailTransport(cfg, settings),
                as_of=AS_OF,
                claim=waves.new_claim("bench", "email"),
                forced=None,
            )
    finally:
        services.stop(smtp)
    return {"sent": counts["sent"]}, start


def compliance_batch(contacts: int, history: int, seed: int = 0) -> Any:
    """A day's worth of proposed contacts (two per debtor on average) and earlier attempts, all
    inside the seven-day window so every one of them is counted: the engine's worst case."""
    import numpy as np
    import pandas as pd

    from dunning.compliance import FLAG_COLUMNS, Batch
    from dunning.schema import CHANNELS

    rng = np.random.default_rng(seed)
    people = max(1, contacts // 2)
    at = pd.Timestamp(f"{AS_OF}T14:00:00Z")
    person = rng.integers(0, people, contacts)
    places = np.array(
        [
            ("US", "MA", "Boston", "America/New_York"),
            ("US", "NY", "New York", "America/New_York"),
            ("US", "TX", "Austin", "America/Chicago"),
            ("US", "CA", "Los Angeles", "America/Los_Angeles"),
            ("GB", "", "Leeds", "Europe/London"),
            ("AE", "", "Dubai", "Asia/Dubai"),
        ]
    )
    place = places[rng.integers(0, len(places), people)[person]]
    frame = pd.DataFrame(
        {
            "person": person.astype(str),
            "at": pd.DatetimeIndex(np.full(contacts, at.value), tz="UTC"),
            "channel": np.array(CHANNELS)[rng.integers(0, len(CHANNELS), contacts)],
            "consumer": rng.random(contacts) < 0.8,
            "third_party": False,
            "country": place[:, 0],
            "state": place[:, 1],
            "city": place[:, 2],
            "dispute": np.where(rng.random(contacts) < 0.02, "pending", "none"),
        }
    )
    for flag in FLAG_COLUMNS:
        frame[flag] = rng.random(contacts) < 0.01
    for channel in CHANNELS:
        frame[f"opt_out_{channel}"] = rng.random(contacts) < 0.03
        frame[f"consent_{channel}"] = rng.random(contacts) < 0.8
    second = np.flatnonzero(rng.random(contacts) < 0.05)
    zones = pd.concat(
        [
            pd.DataFrame({"row": np.arange(contacts), "order": 0, "tz": place[:, 3]}),
            pd.DataFrame({"row": second, "order": 1, "tz": "America/Los_Angeles"}),
        ],
        ignore_index=True,
    )
    designated = np.flatnonzero(rng.random(contacts) < 0.01)
    windows = pd.DataFrame({"row": designated, "weekdays": 31, "start": 720, "end": 840})
    seconds = rng.integers(0, 7 * 86_400, history) * 10**9
    attempts = pd.DataFrame(
        {
            "person": rng.integers(0, people, history).astype(str),
            "at": pd.DatetimeIndex(at.value - seconds, tz="UTC"),
            "channel": np.array(CHANNELS)[rng.integers(0, len(CHANNELS), history)],
            "connected": rng.random(history) < 0.9,
            "conversation": rng.random(history) < 0.05,
        }
    )
    return Batch(contacts=frame, zones=zones, windows=windows, history=attempts)


def every_overdue_account(cfg: Any, work: Path, engine: Any, root: Any) -> Any:
    """The bench's placement: every overdue account the legal exclusions allow (1 day, any
    balance; about one debtor in
    ten of the invoices, so 1M open invoices place ~100k accounts) to one agency with the
    full record as CSV, PGP-encrypted to a fresh key.  Earlier bench placements of the date
    are cleared first, so each run places them all again."""
    import sqlalchemy as sa

    from dunning.config import PLACEMENT_FIELDS, Placement
    from dunning.ledger import AgencyFile, PlacedAccount
    from dunning.placement import files

    placement = Placement.model_validate(
        {
            "enabled": True,
            "cutoff": {"days_past_due": 1, "min_balance_minor": 1},
            "agencies": [
                {
                    "name": "bench",
                    "pgp_public_key": str(agency_key(work / "gnupg")),
                    "layout": {"format": "csv", "fields": list(PLACEMENT_FIELDS)},
                }
            ],
        }
    )
    with engine.begin() as conn:
        for table in (PlacedAccount.__table__, AgencyFile.__table__):
            conn.execute(sa.delete(table))
    shutil.rmtree((work / "lake" / files.prefix("bench", AS_OF)), ignore_errors=True)
    return cfg.model_copy(update={"placement": placement})


def agency_key(home: Path, email: str = "placements@agency.example") -> Path:
    """A new agency RSA 2048 key pair in GnuPG home ``home``; returns the
    ASCII-armoured public key file, as an agency would send it.  Tests and the bench encrypt
    to it and decrypt with the private half left in ``home``."""
    import gnupg

    home.mkdir(parents=True, exist_ok=True)
    gpg = gnupg.GPG(gnupghome=str(home))
    params = gpg.gen_key_input(
        key_type="RSA", key_length=2048, name_email=email, no_protection=True
    )
    key = gpg.gen_key(params)
    if not key.fingerprint:
        raise RuntimeError(f"gpg could not make a key: {key.stderr[-300:]}")
    public = home / "agency_public.asc"
    public.write_text(gpg.export_keys(key.fingerprint), encoding="utf-8")
    stop_gpg_agent(home)
    return public


def stop_gpg_agent(home: Path) -> None:
    """Making a key (or decrypting) starts a gpg-agent for ``home`` that outlives us: stop it."""
    import subprocess

    subprocess.run(
        ["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False, capture_output=True
    )


def _peak_rss_mb() -> float:
    """VmHWM belongs to this address space; ru_maxrss would carry the parent's peak over exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_size(size: int, workdir: Path, stages: tuple[str, ...] = STAGES) -> list[dict]:
    """Generate about ``size`` open invoices and time the given stages on them (in order)."""
    from dunning.generate import MEAN_OPEN_INVOICES_PER_DEBTOR

    debtors = max(1, math.ceil(size / MEAN_OPEN_INVOICES_PER_DEBTOR))
    ctx = mp.get_context("spawn")
    records = []
    for stage in stages:
        queue = ctx.Queue()
        proc = ctx.Process(target=_stage, args=(stage, str(workdir), size, debtors, queue))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"bench stage {stage} failed at size {size} (exit {proc.exitcode})")
        record = {"size": size, "stage": stage, **queue.get()}
        records.append(record)
        for phase, seconds in record.pop("phases", {}).items():
            records.append({**record, "stage": f"{stage}.{phase}", "seconds": seconds})
    return records


def main(
    sizes: list[int],
    json_path: Path | None = None,
    keep: Path | None = None,
    stages: tuple[str, ...] = STAGES,
) -> int:
    """Bench every size; with ``keep`` the work directories stay there (``<keep>/<size>``) and a
    later call with a subset of ``stages`` re-times just those on the same data, which is how an
    optimization is measured before and after without regenerating a 1M portfolio."""
    records: list[dict] = []
    print(f"{'size':>9} {'stage':<16} {'seconds':>9} {'peak MB':>9}")
    for size in sizes:
        if keep is None:
            workdir = Path(tempfile.mkdtemp(prefix=f"dunning-bench-{size}-"))
        else:
            workdir = keep / str(size)
            workdir.mkdir(parents=True, exist_ok=True)
        try:
            for rec in run_size(size, workdir, stages):
                records.append(rec)
                rate = rec.get("messages_per_second", None)
                accounts = rec.get("accounts", None)
                print(
                    f"{size:>9} {rec['stage']:<16} {rec['seconds']:>9.2f} {rec['peak_mb']:>9.0f}"
                    + (f"   {rate} messages/s (target 200)" if rate is not None else "")
                    + (f"   {accounts} accounts placed" if accounts is not None else ""),
                    flush=True,
                )
        finally:
            if keep is None:
                shutil.rmtree(workdir, ignore_errors=True)
        for group, (group_stages, budget) in TARGETS.items():
            part = [r for r in records if r["size"] == size and r["stage"] in group_stages]
            if not part:
                continue
            print(
                f"{size:>9} {group:<16} {sum(r['seconds'] for r in part):>9.2f} "
                f"{max(r['peak_mb'] for r in part):>9.0f}   (budget at 1M: {budget} s)",
                flush=True,
            )
    if json_path:
        json_path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return 0
