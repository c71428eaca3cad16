"""The placement record: everything an agency could need to work an account lawfully.

Built whole here (``PLACEMENT_FIELDS``); an agency's layout then takes only the fields it asks
for (``files.render``), so what leaves the company is decided by config, not by this code.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from dunning.config import PLACEMENT_FIELDS, Config
from dunning.ledger import Payment

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MASTER_FIELDS = (
    "name", "kind", "city", "region", "postal_code", "country", "timezones", "locale", "email",
    "phone",
)  # fmt: skip


def account_ref(debtor_ids: pd.Series, placed_on: date) -> pd.Series:
    """Unique per placement, so an account placed again after a return is a new reference."""
    return debtor_ids.astype("str") + "-" + placed_on.strftime("%Y%m%d")


def last_payments(engine: sa.Engine, as_of: date) -> pd.DataFrame:
    """Each debtor's last payment per currency on or before ``as_of`` (date and that day's
    amount), from the AR history's payments: one sort in the database (a window), not a join
    per debtor."""
    p = Payment.__table__.c
    days = (
        sa.select(
            p.debtor_id,
            p.currency,
            p.paid_on.label("last_payment_date"),
            sa.func.sum(p.amount_minor).label("last_payment_minor"),
            sa.func.row_number()
            .over(partition_by=(p.debtor_id, p.currency), order_by=p.paid_on.desc())
            .label("newest"),
        )
        .where(p.paid_on <= as_of, p.debtor_id.is_not(None))
        .group_by(p.debtor_id, p.currency, p.paid_on)
        .subquery()
    )
    last = days.c
    query = sa.select(
        last.debtor_id, last.currency, last.last_payment_date, last.last_payment_minor
    ).where(last.newest == 1)
    with engine.connect() as conn:
        return pd.read_sql(query, conn)


def joined(keys: pd.Series, values: pd.Series, sep: str) -> pd.Series:
    """``values`` joined with ``sep`` per key (in key, then value order), as Arrow list joins
    rather than a Python join per group."""
    order = pd.DataFrame({"k": keys.to_numpy(), "v": values.astype("str").to_numpy()})
    order = order.sort_values(["k", "v"], kind="stable")
    uniq, starts = np.unique(order["k"].to_numpy(), return_index=True)
    offsets = np.append(starts, len(order)).astype(np.int32)
    lists = pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(order["v"].to_numpy(), pa.string())
    )
    return pd.Series(pc.binary_join(lists, sep).to_numpy(zero_copy_only=False), index=uniq)


def _placed_invoices(invoices: pd.DataFrame, accounts: pd.DataFrame, as_of: date) -> pd.DataFrame:
    """The invoices an account is made of: overdue, undisputed, open, in the account's currency
    (the same items ``segmentation.debtor_view`` puts in ``overdue_minor``)."""
    keys = accounts[["debtor_id", "currency"]]
    inv = invoices.merge(keys, on=["debtor_id", "currency"])
    due = pd.to_datetime(inv["due_date"])
    keep = (
        inv["doc_type"].eq("invoice")
        & ~inv["disputed"].fillna(False).astype(bool)
        & (inv["open_minor"] > 0)
        & (due < pd.Timestamp(as_of))
    )
    return inv.loc[keep]


def _windows_text(windows: pd.DataFrame) -> pd.Series:
    """Designated inconvenient times as the agency reads them: ``Mon,Tue 09:00-17:00; ...``."""
    if windows.empty:
        return pd.Series(dtype="object")
    days = pd.Series("", index=windows.index, dtype="object")
    for bit, name in enumerate(WEEKDAYS):
        has = (windows["weekdays"].to_numpy() >> bit) & 1 == 1
        days[has] = np.where(days[has] == "", name, days[has] + "," + name)

    def clock(minutes: pd.Series) -> pd.Series:
        return (
            (minutes // 60).astype(str).str.zfill(2) + ":" + (minutes % 60).astype(str).str.zfill(2)
        )

    text = days + " " + clock(windows["start"]) + "-" + clock(windows["end"])
    return joined(windows["debtor_id"], text, "; ")


def build_records(
    accounts: pd.DataFrame,
    view: pd.DataFrame,
    state: pd.DataFrame,
    windows: pd.DataFrame,
    invoices: pd.DataFrame,
    debtors: pd.DataFrame,
    payments: pd.DataFrame,
    cfg: Config,
) -> pd.DataFrame:
    """One record per account (columns ``PLACEMENT_FIELDS``, in that order).

    ``accounts``: debtor_id, account_ref, agency, segment, placed_on, currency, balance_minor,
    days_past_due (as placed: a re-run renders what the ledger holds).  Money is minor units.  Principal is the placed balance; this AR data has no interest or fees, so
    those are 0 and the Regulation F itemization reconciles exactly:
    itemization + interest + fees - payments and credits = balance.
    """
    n = len(accounts)
    acc = accounts.sort_values("account_ref", ignore_index=True)
    ids = acc["debtor_id"]
    v = view.set_index("debtor_id").reindex(ids)
    st = state.reindex(ids)
    if "debtor_id" not in debtors:  # no debtor master today: identity fields stay empty
        debtors = pd.DataFrame({"debtor_id": pd.Series(dtype="object")})
    master = debtors.drop_duplicates("debtor_id", keep="last").set_index("debtor_id").reindex(ids)
    master = master.reindex(columns=list(dict.fromkeys([*master.columns, *MASTER_FIELDS])))
    placed_on = pd.to_datetime(acc["placed_on"])
    items = _placed_invoices(invoices, acc, placed_on.min().date() if n else date.min)
    by_debtor = items.groupby("debtor_id")
    amount = by_debtor["amount_minor"].sum().reindex(ids).fillna(0).astype("int64").to_numpy()
    balance = acc["balance_minor"].astype("int64").to_numpy()
    issued = pd.to_datetime(by_debtor["issue_date"].max().reindex(ids)).to_numpy()
    pay = acc[["debtor_id", "currency"]].merge(payments, on=["debtor_id", "currency"], how="left")
    last_paid = pd.to_datetime(pay["last_payment_date"]).to_numpy()
    by_payment = (cfg.placement.itemization == "last_payment") & pd.notna(last_paid)
    item_minor = np.where(by_payment, balance, np.maximum(amount, balance))
    oldest = pd.to_datetime(v["oldest_due_date"]).to_numpy()
    zero = np.zeros(n, dtype="int64")

    def flag(column: str, frame: pd.DataFrame = st) -> np.ndarray:
        if column not in frame:
            return np.zeros(n, dtype=bool)
        return frame[column].fillna(False).astype(bool).to_numpy()

    columns = {
        "account_ref": acc["account_ref"].to_numpy(),
        "customer_ref": ids.to_numpy(),
        "portfolio": cfg.portfolio.name,
        "agency": acc["agency"].to_numpy(),
        "placement_date": placed_on.to_numpy(),
        "segment": acc["segment"].to_numpy(),
        "name": master["name"].to_numpy(),
        "kind": master["kind"].to_numpy(),
        "city": master["city"].to_numpy(),
        "region": master["region"].to_numpy(),
        "postal_code": master["postal_code"].to_numpy(),
        "country": master["country"].to_numpy(),
        "timezones": master["timezones"].to_numpy(),
        "locale": master["locale"].to_numpy(),
        "email": master["email"].to_numpy(),
        "email_consent": flag("consent_email"),
        "email_opt_out": flag("opt_out_email"),
        "employer_email": flag("employer_email"),
        "phone": master["phone"].to_numpy(),
        "sms_consent": flag("consent_sms"),
        "sms_opt_out": flag("opt_out_sms"),
        "call_opt_out": flag("opt_out_call"),
        "currency": acc["currency"].to_numpy(),
        "balance_minor": balance,
        "principal_minor": balance,
        "interest_minor": zero,
        "fees_minor": zero,
        "original_minor": amount,
        "disputed_minor": v["disputed_minor"].fillna(0).astype("int64").to_numpy(),
        "invoice_count": by_debtor.size().reindex(ids).fillna(0).astype("int64").to_numpy(),
        "invoice_refs": joined(items["debtor_id"], items["invoice_id"], ";")
        .reindex(ids)
        .to_numpy(),
        "due_date": oldest,
        "first_delinquency_date": oldest + np.timedelta64(1, "D"),
        "last_payment_date": last_paid,
        "last_payment_minor": pay["last_payment_minor"].to_numpy(),
        "charge_off_date": np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]"),
        "days_past_due": acc["days_past_due"].astype("int64").to_numpy(),
        "itemization_date": np.where(by_payment, last_paid, issued),
        "itemization_type": np.where(by_payment, "last_payment", "transaction"),
        "itemization_minor": item_minor,
        "interest_since_minor": zero,
        "fees_since_minor": zero,
        "payments_since_minor": item_minor - balance,
        "original_creditor": cfg.portfolio.name,
        "current_creditor": cfg.portfolio.name,
        "dispute": st["dispute"].fillna("none").to_numpy() if "dispute" in st else "none",
        "cease_communication": flag("cease_communication"),
        "attorney_represented": flag("attorney_represented"),
        "inconvenient_times": _windows_text(windows).reindex(ids).to_numpy(),
        "payment_plan": flag("plan_current", v),
        "promise_broken": v["promise_broken_on"].notna().to_numpy()
        if "promise_broken_on" in v
        else np.zeros(n, dtype=bool),
        "vulnerable": flag("vulnerable"),
    }
    records = pd.DataFrame(columns, index=range(n))
    for col in ("placement_date", "due_date", "first_delinquency_date", "last_payment_date"):
        records[col] = pd.to_datetime(records[col])
    return records[list(PLACEMENT_FIELDS)]
