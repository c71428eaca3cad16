"""Cut-off economics: from which day past due does an agency beat collecting in-house?

From the ledger's invoice history, the in-house recovery curve: of the money still unpaid at
``d`` days past due, the share that was paid within the next ``horizon_days``.  Keeping an
account costs contacts (``cost_per_contact_minor`` x ``contacts_per_month``, as a share of the
average balance); placing it yields ``agency_liquidation`` x (1 - commission).  The break-even day
is the first ``d`` where in-house net recovery drops below the agency's -- the recommended cut-off,
reported per segment next to the configured one.

Only invoices whose whole window has passed count (due + d + horizon before the date), so the
curve is not biased by debts that simply have not had time to be paid.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from dunning import lake
from dunning.config import Config
from dunning.ledger import InvoiceHistory
from dunning.planning import assign_segments

STEP_DAYS = 15
ALL = "(all)"


def history(engine: sa.Engine) -> pd.DataFrame:
    h = InvoiceHistory.__table__.c
    query = sa.select(h.debtor_id, h.due_date, h.amount_minor, h.paid_date).where(
        h.doc_type == "invoice", h.amount_minor > 0
    )
    with engine.connect() as conn:
        return pd.read_sql(query, conn)


def agency_net(cfg: Config) -> float:
    """What placing returns per unit of balance: liquidation net of the weight-averaged
    commission of the configured agencies."""
    agencies = cfg.placement.agencies
    weights = np.array([a.weight for a in agencies]) if agencies else np.ones(1)
    rates = np.array([a.commission_rate for a in agencies]) if agencies else np.zeros(1)
    commission = float((weights * rates).sum() / weights.sum())
    return cfg.placement.economics.agency_liquidation * (1 - commission)


def curve(invoices: pd.DataFrame, segments: pd.Series, cfg: Config, as_of: date) -> pd.DataFrame:
    """Per segment (and ``(all)``) and day past due: invoices still unpaid then, their balance,
    the in-house recovery share, the contact cost share and the net of both, the agency's net."""
    econ = cfg.placement.economics
    horizon = econ.horizon_days
    due = pd.to_datetime(invoices["due_date"]).to_numpy("datetime64[D]")
    paid = pd.to_datetime(invoices["paid_date"]).to_numpy("datetime64[D]")
    amount = invoices["amount_minor"].to_numpy(dtype=np.float64)
    late = (paid - due).astype("timedelta64[D]").astype(np.float64)
    late[np.isnat(paid)] = np.inf  # never paid: later than any window
    # segments as integer codes: the masks below compare millions of rows per grid step
    seg, names = pd.factorize(invoices["debtor_id"].map(segments), sort=True)
    last_due = np.datetime64(as_of - timedelta(days=horizon), "D")
    cost = np.mean(list(econ.cost_per_contact_minor.values())) * econ.contacts_per_month
    cost *= horizon / 30
    rows = []
    for d in range(0, max(cfg.placement.cutoff.days_past_due, 180) + 1, STEP_DAYS):
        observed = due + np.timedelta64(d, "D") <= last_due
        unpaid = observed & (late > d)
        recovered = unpaid & (late <= d + horizon)
        present = np.unique(seg[unpaid])
        for code, name in [(-2, ALL), *((c, names[c]) for c in present if c >= 0)]:
            mine = unpaid if code == -2 else unpaid & (seg == code)
            balance = amount[mine].sum()
            rows.append(
                {
                    "segment": name,
                    "days_past_due": d,
                    "invoices": int(mine.sum()),
                    "balance_minor": int(balance),
                    "inhouse_recovery": amount[recovered & mine].sum() / balance
                    if balance
                    else np.nan,
                    "inhouse_cost_share": cost * mine.sum() / balance if balance else np.nan,
                }
            )
    frame = pd.DataFrame(rows)
    frame["inhouse_net"] = frame["inhouse_recovery"] - frame["inhouse_cost_share"]
    frame["agency_net"] = agency_net(cfg)
    return frame


def recommend(curve_frame: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """Per segment: the configured cut-off and the break-even day (empty when in-house stays
    ahead over the whole curve, or there is too little history to say)."""
    cut = cfg.placement.cutoff
    worse = curve_frame[curve_frame["inhouse_net"] < curve_frame["agency_net"]]
    first = worse.groupby("segment")["days_past_due"].min()
    segments = curve_frame["segment"].drop_duplicates()
    return pd.DataFrame(
        {
            "segment": segments.to_numpy(),
            "configured_days": [cut.by_segment.get(s, cut.days_past_due) for s in segments],
            "recommended_days": segments.map(first).astype("Int64").to_numpy(),
            "agency_net": agency_net(cfg),
        }
    )


def economics_to_lake(
    cfg: Config, as_of: date, root: Any, engine: sa.Engine, view_key: str
) -> dict:
    """The curve and the recommendation as CSV for BI (``reports/as_of=…/``), and the
    recommendation per segment for the run summary."""
    view = assign_segments(lake.read_parquet(root / view_key), cfg)
    frame = curve(history(engine), view.set_index("debtor_id")["segment"], cfg, as_of)
    advice = recommend(frame, cfg)
    keys = {}
    for name, table in (("cutoff_curve", frame), ("cutoff_recommendation", advice)):
        keys[name] = f"{lake.partition('reports', as_of)}/{name}.csv"
        lake.write_bytes(root / keys[name], table.to_csv(index=False).encode("utf-8"))
    return {
        **keys,
        "by_segment": {
            r.segment: {
                "configured_days": int(r.configured_days),
                "recommended_days": None
                if pd.isna(r.recommended_days)
                else int(r.recommended_days),
            }
            for r in advice.itertuples(index=False)
        },
    }
