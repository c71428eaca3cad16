"""Synthetic payment feeds for a generated portfolio: yesterday's money, as banks and a card
processor would report it, for the AR system to catch up with tomorrow.

Each paid invoice is still open in the AR snapshot (AR applies cash a day late), so the daily
run must reconcile it to stop the reminder.  The mix exercises the whole cascade: full and
partial payments by reference, a keying error in the number, payments with only the payer's
name, card payments by customer id, a few refunds and declines, unknown money, and some bank
lines delivered twice (camt.053 and MT940 from the same account).  Promises to pay and payment
plans come with it: some current, some broken.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pandas as pd

DECLINES = (  # processor code, Visa response code
    ("insufficient_funds", "51"),
    ("do_not_honor", "05"),
    ("expired_card", "54"),
    ("stolen_card", "43"),
)
RATES_TO_USD = {"EUR": "1.0800", "GBP": "1.2700", "AED": "0.2723", "SAR": "0.2666"}


def _money(minor: pd.Series) -> pd.Series:
    return (minor // 100).astype(str) + "." + (minor % 100).astype(str).str.zfill(2)


def _typo(invoice_ids: pd.Series) -> pd.Series:
    """Swap the last two digits (or bump the last when they are equal): a keying error."""
    last, before = invoice_ids.str[-1], invoice_ids.str[-2]
    bumped = ((last.astype(int) + 1) % 10).astype(str)
    swapped = invoice_ids.str[:-2] + last + before
    return swapped.where(last != before, invoice_ids.str[:-1] + bumped)


def choose_payments(items: pd.DataFrame, as_of: date, seed: int, share: float) -> pd.DataFrame:
    """Which open invoices were paid yesterday, and how (one row per payment line)."""
    rng = np.random.default_rng([seed, 6])
    eligible = items[(items["open_minor"] > 0) & ~items["disputed"]]
    eligible = eligible[pd.to_datetime(eligible["due_date"]) < pd.Timestamp(as_of + timedelta(7))]
    paid = eligible.sample(frac=share, random_state=int(rng.integers(1 << 31)))
    paid = paid.drop_duplicates("debtor_id")  # one payment per debtor a day, as most pay
    n = len(paid)
    case = rng.choice(
        ["reference", "partial", "typo", "name", "card"], size=n, p=[0.5, 0.12, 0.08, 0.1, 0.2]
    )
    amount = paid["open_minor"].where(case != "partial", paid["open_minor"] // 2)
    reference = paid["invoice_id"].where(case != "typo", _typo(paid["invoice_id"]))
    reference = reference.where(case != "name", "THANK YOU")
    return paid.assign(case=case, amount=amount, reference="PAYMENT " + reference)


def write_feeds(
    out: Path, items: pd.DataFrame, as_of: date, seed: int, share: float = 0.05
) -> dict:
    """Write yesterday's feeds under ``out/feeds`` and ``out/promises.csv``; return counts and
    the config's ``payments`` section.

    ``items``: open items with invoice_id, debtor_id, name, currency, open_minor, due_date,
    disputed."""
    day = as_of - timedelta(days=1)
    pays = choose_payments(items, as_of, seed, share)
    card = pays[pays["case"] == "card"]
    bank = pays[pays["case"] != "card"]
    feeds = out / "feeds"
    (feeds / "bank").mkdir(parents=True, exist_ok=True)
    (feeds / "cards").mkdir(parents=True, exist_ok=True)
    unknown = pd.DataFrame(
        {"name": ["UNKNOWN REMITTER", "J DOE"], "currency": ["USD", "EUR"],
         "amount": [1234, 99999], "reference": ["DONATION", "REF 55"]}
    )  # fmt: skip
    usd = bank[bank["currency"] == "USD"]
    other = bank[bank["currency"] != "USD"]
    _write_bai2(feeds / "bank" / f"bai2_{day}.bai", usd, unknown[:1], day)
    camt = _write_camt(feeds / "bank" / f"camt053_{day}.xml", other, unknown[1:], day)
    _write_mt940(feeds / "bank" / f"mt940_{day}.sta", camt[camt["currency"] == "EUR"].head(5), day)
    _write_cards(feeds / "cards" / f"charges_{day}.csv", card, items, day, seed)
    promises = _write_promises(out / "promises.csv", items, pays, as_of, seed)
    rates = out / "rates.csv"
    rates.write_text(
        "date,currency,to,rate\n"
        + "".join(f"{as_of - timedelta(days=30)},{c},USD,{r}\n" for c, r in RATES_TO_USD.items()),
        encoding="utf-8",
    )
    section = {
        "feeds": [
            {"name": "bank_camt", "format": "camt053", "path": "feeds/bank/camt053_*.xml"},
            {"name": "bank_mt940", "format": "mt940", "path": "feeds/bank/mt940_*.sta"},
            {"name": "bank_bai2", "format": "bai2", "path": "feeds/bank/bai2_*.bai"},
            {"name": "cards", "format": "processor_csv", "path": "feeds/cards/charges_*.csv"},
        ],
        "rates": "rates.csv",
        "promises": "promises.csv",
    }
    return {
        "payments": len(pays),
        "card_payments": len(card),
        "duplicated_in_mt940": min(5, int((camt["currency"] == "EUR").sum())),
        "promises": promises,
        "config": section,
    }


def _write_camt(path: Path, pays: pd.DataFrame, unknown: pd.DataFrame, day: date) -> pd.DataFrame:
    rows = pd.concat(
        [
            pays[["name", "currency", "amount", "reference"]],
            unknown,
        ],
        ignore_index=True,
    )
    rows["e2e"] = [f"E2E-{day:%y%m%d}-{i:06d}" for i in range(len(rows))]
    entries = [
        "<Ntry>"
        f'<Amt Ccy="{r.currency}">{_money(pd.Series([r.amount])).iloc[0]}</Amt>'
        "<CdtDbtInd>CRDT</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts>"
        f"<BookgDt><Dt>{day}</Dt></BookgDt><ValDt><Dt>{day}</Dt></ValDt>"
        f"<NtryDtls><TxDtls><Refs><EndToEndId>{r.e2e}</EndToEndId></Refs>"
        f"<RltdPties><Dbtr><Pty><Nm>{escape(str(r.name).upper())}</Nm></Pty></Dbtr></RltdPties>"
        f"<RmtInf><Ustrd>{escape(r.reference)}</Ustrd></RmtInf></TxDtls></NtryDtls>"
        "</Ntry>"
        for r in rows.itertuples()
    ]
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"><BkToCstmrStmt>'
        f"<GrpHdr><MsgId>STMT-{day:%Y%m%d}</MsgId><CreDtTm>{day}T23:59:00Z</CreDtTm></GrpHdr>"
        f"<Stmt><Id>STMT-{day:%Y%m%d}</Id>"
        "<Acct><Id><IBAN>GB33BUKB20201555555555</IBAN></Id></Acct>"
        + "\n".join(entries)
        + "</Stmt></BkToCstmrStmt></Document>\n",
        encoding="utf-8",
    )
    return rows


def _write_mt940(path: Path, rows: pd.DataFrame, day: date) -> None:
    """The same account's MT940: the first camt entries again (the bank sends both)."""
    lines = [":20:STMT", ":25:GB33BUKB20201555555555", ":28C:1/1", f":60F:C{day:%y%m%d}EUR0,00"]
    for r in rows.itertuples():
        amount = _money(pd.Series([r.amount])).iloc[0].replace(".", ",")
        lines.append(f":61:{day:%y%m%d}{day:%m%d}C{amount}NTRF{r.e2e}//B{r.Index:07d}")
        lines.append(f":86:/NAME/{str(r.name).upper()[:30]}/REMI/{r.reference}/EREF/{r.e2e}")
    lines += [f":62F:C{day:%y%m%d}EUR0,00", "-"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_bai2(path: Path, pays: pd.DataFrame, unknown: pd.DataFrame, day: date) -> None:
    rows = pd.concat(
        [pays[["name", "amount", "reference"]], unknown[["name", "amount", "reference"]]],
        ignore_index=True,
    )
    details = [
        f"16,165,{int(r.amount)},0,B{i:07d},,ORIG CO NAME:{str(r.name).upper()[:30]}  "
        f"ENTRY DESCR:{r.reference}/"
        for i, r in enumerate(rows.itertuples())
    ]
    total = int(rows["amount"].sum())
    records = [
        f"01,BANKUS33,DUNNING,{day:%y%m%d},2359,1,,,2/",
        f"02,DUNNING,BANKUS33,1,{day:%y%m%d},2359,USD,2/",
        f"03,0001234567,USD,040,{total},,/",
        *details,
        f"49,{2 * total},{len(details) + 2}/",  # control totals count the summary too
        f"98,{2 * total},1,{len(details) + 4}/",
    ]
    records.append(f"99,{2 * total},1,{len(records) + 1}/")
    path.write_text("\n".join(records) + "\n", encoding="utf-8")


def _write_cards(path: Path, pays: pd.DataFrame, items: pd.DataFrame, day: date, seed: int) -> None:
    """Card charges by customer id; a few refunded the same day; some other debtors' charges
    declined."""
    rng = np.random.default_rng([seed, 7])
    ts = f"{day}T10:00:00Z"
    charges = pd.DataFrame(
        {
            "id": [f"ch_{i:07d}" for i in range(len(pays))],
            "type": "charge", "status": "succeeded", "created": ts,
            "amount": _money(pays["amount"]).to_numpy(), "currency": pays["currency"].str.lower().to_numpy(),
            "customer": pays["debtor_id"].to_numpy(), "customer_name": pays["name"].to_numpy(),
            "description": "card payment", "invoice": "", "source_id": "", "decline_code": "",
            "network": "visa", "network_code": "00", "advice_code": "",
        }
    )  # fmt: skip
    refunds = charges.head(max(1, len(charges) // 40)).assign(
        source_id=lambda f: f["id"], id=lambda f: "re_" + f["id"].str[3:], type="refund",
        description="refund", created=f"{day}T18:00:00Z",
    )  # fmt: skip
    others = items[~items["debtor_id"].isin(pays["debtor_id"]) & (items["open_minor"] > 0)]
    failed = others.drop_duplicates("debtor_id").sample(
        n=min(len(others["debtor_id"].unique()), max(4, len(pays) // 10)),
        random_state=int(rng.integers(1 << 31)),
    )
    code = rng.integers(0, len(DECLINES), len(failed))
    declines = pd.DataFrame(
        {
            "id": [f"ch_f{i:06d}" for i in range(len(failed))],
            "type": "charge", "status": "failed", "created": ts,
            "amount": _money(failed["open_minor"]).to_numpy(), "currency": failed["currency"].str.lower().to_numpy(),
            "customer": failed["debtor_id"].to_numpy(), "customer_name": failed["name"].to_numpy(),
            "description": "card payment", "invoice": failed["invoice_id"].to_numpy(), "source_id": "",
            "decline_code": [DECLINES[k][0] for k in code], "network": "visa",
            "network_code": [DECLINES[k][1] for k in code], "advice_code": "",
        }
    )  # fmt: skip
    pd.concat([charges, refunds, declines], ignore_index=True).to_csv(path, index=False)


def _write_promises(
    path: Path, items: pd.DataFrame, pays: pd.DataFrame, as_of: date, seed: int
) -> dict:
    """Promises (current and broken) and three-instalment plans for overdue debtors who did
    not pay yesterday."""
    rng = np.random.default_rng([seed, 8])
    overdue = items[
        (pd.to_datetime(items["due_date"]) < pd.Timestamp(as_of)) & (items["open_minor"] > 0)
    ]
    overdue = overdue[~overdue["debtor_id"].isin(pays["debtor_id"]) & ~overdue["disputed"]]
    who = overdue.drop_duplicates("debtor_id")
    who = who.sample(frac=1.0, random_state=int(rng.integers(1 << 31))).head(max(6, len(who) // 25))
    k = len(who) // 3
    current, broken, plans = who.iloc[:k], who.iloc[k : 2 * k], who.iloc[2 * k :]
    rows = []
    for frame, created, due, kind in (
        (current, as_of - timedelta(3), as_of + timedelta(7), "promise"),
        (broken, as_of - timedelta(20), as_of - timedelta(8), "promise"),
    ):
        rows.append(
            pd.DataFrame(
                {
                    "promise_id": "PTP-" + frame["debtor_id"], "debtor_id": frame["debtor_id"],
                    "kind": kind, "created_on": str(created), "currency": frame["currency"],
                    "due_on": str(due), "amount": _money(frame["open_minor"]), "seq": 1,
                    "channel": "phone",
                }
            )
        )  # fmt: skip
    for seq in (1, 2, 3):
        rows.append(
            pd.DataFrame(
                {
                    "promise_id": "PLAN-" + plans["debtor_id"], "debtor_id": plans["debtor_id"],
                    "kind": "plan", "created_on": str(as_of - timedelta(2)),
                    "currency": plans["currency"], "due_on": str(as_of + timedelta(30 * seq - 25)),
                    "amount": _money(plans["open_minor"] // 3 + (seq == 3) * (plans["open_minor"] % 3)),
                    "seq": seq, "channel": "portal",
                }
            )
        )  # fmt: skip
    pd.concat(rows, ignore_index=True).to_csv(path, index=False)
    return {"current": len(current), "broken": len(broken), "plans": len(plans)}
