"""The waves stage: what a debtor receives, and that it is received exactly once."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandas as pd
import pytest
import sqlalchemy as sa

from dunning import lake, ledger, waves
from dunning.channels import Outcome, ProviderError
from dunning.config import Config
from tests.factories import ledger_debtor

pytestmark = pytest.mark.clock  # dates and hours: the clock guard moves the clock under it

AS_OF = date(2026, 11, 23)
NOON = pd.Timestamp("2026-11-23T16:30:00Z")  # inside hours from Los Angeles to Riyadh
DEBTORS = [
    # id, name, country, region, city, zone, locale, email, phone
    ("D1", "Alex Example", "US", "TX", "Austin", "America/Chicago", "en", "alex@example.com", "+15125550101"),
    ("D2", "Élodie Martin", "FR", "IDF", "Paris", "Europe/Paris", "fr", "elodie@example.fr", "+33612345678"),
    ("D3", "سارة العتيبي", "SA", "Riyadh", "Riyadh", "Asia/Riyadh", "ar", "sara@example.sa", "+966501234567"),
    ("D4", "{{ 7*7 }} <script>alert(1)</script>", "US", "TX", "Dallas", "America/Chicago", "en", "x@example.com", ""),
]  # fmt: skip
CURRENCY = {"D1": "USD", "D2": "EUR", "D3": "SAR", "D4": "USD"}
PLAN = [  # debtor, channel, template
    ("D1", "email", "reminder_overdue"),
    ("D1", "sms", "reminder_overdue"),
    ("D2", "email", "reminder_firm"),
    ("D3", "email", "reminder_overdue"),
    ("D3", "letter", "final_notice"),
    ("D4", "email", "reminder_overdue"),
    ("D4", "call", "agent_call"),
]


def config(**extra) -> Config:
    return Config.model_validate(
        {
            "portfolio": {"name": "Example Supplies"},
            "schedule": {"timezone": "America/New_York"},
            "sources": [{"name": "a", "path": "a.csv", "columns": {}}],
            **extra,
        }
    )


@pytest.fixture
def day(ledger_engine, tmp_path, pin_clock):
    """Four debtors with open, disputed, credit and other-currency items; a decided plan; the
    product clock at NOON of the day."""
    pin_clock(NOON)
    engine = ledger_engine
    root = lake.root((tmp_path / "lake").as_uri())
    with engine.begin() as conn:
        conn.execute(
            sa.insert(ledger.Debtor.__table__),
            [
                ledger_debtor(
                    d,
                    AS_OF,
                    name=name,
                    country=country,
                    region=region,
                    city=city,
                    postal_code="75001" if country == "FR" else None,
                    timezones=zone,
                    locale=loc,
                    email=email,
                    phone=phone or None,
                )
                for d, name, country, region, city, zone, loc, email, phone in DEBTORS
            ],
        )
        item = {
            "as_of": AS_OF,
            "source": "erp",
            "doc_type": "invoice",
            "issue_date": date(2026, 9, 1),
            "due_date": date(2026, 10, 1),
            "amount_minor": 0,
            "disputed": False,
            "source_row": 2,
        }
        rows = []
        for d, cur in CURRENCY.items():
            rows += [
                {**item, "invoice_id": f"{d}-A", "debtor_id": d, "currency": cur, "open_minor": 123456},
                {**item, "invoice_id": f"{d}-B", "debtor_id": d, "currency": cur, "open_minor": 50000,
                 "due_date": date(2026, 10, 15)},
                {**item, "invoice_id": f"{d}-DISPUTED", "debtor_id": d, "currency": cur,
                 "open_minor": 99999, "disputed": True},
                {**item, "invoice_id": f"{d}-CREDIT", "debtor_id": d, "currency": cur,
                 "open_minor": -1000, "doc_type": "credit_note"},
                {**item, "invoice_id": f"{d}-GBP", "debtor_id": d, "currency": "GBP", "open_minor": 7000},
            ]  # fmt: skip
        conn.execute(sa.insert(ledger.InvoiceSnapshot.__table__), rows)
    plan = pd.DataFrame(PLAN, columns=["debtor_id", "channel", "template"])
    plan["contact_key"] = plan["debtor_id"] + ":s:step:" + plan["channel"] + f":{AS_OF}"
    plan["currency"] = plan["debtor_id"].map(CURRENCY)
    decisions = plan[["contact_key", "debtor_id", "channel"]].assign(
        status="allowed", send_at=pd.Timestamp("2026-11-23T14:00:00Z")
    )
    lake.write_parquet(root / "plan.parquet", plan)
    lake.write_parquet(root / "decisions.parquet", decisions)
    return engine, root


SEND = waves.Mode(True, "send")


def prepare(day, mode=SEND, cfg=None):
    engine, root = day
    result = waves.prepare_wave(
        cfg or config(),
        AS_OF,
        root,
        engine,
        plan_key="plan.parquet",
        decisions_key="decisions.parquet",
        mode=mode,
    )
    return result, lake.read_parquet(root / result["wave"]).set_index("contact_key")


def key(debtor, channel):
    return f"{debtor}:s:step:{channel}:{AS_OF}"


def test_one_message_per_debtor_lists_its_open_undisputed_invoices_in_its_language(day):
    result, wave = prepare(day)
    assert result["contacts"] == len(PLAN)
    en = wave.loc[key("D1", "email")]
    assert "$1,234.56" in en["text"] and "$500.00" in en["text"]
    assert en["balance"] == "$1,734.56" and en["balance_minor"] == 173456
    for left_out in ("D1-DISPUTED", "D1-CREDIT", "D1-GBP", "£"):
        assert left_out not in en["text"] and left_out not in en["html"]
    assert en["subject"] and "\n" not in en["subject"]
    fr = wave.loc[key("D2", "email")]
    assert fr["locale"] == "fr"
    assert "1\u202f234,56\u00a0€" in fr["text"] or "1 234,56 €" in fr["text"]
    assert "1 oct. 2026" in fr["text"]
    ar = wave.loc[key("D3", "email")]
    assert ar["locale"] == "ar" and 'dir="rtl"' in ar["html"]
    assert "ر.س" in ar["html"]
    letter = wave.loc[key("D3", "letter")]
    assert 'dir="rtl"' in letter["html"] and pd.isna(letter["text"])
    # every message of a debtor links the same personal page, published under an unguessable key
    assert wave.loc[key("D3", "email"), "page_url"] == letter["page_url"]
    page = day[1] / "portal" / letter["page_key"]
    assert page.exists() and "ر.س" in page.read_text()
    assert len(letter["page_key"].split("/")[1]) >= 20


def test_debtor_data_is_data_in_every_channel(day):
    _, wave = prepare(day)
    email, call = wave.loc[key("D4", "email")], wave.loc[key("D4", "call")]
    assert "{{ 7*7 }}" in email["text"] and "49" not in email["text"].split("$")[0]
    assert "<script>" in email["text"]  # plain text carries the name as written
    assert "<script>" not in email["html"] and "&lt;script&gt;" in email["html"]
    assert "{{ 7*7 }}" in email["html"]
    assert "{{ 7*7 }}" in call["text"]


def test_a_dry_run_writes_previews_and_sends_nothing(day):
    engine, root = day
    result, _ = prepare(day, waves.Mode(False, "dry_run"))
    assert result["sending"] is False and result["previews"]
    previews = root / result["previews"]
    assert (previews / "email" / f"{waves._safe(key('D2', 'email'))}.html").exists()
    assert (previews / "sms" / f"{waves._safe(key('D1', 'sms'))}.txt").exists()
    assert len(list((previews / "pages").rglob("*.html"))) == 4
    sent = waves.send_wave(
        config(), AS_OF, root, engine, result["wave"], "email",
        mode=waves.Mode(False, "dry_run"), claim="c", transport=None,
    )  # fmt: skip
    assert sent["sent"] == 0 and "dry_run" in sent["skipped"]
    assert waves.day_counts(engine, AS_OF) == {}


@pytest.mark.parametrize(
    ("run", "now", "expected"),
    [
        ({"as_of": "2026-11-23"}, "2026-11-23T15:00Z", ("send", True)),
        ({"as_of": "2026-11-23", "dry_run": True}, "2026-11-23T15:00Z", ("dry_run", False)),
        ({"as_of": "2026-11-20", "backfill": True}, "2026-11-23T15:00Z", ("backfill", False)),
        ({"as_of": "2026-11-22"}, "2026-11-23T15:00Z", ("late", False)),
        (
            {"as_of": "2026-11-20", "backfill": True, "force_send": True, "force_reason": "r"},
            "2026-11-23T15:00Z",
            ("forced", True),
        ),
    ],
)
def test_only_the_day_itself_sends_unless_forced(run, now, expected):
    mode = waves.sending_mode(run, pd.Timestamp(now), "America/New_York")
    assert (mode.why, mode.send) == expected


class Recorder(waves.Transport):
    """A provider that records what it was asked to send, and can fail on cue."""

    def __init__(self, fail: dict | None = None) -> None:
        self.sent: list[str] = []
        self.fail = fail or {}

    def __exit__(self, *exc):
        return None

    def ready(self) -> None:
        return None

    def send(self, row) -> Outcome:
        problem = self.fail.get(row.contact_key)
        if problem is not None:
            raise problem
        self.sent.append(row.contact_key)
        return Outcome("test", f"id-{len(self.sent)}")


def send(day, wave_key, channel, transport, claim="run|x|1"):
    engine, root = day
    return waves.send_wave(
        config(), AS_OF, root, engine, wave_key, channel,
        mode=waves.Mode(True, "send"), claim=claim, transport=lambda: transport,
    )  # fmt: skip


def messages(engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(sa.select(ledger.Message.__table__), conn).set_index("contact_key")


def test_each_contact_is_sent_once_whatever_reruns_happen(day):
    engine, _ = day
    result, _ = prepare(day)
    first = Recorder()
    out = send(day, result["wave"], "email", first)
    assert out["sent"] == 4, out
    again = Recorder()
    assert send(day, result["wave"], "email", again, claim="run|x|2")["sent"] == 0
    assert again.sent == []
    rows = messages(engine)
    assert (rows["status"] == "sent").all()
    assert rows.loc[key("D2", "email"), "provider_id"].startswith("id-")
    assert rows.loc[key("D2", "email"), "template_version"]
    # a new prepare of the same day renders only what is not sent yet
    assert prepare(day)[0]["by_channel"].get("email") is None


def test_a_crash_mid_wave_leaves_one_unknown_send_for_review_not_a_resend(day):
    engine, _ = day
    result, _ = prepare(day)
    crash = Recorder(fail={key("D2", "email"): ConnectionResetError("lost mid-message")})
    with pytest.raises(ConnectionResetError):
        send(day, result["wave"], "email", crash)
    rerun = Recorder()
    outcome = send(day, result["wave"], "email", rerun, claim="run|x|2")
    assert outcome["unknown_flagged"] == 1
    assert key("D2", "email") not in rerun.sent
    assert sorted(crash.sent + rerun.sent) == sorted(key(d, "email") for d in ("D1", "D3", "D4"))
    rows = messages(engine)
    assert rows.loc[key("D2", "email"), "status"] == "unknown"
    review = waves.unknown_messages(engine, AS_OF)
    assert list(review["contact_key"]) == [key("D2", "email")]
    # the operator checked with the provider: not delivered -> the next wave sends it
    assert waves.resolve_unknown(
        engine, key("D2", "email"), delivered=False, note="checked", by="ops"
    )
    last = Recorder()
    assert send(day, result["wave"], "email", last, claim="run|x|3")["sent"] == 1
    assert last.sent == [key("D2", "email")]


def test_a_refused_message_is_failed_and_a_provider_outage_releases_it(day):
    engine, _ = day
    result, _ = prepare(day)
    refused = Recorder(fail={key("D1", "email"): ProviderError("550 no such user", permanent=True)})
    outcome = send(day, result["wave"], "email", refused)
    assert outcome["failed"] == 1 and outcome["sent"] == 3
    assert messages(engine).loc[key("D1", "email"), "status"] == "failed"

    outage = Recorder(fail={key("D1", "sms"): ProviderError("503", permanent=False)})
    with pytest.raises(ProviderError):
        send(day, result["wave"], "sms", outage)
    assert key("D1", "sms") not in messages(engine).index  # released: the retry sends it
    retry = Recorder()
    assert send(day, result["wave"], "sms", retry, claim="run|sms|2")["sent"] == 1


def test_the_gate_asks_again_at_send_time(day, pin_clock):
    engine, _ = day
    result, _ = prepare(day)
    with engine.begin() as conn:  # D3 unsubscribed after this morning's decisions
        conn.execute(
            sa.insert(ledger.ComplianceEvent.__table__),
            [{"debtor_id": "D3", "event": "unsubscribed", "channel": "email",
              "effective_date": AS_OF, "detail": None}],
        )  # fmt: skip
    recorder = Recorder()
    _, root = day
    pin_clock("2026-11-24T03:30:00Z")  # late evening: 21:30 in Chicago, 06:30 in Riyadh
    outcome = waves.send_wave(
        config(), AS_OF, root, engine, result["wave"], "email",
        mode=waves.Mode(True, "send"), claim="c|email|1", transport=lambda: recorder,
    )  # fmt: skip
    rows = messages(engine)
    assert rows.loc[key("D3", "email"), "status"] == "suppressed"
    assert "CHANNEL_OPT_OUT" in rows.loc[key("D3", "email"), "error"]
    # the others are only outside their hours now: they wait for a later wave, unclaimed
    assert outcome["waiting"] == 3 and recorder.sent == []
    assert set(rows.index) == {key("D3", "email")}
    pin_clock(NOON)
    assert send(day, result["wave"], "email", Recorder(), claim="c|email|2")["sent"] == 3


def test_an_sms_over_its_segment_cap_fails_instead_of_being_cut(day):
    engine, _ = day
    result, _ = prepare(day)
    cfg = config(channels={"sms": {"max_segments": 1}})
    _, root = day
    recorder = Recorder()
    outcome = waves.send_wave(
        cfg, AS_OF, root, engine, result["wave"], "sms",
        mode=waves.Mode(True, "send"), claim="c|sms|1", transport=lambda: recorder,
    )  # fmt: skip
    row = messages(engine).loc[key("D1", "sms")]
    if outcome.get("failed"):
        assert row["status"] == "failed" and row["error"].startswith("SMS_TOO_LONG")
    else:  # the template fits one segment: then it was sent
        assert row["status"] == "sent"


def test_sent_messages_count_for_the_next_days_cadence_and_caps(day):
    engine, _ = day
    result, _ = prepare(day)
    send(day, result["wave"], "email", Recorder())
    with engine.connect() as conn:
        ours = ledger.sent_contacts(
            conn, datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 25, tzinfo=UTC)
        )
    assert set(ours["debtor_id"]) == {"D1", "D2", "D3", "D4"}
    assert set(ours["template"]) == {"reminder_overdue", "reminder_firm"}


def test_a_day_already_sent_prepares_an_empty_wave_and_sends_nothing(day):

    result, _ = prepare(day)
    for channel in ("email", "sms", "letter", "call"):
        send(day, result["wave"], channel, Recorder())
    again, wave = prepare(day)
    assert again["contacts"] == 0 and len(wave) == 0
    for channel in ("email", "sms", "letter", "call"):
        assert send(day, again["wave"], channel, Recorder())["sent"] == 0


def test_bounces_unsubscribes_and_stop_replies_stop_the_next_wave(day, tmp_path):
    """The feedback loop end to end: what the channels report back after today's wave is in
    the gate's state for tomorrow's."""
    from datetime import timedelta

    from dunning import compliance, feedback
    from tests.test_feedback import _dsn, _eml, _original

    engine, _ = day
    result, _ = prepare(day)
    send(day, result["wave"], "email", Recorder())
    send(day, result["wave"], "sms", Recorder())
    bounced = key("D1", "email")
    original = _original(bounced, "<x@example.com>", "alex@example.com")
    dsn = _dsn(
        "<dsn-1@mx>",
        datetime(2026, 11, 23, 18, tzinfo=UTC),
        [{"Final-Recipient": "rfc822; alex@example.com", "Action": "failed", "Status": "5.1.1"}],
        original,
    )
    (tmp_path / "bounces").mkdir()
    _eml(tmp_path / "bounces", "1.eml", dsn)
    (tmp_path / "sms.jsonl").write_text(
        '{"type": "inbound", "sid": "SM1", "from": "+15125550101", "body": "STOP",'
        ' "at": "2026-11-23T19:00:00Z"}\n'
    )
    (tmp_path / "email.jsonl").write_text(
        f'{{"type": "unsubscribe", "id": "u1", "contact_key": "{key("D2", "email")}",'
        ' "at": "2026-11-23T20:00:00Z"}\n'
    )
    tomorrow = AS_OF + timedelta(days=1)
    got = feedback.collect_feedback(
        engine,
        tomorrow,
        bounce_dir=tmp_path / "bounces",
        sms_events=[tmp_path / "sms.jsonl"],
        email_events=[tmp_path / "email.jsonl"],
    )
    assert got["events_added"] == 3, got
    contacts = pd.DataFrame(
        {"debtor_id": ["D1", "D1", "D2", "D3"], "channel": ["email", "sms", "email", "email"]}
    )
    decided, _, _ = compliance.decide(
        engine, config(), tomorrow, contacts, pd.Timestamp("2026-11-24T16:30:00Z"), in_batch=False
    )
    assert list(decided["allowed"]) == [False, False, False, True]
    assert all("CHANNEL_OPT_OUT" in r for r in decided["reasons"][:3])


def test_a_letter_another_attempt_left_sending_is_flagged_not_printed_again(day):
    engine, _ = day
    result, _ = prepare(day)
    with engine.begin() as conn:  # an earlier attempt claimed it and died before confirming
        waves.claim_rows(conn, [_held()], "other|letter|1")
    again = send(day, result["wave"], "letter", Recorder(), claim="run|letter|2")
    assert again["sent"] == 0 and "file" not in again  # no empty PDF for the print vendor
    assert again["unknown_flagged"] == 1
    assert messages(engine).loc[key("D3", "letter"), "status"] == "unknown"


def _held() -> dict:
    return {
        "contact_key": key("D3", "letter"),
        "as_of": AS_OF,
        "debtor_id": "D3",
        "channel": "letter",
        "template": "final_notice",
        "template_version": "x",
        "locale": "ar",
        "recipient": None,
        "status": "sending",
        "claim": "other|letter|1",
        "claimed_at": datetime(2026, 11, 23, 16, tzinfo=UTC),
        "page_key": None,
        "forced_reason": None,
    }


def test_sharded_rendering_gives_the_single_run_wave(day):
    """Shards split the debtors (each debtor's messages in one shard, stable run to run) and
    their merge is the wave a single render makes, message for message."""
    engine, root = day
    preview = waves.Mode(False, "dry_run")
    whole, one = prepare(day, preview)
    one = one.reset_index()
    # one shard renders straight into the day's file: the merge keeps it as it is
    assert waves.merge_shards(root, AS_OF, [whole])["contacts"] == len(one)
    assert len(lake.read_parquet(root / whole["wave"])) == len(one)
    keys = {"plan_key": "plan.parquet", "decisions_key": "decisions.parquet", "mode": preview}
    parts = [
        waves.prepare_wave(config(), AS_OF, root, engine, shard=(k, 3), **keys) for k in range(3)
    ]
    assert all("/shard=" in p["wave"] for p in parts)
    merged = waves.merge_shards(root, AS_OF, parts)
    both = lake.read_parquet(root / merged["wave"])
    stable = ["contact_key", "debtor_id", "channel", "template", "recipient", "subject", "balance"]
    pd.testing.assert_frame_equal(
        both[stable].sort_values("contact_key", ignore_index=True),
        one[stable].sort_values("contact_key", ignore_index=True),
    )
    assert merged["contacts"] == len(one) == len(PLAN)
    assert merged["by_channel"] == one["channel"].value_counts().to_dict()
    shards = [set(lake.read_parquet(root / p["wave"])["debtor_id"]) for p in parts]
    assert sum(len(s) for s in shards) == len(set().union(*shards)) == len(DEBTORS)
    for k, debtors in enumerate(shards):  # the same debtor lands in the same shard again
        assert (waves.shard_of(pd.Series(sorted(debtors), dtype="str"), 3) == k).all()


def test_a_relay_refusing_everyone_trips_the_breaker_and_keeps_the_wave(day):
    """554 at RCPT for every message is an outage, not four bad addresses: the channel stops,
    the task fails (so the alert goes out), and nothing is marked failed or lost."""
    from dunning.channels import ChannelOutage

    engine, root = day
    result, wave = prepare(day)
    emails = wave[wave["channel"] == "email"].index
    refusing = Recorder(
        fail={k: ProviderError("554 5.7.1 <x@example.com>: relay denied", permanent=True)
              for k in emails}
    )  # fmt: skip
    cfg = config(channels={"outage_after_refusals": 3})
    with pytest.raises(ChannelOutage, match="refused 3 messages in a row") as caught:
        waves.send_wave(
            cfg, AS_OF, root, engine, result["wave"], "email",
            mode=waves.Mode(True, "send"), claim="c|email|1", transport=lambda: refusing,
        )  # fmt: skip
    assert "@" not in str(caught.value)  # counts, never a recipient, reach the log
    assert messages(engine).empty  # released: the wave is intact for the retry
    assert send(day, result["wave"], "email", Recorder(), claim="c|email|2")["sent"] == len(emails)


def test_a_rerun_that_plans_another_step_sends_no_second_message_that_day(day):
    """After a corrected config or a late file, a debtor may be due another step (another
    contact key); they still hear from us once per channel that day."""
    engine, root = day
    result, first = prepare(day)
    assert send(day, result["wave"], "email", Recorder())["sent"] == 4
    plan = lake.read_parquet(root / "plan.parquet")
    decisions = lake.read_parquet(root / "decisions.parquet")
    moved = {key("D1", "email"): f"D1:s:firm:email:{AS_OF}"}
    for frame in (plan, decisions):
        frame["contact_key"] = frame["contact_key"].replace(moved)
    lake.write_parquet(root / "plan.parquet", plan)
    lake.write_parquet(root / "decisions.parquet", decisions)
    _, wave = prepare(day)
    assert f"D1:s:firm:email:{AS_OF}" not in wave.index  # not even rendered
    # and were it in a wave (one prepared before the first send), the ledger refuses the claim
    late = Recorder()
    row = first.loc[[key("D1", "email")]].reset_index()
    row = row.assign(contact_key=f"D1:s:firm:email:{AS_OF}")
    counts = waves.send_each(engine, row, late, as_of=AS_OF, claim="c|x|9", forced=None)
    assert counts["skipped"] == 1 and late.sent == []
    assert list(messages(engine).query("debtor_id == 'D1'").index) == [key("D1", "email")]
