"""The synthetic portfolio: what a user of the demo, tests and benchmark relies on."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import sqlite3
from collections import defaultdict
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import phonenumbers
import pytest

from dunning.config import load_config
from dunning.generate import BEHAVIOURS, EVENTS, MEAN_OPEN_INVOICES_PER_DEBTOR, generate

AS_OF = date(2025, 3, 31)
SEED = 11
DEBTORS = 300
CSV_FILES = (
    "customers.csv",
    "invoice_history.csv",
    "payments.csv",
    "contact_history.csv",
    "compliance_events.csv",
    "truth/behaviour.csv",
)
ERP_HEADER = "Customer,Customer ID,Type,Date,Num,Due Date,Currency,Amount,Open Balance,Memo"


@pytest.fixture(scope="module")
def portfolio(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("portfolio")
    return out, generate(out, debtors=DEBTORS, as_of=AS_OF, seed=SEED)


def read(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / name, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def customers(portfolio) -> pd.DataFrame:
    return read(portfolio[0], "customers.csv")


@pytest.fixture(scope="module")
def history(portfolio) -> pd.DataFrame:
    """Invoice history joined with the hidden behaviour and the debtor's country."""
    out = portfolio[0]
    frame = read(out, "invoice_history.csv")
    frame = frame.merge(read(out, "truth/behaviour.csv"), on="debtor_id")
    frame = frame.merge(
        read(out, "customers.csv")[["debtor_id", "country", "kind"]], on="debtor_id"
    )
    for col in ("issue_date", "due_date", "paid_date"):
        frame[col] = pd.to_datetime(frame[col], format="%Y-%m-%d", errors="coerce")
    for col in ("amount", "open_amount"):
        frame[col] = frame[col].map(Decimal)
    return frame


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def erp_money(text: str) -> Decimal:
    negative = text.startswith("(") and text.endswith(")")
    value = Decimal(text.strip("()").lstrip("$£€").replace(",", ""))
    return -value if negative else value


# --- determinism --------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_and_another_seed_differs(portfolio, tmp_path):
    out, _ = portfolio
    again = tmp_path / "again"
    generate(again, debtors=DEBTORS, as_of=AS_OF, seed=SEED)
    first, second = digests(out), digests(again)
    assert set(first) == set(second) >= {*CSV_FILES, "ar_aging_detail.csv", "ar.sqlite"}
    for name in first:
        if name == "config.yaml":  # holds the absolute SQLite path of its own folder
            text = (again / name).read_text().replace(str(again.resolve()), str(out.resolve()))
            assert text == (out / name).read_text()
        else:
            assert first[name] == second[name], name

    other = tmp_path / "other"
    generate(other, debtors=DEBTORS, as_of=AS_OF, seed=SEED + 1)
    third = digests(other)
    for name in (*CSV_FILES, "ar_aging_detail.csv"):
        assert third[name] != first[name], name


def test_summary_counts_match_the_files(portfolio, customers, history):
    out, summary = portfolio
    counts = summary["counts"]
    assert counts["debtors"] == len(customers) == DEBTORS
    assert counts["history_invoices"] == len(history)
    assert counts["open_invoices"] == int((history["open_amount"] != 0).sum())
    assert counts["payments"] == len(read(out, "payments.csv"))
    assert counts["contacts"] == len(read(out, "contact_history.csv"))
    assert counts["compliance_events"] == len(read(out, "compliance_events.csv"))
    assert counts["erp_open_invoices"] + counts["sql_invoices"] >= counts["open_invoices"]
    assert sum(summary["behaviour_mix"].values()) == DEBTORS
    assert all(Path(p).exists() for p in summary["paths"].values())
    json.dumps(summary)  # the CLI prints it


def test_mean_open_invoices_constant_sizes_a_benchmark():
    """The benchmark asks for N / MEAN debtors to get about N open invoices.

    300 debtors are too noisy for this (a few large never-paying businesses swing it), so the
    model is run without writing files on a bigger portfolio.
    """
    from dunning import generate as gen

    day = gen._day(AS_OF)
    debtors = gen._make_debtors(10_000, day, SEED)
    docs, _ = gen._make_docs(debtors, gen._make_cases(debtors, day, SEED), day, SEED)
    per_debtor = (docs.open != 0).sum() / debtors.n
    assert per_debtor == pytest.approx(MEAN_OPEN_INVOICES_PER_DEBTOR, rel=0.12)


# --- debtors ------------------------------------------------------------------------------------


def test_countries_regions_zones_and_locales(customers):
    assert list(customers.columns) == [
        "debtor_id", "name", "kind", "country", "region", "city", "postal_code", "timezones",
        "locale", "email", "phone", "employer_email", "consent_email", "consent_sms",
        "opted_out", "customer_since",
    ]  # fmt: skip
    assert customers["debtor_id"].str.fullmatch(r"D\d{7}").all()
    assert customers["debtor_id"].is_unique
    assert set(customers["country"]) == {"US", "GB", "FR", "AE", "SA"}
    us = customers[customers["country"] == "US"]
    assert {"MA", "NY", "CA", "WA", "TX"} <= set(us["region"])
    assert ((us["region"] == "NY") & (us["city"] == "New York")).any()  # New York City
    locale = {"US": "en", "GB": "en", "FR": "fr", "AE": "ar", "SA": "ar"}
    assert (customers["locale"] == customers["country"].map(locale)).all()
    home = {"GB": "Europe/London", "FR": "Europe/Paris", "AE": "Asia/Dubai", "SA": "Asia/Riyadh"}
    first_zone = customers["timezones"].str.split("|").str[0]
    for country, zone in home.items():
        assert (first_zone[customers["country"] == country] == zone).all()
    us_zones = {"America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles"}
    assert us_zones <= set(first_zone[customers["country"] == "US"])
    pacific = us["region"].isin(["CA", "WA"])
    assert (first_zone[us.index[pacific]] == "America/Los_Angeles").all()
    assert (first_zone[us.index[us["region"].isin(["MA", "NY"])]] == "America/New_York").all()
    for zones in customers["timezones"]:
        for zone in zones.split("|"):
            ZoneInfo(zone)
    two = customers["timezones"].str.contains("|", regex=False)
    assert 0 < two.mean() < 0.06
    assert set(customers["kind"]) == {"consumer", "commercial"}
    arabic = customers.loc[customers["locale"] == "ar", "name"]
    assert arabic.str.contains(r"[\u0600-\u06FF]").any()  # right-to-left script
    assert arabic.str.contains(r"^[A-Za-z]").any()  # and transliterated names
    assert pd.to_datetime(customers["customer_since"], format="%Y-%m-%d").max() < pd.Timestamp(
        AS_OF
    )


def test_phones_are_valid_e164_for_the_debtors_country(customers):
    with_phone = customers[customers["phone"] != ""]
    assert len(with_phone) > 0.9 * len(customers)
    for phone, country in zip(with_phone["phone"], with_phone["country"], strict=True):
        number = phonenumbers.parse(phone, None)
        assert phonenumbers.is_valid_number_for_region(number, country), (phone, country)
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        assert e164 == phone


def test_emails_and_contact_preferences(customers):
    emails = customers.loc[customers["email"] != "", "email"]
    assert len(emails) > 0.9 * len(customers)
    assert emails.str.fullmatch(r"[a-z0-9._]+@[a-z0-9-]+(\.[a-z0-9-]+)+").all()
    bools = customers[["employer_email", "consent_email", "consent_sms"]]
    assert bools.isin(["true", "false"]).all().all()
    work = customers["employer_email"] == "true"
    assert work.any()
    assert (customers.loc[work, "kind"] == "consumer").all()
    opted = customers["opted_out"]
    assert opted.isin(["", "sms", "email", "call", "email|sms"]).all()
    assert 0 < (opted != "").mean() < 0.15


# --- history driven by behaviour ----------------------------------------------------------------


def test_every_behaviour_is_present_with_a_realistic_mix(portfolio):
    mix = portfolio[1]["behaviour_mix"]
    assert set(mix) == set(BEHAVIOURS)
    assert all(mix[b] > 0 for b in BEHAVIOURS)
    assert mix["on_time"] == max(mix.values())
    assert mix["never_pays"] < mix["chronically_late"]


def test_lateness_follows_behaviour(history):
    paid = history[(history["doc_type"] == "invoice") & history["paid_date"].notna()]
    late = (paid["paid_date"] - paid["due_date"]).dt.days.groupby(paid["behaviour"]).median()
    assert late["on_time"] <= 0
    assert 7 <= late["forgetful"] <= 20  # a few days after the reminder at due + 7
    assert late["chronically_late"] >= 30
    assert late["chronically_late"] - late["on_time"] >= 30


def test_never_payers_hold_the_oldest_open_balances(history):
    open_inv = history[(history["doc_type"] == "invoice") & (history["open_amount"] > 0)]
    oldest = open_inv.groupby("debtor_id").agg(
        issued=("issue_date", "min"), behaviour=("behaviour", "first")
    )
    age = (pd.Timestamp(AS_OF) - oldest["issued"]).dt.days.groupby(oldest["behaviour"]).median()
    assert age.idxmax() == "never_pays"
    assert age["never_pays"] > 2 * age["on_time"]


def test_partial_payers_have_partly_paid_open_invoices(history):
    inv = history[(history["doc_type"] == "invoice") & (history["open_amount"] > 0)]
    partly = inv["open_amount"] < inv["amount"]
    share = partly.groupby(inv["behaviour"]).mean()
    assert share.idxmax() == "partial"
    assert share["partial"] > 0.25


def test_invoice_history_is_consistent(history):
    assert history["invoice_id"].is_unique
    assert set(history["doc_type"]) == {"invoice", "credit_note"}
    assert history["invoice_id"].str.fullmatch(r"(INV|CRN)-\d{7}").all()
    assert set(history["currency"]) >= {"USD", "GBP", "EUR", "AED", "SAR"}
    assert (history["issue_date"] <= pd.Timestamp(AS_OF)).all()
    assert (history["issue_date"] >= pd.Timestamp(AS_OF) - pd.Timedelta(days=366)).all()
    assert (history["due_date"] >= history["issue_date"]).all()
    inv = history[history["doc_type"] == "invoice"]
    assert (inv["amount"] > 0).all()
    assert ((inv["open_amount"] >= 0) & (inv["open_amount"] <= inv["amount"])).all()
    # closed means fully paid (or credited) by a date no later than as_of
    closed = history["paid_date"].notna()
    assert (history.loc[closed, "open_amount"] == 0).all()
    assert (history.loc[closed, "paid_date"] <= pd.Timestamp(AS_OF)).all()
    assert (history.loc[~closed, "open_amount"] != 0).all()
    assert (history["amount"].map(lambda a: a.as_tuple().exponent) == -2).all()
    disputed = history["disputed"] == "true"
    assert disputed.any()
    assert (history.loc[disputed, "open_amount"] > 0).all()
    consumer = inv[inv["kind"] == "consumer"]
    commercial = inv[inv["kind"] == "commercial"]
    assert commercial["amount"].median() > 5 * consumer["amount"].median()


def test_credit_notes_exist_and_some_are_open(history):
    notes = history[history["doc_type"] == "credit_note"]
    assert len(notes) > 0
    assert (notes["amount"] < 0).all()
    assert ((notes["open_amount"] == 0) | (notes["open_amount"] == notes["amount"])).all()
    assert (notes["open_amount"] < 0).any()


def test_payment_feed_names_invoices_mostly_not_always(portfolio, history):
    payments = read(portfolio[0], "payments.csv")
    assert list(payments.columns) == [
        "payment_id", "debtor_id", "paid_on", "currency", "amount", "method", "reference",
    ]  # fmt: skip
    assert payments["payment_id"].is_unique
    assert payments["amount"].map(Decimal).gt(0).all()
    assert payments["paid_on"].max() <= AS_OF.isoformat()
    assert payments["method"].nunique() >= 5
    ids = set(history["invoice_id"])
    named = payments["reference"].str.findall(r"INV-\d{7}")
    exact = named.map(lambda found: bool(found) and all(i in ids for i in found))
    assert 0.4 < exact.mean() < 0.9  # usually the invoice number, written exactly
    assert (named.map(len) > 1).any()  # one payment covering several invoices
    assert payments["reference"].str.contains(r"INV\d{7}|inv \d+|Invoice \d{7}").any()
    mentions = payments["reference"].str.contains(r"(?i)inv")
    assert (~mentions).any()  # remittance without any invoice number
    typo = named.map(lambda found: any(i not in ids for i in found))
    assert typo.any()
    # money paid never exceeds what was billed, per debtor and currency
    billed = history[history["doc_type"] == "invoice"].groupby(["debtor_id", "currency"])["amount"]
    received = payments.assign(amount=payments["amount"].map(Decimal)).groupby(
        ["debtor_id", "currency"]
    )["amount"]
    joined = pd.concat([billed.sum(), received.sum()], axis=1, keys=["billed", "paid"]).fillna(0)
    assert (joined["paid"] <= joined["billed"]).all()


def test_contacts_happen_in_local_business_hours_and_respect_consent(portfolio, customers):
    contacts = read(portfolio[0], "contact_history.csv")
    assert contacts["at"].str.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z").all()
    assert set(contacts["channel"]) == {"email", "sms", "letter", "call"}
    joined = contacts.merge(customers, on="debtor_id")
    for _, row in joined.sample(300, random_state=0).iterrows():
        zone = ZoneInfo(row["timezones"].split("|")[0])
        local = datetime.fromisoformat(row["at"].replace("Z", "+00:00")).astimezone(zone)
        assert 9 <= local.hour < 20, row["at"]
        weekend = {4, 5} if row["country"] == "SA" else {5, 6}
        assert local.weekday() not in weekend
    assert (joined.loc[joined["channel"] == "sms", "consent_sms"] == "true").all()
    calls = contacts["channel"] == "call"
    assert contacts.loc[calls, "connected"].isin(["true", "false"]).all()
    assert (contacts.loc[~calls, ["connected", "conversation"]] == "").all().all()
    talked = contacts["conversation"] == "true"
    assert (contacts.loc[talked, "connected"] == "true").all()
    assert contacts["at"].max() < f"{AS_OF.isoformat()}T23:59:59Z"


def test_compliance_events(portfolio, customers, history):
    events = read(portfolio[0], "compliance_events.csv")
    assert list(events.columns) == ["debtor_id", "event", "channel", "effective_date", "detail"]
    assert set(events["event"]) <= set(EVENTS)
    assert {"consent", "opt_out", "dispute_opened", "dispute_resolved"} <= set(events["event"])
    disputes = events[events["event"].str.startswith("dispute")]
    assert (disputes["channel"] == "").all()
    invoice_of = disputes["detail"].map(lambda d: json.loads(d)["invoice_id"])
    debtor_of = history.set_index("invoice_id")["debtor_id"]
    assert (invoice_of.map(debtor_of) == disputes["debtor_id"]).all()
    pending = set(history.loc[history["disputed"] == "true", "invoice_id"])
    opened = set(invoice_of[disputes["event"] == "dispute_opened"])
    resolved = set(invoice_of[disputes["event"] == "dispute_resolved"])
    assert pending == opened - resolved
    inconvenient = events[events["event"] == "inconvenient_time"]
    for detail in inconvenient["detail"]:
        window = json.loads(detail)
        assert set(window) == {"weekdays", "start", "end"}
        assert re.fullmatch(r"\d{2}:\d{2}", window["start"])
    other = events[
        ~events["event"].isin(["inconvenient_time", "dispute_opened", "dispute_resolved"])
    ]
    assert (other["detail"] == "").all()
    # opt-outs in the log are the ones on the debtor record
    logged = (
        events[events["event"] == "opt_out"]
        .groupby("debtor_id")["channel"]
        .agg(lambda c: "|".join(sorted(c)))
    )
    on_record = customers.set_index("debtor_id")["opted_out"]
    assert logged.to_dict() == on_record[on_record != ""].to_dict()
    space = events[events["event"].str.startswith("breathing_space")]
    kinds = customers.set_index("debtor_id").loc[space["debtor_id"], ["country", "kind"]]
    assert (kinds["country"] == "GB").all()
    assert (kinds["kind"] == "consumer").all()
    assert events["effective_date"].max() <= AS_OF.isoformat()


# --- the two AR systems -------------------------------------------------------------------------


def test_erp_export_has_the_erp_layout(portfolio, history):
    raw = (portfolio[0] / "ar_aging_detail.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    assert raw.count(b"\r\n") == raw.count(b"\n")
    lines = raw.decode("utf-8-sig").split("\r\n")
    assert lines[1:5] == ["A/R Aging Detail", f"As of {AS_OF:%d/%m/%Y}", "", ERP_HEADER]
    assert lines[0] and lines[-1] == ""
    rows = list(csv.reader(io.StringIO("\r\n".join(lines[5:]), newline="")))

    details, subtotals, grand = [], [], {}
    sums = defaultdict(lambda: [Decimal(0), Decimal(0)])
    per_currency = defaultdict(lambda: [Decimal(0), Decimal(0)])
    current = None
    for row in rows:
        assert len(row) == 10
        if row[0].startswith("Grand Total "):
            assert row[0] == f"Grand Total {row[6]}"
            grand[row[6]] = [erp_money(row[7]), erp_money(row[8])]
        elif row[1] == "":
            assert row[0] == f"Total {current[0]}"
            assert row[2:7] == ["", "", "", "", ""] and row[9] == ""
            assert [erp_money(row[7]), erp_money(row[8])] == sums[current[1]]
            subtotals.append(row)
        else:
            assert not grand, "detail rows come before the grand totals"
            assert current is None or row[1] == current[1] or row[1] not in sums  # grouped
            current = (row[0], row[1])
            details.append(row)
            for acc in (sums[row[1]], per_currency[row[6]]):
                acc[0] += erp_money(row[7])
                acc[1] += erp_money(row[8])
    assert len(subtotals) == len(sums)
    assert grand == per_currency
    assert {"USD", "GBP"} <= set(grand)

    frame = pd.DataFrame(details, columns=ERP_HEADER.split(","))
    assert set(frame["Type"]) == {"Invoice", "Credit Memo"}
    assert frame["Date"].str.fullmatch(r"\d{2}/\d{2}/\d{4}").all()
    assert frame["Amount"].str.fullmatch(r"\(?[$£€][\d,]+\.\d{2}\)?").all()
    credit = frame["Type"] == "Credit Memo"
    assert frame.loc[credit, "Open Balance"].str.startswith("(").all()
    assert frame["Amount"].str.contains(",").any()  # thousands separators
    assert 'Total "' not in raw.decode("utf-8-sig")  # names quoted as whole cells only
    # exactly the open documents of US and UK debtors
    expected = history[(history["open_amount"] != 0) & history["country"].isin(["US", "GB"])]
    assert sorted(frame["Num"]) == sorted(expected["invoice_id"])
    by_id = expected.set_index("invoice_id")
    assert (
        frame["Open Balance"].map(erp_money).values == by_id.loc[frame["Num"], "open_amount"].values
    ).all()
    assert (
        pd.to_datetime(frame["Due Date"], format="%d/%m/%Y").values
        == by_id.loc[frame["Num"], "due_date"].values
    ).all()


def test_erp_and_clean_csvs_use_csv_module_quoting(portfolio):
    out = portfolio[0]
    raw = (out / "ar_aging_detail.csv").read_bytes()
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    buf = io.StringIO(newline="")
    csv.writer(buf, lineterminator="\r\n").writerows(rows)
    assert ("\ufeff" + buf.getvalue()).encode() == raw
    assert any(row and "," in row[0] for row in rows)  # some names needed quoting
    for name in CSV_FILES:
        raw = (out / name).read_bytes()
        rows = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
        buf = io.StringIO(newline="")
        csv.writer(buf, lineterminator="\n").writerows(rows)
        assert buf.getvalue().encode() == raw, name
        assert len({len(r) for r in rows}) == 1, name


def test_sql_ar_system_holds_all_fr_ae_sa_invoices(portfolio, history):
    con = sqlite3.connect(portfolio[0] / "ar.sqlite")
    try:
        assert con.execute("SELECT as_of FROM ar_extract_runs").fetchall() == [(AS_OF.isoformat(),)]
        rows = pd.read_sql(
            "SELECT invoice_no, customer_id, doc_type, issued_on, due_on, currency, "
            "CAST(amount AS TEXT) AS amount, CAST(open_balance AS TEXT) AS open_balance, "
            "reference, disputed, closed_on FROM ar_invoices",
            con,
        )
        open_rows = con.execute(
            "SELECT COUNT(*) FROM ar_invoices WHERE CAST(open_balance AS NUMERIC) <> 0"
        ).fetchone()[0]
    finally:
        con.close()
    expected = history[history["country"].isin(["FR", "AE", "SA"])].set_index("invoice_id")
    assert sorted(rows["invoice_no"]) == sorted(expected.index)
    assert open_rows == int((expected["open_amount"] != 0).sum())
    rows = rows.set_index("invoice_no").loc[expected.index]
    assert rows["amount"].str.fullmatch(r"-?\d+\.\d{2}").all()  # exact, e.g. '1234.50'
    assert (rows["amount"].map(Decimal) == expected["amount"]).all()
    assert (rows["open_balance"].map(Decimal) == expected["open_amount"]).all()
    assert set(rows["doc_type"]) == {"INV", "CRN"}
    assert ((rows["doc_type"] == "CRN") == (expected["doc_type"] == "credit_note")).all()
    assert set(rows["currency"]) <= {"EUR", "AED", "SAR"}
    assert set(rows["disputed"]) <= {0, 1}
    assert (rows["closed_on"].isna() == expected["paid_date"].isna()).all()
    assert (rows["issued_on"] == expected["issue_date"].dt.strftime("%Y-%m-%d")).all()


def test_config_loads_and_points_at_the_written_files(portfolio):
    out = portfolio[0]
    cfg = load_config(out / "config.yaml")
    assert [s.name for s in cfg.sources] == ["erp_us", "ar_db", "customers"]
    erp, db, debtors = cfg.sources
    assert cfg.resolve(erp.path).read_bytes().startswith(b"\xef\xbb\xbf")
    assert erp.encoding == "utf-8-sig" and erp.date_format == "%d/%m/%Y"
    assert erp.number.parentheses_negative and erp.number.strip == "$£€"
    assert re.search(erp.as_of_pattern, f"As of {AS_OF:%d/%m/%Y}")
    assert re.match(erp.grand_total_pattern, "Grand Total USD").group("cur") == "USD"
    header = ERP_HEADER.split(",")
    assert list(erp.columns) == header
    assert db.url == "sqlite:///ar.sqlite"  # relative to the config: the folder can move
    assert cfg.resolve_sqlite(db.url) == f"sqlite:///{(out / 'ar.sqlite').resolve()}"
    assert (db.query, db.control_query, db.freshness_query) == (
        "ar_open_invoices.sql",
        "ar_control_totals.sql",
        "ar_freshness.sql",
    )
    assert debtors.dataset == "debtors"
    assert cfg.resolve(debtors.path) == out / "customers.csv"
    assert list(debtors.columns) == list(read(out, "customers.csv").columns)
    assert cfg.portfolio.home_currency == "USD"
    assert cfg.schedule.timezone == "America/New_York"


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="debtors"):
        generate(tmp_path, debtors=0, as_of=AS_OF)
    with pytest.raises(ValueError, match="seed"):
        generate(tmp_path, debtors=5, as_of=AS_OF, seed=-1)
