"""Read payment feeds into one shape of payment lines, keeping every source line for audit.

Banks and processors report the same facts in different clothes: ISO 20022 camt.053 (XML),
BAI2 (US cash management), SWIFT MT940, a processor's CSV export of charges, refunds, disputes
and declines, or a database query.  Each parser yields text cells plus the line's raw text
and where it came from; ``typed`` then checks them all with the daily validation's parsers,
so a bad line is quarantined with its file, line, field and reason, never dropped.

The parsers lean on well-kept libraries where they exist (``mt-940``, ``bai2``, ``lxml``);
camt.053 is read with namespace-agnostic XPath so any version (.001.02 to .001.13) reads.
"""

from __future__ import annotations

import glob
import json
import re
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from dunning import quality
from dunning.config import Config, NumberFormat, PaymentFeed
from dunning.errors import SourceError
from dunning.history import malformed_rows, read_export
from dunning.sources import read_query

# The text shape every parser returns (plus source, source_file, source_row).
TEXT_COLUMNS = (
    "kind",  # payment | reversal | refund | chargeback | decline | other
    "booked_on",
    "amount",
    "currency",
    "payer_name",
    "payer_account",
    "reference",
    "debtor_hint",  # the customer id a processor knows the payer by
    "invoice_hint",  # an invoice the payer or processor named in a field of its own
    "external_id",  # end-to-end id / processor id: what a reversal points back to
    "original_id",  # for reversals, refunds, chargebacks: the payment they undo
    "decline_code",
    "network",
    "network_code",
    "advice_code",
    "raw",
)
KINDS = frozenset({"payment", "reversal", "refund", "chargeback", "decline", "other"})
UNDOING = ("reversal", "refund", "chargeback")  # kinds that take money back
NO_REFERENCE = frozenset({"NONREF", "NOTPROVIDED", "NONE", "N/A"})
# The typed shape reconciliation works on.
LINE_COLUMNS = (
    "line_id",
    "fingerprint",
    "feed",
    "format",
    "source_file",
    "source_row",
    "kind",
    "booked_on",
    "amount_minor",
    "currency",
    "payer_name",
    "payer_account",
    "reference",
    "debtor_hint",
    "invoice_hint",
    "external_id",
    "original_id",
    "decline_code",
    "network",
    "network_code",
    "advice_code",
    "raw",
)
PROCESSOR_COLUMNS = ("id", "type", "status", "created", "amount", "currency")
PROCESSOR_OPTIONAL = (
    "customer",
    "customer_name",
    "description",
    "invoice",
    "source_id",
    "decline_code",
    "network",
    "network_code",
    "advice_code",
)
SQL_COLUMNS = ("booked_on", "amount", "currency", "kind")
DECIMAL = NumberFormat()


def read_feed(feed: PaymentFeed, cfg: Config, as_of: date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every line of every file of one feed, as text, and the lines that could not be split.

    A feed whose files are all absent is simply nothing new (bank files arrive when they
    arrive); a file that exists but cannot be parsed at all stops the run, naming the file.
    """
    if feed.format == "sql":
        return _read_sql(feed, cfg, as_of), quality._empty_quarantine()
    pattern = str(cfg.resolve(Path(feed.path or "")))  # relative to the config, or absolute
    files = sorted(Path(p) for p in glob.glob(pattern)) if feed.path else []
    parts, bad = [], []
    for path in files:
        try:
            frame, malformed = PARSERS[feed.format](path, feed)
        except SourceError:
            raise
        except Exception as exc:  # a library's own error: name the file, keep the cause
            raise SourceError(f"{path}: feed {feed.name!r} ({feed.format}): {exc}") from exc
        frame["source"] = feed.name
        frame["source_file"] = path.name
        parts.append(frame)
        bad.append(malformed)
    if not parts:
        return _empty_text(feed.name), quality._empty_quarantine()
    return pd.concat(parts, ignore_index=True), pd.concat(bad, ignore_index=True)


def _empty_text(name: str) -> pd.DataFrame:
    frame = quality.empty_frame(TEXT_COLUMNS, "str")
    return frame.assign(source=name, source_file="", source_row=pd.Series(dtype="int64"))


def _frame(rows: list[dict], path: Path) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=[*TEXT_COLUMNS, "source_row"])
    for column in TEXT_COLUMNS:
        frame[column] = frame[column].fillna("").astype("str")
    frame["source_row"] = frame["source_row"].astype("int64")
    return frame


# --- processor CSV ------------------------------------------------------------------------------

_PROCESSOR_KIND = {"charge": "payment", "payment": "payment", "refund": "refund"}
_PROCESSOR_KIND |= {"dispute": "chargeback", "chargeback": "chargeback"}


def _processor_csv(path: Path, feed: PaymentFeed) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A Stripe-style balance export: one line per charge, refund, dispute; failed charges are
    declines.  Amounts are decimal major units."""
    frame, malformed = read_export(feed.name, path, PROCESSOR_COLUMNS, PROCESSOR_OPTIONAL)
    kind = frame["type"].str.strip().str.lower().map(_PROCESSOR_KIND).fillna("other")
    status = frame["status"].str.strip().str.lower()
    failed = kind.eq("payment") & status.isin(["failed", "declined"])
    kind = kind.mask(failed, "decline")
    # A refund that failed, a dispute the merchant won: no money went back.
    kind = kind.mask(kind.eq("refund") & status.isin(["failed", "canceled", "cancelled"]), "other")
    kind = kind.mask(kind.eq("chargeback") & status.eq("won"), "other")
    kind = kind.mask(
        kind.eq("payment") & ~status.isin(["succeeded", "paid", "failed", ""]), "other"
    )
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    rows = frame["source_row"].to_numpy()
    out = pd.DataFrame(
        {
            "kind": kind,
            "booked_on": frame["created"].str.slice(0, 10),
            "amount": frame["amount"],
            "currency": frame["currency"].str.upper(),
            "payer_name": frame["customer_name"],
            "payer_account": "",
            "reference": frame["description"],
            "debtor_hint": frame["customer"],
            "invoice_hint": frame["invoice"],
            "external_id": frame["id"],
            "original_id": frame["source_id"],
            "decline_code": frame["decline_code"],
            "network": frame["network"].str.lower(),
            "network_code": frame["network_code"],
            "advice_code": frame["advice_code"],
            "raw": np.asarray(lines, dtype=object)[rows - 1] if len(rows) else [],
            "source_row": rows,
        }
    )
    return out, malformed_rows(feed.name, path, malformed)


# --- camt.053 -------------------------------------------------------------------------------------


def _xpath_text(node: Any, path: str) -> str:
    found = node.xpath(path)
    return " ".join(str(v).strip() for v in found if str(v).strip()) if found else ""


def _local(path: str) -> str:
    """``A/B/C`` as a namespace-agnostic XPath (camt versions differ only in namespace)."""
    return "/".join(
        p if p[0] == "@" or p.endswith("()") else f"*[local-name()='{p}']" for p in path.split("/")
    )


def _camt053(path: Path, feed: PaymentFeed) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One line per transaction detail (a batch-booked entry has several), else per entry.

    Credits are payments; a debit marked as a reversal (``RvslInd``) or carrying return
    information is money taken back; other debits (fees, outgoing) are kept as ``other``.
    """
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
    root = etree.parse(str(path), parser).getroot()
    x = _local
    rows = []
    for stmt in root.xpath(f".//{x('Stmt')}"):
        for entry in stmt.xpath(x("Ntry")):
            credit = _xpath_text(entry, x("CdtDbtInd/text()")) == "CRDT"
            reversal = _xpath_text(entry, x("RvslInd/text()")).lower() == "true"
            booked = (
                _xpath_text(entry, x("BookgDt/Dt/text()"))
                or _xpath_text(entry, x("BookgDt/DtTm/text()"))[:10]
            )
            details = entry.xpath(x("NtryDtls/TxDtls")) or [None]
            returned = bool(entry.xpath(f".//{x('RtrInf')}"))
            kind = "payment" if credit and not reversal else "other"
            if not credit and (reversal or returned):
                kind = "reversal"
            raw = etree.tostring(entry, encoding="unicode")
            for tx in details:
                node = tx if tx is not None else entry
                amount = _xpath_text(node, x("Amt/text()")) or _xpath_text(
                    node, x("AmtDtls/TxAmt/Amt/text()")
                )
                amount_node = node.xpath(x("Amt")) or node.xpath(x("AmtDtls/TxAmt/Amt"))
                if not amount and len(details) == 1:  # one transaction: the entry's amount
                    amount, amount_node = _xpath_text(entry, x("Amt/text()")), entry.xpath(x("Amt"))
                currency = amount_node[0].get("Ccy", "") if amount_node else ""
                party = "Cdtr" if kind == "reversal" else "Dbtr"
                name = _xpath_text(node, x(f"RltdPties/{party}/Nm/text()")) or _xpath_text(
                    node, x(f"RltdPties/{party}/Pty/Nm/text()")
                )
                acct = _xpath_text(node, x(f"RltdPties/{party}Acct/Id/IBAN/text()")) or (
                    _xpath_text(node, x(f"RltdPties/{party}Acct/Id/Othr/Id/text()"))
                )
                reference = " ".join(
                    v
                    for v in (
                        _xpath_text(node, x("RmtInf/Strd/CdtrRefInf/Ref/text()")),
                        _xpath_text(node, x("RmtInf/Ustrd/text()")),
                        _xpath_text(node, x("AddtlTxInf/text()")),
                    )
                    if v
                ) or _xpath_text(entry, x("AddtlNtryInf/text()"))
                e2e = _xpath_text(node, x("Refs/EndToEndId/text()"))
                rows.append(
                    {
                        "kind": kind,
                        "booked_on": booked,
                        "amount": amount,
                        "currency": currency or feed.currency or "",
                        "payer_name": name,
                        "payer_account": acct,
                        "reference": reference,
                        "debtor_hint": "",
                        "invoice_hint": "",
                        "external_id": e2e,
                        "original_id": e2e if kind == "reversal" else "",
                        "decline_code": "",
                        "network": "",
                        "network_code": "",
                        "advice_code": "",
                        "raw": raw,
                        "source_row": node.sourceline or entry.sourceline or 0,
                    }
                )
    return _frame(rows, path), quality._empty_quarantine()


# --- BAI2 -----------------------------------------------------------------------------------------

# BAI2 detail type codes that return a deposited item (the payment bounced) -- the rest of the
# debit codes (fees, checks paid, outgoing wires) are not customer money.
BAI2_RETURNS = frozenset({"555", "556", "557", "558", "566", "567", "568", "258", "261"})
_BAI2_NAME = re.compile(
    r"(?:ORIG CO NAME|ORIGINATOR|B/O|ORG)\s*[:=]\s*(.+?)(?=\s{2,}|\s+[A-Z]+(?: [A-Z]+)?:|$)"
)


def _bai2(path: Path, feed: PaymentFeed) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Detail records (16) per account; the amount is in minor units with no decimal point."""
    from bai2 import bai2
    from bai2.constants import TypeCodeTransaction

    text = path.read_text(encoding="utf-8", errors="replace")
    parsed = bai2.parse_from_string(text, check_integrity=True)
    lines = text.splitlines()
    starts = {i + 1: line for i, line in enumerate(lines) if line.startswith("16,")}
    order = iter(sorted(starts))
    rows = []
    for group in parsed.children:
        as_of = group.header.as_of_date
        group_currency = group.header.currency or ""
        for account in group.children:
            currency = account.header.currency or group_currency or feed.currency or ""
            for tx in account.children:
                line_no = next(order, 0)
                code = tx.type_code.code if tx.type_code else ""
                credit = tx.type_code is not None and (
                    tx.type_code.transaction == TypeCodeTransaction.credit
                )
                kind = "payment" if credit else ("reversal" if code in BAI2_RETURNS else "other")
                detail = (tx.text or "").strip()
                name = _BAI2_NAME.search(detail)
                exponent = quality.currency_exponent(pd.Series([currency])).fillna(2).iloc[0]
                raw = "\n".join(
                    [starts.get(line_no, "")]
                    + [
                        lines[i]
                        for i in range(line_no, len(lines))
                        if lines[i].startswith("88,") and _continues(lines, line_no, i)
                    ]
                )
                rows.append(
                    {
                        "kind": kind,
                        "booked_on": as_of.isoformat() if as_of else "",
                        "amount": _minor_text(tx.amount, int(exponent)),
                        "currency": currency,
                        "payer_name": name.group(1).strip() if name else "",
                        "payer_account": "",
                        "reference": " ".join(v for v in (tx.customer_reference, detail) if v),
                        "debtor_hint": "",
                        "invoice_hint": "",
                        "external_id": tx.bank_reference or tx.customer_reference or "",
                        "original_id": (tx.customer_reference or "") if kind == "reversal" else "",
                        "decline_code": "",
                        "network": "",
                        "network_code": "",
                        "advice_code": "",
                        "raw": raw,
                        "source_row": line_no,
                    }
                )
    return _frame(rows, path), quality._empty_quarantine()


def _continues(lines: list[str], start: int, i: int) -> bool:
    """Line ``i`` (0-based) is an 88 continuation of the record on 1-based line ``start``."""
    return all(lines[j].startswith("88,") for j in range(start, i + 1))


def _minor_text(amount: Any, exponent: int) -> str:
    value = int(amount or 0)
    if exponent == 0:
        return str(value)
    return f"{value // 10**exponent}.{value % 10**exponent:0{exponent}d}"


# --- MT940 ----------------------------------------------------------------------------------------

_MT940_TAG = re.compile(r"/(NAME|REMI|EREF|IBAN|ACCT|ORDP)/")


def _mt940_fields(details: str) -> dict[str, str]:
    """The structured ``:86:`` many banks use (``/NAME/ACME LTD/REMI/INV 123/EREF/E2E``)."""
    found: dict[str, str] = {}
    parts = _MT940_TAG.split(details.replace("\n", ""))
    for tag, value in zip(parts[1::2], parts[2::2], strict=False):
        found.setdefault(tag, value.strip().strip("/"))
    return found


def _mt940(path: Path, feed: PaymentFeed) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Field 61 per transaction with its field 86; ``C`` is a payment, ``RC`` (reversal of a
    credit) money taken back, debits are kept as ``other``."""
    import mt940

    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(":61:")]
    transactions = mt940.models.Transactions()
    transactions.parse(text)
    if len(transactions) != len(starts):
        raise SourceError(
            f"{path}: feed {feed.name!r}: {len(starts)} :61: lines but "
            f"{len(transactions)} transactions parsed"
        )
    rows = []
    for start, tx in zip(starts, transactions, strict=True):
        data = tx.data
        end = start + 1
        while end < len(lines) and not re.match(r"^:(?!86:)\d\d[A-Z]?:|^-}", lines[end]):
            end += 1
        status = data.get("status", "")
        kind = {"C": "payment", "RC": "reversal"}.get(status, "other")
        details = data.get("transaction_details") or ""
        fields = _mt940_fields(details)
        amount = data.get("amount")
        rows.append(
            {
                "kind": kind,
                "booked_on": (data.get("date") or "").isoformat() if data.get("date") else "",
                "amount": str(abs(amount.amount)) if amount is not None else "",
                "currency": (amount.currency if amount is not None else "") or feed.currency or "",
                "payer_name": fields.get("NAME", ""),
                "payer_account": fields.get("IBAN") or fields.get("ACCT", ""),
                "reference": fields.get("REMI") or details.replace("\n", " ").strip(),
                "debtor_hint": "",
                "invoice_hint": "",
                "external_id": fields.get("EREF") or data.get("customer_reference") or "",
                "original_id": (fields.get("EREF") or data.get("customer_reference") or "")
                if kind == "reversal"
                else "",
                "decline_code": "",
                "network": "",
                "network_code": "",
                "advice_code": "",
                "raw": "\n".join(lines[start:end]),
                "source_row": start + 1,
            }
        )
    return _frame(rows, path), quality._empty_quarantine()


# --- SQL ------------------------------------------------------------------------------------------


def _read_sql(feed: PaymentFeed, cfg: Config, as_of: date) -> pd.DataFrame:
    label = f"feed {feed.name!r}"
    frame = read_query(
        cfg.resolve_sqlite(feed.url or ""), feed.query or "", as_of, label, SQL_COLUMNS
    )
    for column in TEXT_COLUMNS:
        if column not in frame.columns:
            frame[column] = ""
    cells = frame.drop(columns=["raw", "source_file", "source_row"])
    frame["raw"] = [json.dumps(r, ensure_ascii=False) for r in cells.to_dict("records")]
    return frame[[*TEXT_COLUMNS, "source_file", "source_row"]].assign(source=feed.name)


PARSERS = {"processor_csv": _processor_csv, "camt053": _camt053, "bai2": _bai2, "mt940": _mt940}


# --- typing ---------------------------------------------------------------------------------------


def typed(text: pd.DataFrame, feed: PaymentFeed) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Typed payment lines (LINE_COLUMNS) and the quarantine of lines that fail a check."""
    text = text.reset_index(drop=True)
    for column in ("external_id", "original_id"):  # banks' words for "no reference"
        text[column] = text[column].mask(text[column].str.upper().isin(NO_REFERENCE), "")
    issues = quality._Issues(text)
    booked = quality.parse_date(text["booked_on"], "%Y-%m-%d")
    issues.add(booked.isna(), "booked_on", quality.BAD_DATE, "not a date (YYYY-MM-DD)")
    currency, minor = checked_money(issues, text)
    issues.add(minor.eq(0), "amount", quality.BAD_AMOUNT, "zero amount")
    issues.add(
        minor.lt(0) & text["kind"].isin(["payment", "decline"]),
        "amount",
        quality.NEGATIVE_AMOUNT,
        "a payment cannot be negative (money going back is a refund or reversal)",
    )
    issues.add(~text["kind"].isin(KINDS), "kind", quality.BAD_VALUE, f"kind not in {sorted(KINDS)}")
    out = text.assign(
        feed=feed.name,
        format=feed.format,
        booked_on=booked.dt.date,
        amount_minor=minor.abs().fillna(0).astype("int64"),
        currency=currency,
    )
    bad = issues.bad_index()
    out = out.drop(index=bad).reset_index(drop=True)
    money = _digest(_money_key(out))
    # The same money twice in one file is two lines: numbered by occurrence.
    file = pd.factorize(out["source_file"])[0]
    key = pd.DataFrame({"a": money[0], "b": money[1], "f": file})
    occurrence = key.groupby(["a", "b", "f"], sort=False).cumcount().to_numpy()
    out["fingerprint"] = _text(money, occurrence)
    # The line: this money, this occurrence, in this file of this feed.
    key = key.assign(n=occurrence, feed=out["feed"], file=out["source_file"]).drop(columns="f")
    out["line_id"] = _text(_digest(key))
    return out[list(LINE_COLUMNS)], issues.records()


def checked_money(issues: quality._Issues, text: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """``currency`` and ``amount`` text cells as (ISO code, exact minor units), each bad cell
    recorded with its field: the rule every money line of a feed or promise file meets."""
    currency = text["currency"].str.strip().str.upper()
    issues.add(
        ~quality.isin(currency, quality.iso_currencies()),
        "currency",
        quality.BAD_CURRENCY,
        "not an ISO 4217 currency",
    )
    negative, whole, frac = quality.parse_amount(text["amount"], DECIMAL)
    minor, too_precise = quality.to_minor(
        negative, whole, frac, quality.currency_exponent(currency), round_frac=False
    )
    issues.add(minor.isna(), "amount", quality.BAD_AMOUNT, "not an amount")
    issues.add(too_precise, "amount", quality.BAD_AMOUNT, "more decimals than the currency has")
    return currency, minor


def normalize_text(values: pd.Series) -> pd.Series:
    """Upper-case letters and digits only: how references and ids are compared."""
    text = pc.utf8_upper(quality._arrow(values.fillna("")))
    return quality._back(pc.replace_substring_regex(text, r"[^0-9A-Z]+", ""), values.index)


def _money_key(lines: pd.DataFrame) -> pd.DataFrame:
    """What makes two lines the same money, whichever feed reported it: kind, booking day,
    currency, amount and the reference's letters and digits."""
    return pd.DataFrame(
        {
            "kind": lines["kind"].astype("str"),
            "day": pd.to_datetime(lines["booked_on"]).astype("datetime64[s]"),
            "currency": lines["currency"].astype("str"),
            "amount": lines["amount_minor"].astype("int64"),
            "reference": normalize_text(lines["reference"]).str.slice(0, 60),
        }
    )


def _digest(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """A 128-bit content hash of each row (two keyed 64-bit hashes of its columns, computed
    vectorized, no text built)."""
    return tuple(
        pd.util.hash_pandas_object(frame, index=False, hash_key=key).to_numpy()
        for key in ("dunning-payments", "lines-are-money!")
    )


def _text(digest: tuple[np.ndarray, ...], *more: np.ndarray) -> pd.Series:
    """Hash parts (and small counters) as the ``a-b[#n]`` text the ledger keys lines by."""
    text = pc.binary_join_element_wise(*(pc.cast(pa.array(p), pa.string()) for p in digest), "-")
    for part in more:
        text = pc.binary_join_element_wise(text, pc.cast(pa.array(part), pa.string()), "#")
    return pd.Series(text.to_numpy(zero_copy_only=False), dtype="str")
