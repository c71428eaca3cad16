"""Row rules quarantine exactly the bad row with file, line, field and reason; gates stop runs."""

from __future__ import annotations

import json
from datetime import date

import pandas as pd
import pytest

from dunning import lake
from dunning.config import NumberFormat, load_config
from dunning.quality import SourceGateError, parse_amount, to_minor, validate, validate_to_lake
from dunning.sources import extract, extract_to_lake
from tests.factories import CUSTOMER_HEADER, customer, customers_text, invoice, write_portfolio

AS_OF = date(2026, 11, 23)


def run(tmp_path, rows, customers=None, previous=None, **kw):
    cfg = load_config(write_portfolio(tmp_path, rows, customers, **kw))
    extracted = [extract(cfg, s.name, AS_OF) for s in cfg.sources]
    return validate(cfg, extracted, AS_OF, previous)


@pytest.mark.parametrize(
    ("bad_row", "field", "reason"),
    [
        pytest.param(invoice("INV-9", Num=""), "invoice_id", "MISSING_FIELD", id="missing-id"),
        pytest.param(invoice("INV-9", Date="31/02/2026"), "issue_date", "BAD_DATE", id="bad-date"),
        pytest.param(
            invoice("INV-9", Date="2026/09/05"), "issue_date", "BAD_DATE", id="wrong-format"
        ),
        pytest.param(invoice("INV-9", Amount="$12,3a.00"), "amount", "BAD_AMOUNT", id="bad-amount"),
        pytest.param(invoice("INV-9", Amount="$12.345"), "amount", "BAD_AMOUNT", id="3-decimals"),
        pytest.param(
            invoice("INV-9", Amount="($5.00)", **{"Open Balance": "($5.00)"}),
            "amount",
            "NEGATIVE_AMOUNT",
            id="negative-invoice",
        ),
        pytest.param(
            invoice("INV-9", Amount="$99,999,999,999.00"), "amount", "AMOUNT_TOO_LARGE", id="huge"
        ),
        pytest.param(
            invoice("INV-9", Amount="$99999999999999999999.00"),
            "amount",
            "AMOUNT_TOO_LARGE",
            id="overflow",
        ),
        pytest.param(
            invoice("INV-9", **{"Open Balance": "$2,000.00"}),
            "open_amount",
            "OPEN_EXCEEDS_AMOUNT",
            id="open-exceeds",
        ),
        pytest.param(invoice("INV-9", Currency="XYZ"), "currency", "BAD_CURRENCY", id="currency"),
        pytest.param(invoice("INV-9", Currency="DEM"), "currency", "BAD_CURRENCY", id="withdrawn"),
        pytest.param(invoice("INV-9", Type="Quote"), "doc_type", "BAD_DOC_TYPE", id="doc-type"),
        pytest.param(
            invoice("INV-9", **{"Due Date": "01/09/2026"}),
            "due_date",
            "DUE_BEFORE_ISSUE",
            id="due-before-issue",
        ),
        pytest.param(
            invoice("INV-9", Memo='=HYPERLINK("http://x","pay")'),
            "reference",
            "FORMULA_CELL",
            id="formula-eq",
        ),
        pytest.param(
            invoice("INV-9", Memo="@SUM(A1)"), "reference", "FORMULA_CELL", id="formula-at"
        ),
        pytest.param(
            invoice("INV-9", Customer="+cmd|' /C calc'!A0"),
            "customer_name",
            "FORMULA_CELL",
            id="formula-plus",
        ),
        pytest.param(
            invoice("INV-9", **{"Customer ID": "D404"}),
            "debtor_id",
            "UNKNOWN_DEBTOR",
            id="unknown-debtor",
        ),
    ],
)
def test_invoice_rule_quarantines_only_the_bad_row(tmp_path, bad_row, field, reason):
    result = run(tmp_path, [invoice("INV-1"), bad_row, invoice("INV-2")])
    assert list(result.invoices["invoice_id"]) == ["INV-1", "INV-2"]
    q = result.quarantine
    hit = q[(q["reason"] == reason) & (q["field"] == field)]
    assert len(hit) == 1, q[["field", "reason", "message"]]
    assert set(q["source_row"]) == {7}
    row = hit.iloc[0]
    assert (row["source_file"], row["source_row"], row["field"]) == ("erp.csv", 7, field)
    assert json.loads(row["raw"])["due_date"] == bad_row["Due Date"]  # whole row kept to replay


@pytest.mark.parametrize(
    ("bad", "field", "reason"),
    [
        pytest.param({"email": "not-an-email"}, "email", "BAD_EMAIL", id="email"),
        pytest.param({"phone": "+1555"}, "phone", "BAD_PHONE", id="phone-short"),
        pytest.param({"phone": "6175550123"}, "phone", "BAD_PHONE", id="phone-not-e164"),
        pytest.param({"kind": "alien"}, "kind", "BAD_VALUE", id="kind"),
        pytest.param({"country": "XX"}, "country", "BAD_VALUE", id="country"),
        pytest.param({"country": "ZZ"}, "country", "BAD_VALUE", id="country-unknown"),
        pytest.param({"timezones": "Mars/Olympus"}, "timezones", "BAD_VALUE", id="timezone"),
        pytest.param({"locale": "de"}, "locale", "BAD_VALUE", id="locale"),
        pytest.param({"consent_sms": "maybe"}, "consent_sms", "BAD_VALUE", id="bool"),
        pytest.param({"name": "=1+2"}, "name", "FORMULA_CELL", id="formula"),
        pytest.param({"name": ""}, "name", "MISSING_FIELD", id="missing-name"),
    ],
)
def test_debtor_rule_quarantines_only_the_bad_row(tmp_path, bad, field, reason):
    customers = [customer("D001"), customer("D002", **bad)]
    result = run(tmp_path, [invoice("INV-1")], customers)
    assert list(result.debtors["debtor_id"]) == ["D001"]
    hit = result.quarantine[result.quarantine["reason"] == reason].iloc[0]
    assert (hit["source_file"], hit["source_row"], hit["field"]) == ("customers.csv", 3, field)


def test_duplicate_invoice_ids(tmp_path):
    rows = [
        invoice("INV-1"),
        invoice("INV-1"),
        invoice("INV-2"),
        invoice("INV-2", Amount="$1,300.00"),
    ]
    result = run(tmp_path, rows)
    assert list(result.invoices["invoice_id"]) == ["INV-1"]  # exact repeat keeps its first line
    dupes = result.quarantine[result.quarantine["reason"] == "DUPLICATE_ID"]
    assert sorted(dupes["source_row"]) == [7, 8, 9]
    assert "exact repeat of line 6" in set(dupes["message"])


def test_invoice_of_a_quarantined_debtor_is_held_back_too(tmp_path):
    result = run(tmp_path, [invoice("INV-1")], [customer("D001", email="bad@")])
    assert result.invoices.empty
    assert set(result.quarantine["reason"]) == {"BAD_EMAIL", "DEBTOR_QUARANTINED"}


def test_non_utf8_bytes_quarantine_the_row_and_keep_the_rest(tmp_path):
    cfg = load_config(write_portfolio(tmp_path, [invoice("INV-1"), invoice("INV-2", Memo="Cafe")]))
    path = tmp_path / "erp.csv"
    path.write_bytes(path.read_bytes().replace(b"Cafe", b"Caf\xe9"))
    result = validate(cfg, [extract(cfg, s.name, AS_OF) for s in cfg.sources], AS_OF)
    assert list(result.invoices["invoice_id"]) == ["INV-1"]
    row = result.quarantine.iloc[0]
    assert (row["reason"], row["source_row"], row["field"]) == ("BAD_ENCODING", 7, "reference")


def test_money_is_exact_minor_units():
    text = pd.Series(["$1,234.50", "(12.05)", "-$0.10", "7", "0.5"])
    cur = pd.Series(["USD", "USD", "USD", "JPY", "KWD"])
    from dunning.quality import currency_exponent

    neg, whole, frac = parse_amount(
        text, NumberFormat(thousands=",", parentheses_negative=True, strip="$")
    )
    minor, too_precise = to_minor(neg, whole, frac, currency_exponent(cur), round_frac=False)
    assert list(minor) == [123450, -1205, -10, 7, 500]
    assert not too_precise.any()


def test_credit_notes_and_partly_paid_invoices_are_clean(tmp_path):
    rows = [
        invoice("INV-1", **{"Open Balance": "$234.50"}),
        invoice("CM-1", Type="Credit Memo", Amount="($50.00)", **{"Open Balance": "($50.00)"}),
    ]
    result = run(tmp_path, rows)
    assert result.quarantine.empty
    assert list(result.invoices["open_minor"]) == [23450, -5000]
    assert list(result.invoices["doc_type"]) == ["invoice", "credit_note"]


# --- source-level gates --------------------------------------------------------------------


def gates_of(result):
    return {f["gate"] for f in result.gate_failures}


def test_empty_source_stops_the_run(tmp_path):
    assert "EMPTY" in gates_of(run(tmp_path, []))


@pytest.mark.clock
def test_stale_source_stops_the_run(tmp_path):
    assert gates_of(run(tmp_path, [invoice("INV-1")], erp_as_of="20/11/2026")) == {"STALE"}


@pytest.mark.clock
def test_source_newer_than_the_run_date_stops_a_backfill(tmp_path):
    assert gates_of(run(tmp_path, [invoice("INV-1")], erp_as_of="24/11/2026")) == {"SOURCE_AHEAD"}


def test_control_total_mismatch_stops_the_run(tmp_path):
    ok = run(tmp_path / "a", [invoice("INV-1")], totals={"USD": "$1,234.50"})
    assert ok.gate_failures == []
    bad = run(tmp_path / "b", [invoice("INV-1")], totals={"USD": "$1,234.51"})
    assert gates_of(bad) == {"CONTROL_TOTAL"}
    assert "line 8" in bad.gate_failures[0]["message"]


def test_an_export_that_lost_its_totals_is_stopped_as_cut_short(tmp_path):
    """A file cut mid-way loses its grand totals first: every row it still has would pass."""
    folder = tmp_path / "cut"
    config = write_portfolio(
        folder, [invoice("INV-1"), invoice("INV-2")], totals={"USD": "$2,469.00"}
    )
    erp = folder / "erp.csv"
    text = erp.read_text(encoding="utf-8")
    erp.write_text(text[: text.index("INV-2")], encoding="utf-8")  # cut in the middle of a row
    cfg = load_config(config)
    assert cfg.source("erp_us").completeness == "control_totals"  # declared by its totals row
    result = validate(cfg, [extract(cfg, s.name, AS_OF) for s in cfg.sources], AS_OF)
    assert "CONTROL_TOTAL_MISSING" in gates_of(result)
    (failure,) = [f for f in result.gate_failures if f["gate"] == "CONTROL_TOTAL_MISSING"]
    assert failure["file"].endswith("erp.csv") and "cut short" in failure["message"]


def test_a_source_that_proves_nothing_whole_is_a_warning_in_the_summary(tmp_path):
    from dunning.reports import build_summary

    result = run(tmp_path, [invoice("INV-1")])  # no totals: the factory says completeness none
    assert result.gate_failures == []
    assert result.stats["erp_us"]["completeness"] == "none"
    run_info = {"as_of": "2026-11-23", "backfill": False, "dry_run": False}
    stats = {"sources": result.stats, "gate_failures": [], "rows_quarantined": 0}
    summary = build_summary(run_info, stats, None, None, None, None, None)
    assert [w.split(":")[0] for w in summary["warnings"]] == ["erp_us"]


@pytest.mark.parametrize(
    ("char", "spelt"), [("\x00", r"\x00"), ("\x1b", r"\x1b"), ("\x7f", r"\x7f")]
)
def test_control_characters_are_quarantined_with_the_value_spelt_out(tmp_path, char, spelt):
    """A NUL in a memo once failed the day on PostgreSQL with no file or row named."""
    result = run(tmp_path, [invoice("INV-1"), invoice("INV-2", Memo=f"PO{char}77")])
    (row,) = result.quarantine.itertuples()
    assert (row.field, row.reason, row.source_row) == ("reference", "CONTROL_CHARACTER", 7)
    assert row.value == f"PO{spelt}77"  # readable and storable: no raw control character
    assert list(result.invoices["invoice_id"]) == ["INV-1"]


@pytest.mark.parametrize(
    ("cell", "shown"),
    [
        ('=HYPERLINK("http://x","pay")', '\'=HYPERLINK("http://x","pay")'),
        (' =HYPERLINK("http://x")', ' \'=HYPERLINK("http://x")'),  # a leading blank is skipped
        ("x;=HYPERLINK(1)", "x;'=HYPERLINK(1)"),  # a semicolon locale splits the cell there
        ("Parts, @SUM(A1)", "Parts, '@SUM(A1)"),
        ("Smith, John", "Smith, John"),
        ("Parts - labour", "Parts - labour"),
    ],
)
def test_every_place_a_spreadsheet_could_start_a_formula_is_neutralized(cell, shown):
    from dunning.quality import neutralize

    assert neutralize(pd.DataFrame({"memo": [cell]}))["memo"].item() == shown


def test_a_data_row_that_lost_its_ids_is_quarantined_not_taken_for_a_total(tmp_path):
    row = invoice("", debtor="", name="Total Logistics Inc")  # looks like a subtotal label
    result = run(tmp_path, [invoice("INV-1"), row])
    assert {(r.field, r.reason) for r in result.quarantine.itertuples()} >= {
        ("invoice_id", "MISSING_FIELD"),
        ("debtor_id", "MISSING_FIELD"),
    }
    assert result.stats["erp_us"]["rows_read"] == 2  # read, and accounted for


@pytest.mark.parametrize(
    ("expect", "gates"),
    [
        ({"min_rows": 3}, {"ROW_FLOOR"}),  # whatever yesterday was
        ({"expected_rows": 10}, {"ROW_CHANGE"}),  # the first day: no yesterday to compare with
        ({"min_rows": 2, "expected_rows": 2}, set()),
    ],
)
def test_a_floor_and_a_first_day_size_stop_a_thin_delivery(tmp_path, expect, gates):
    import yaml

    config = write_portfolio(tmp_path, [invoice("INV-1"), invoice("INV-2")])
    doc = yaml.safe_load(config.read_text(encoding="utf-8"))
    doc["sources"][0]["expect"] = expect
    config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    cfg = load_config(config)
    result = validate(cfg, [extract(cfg, s.name, AS_OF) for s in cfg.sources], AS_OF)
    assert gates_of(result) == gates
    assert all("expect." in f["message"] for f in result.gate_failures)


def test_control_total_counts_quarantined_rows_too(tmp_path):
    rows = [invoice("INV-1"), invoice("INV-2", Memo="=evil()")]
    result = run(tmp_path, rows, totals={"USD": "$2,469.00"})
    assert result.gate_failures == []
    assert len(result.quarantine) == 1


def test_row_count_and_balance_jumps_stop_the_run(tmp_path):
    previous = {"erp_us": {"as_of": "2026-11-22", "rows": 10, "open_minor": {"USD": 1_000_000}}}
    result = run(tmp_path, [invoice("INV-1")], previous=previous)
    assert gates_of(result) == {"ROW_CHANGE", "BALANCE_CHANGE"}


def test_too_many_quarantined_rows_mean_a_wrong_source(tmp_path):
    rows = [
        invoice("INV-1", Date="2026-13-01"),
        invoice("INV-2", Date="2026-13-02"),
        invoice("INV-3"),
    ]
    result = run(tmp_path, rows, gates={"max_quarantine_share": 0.5})
    assert gates_of(result) == {"QUARANTINE_SHARE"}


def test_gate_failure_still_writes_the_quarantine_before_stopping(tmp_path):
    cfg = load_config(
        write_portfolio(tmp_path, [invoice("INV-1", Memo="=x()")], erp_as_of="01/11/2026")
    )
    root = lake.root((tmp_path / "lake").as_uri())
    extracts = [extract_to_lake(cfg, s.name, AS_OF, root) for s in cfg.sources]
    with pytest.raises(
        SourceGateError, match=r"erp_us \(.*erp\.csv\): STALE: source is as of 2026-11-01"
    ):
        validate_to_lake(cfg, AS_OF, root, extracts, {})
    quarantine = lake.read_parquet(
        root / "quarantine/as_of=2026-11-23/source=erp_us/quarantine.parquet"
    )
    assert list(quarantine["reason"]) == ["FORMULA_CELL"]
    csv_text = (root / "quarantine/as_of=2026-11-23/source=erp_us/quarantine.csv").read_text()
    assert "'=x()" in csv_text  # neutralized for whoever opens it in a spreadsheet


def test_contact_fast_paths_never_accept_what_the_libraries_reject(tmp_path):
    """The vectorized checks only accept; whatever they accept, the libraries accept too."""
    import phonenumbers
    from email_validator import EmailNotValidError, validate_email

    from dunning.generate import generate
    from dunning.quality import emails_surely_valid, phones_surely_valid

    generate(tmp_path, debtors=400, as_of=AS_OF, seed=5)
    people = pd.read_csv(tmp_path / "customers.csv", dtype="str", keep_default_na=False)
    odd_phones = ["+1555", "+12345", "+4420794609581", "+97150", "+999123456789", "+0123", "+1"]
    odd_emails = ["a@b", "a..b@x.com", ".a@x.com", "a@x.test", "a@-x.com", "x" * 65 + "@x.com"]
    phones = pd.Series([*people["phone"], *odd_phones], dtype="str")
    emails = pd.Series([*people["email"], *odd_emails], dtype="str")

    fast_phone = phones_surely_valid(phones)
    for phone in phones[fast_phone]:
        assert phonenumbers.is_valid_number(phonenumbers.parse(phone, None)), phone
    assert fast_phone[: len(people)].mean() > 0.95  # the fast path does carry the load
    assert not fast_phone[len(people) :].any()

    fast_email = emails_surely_valid(emails)
    for email in emails[fast_email]:
        validate_email(email, check_deliverability=False)
    assert not fast_email[len(people) :].any()
    for email in odd_emails[:-1]:  # the library tolerates long local parts; we leave those to it
        with pytest.raises(EmailNotValidError):
            validate_email(email, check_deliverability=False)


# --- regressions found in review ----------------------------------------------------------


def test_customer_named_total_is_data_not_a_subtotal(tmp_path):
    rows = [
        invoice("INV-1", Customer="Total Gym Supplies"),
        invoice("INV-2", Customer="Grand Total Corp"),
    ]
    result = run(tmp_path, rows, totals={"USD": "$2,469.00"})
    assert list(result.invoices["invoice_id"]) == ["INV-1", "INV-2"]
    assert result.gate_failures == []


@pytest.mark.parametrize(
    ("amount", "ok"),
    [
        ("$1,234.50", True),
        ("$1234.50", True),
        ("$12,345,678.00", True),
        ("$1,23", False),
        ("1,2,3", False),
        ("12,50", False),
        ("(-5.00)", False),
        ("(-$5.00)", False),
    ],
)
def test_thousands_groups_and_signs_are_checked(tmp_path, amount, ok):
    _, whole, _ = parse_amount(
        pd.Series([amount]), NumberFormat(thousands=",", parentheses_negative=True, strip="$")
    )
    assert bool(whole.notna().iloc[0]) is ok


def test_credit_note_with_a_positive_balance_is_not_a_receivable(tmp_path):
    row = invoice("CM-1", Type="Credit Memo", Amount="($50.00)", **{"Open Balance": "$50.00"})
    result = run(tmp_path, [invoice("INV-1"), row])
    assert list(result.invoices["invoice_id"]) == ["INV-1"]
    assert result.quarantine.iloc[0][["field", "reason"]].tolist() == [
        "open_amount",
        "NEGATIVE_AMOUNT",
    ]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"Date": "05/09/0026"}, "issue_date"),
        ({"Date": "24/11/2026", "Due Date": "24/12/2026"}, "issue_date"),
        ({"Due Date": "05/10/2126"}, "due_date"),
    ],
)
def test_implausible_dates_are_quarantined(tmp_path, change, field):
    result = run(tmp_path, [invoice("INV-1"), invoice("INV-9", **change)])
    assert list(result.invoices["invoice_id"]) == ["INV-1"]
    assert (result.quarantine["field"] == field).any()


def test_too_long_values_are_quarantined_not_a_failed_load(tmp_path):
    result = run(tmp_path, [invoice("INV-1"), invoice("INV-2", Memo="x" * 300)])
    assert result.quarantine.iloc[0][["field", "reason"]].tolist() == ["reference", "TOO_LONG"]


def test_line_numbers_stay_right_after_a_multi_line_cell(tmp_path):
    rows = [invoice("INV-1", Memo="line one\nline two"), invoice("INV-2", Currency="XYZ")]
    result = run(tmp_path, rows)
    assert result.quarantine.iloc[0]["source_row"] == 8  # INV-1 spans lines 6 and 7


def test_empty_ragged_lines_are_structure(tmp_path):
    cfg = load_config(write_portfolio(tmp_path, [invoice("INV-1"), invoice("INV-2")]))
    path = tmp_path / "erp.csv"
    path.write_bytes(
        path.read_bytes().replace(b"PO 77\r\n", b"PO 77\r\n,,,,,,,,,,,,,,\r\n,,\r\n", 1)
    )
    result = validate(cfg, [extract(cfg, s.name, AS_OF) for s in cfg.sources], AS_OF)
    assert list(result.invoices["invoice_id"]) == ["INV-1", "INV-2"]
    assert result.quarantine.empty


def test_currency_without_a_control_total_stops_the_run(tmp_path):
    rows = [
        invoice("INV-1"),
        invoice("INV-2", Currency="GBP", Amount="£5.00", **{"Open Balance": "£5.00"}),
    ]
    assert gates_of(run(tmp_path, rows, totals={"USD": "$1,234.50"})) == {"CONTROL_TOTAL"}


def test_same_debtor_in_two_masters_is_held_back(tmp_path):
    second = {
        "name": "crm",
        "kind": "file",
        "dataset": "debtors",
        "path": "crm.csv",
        "columns": {c: c for c in CUSTOMER_HEADER},
    }
    cfg = load_config(write_portfolio(tmp_path, [invoice("INV-1")], extra_sources=[second]))
    (tmp_path / "crm.csv").write_text(customers_text([customer("D001"), customer("D002")]))
    result = validate(cfg, [extract(cfg, s.name, AS_OF) for s in cfg.sources], AS_OF)
    assert list(result.debtors["debtor_id"]) == ["D002"]
    assert set(result.quarantine["reason"]) == {"DUPLICATE_ID", "DEBTOR_QUARANTINED"}


def test_file_without_an_as_of_goes_stale_by_its_delivery_date(tmp_path):
    import os

    cfg = load_config(write_portfolio(tmp_path, [invoice("INV-1")]))
    old = (pd.Timestamp(AS_OF) - pd.Timedelta(days=5)).timestamp()
    os.utime(tmp_path / "customers.csv", (old, old))
    result = validate(cfg, [extract(cfg, s.name, AS_OF) for s in cfg.sources], AS_OF)
    assert [(f["source"], f["gate"]) for f in result.gate_failures] == [("customers", "STALE")]


def test_nothing_is_lost_on_a_generated_portfolio(tmp_path):
    from dunning.generate import generate

    generate(tmp_path, debtors=300, as_of=AS_OF, seed=9)
    cfg = load_config(tmp_path / "config.yaml")
    extracted = [extract(cfg, s.name, AS_OF) for s in cfg.sources]
    result = validate(cfg, extracted, AS_OF)
    for ex in extracted:
        st = result.stats[ex.source]
        assert st["rows_clean"] + st["rows_quarantined"] == st["rows_read"] == len(ex.frame)


def test_an_accepted_gate_lets_the_run_go_on_and_is_recorded(tmp_path):
    cfg = load_config(write_portfolio(tmp_path, [invoice("INV-1")]))
    root = lake.root((tmp_path / "lake").as_uri())
    extracts = [extract_to_lake(cfg, s.name, AS_OF, root) for s in cfg.sources]
    previous = {"erp_us": {"as_of": "2026-11-22", "rows": 10, "open_minor": {"USD": 123_450}}}
    with pytest.raises(SourceGateError, match="ROW_CHANGE"):
        validate_to_lake(cfg, AS_OF, root, extracts, previous)
    out = validate_to_lake(cfg, AS_OF, root, extracts, previous, accept_gates=["ROW_CHANGE"])
    assert [f["gate"] for f in out["accepted_gates"]] == ["ROW_CHANGE"]
    assert out["gate_failures"] == []


def test_a_source_cannot_claim_totals_it_does_not_give(tmp_path):
    import yaml

    from dunning.errors import ConfigError

    config = write_portfolio(tmp_path, [invoice("INV-1")])
    doc = yaml.safe_load(config.read_text(encoding="utf-8"))
    doc["sources"][1]["completeness"] = "control_totals"  # the customer master has no totals
    config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"sources\.1.*control_totals needs grand_total_pattern"):
        load_config(config)
