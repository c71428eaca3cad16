"""The day's report as one self-contained HTML file: KPI cards, the tables finance asks about,
and the plots (aging waterfall, roll rates, recovery curves, uplift against the holdout).

Self-contained because it is opened from the lake, an e-mail or the Airflow UI where nothing
else can be fetched: the plots are inline PNGs, the styles inline, no script.  A plot without
data yet (a young ledger has no earlier snapshot) still appears, saying what it waits for.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on a worker

import matplotlib.pyplot as plt
import pandas as pd
from babel.numbers import format_currency, format_percent, get_currency_precision
from jinja2 import Environment, select_autoescape

PLOTS = ("aging", "roll_rates", "recovery_curve", "uplift", "liquidation")
LOCALE = "en_US"

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Dunning report {{ as_of }}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:1rem;color:#1d2733}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #dde3ea}
.cards{display:flex;flex-wrap:wrap;gap:.6rem}.card{border:1px solid #dde3ea;border-radius:6px;
padding:.5rem .8rem;min-width:9rem}.card b{display:block;font-size:1.2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:13px}td,th{border:1px solid #dde3ea;
padding:.2rem .5rem;text-align:right}th{background:#f3f6f9}td:first-child,th:first-child{text-align:left}
figure{margin:.5rem 0}img{max-width:100%;height:auto}.note{color:#5a6776}
.status-complete{color:#1b7f3b}.status-other{color:#b3261e}
</style></head><body>
<h1>Dunning report — {{ as_of }}</h1>
<p class="note">Run {{ run_id or "—" }} ·
status <span class="{{ 'status-complete' if status == 'complete' else 'status-other' }}">{{ status }}</span>
{% if backfill %}· backfill (nobody contacted){% endif %}
· period {{ period_start }} – {{ as_of }} · main currency {{ currency }}</p>
<div class="cards">{% for card in cards %}<div class="card" id="kpi-{{ card.kpi }}">{{ card.label }}<b>{{ card.text }}</b></div>{% endfor %}</div>
{% for section in sections %}
<h2 id="{{ section.id }}">{{ section.title }}</h2>
<p class="note">{{ section.note }}</p>
<figure><img id="plot-{{ section.id }}" alt="{{ section.title }}" src="data:image/png;base64,{{ section.png }}"></figure>
{{ section.table | safe }}
{% endfor %}
<h2 id="run">The run</h2>
<table><tr><th>Count</th><th>Value</th></tr>
{% for key, value in counts %}<tr><td>{{ key }}</td><td>{{ value }}</td></tr>{% endfor %}
</table>
<p class="note">Tables for BI: {{ tables | join(", ") }} (Parquet and CSV next to this file).</p>
</body></html>
"""
_ENV = Environment(autoescape=select_autoescape(default=True))

CARDS = (
    ("ending_ar", "Open AR", "money"),
    ("overdue_ar", "Overdue", "money"),
    ("collected", "Collected in period", "money"),
    ("dso", "DSO (days)", "days"),
    ("countback_dso", "Countback DSO", "days"),
    ("best_possible_dso", "Best possible DSO", "days"),
    ("average_days_delinquent", "Avg days delinquent", "days"),
    ("cei", "CEI", "pct100"),
    ("at_risk_share", "Over 90 days (at risk)", "share"),
    ("cure_rate", "Cure rate", "share"),
    ("promise_kept_rate", "Promises kept", "share"),
)


def money(minor: float, currency: str) -> str:
    """Minor units as the currency's amount, formatted for the report's locale."""
    if minor is None or (isinstance(minor, float) and math.isnan(minor)):
        return "—"
    return format_currency(minor / 10 ** get_currency_precision(currency), currency, locale=LOCALE)


def _text(value: float, kind: str, currency: str) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    if kind == "money":
        return money(value, currency)
    if kind == "share":
        return format_percent(value, "#,##0.0%", locale=LOCALE)
    if kind == "pct100":
        return f"{value:.1f} %"
    return f"{value:.1f}"


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plot(frame: pd.DataFrame, size: tuple[float, float], why: str, draw: Any, *args: Any) -> str:
    """A PNG of ``draw(ax, frame, *args)``, or of ``why`` when there is nothing to draw yet."""
    fig, ax = plt.subplots(figsize=size)
    if frame.empty:
        ax.text(0.5, 0.5, why, ha="center", va="center", wrap=True, color="#5a6776")
        ax.set_axis_off()
    else:
        draw(ax, frame, *args)
    return _png(fig)


def draw_aging(ax: Any, part: pd.DataFrame, currency: str, labels: list[str]) -> None:
    table = part.pivot_table(
        index="as_of", columns="bucket", values="open_minor", aggfunc="sum", observed=False
    ).reindex(columns=labels, fill_value=0).fillna(0) / 10 ** get_currency_precision(currency)
    table.index = [str(d) for d in table.index]
    table.plot(kind="bar", stacked=True, ax=ax, colormap="RdYlGn_r", width=0.85)
    ax.set_ylabel(f"open balance ({currency})")
    ax.set_xlabel("snapshot")
    ax.legend(title="bucket", fontsize=8, ncols=len(labels))
    ax.figure.autofmt_xdate()


def draw_roll_rates(ax: Any, part: pd.DataFrame, labels: list[str]) -> None:
    matrix = part.pivot_table(index="from_bucket", columns="to_bucket", values="share")
    matrix = matrix.reindex(index=labels, columns=[*labels, "paid"])
    ax.imshow(matrix.to_numpy(dtype=float), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=30)
    ax.set_yticks(range(matrix.shape[0]), matrix.index)
    ax.set_xlabel("bucket now")
    ax.set_ylabel("bucket at period start")
    for (i, j), value in pd.DataFrame(matrix.to_numpy()).stack().items():
        if value == value:  # NaN: nobody was in that bucket
            ax.text(j, i, f"{value:.0%}", ha="center", va="center", fontsize=8)


def draw_recovery(ax: Any, curve: pd.DataFrame) -> None:
    for group, part in curve.groupby("group"):
        ax.plot(part["day"], part["recovery_rate"] * 100, label=str(group), marker=".")
    ax.set_xlabel("days since the cohort day")
    ax.set_ylabel("overdue balance recovered (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def draw_uplift(ax: Any, uplift: pd.DataFrame) -> None:
    names = uplift["experiment"] + ": " + uplift["arm"]
    centre = uplift["uplift"] * 100
    err = [
        (centre - uplift["ci_low"] * 100).fillna(0),
        (uplift["ci_high"] * 100 - centre).fillna(0),
    ]
    ax.errorbar(centre, range(len(uplift)), xerr=err, fmt="o", capsize=4)
    ax.axvline(0, color="#b3261e", linewidth=1)
    ax.set_yticks(range(len(uplift)), names)
    ax.set_xlabel("recovery uplift vs holdout (percentage points)")


def draw_liquidation(ax: Any, liq: pd.DataFrame) -> None:
    table = liq.pivot_table(index="vintage", columns="agency", values="liquidation_rate")
    (table * 100).plot(kind="bar", ax=ax)
    ax.set_ylabel("liquidation (%)")
    ax.set_xlabel("placement month")


def _table(
    frame: pd.DataFrame, money_cols: tuple[str, ...] = (), share_cols: tuple[str, ...] = ()
) -> str:
    if frame.empty:
        return ""
    shown = frame.copy()
    for col in money_cols:
        if col in shown:
            shown[col] = [money(v, c) for v, c in zip(shown[col], shown["currency"], strict=True)]
    for col in share_cols:
        if col in shown:
            shown[col] = shown[col].map(lambda v: "n/a" if v != v else f"{v:.1%}")
    return shown.to_html(index=False, border=0, na_rep="n/a")


def render(tables: dict[str, pd.DataFrame], summary: dict, labels: list[str]) -> str:
    """The report's HTML from the day's tables and the run summary."""
    kpi = tables["kpis"]
    money_rows = kpi[(kpi["kpi"] == "ending_ar") & (kpi["currency"] != "ALL")]
    currency = money_rows.sort_values("value").iloc[-1]["currency"] if len(money_rows) else "USD"
    main = kpi[kpi["currency"].isin([currency, "ALL"])].set_index("kpi")["value"]
    cards = [
        {"kpi": k, "label": label, "text": _text(main.get(k, float("nan")), kind, currency)}
        for k, label, kind in CARDS
    ]
    recovery, uplift = tables["recovery"], tables["uplift"]
    cohort = recovery["cohort_date"].iloc[0] if len(recovery) else None
    uplift_note = (
        f"Mean per-debtor recovery of each arm minus the holdout's, with a "
        f"{uplift['confidence'].iloc[0]:.0%} interval."
        if len(uplift)
        else "No experiment arm and holdout in the cohort."
    )
    sections = [
        {
            "id": "aging",
            "title": "Aging waterfall",
            "note": f"Open balance by bucket per snapshot ({currency}).",
            "png": plot(
                tables["aging"].query("currency == @currency"),
                (9, 3.6),
                "No aged balances yet",
                draw_aging,
                currency,
                labels,
            ),
            "table": "",
        },
        {
            "id": "roll_rates",
            "title": "Roll rates",
            "note": "Share of each bucket's balance at the period's opening snapshot found in "
            "each bucket today (balance-weighted; paid: nothing open any more).",
            "png": plot(
                tables["roll_rates"].query("currency == @currency"),
                (7, 3.8),
                "Roll rates need an earlier snapshot: the ledger has only today",
                draw_roll_rates,
                labels,
            ),
            "table": "",
        },
        {
            "id": "recovery_curve",
            "title": "Recovery curves",
            "note": f"Debtors overdue on {cohort or 'the cohort day'}: cumulative share of "
            "their overdue balance recovered since, per experiment arm.",
            "png": plot(
                tables["recovery_curve"],
                (8, 3.6),
                "Recovery curves need the segments of an earlier run",
                draw_recovery,
            ),
            "table": _table(
                recovery, ("overdue_minor", "collected_minor"), ("recovery_rate", "payer_share")
            ),
        },
        {
            "id": "uplift",
            "title": "Uplift against the holdout",
            "note": uplift_note,
            "png": plot(
                uplift, (7, 3.2), "No experiment arm and holdout in the cohort yet", draw_uplift
            ),
            "table": _table(uplift, (), ("rate", "holdout_rate", "uplift", "ci_low", "ci_high")),
        },
        {
            "id": "liquidation",
            "title": "Agency liquidation by placement vintage",
            "note": "Collected by the agency since placement over the balance placed.",
            "png": plot(
                tables["liquidation"],
                (7, 3.2),
                "No accounts placed with an agency yet",
                draw_liquidation,
            ),
            "table": _table(
                tables["liquidation"], ("placed_minor", "collected_minor"), ("liquidation_rate",)
            ),
        },
    ]
    counts = [
        (k, summary.get(k))
        for k in (
            "invoices_ingested",
            "rows_quarantined",
            "debtors_due",
            "contacts_planned",
            "contacts_allowed",
            "messages_sent",
            "payments_matched",
            "accounts_placed",
        )
    ]
    return _ENV.from_string(_TEMPLATE).render(
        as_of=summary.get("as_of"),
        run_id=summary.get("run_id"),
        status=summary.get("status"),
        backfill=summary.get("backfill"),
        period_start=kpi["period_start"].iloc[0] if len(kpi) else "",
        currency=currency,
        cards=cards,
        sections=sections,
        counts=counts,
        tables=sorted(tables),
    )
