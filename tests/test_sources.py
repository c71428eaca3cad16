"""Extraction of real export shapes: the messy ERP report, XLSX, SQL, and unreadable files."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from dunning.config import load_config
from dunning.sources import SourceError, extract
from tests.factories import ERP_HEADER, customer, invoice, write_portfolio

AS_OF = date(2026, 11, 23)


def test_erp_export_is_read_without_its_structure(tmp_path):
    rows = [
        invoice("INV-1"),
        invoice("CM-1", Type="Credit Memo", Amount="($250.00)", **{"Open Balance": "($250.00)"}),
    ]
    cfg = load_config(write_portfolio(tmp_path, rows, totals={"USD": "$984.50"}))
    ex = extract(cfg, "erp_us", AS_OF)
    assert ex.source_as_of == "2026-11-23"  # from the "As of" title line, day-first
    assert list(ex.frame["invoice_id"]) == ["INV-1", "CM-1"]  # subtotal and totals are gone
    assert list(ex.frame["customer_name"]) == ["Smith, John", "Smith, John"]  # BOM/quotes handled
    assert list(ex.frame["source_row"]) == [6, 7]  # file lines: 4 title lines + header
    assert ex.control_totals == [
        {"currency": "USD", "open_amount": "$984.50", "rows": None, "line": 9}
    ]
    assert ex.structure_rows == 5 + 2  # title block + header, subtotal + grand total


def test_zero_byte_file_stops_with_file_name(tmp_path):
    cfg = load_config(write_portfolio(tmp_path, [invoice("INV-1")]))
    (tmp_path / "erp.csv").write_bytes(b"")
    with pytest.raises(SourceError, match=r"erp\.csv.*empty \(0 bytes\)"):
        extract(cfg, "erp_us", AS_OF)


def test_missing_file_names_it(tmp_path):
    cfg = load_config(write_portfolio(tmp_path, [invoice("INV-1")]))
    (tmp_path / "erp.csv").unlink()
    with pytest.raises(SourceError, match=r"erp\.csv.*not found"):
        extract(cfg, "erp_us", AS_OF)


def test_missing_column_names_file_line_and_column(tmp_path):
    cfg = load_config(write_portfolio(tmp_path, [invoice("INV-1")]))
    path = tmp_path / "erp.csv"
    path.write_text(path.read_text(encoding="utf-8").replace("Open Balance", "Balance"), "utf-8")
    with pytest.raises(
        SourceError, match=r"erp\.csv: line 5: .*'Open Balance' \(maps to open_amount\)"
    ):
        extract(cfg, "erp_us", AS_OF)


def test_header_not_found(tmp_path):
    cfg = load_config(write_portfolio(tmp_path, [invoice("INV-1")]))
    (tmp_path / "erp.csv").write_text("just,some\nother,file\n", encoding="utf-8")
    with pytest.raises(SourceError, match="no header line starting with 'Customer,Customer ID'"):
        extract(cfg, "erp_us", AS_OF)


def test_ragged_line_is_kept_for_quarantine_and_others_read(tmp_path):
    cfg = load_config(write_portfolio(tmp_path, [invoice("INV-1"), invoice("INV-2")]))
    path = tmp_path / "erp.csv"
    path.write_bytes(path.read_bytes().replace(b"PO 77\r\n", b"PO 77,extra,cells\r\n", 1))
    ex = extract(cfg, "erp_us", AS_OF)
    assert list(ex.frame["invoice_id"]) == ["INV-2"]
    assert ex.malformed[0]["row"] == 6
    assert "expected 10 fields, saw 12" in ex.malformed[0]["message"]


def test_xlsx_export_with_title_block(tmp_path):
    cfg_path = write_portfolio(tmp_path, [invoice("INV-1")])
    rows = [
        ["Northwind", None, None],
        ["As of 23/11/2026", None, None],
        [None, None, None],
        ERP_HEADER,
        [
            "Smith, John",
            "D001",
            "Invoice",
            pd.Timestamp("2026-09-05"),
            "INV-9",
            pd.Timestamp("2026-10-05"),
            "USD",
            1234.5,
            1234.5,
            "PO",
        ],
    ]
    pd.DataFrame(rows).to_excel(tmp_path / "erp.xlsx", header=False, index=False)
    raw = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    raw["sources"][0].update(path="erp.xlsx", format="xlsx")
    cfg_path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    ex = extract(load_config(cfg_path), "erp_us", AS_OF)
    row = ex.frame.iloc[0]
    assert (row["invoice_id"], row["issue_date"], row["amount"]) == (
        "INV-9",
        "2026-09-05",
        "1234.5",
    )
    assert row["source_row"] == 5


def test_sql_source_reads_named_query_with_controls_and_freshness(tmp_path):
    db = tmp_path / "ar.sqlite"
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE ar_invoices (invoice_no TEXT PRIMARY KEY, customer_id TEXT, doc_type "
            "TEXT, issued_on TEXT, due_on TEXT, currency TEXT, amount NUMERIC, open_balance "
            "NUMERIC, reference TEXT, disputed INTEGER, closed_on TEXT)"
        )
        conn.exec_driver_sql(
            "INSERT INTO ar_invoices VALUES ('F-1','D001','INV','2026-10-01','2026-10-31','EUR',"
            "'100.10','40.05','x',0,NULL), ('F-2','D001','INV','2026-10-01','2026-10-31','EUR',"
            "'5.00','0',NULL,0,'2026-11-01'), ('F-3','D001','CRN','2026-11-30','2026-11-30','EUR',"
            "'-5.00','-5.00',NULL,0,NULL)"
        )
        conn.exec_driver_sql("CREATE TABLE ar_extract_runs (as_of TEXT)")
        conn.exec_driver_sql("INSERT INTO ar_extract_runs VALUES ('2026-11-22')")
    engine.dispose()
    sql = {
        "name": "ar_db",
        "kind": "sql",
        "url": f"sqlite:///{db}",
        "query": "ar_open_invoices.sql",
        "control_query": "ar_control_totals.sql",
        "freshness_query": "ar_freshness.sql",
    }
    cfg_path = write_portfolio(tmp_path, [invoice("INV-1")], extra_sources=[sql])
    cfg = load_config(cfg_path)
    ex = extract(cfg, "ar_db", AS_OF)
    assert list(ex.frame["invoice_id"]) == ["F-1"]  # paid and future-dated rows left out
    assert ex.frame.iloc[0][["open_amount", "doc_type"]].tolist() == ["40.05", "INV"]
    assert ex.source_as_of == "2026-11-22"
    assert ex.control_totals[0]["rows"] == 1


def test_sql_source_failure_names_the_query(tmp_path):
    sql = {
        "name": "ar_db",
        "kind": "sql",
        "url": f"sqlite:///{tmp_path}/none.sqlite",
        "query": "ar_open_invoices.sql",
    }
    cfg_path = write_portfolio(tmp_path, [invoice("INV-1")], extra_sources=[sql])
    with pytest.raises(SourceError, match=r"ar_db:ar_open_invoices\.sql: .*query failed"):
        extract(load_config(cfg_path), "ar_db", AS_OF)


def test_customer_master_is_read(tmp_path):
    cfg = load_config(
        write_portfolio(tmp_path, [invoice("INV-1")], [customer("D001"), customer("D002")])
    )
    ex = extract(cfg, "customers", AS_OF)
    assert ex.dataset == "debtors"
    assert list(ex.frame["debtor_id"]) == ["D001", "D002"]


def test_generated_portfolio_folder_can_move(tmp_path):
    import shutil

    from dunning.generate import generate

    generate(tmp_path / "a", debtors=40, as_of=AS_OF, seed=2)
    shutil.move(tmp_path / "a", tmp_path / "b")
    cfg = load_config(tmp_path / "b" / "config.yaml")
    rows = {s.name: len(extract(cfg, s.name, AS_OF).frame) for s in cfg.sources}
    assert rows["ar_db"] > 0
    assert rows["erp_us"] > 0
