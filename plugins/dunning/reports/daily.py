"""The day's KPI tables, from the ledger's snapshots, allocations, promises and placements and
the lake's segments and plans.

Everything is computed as of the run's business date from what the ledger held then, so a
backfilled day gets the numbers finance would have seen that morning.  Money stays per currency
(adding dollars to euros is no KPI); the plots use the portfolio's main currency.  Aggregation
happens in SQL (one row per currency and day, not one per invoice) or on whole frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from dunning import lake, ledger
from dunning.config import Config
from dunning.planning import HOLDOUT
from dunning.reports import kpis
from dunning.segmentation import bucket_labels

ALL = "ALL"  # the currency column of a count-based KPI


def _read_sums(conn: sa.Connection, query: Any, *sums: str) -> pd.DataFrame:
    """``pd.read_sql`` with the summed columns as int64: PostgreSQL's SUM of a bigint is a
    numeric (Decimal objects in pandas, where ``cumsum`` and friends fail), SQLite's an int,
    and an empty result is object dtype on both."""
    frame = pd.read_sql(query, conn)
    return frame.astype({name: "int64" for name in sums})


@dataclass(frozen=True)
class Dates:
    """The snapshots a day's report compares: ``begin`` is the period's opening snapshot (CEI's
    beginning AR, the earlier side of roll and cure rates), ``cohort`` the day whose segmented
    debtors the recovery follows.  None when the ledger has no earlier snapshot."""

    as_of: date
    start: date  # the period is (start, as_of]
    begin: date | None
    cohort: date | None
    trend: tuple[date, ...]


def snapshot_dates(engine: sa.Engine, as_of: date, cfg: Config) -> Dates:
    """Pick the comparison snapshots among the days the ledger has buckets for: the latest on
    or before the wanted day, else the earliest before ``as_of`` (a shorter window, reported as
    such), so a young ledger still gets roll rates and recovery."""
    t = ledger.DebtorBucket.__table__.c
    with engine.connect() as conn:
        days = [
            d if isinstance(d, date) else date.fromisoformat(str(d)[:10])
            for d in conn.scalars(
                sa.select(t.as_of).where(t.as_of <= as_of).distinct().order_by(t.as_of)
            )
        ]
    earlier = [d for d in days if d < as_of]
    opts = cfg.reports

    def back(n: int) -> date | None:
        wanted = as_of - timedelta(days=n)
        fit = [d for d in earlier if d <= wanted]
        return fit[-1] if fit else (earlier[0] if earlier else None)

    trend = tuple(d for d in days if d > as_of - timedelta(days=opts.trend_days))
    return Dates(
        as_of=as_of,
        start=as_of - timedelta(days=opts.period_days),
        begin=back(opts.period_days),
        cohort=back(opts.recovery_days),
        trend=trend,
    )


# --- AR position, sales, DSO and CEI -----------------------------------------------------------


def open_by_due(engine: sa.Engine, days: tuple[date, ...]) -> pd.DataFrame:
    """Open balance and invoice count per snapshot day, currency and due date: grouped in SQL,
    so the rows read are the distinct due dates, not the invoices.  The AR position and the
    aging bars both come from it, so each day's snapshot is scanned once."""
    t = ledger.InvoiceSnapshot.__table__.c
    query = (
        sa.select(
            t.as_of,
            t.currency,
            t.due_date,
            sa.func.count().label("invoices"),
            sa.func.sum(t.open_minor).label("open_minor"),
        )
        .where(t.as_of.in_(days))
        .group_by(t.as_of, t.currency, t.due_date)
    )
    with engine.connect() as conn:
        rows = _read_sums(conn, query, "invoices", "open_minor")
    as_of = pd.to_datetime(rows["as_of"])
    late = (as_of - pd.to_datetime(rows["due_date"])).dt.days
    return rows.assign(as_of=as_of.dt.date, days_late=late.to_numpy())


def ar_position(rows: pd.DataFrame, at_risk_after: int = 90) -> pd.DataFrame:
    """Per currency, from one day's ``open_by_due`` rows: total open AR, the current (not yet
    due) part, the overdue part, its open-weighted days past due and the part more than
    ``at_risk_after`` days late."""
    days = rows["days_late"]
    late = days > 0
    rows = rows.assign(
        current=rows["open_minor"].where(~late, 0),
        overdue=rows["open_minor"].where(late, 0),
        weighted=(days * rows["open_minor"]).where(late, 0),
        at_risk=rows["open_minor"].where(days > at_risk_after, 0),
    )
    out = rows.groupby("currency").agg(
        ending_ar=("open_minor", "sum"),
        current_ar=("current", "sum"),
        overdue_ar=("overdue", "sum"),
        weighted=("weighted", "sum"),
        at_risk=("at_risk", "sum"),
    )
    out["add_weighted"] = out["weighted"] / out["overdue_ar"].replace(0, np.nan)
    out["at_risk_share"] = out["at_risk"] / out["ending_ar"].replace(0, np.nan)
    return out.drop(columns=["weighted", "at_risk"])


def credit_sales(engine: sa.Engine, start: date, end: date) -> pd.DataFrame:
    """Invoices issued in ``(start, end]`` per currency and issue date: those still open on
    ``end`` (the snapshot) and those already closed (the AR history), each invoice once.

    Summed in SQL as history + snapshot - both, the overlap found through the history's
    primary key: a ``UNION`` would sort millions of history rows to drop a few duplicates."""
    s = ledger.InvoiceSnapshot.__table__.c
    h = ledger.InvoiceHistory.__table__.c
    window = (s.as_of == end, s.doc_type == "invoice", s.issue_date > start, s.issue_date <= end)

    def summed(query: sa.Select, table: Any, sign: int) -> sa.Select:
        return query.group_by(table.currency, table.issue_date).with_only_columns(
            table.currency,
            table.issue_date,
            (sign * sa.func.sum(table.amount_minor)).label("sales"),
        )

    parts = [
        summed(sa.select(s.currency).where(*window), s, 1),
        summed(
            sa.select(h.currency).where(
                h.doc_type == "invoice", h.issue_date > start, h.issue_date <= end
            ),
            h,
            1,
        ),
        summed(
            sa.select(s.currency)
            .join(ledger.InvoiceHistory.__table__, h.invoice_id == s.invoice_id)
            .where(*window, h.doc_type == "invoice"),
            s,
            -1,
        ),
    ]
    with engine.connect() as conn:
        frame = pd.concat([_read_sums(conn, q, "sales") for q in parts], ignore_index=True)
    frame["issue_date"] = pd.to_datetime(frame["issue_date"])
    return frame.groupby(["currency", "issue_date"], as_index=False)["sales"].sum()


def collected(engine: sa.Engine, start: date, end: date) -> pd.Series:
    """Money allocated to debtors' invoices, booked in ``(start, end]``, per currency."""
    a = ledger.Allocation.__table__.c
    query = (
        sa.select(a.currency, sa.func.sum(a.amount_minor).label("collected"))
        .where(a.booked_on > start, a.booked_on <= end)
        .group_by(a.currency)
    )
    with engine.connect() as conn:
        return _read_sums(conn, query, "collected").set_index("currency")["collected"]


def money_kpis(
    engine: sa.Engine, dates: Dates, cfg: Config, open_rows: pd.DataFrame
) -> pd.DataFrame:
    """DSO (standard and countback), best possible DSO, ADD (both forms), CEI, collections and
    the 90+ share, one row per currency and KPI."""
    opts = cfg.reports
    period = opts.period_days
    bounds = cfg.aging.buckets
    late = bounds[-2] if len(bounds) > 1 else bounds[-1]  # 90 with the default buckets
    now = ar_position(open_rows[open_rows["as_of"] == dates.as_of], late)
    before = (
        ar_position(open_rows[open_rows["as_of"] == dates.begin], late)
        if dates.begin
        else pd.DataFrame()
    )
    sales = credit_sales(
        engine, dates.as_of - timedelta(days=period * opts.countback_periods), dates.as_of
    )
    sales["period"] = (pd.Timestamp(dates.as_of) - sales["issue_date"]).dt.days // period
    by_period = sales.pivot_table(
        index="currency", columns="period", values="sales", aggfunc="sum", fill_value=0
    )
    paid = collected(engine, dates.start, dates.as_of)
    rows: list[dict[str, Any]] = []
    for currency, pos in now.iterrows():  # one row per currency, a handful
        periods = by_period.loc[currency] if currency in by_period.index else pd.Series(dtype=int)
        period_sales = float(periods.get(0, 0))
        begin = float(before["ending_ar"].get(currency, 0)) if len(before) else float("nan")
        values = {
            "ending_ar": pos["ending_ar"],
            "current_ar": pos["current_ar"],
            "overdue_ar": pos["overdue_ar"],
            "credit_sales": period_sales,
            "collected": float(paid.get(currency, 0)),
            "dso": kpis.dso(pos["ending_ar"], period_sales, period),
            "best_possible_dso": kpis.best_possible_dso(pos["current_ar"], period_sales, period),
            "average_days_delinquent": kpis.average_days_delinquent(
                pos["ending_ar"], pos["current_ar"], period_sales, period
            ),
            "add_weighted": pos["add_weighted"],
            "at_risk_share": pos["at_risk_share"],
            "countback_dso": kpis.countback_dso(
                pos["ending_ar"],
                [(period, float(periods.get(k, 0))) for k in range(opts.countback_periods)],
            ),
            "cei": kpis.cei(
                begin,
                period_sales,
                pos["ending_ar"],
                pos["current_ar"],
                months=max(1, round(period / 30)),
            ),
        }
        rows += [{"currency": currency, "kpi": k, "value": float(v)} for k, v in values.items()]
    return pd.DataFrame(rows, columns=["currency", "kpi", "value"])


# --- buckets: aging trend, roll and cure rates -------------------------------------------------


def buckets_on(engine: sa.Engine, days: tuple[date, ...]) -> pd.DataFrame:
    """The ledger's debtor buckets of the given days (one row per debtor and day)."""
    t = ledger.DebtorBucket.__table__.c
    query = sa.select(t.as_of, t.debtor_id, t.bucket, t.currency, t.open_minor).where(
        t.as_of.in_(days)
    )
    with engine.connect() as conn:
        frame = pd.read_sql(query, conn)
    frame["as_of"] = pd.to_datetime(frame["as_of"]).dt.date
    return frame


def stored_aging(root: Any, dates: Dates) -> dict[date, pd.DataFrame]:
    """The aging bars earlier trend days' own reports hold (each day's rows of its own date):
    with them a report scans one snapshot, not thirty."""
    out = {}
    for day in dates.trend:
        path = root / f"{lake.partition('reports', day)}/kpis/aging.parquet"
        if day != dates.as_of and path.exists():
            frame = lake.read_parquet(path)
            frame["as_of"] = pd.to_datetime(frame["as_of"]).dt.date
            out[day] = frame[frame["as_of"] == day]
    return out


def days_to_scan(dates: Dates, stored: dict[date, pd.DataFrame]) -> tuple[date, ...]:
    """The snapshot days whose open items must be read: the report's own, the period's opening
    one, and trend days without bars of their own."""
    own = {dates.as_of, *([dates.begin] if dates.begin else [])}
    return tuple(sorted(own | (set(dates.trend) - set(stored))))


def aging_trend(
    open_rows: pd.DataFrame, stored: dict[date, pd.DataFrame], dates: Dates, cfg: Config
) -> pd.DataFrame:
    """Open invoice balance per snapshot day, currency and aging bucket: the aging waterfall's
    bars, at invoice level like the at-risk share (a debtor's bucket is that of its oldest
    item, which would count its current invoices as late)."""
    days = {*dates.trend, dates.as_of} - set(stored)
    rows = open_rows[open_rows["as_of"].isin(days)]
    bucket = bucket_labels(rows["days_late"].clip(lower=0).to_numpy(), cfg.aging).to_numpy()
    fresh = (
        rows.assign(bucket=bucket)
        .groupby(["as_of", "currency", "bucket"], as_index=False)[["invoices", "open_minor"]]
        .sum()
    )
    out = pd.concat([*stored.values(), fresh], ignore_index=True)
    out["bucket"] = pd.Categorical(out["bucket"], categories=cfg.aging.labels(), ordered=True)
    return out.sort_values(["as_of", "currency", "bucket"]).reset_index(drop=True)


def roll_table(buckets: pd.DataFrame, dates: Dates, labels: list[str]) -> pd.DataFrame:
    """Roll rates from the period's opening snapshot to the day, per currency, long form."""
    if dates.begin is None:
        return pd.DataFrame(columns=["currency", "from_bucket", "to_bucket", "share"])
    frames = []
    for currency, part in buckets.groupby("currency"):
        matrix = kpis.roll_rates(
            part[part["as_of"] == dates.begin], part[part["as_of"] == dates.as_of], labels
        )
        long = matrix.rename_axis(index="from_bucket", columns="to_bucket").stack()
        frames.append(long.rename("share").reset_index().assign(currency=currency))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return out.reindex(columns=["currency", "from_bucket", "to_bucket", "share"])


# --- recovery by wave, segment, template and arm -----------------------------------------------


def _read_lake(root: Any, area: str, day: date, name: str) -> pd.DataFrame | None:
    path = root / (lake.partition(area, day) + f"/{name}")
    return lake.read_parquet(path) if path.exists() else None


def recovery_cohort(engine: sa.Engine, root: Any, dates: Dates, paid: pd.DataFrame) -> pd.DataFrame:
    """The debtors segmented on the cohort day with an overdue balance then: segment, arm, the
    first contact planned for them that day (wave step and template, ``none`` for a debtor
    not contacted) and the money allocated to them in that currency since (``paid``:
    ``allocations_since`` the cohort day)."""
    columns = [
        "debtor_id",
        "segment",
        "experiment",
        "arm",
        "step",
        "template",
        "currency",
        "overdue_minor",
        "collected_minor",
        "recovery_rate",
    ]
    if dates.cohort is None:
        return pd.DataFrame(columns=columns)
    segments = _read_lake(root, "segments", dates.cohort, "segments.parquet")
    if segments is None:
        return pd.DataFrame(columns=columns)
    plan = _read_lake(root, "plans", dates.cohort, "planned_contacts.parquet")
    t = ledger.DebtorBucket.__table__.c
    with engine.connect() as conn:
        owed = pd.read_sql(
            sa.select(t.debtor_id, t.currency, t.overdue_minor).where(
                t.as_of == dates.cohort, t.overdue_minor > 0
            ),
            conn,
        )
    cohort = segments.merge(owed, on="debtor_id", how="inner")
    first = (
        plan.sort_values(["debtor_id", "step_index"]).drop_duplicates("debtor_id")
        if plan is not None and len(plan)
        else pd.DataFrame(columns=["debtor_id", "step", "template"])
    )
    cohort = cohort.merge(first[["debtor_id", "step", "template"]], on="debtor_id", how="left")
    cohort[["step", "template"]] = cohort[["step", "template"]].fillna("none")
    cohort[["experiment", "arm"]] = cohort[["experiment", "arm"]].fillna("")
    total = paid.groupby(["debtor_id", "currency"], as_index=False)["amount_minor"].sum()
    cohort = cohort.merge(total, on=["debtor_id", "currency"], how="left")
    cohort["collected_minor"] = cohort["amount_minor"].fillna(0).astype("int64")
    cohort["recovery_rate"] = (cohort["collected_minor"] / cohort["overdue_minor"]).clip(upper=1)
    return cohort[columns]


def allocations_since(engine: sa.Engine, start: date, end: date) -> pd.DataFrame:
    """Allocations booked in ``(start, end]``: debtor, currency, day, amount."""
    a = ledger.Allocation.__table__.c
    query = (
        sa.select(
            a.debtor_id, a.currency, a.booked_on, sa.func.sum(a.amount_minor).label("amount_minor")
        )
        .where(a.booked_on > start, a.booked_on <= end)
        .group_by(a.debtor_id, a.currency, a.booked_on)
    )
    with engine.connect() as conn:
        frame = _read_sums(conn, query, "amount_minor")
    frame["booked_on"] = pd.to_datetime(frame["booked_on"]).dt.date
    return frame


def recovery_by(cohort: pd.DataFrame) -> pd.DataFrame:
    """Recovery per dimension value (segment, wave step, template, arm), per currency: money
    recovered over money overdue, and the share of debtors who paid anything."""
    frames = []
    for dim in ("segment", "step", "template", "arm"):
        part = cohort[cohort[dim] != ""] if dim == "arm" else cohort
        grouped = part.groupby(["currency", dim], as_index=False).agg(
            debtors=("debtor_id", "size"),
            overdue_minor=("overdue_minor", "sum"),
            collected_minor=("collected_minor", "sum"),
            payers=("collected_minor", lambda s: int((s > 0).sum())),
        )
        frames.append(grouped.rename(columns={dim: "value"}).assign(dimension=dim))
    cols = [
        "dimension",
        "value",
        "currency",
        "debtors",
        "payers",
        "overdue_minor",
        "collected_minor",
    ]
    out = pd.concat(frames, ignore_index=True).reindex(columns=cols) if frames else pd.DataFrame()
    out["recovery_rate"] = out["collected_minor"] / out["overdue_minor"].replace(0, np.nan)
    out["payer_share"] = out["payers"] / out["debtors"].replace(0, np.nan)
    return out


def uplift_table(cohort: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """Each experiment arm against its holdout: per-debtor recovery difference and interval."""
    rows = []
    for experiment, part in cohort[cohort["experiment"] != ""].groupby("experiment"):
        control = part.loc[part["arm"] == HOLDOUT, "recovery_rate"]
        for arm, arm_part in part[part["arm"] != HOLDOUT].groupby("arm"):
            result = kpis.uplift(arm_part["recovery_rate"], control, confidence)
            rows.append({"experiment": experiment, "arm": arm, **result})
    cols = [
        "experiment",
        "arm",
        "debtors",
        "holdout_debtors",
        "rate",
        "holdout_rate",
        "uplift",
        "ci_low",
        "ci_high",
    ]
    return pd.DataFrame(rows, columns=cols).assign(confidence=confidence)


def recovery_curve(cohort: pd.DataFrame, dates: Dates, paid: pd.DataFrame) -> pd.DataFrame:
    """Cumulative recovery rate by day since the cohort day, per arm (``all`` without one), in
    the cohort's main currency: the recovery curves."""
    if dates.cohort is None or cohort.empty:
        return pd.DataFrame(columns=["group", "day", "recovery_rate"])
    currency = cohort.groupby("currency")["overdue_minor"].sum().idxmax()
    part = cohort[cohort["currency"] == currency]
    group = part["arm"].where(part["arm"] != "", "all")
    paid = paid[paid["currency"] == currency].merge(
        part[["debtor_id"]].assign(group=group.to_numpy()), on="debtor_id"
    )
    # per debtor, collections count up to the overdue balance only, as in the recovery rate
    paid = paid.sort_values("booked_on")
    paid["cum"] = paid.groupby("debtor_id")["amount_minor"].cumsum()
    cap = paid["debtor_id"].map(part.set_index("debtor_id")["overdue_minor"])
    paid["capped"] = (
        np.minimum(paid["cum"], cap)
        .groupby(paid["debtor_id"])
        .diff()
        .fillna(np.minimum(paid["cum"], cap))
    )
    paid["day"] = (pd.to_datetime(paid["booked_on"]) - pd.Timestamp(dates.cohort)).dt.days
    span = (dates.as_of - dates.cohort).days
    owed = part.groupby(group.to_numpy())["overdue_minor"].sum()
    daily = paid.pivot_table(
        index="day", columns="group", values="capped", aggfunc="sum", fill_value=0
    ).reindex(index=range(span + 1), columns=owed.index, fill_value=0)
    curve = daily.cumsum().div(owed, axis=1)
    long = curve.rename_axis(index="day", columns="group").stack().rename("recovery_rate")
    return long.reset_index().assign(currency=currency)


# --- promises and agencies ---------------------------------------------------------------------


def promise_rows(engine: sa.Engine, dates: Dates) -> pd.DataFrame:
    """Instalments (promises and plan payments) that fell due in the period."""
    t = ledger.Instalment.__table__.c
    query = sa.select(t.kind, t.status).where(t.due_on > dates.start, t.due_on <= dates.as_of)
    with engine.connect() as conn:
        return pd.read_sql(query, conn)


def liquidation(engine: sa.Engine, as_of: date) -> pd.DataFrame:
    """Agency liquidation by placement month, from what was placed and paid by ``as_of``."""
    p = ledger.PlacedAccount.__table__.c
    a = ledger.AgencyPayment.__table__.c
    with engine.connect() as conn:
        placed = pd.read_sql(
            sa.select(p.account_ref, p.agency, p.placed_on, p.currency, p.balance_minor).where(
                p.placed_on <= as_of
            ),
            conn,
        )
        paid = pd.read_sql(sa.select(a.account_ref, a.amount_minor).where(a.paid_on <= as_of), conn)
    frames = [
        kpis.liquidation_by_vintage(part, paid).assign(agency=agency, currency=currency)
        for (agency, currency), part in placed.groupby(["agency", "currency"])
    ]
    cols = [
        "agency",
        "currency",
        "vintage",
        "accounts",
        "placed_minor",
        "collected_minor",
        "liquidation_rate",
    ]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


# --- the day's tables --------------------------------------------------------------------------


def kpi_tables(engine: sa.Engine, root: Any, cfg: Config, as_of: date) -> dict[str, pd.DataFrame]:
    """Every table of the day's report, keyed by the file name it is published under."""
    dates = snapshot_dates(engine, as_of, cfg)
    labels = cfg.aging.labels()
    buckets = buckets_on(engine, (as_of, *([dates.begin] if dates.begin else [])))
    stored = stored_aging(root, dates)
    open_rows = open_by_due(engine, days_to_scan(dates, stored))
    money = money_kpis(engine, dates, cfg, open_rows)
    today = buckets[buckets["as_of"] == as_of]
    before = buckets[buckets["as_of"] == dates.begin]
    counts = pd.DataFrame(
        [
            {
                "currency": ALL,
                "kpi": "cure_rate",
                "value": kpis.cure_rate(before, today) if dates.begin else float("nan"),
            },
            {
                "currency": ALL,
                "kpi": "promise_kept_rate",
                "value": kpis.promise_kept_rate(promise_rows(engine, dates)),
            },
        ]
    )
    paid = (
        allocations_since(engine, dates.cohort, as_of)
        if dates.cohort
        else pd.DataFrame(columns=["debtor_id", "currency", "booked_on", "amount_minor"])
    )
    cohort = recovery_cohort(engine, root, dates, paid)
    kpi_frame = pd.concat([money, counts], ignore_index=True).assign(
        as_of=as_of,
        period_start=dates.start,
        begin_snapshot=dates.begin,
    )
    return {
        "kpis": kpi_frame,
        "aging": aging_trend(open_rows, stored, dates, cfg),
        "roll_rates": roll_table(buckets, dates, labels).assign(
            from_date=dates.begin, to_date=as_of
        ),
        "recovery": recovery_by(cohort).assign(cohort_date=dates.cohort, to_date=as_of),
        "recovery_curve": recovery_curve(cohort, dates, paid).assign(cohort_date=dates.cohort),
        "uplift": uplift_table(cohort, cfg.reports.confidence).assign(cohort_date=dates.cohort),
        "liquidation": liquidation(engine, as_of),
    }


def report_key(as_of: date) -> str:
    return lake.partition("reports", as_of) + "/report.html"


def run_index_key(run_id: str) -> str:
    """Where the Airflow UI's report view finds a run's report: run ids hold ``:`` and ``+``."""
    from urllib.parse import quote

    return f"reports/runs/{quote(run_id, safe='')}.json"


def run_report_key(run_id: str) -> str:
    """The run's own copy of its report: a later run of the same date replaces the date's
    ``report.html``, and the earlier run's Report tab must still show that run."""
    return run_index_key(run_id).removesuffix(".json") + ".html"


def report_to_lake(engine: sa.Engine, root: Any, cfg: Config, summary: dict) -> dict:
    """Publish the day's KPI tables (Parquet for BI tools, CSV for spreadsheets) and the HTML
    report next to the summary, and index the run so the UI can link to its report."""
    from dunning.reports import html

    as_of = date.fromisoformat(summary["as_of"])
    tables = kpi_tables(engine, root, cfg, as_of)
    base = lake.partition("reports", as_of) + "/kpis"
    for name, frame in tables.items():
        lake.write_parquet(root / f"{base}/{name}.parquet", frame)
        (root / f"{base}/{name}.csv").write_text(frame.to_csv(index=False))
    key = report_key(as_of)
    page = html.render(tables, summary, cfg.aging.labels())
    lake.write_bytes(root / key, page.encode("utf-8"), content_type="text/html; charset=utf-8")
    if summary.get("run_id"):
        own = run_report_key(summary["run_id"])
        lake.write_bytes(root / own, page.encode("utf-8"), content_type="text/html; charset=utf-8")
        lake.write_json(
            root / run_index_key(summary["run_id"]), {"as_of": summary["as_of"], "report": own}
        )
    return {"report": key, "tables": f"{base}/", "rows": {k: len(v) for k, v in tables.items()}}
