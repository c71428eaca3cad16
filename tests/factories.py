"""Small, readable inputs for unit tests: an ERP export and a customer master written by hand."""

from __future__ import annotations

import csv
import io
from datetime import date
from pathlib import Path

import yaml

from dunning.generate import ERP_LAYOUT
from dunning.schema import DEBTOR_OPTIONAL, DEBTOR_REQUIRED

ERP_HEADER = list(ERP_LAYOUT["columns"])


def ledger_debtor(debtor_id: str, as_of: date, **kw: object) -> dict:
    """A ledger ``debtors`` row: a consenting consumer in Austin unless ``kw`` says otherwise."""
    return {
        "debtor_id": debtor_id,
        "source": "erp",
        "name": f"Debtor {debtor_id}",
        "kind": "consumer",
        "country": "US",
        "region": "TX",
        "city": "Austin",
        "timezones": "America/Chicago",
        "locale": "en",
        "employer_email": False,
        "consent_email": True,
        "consent_sms": True,
        "opted_out": "",
        "first_seen_as_of": as_of,
        "last_seen_as_of": as_of,
        **kw,
    }


CUSTOMER_HEADER = [*DEBTOR_REQUIRED, *DEBTOR_OPTIONAL]


def invoice(num: str, debtor: str = "D001", name: str = "Smith, John", **kw: str) -> dict:
    row = {
        "Customer": name,
        "Customer ID": debtor,
        "Type": "Invoice",
        "Date": "05/09/2026",
        "Num": num,
        "Due Date": "05/10/2026",
        "Currency": "USD",
        "Amount": "$1,234.50",
        "Open Balance": "$1,234.50",
        "Memo": "PO 77",
    }
    row.update(kw)
    return row


def customer(debtor: str = "D001", **kw: str) -> dict:
    row = {
        "debtor_id": debtor,
        "name": "Smith, John",
        "kind": "consumer",
        "country": "US",
        "region": "MA",
        "city": "Boston",
        "postal_code": "02110",
        "timezones": "America/New_York",
        "locale": "en",
        "email": f"{debtor.lower()}@example.com",
        "phone": "+16175550123",
        "employer_email": "false",
        "consent_email": "true",
        "consent_sms": "false",
        "opted_out": "",
        "customer_since": "2020-01-01",
    }
    row.update(kw)
    return row


def erp_text(rows: list[dict], as_of: str = "23/11/2026", totals: dict | None = None) -> str:
    """An 'A/R Aging Detail' export: title block, header, rows, a subtotal and grand totals."""
    buf = io.StringIO()
    buf.write(f"Northwind Supplies Ltd.\r\nA/R Aging Detail\r\nAs of {as_of}\r\n\r\n")
    writer = csv.DictWriter(buf, ERP_HEADER, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    writer.writerow({"Customer": "Total Smith, John", "Amount": "", "Open Balance": ""})
    for cur, amount in (totals or {}).items():
        writer.writerow({"Customer": f"Grand Total {cur}", "Currency": cur, "Open Balance": amount})
    return "\ufeff" + buf.getvalue()


def customers_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, CUSTOMER_HEADER, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_portfolio(
    folder: Path,
    invoices: list[dict],
    customers: list[dict] | None = None,
    totals: dict | None = None,
    gates: dict | None = None,
    erp_as_of: str = "23/11/2026",
    extra_sources: list[dict] | None = None,
) -> Path:
    """Writes erp.csv, customers.csv and config.yaml; returns the config path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "erp.csv").write_text(erp_text(invoices, erp_as_of, totals), encoding="utf-8")
    (folder / "customers.csv").write_text(
        customers_text(customers if customers is not None else [customer("D001")]),
        encoding="utf-8",
    )
    cfg = {
        "portfolio": {"name": "Test"},
        "sources": [
            {
                "name": "erp_us",
                **ERP_LAYOUT,
                "path": "erp.csv",
                # Without totals the export proves nothing whole: say so, or it is stopped.
                **({} if totals else {"completeness": "none"}),
            },
            {
                "name": "customers",
                "kind": "file",
                "dataset": "debtors",
                "path": "customers.csv",
                "columns": {c: c for c in CUSTOMER_HEADER},
            },
            *(extra_sources or []),
        ],
        "gates": {"max_quarantine_share": 1.0, **(gates or {})},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path
