"""Run summary (contract C3): the one file a collections manager and an outside check both read.

Counts for stages this deployment does not run yet are ``null``, not ``0``: "nobody was due" and
"we did not look" are different statements and the summary must not blur them.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from dunning import lake

SUMMARY_FIELDS = (
    "as_of",
    "invoices_ingested",
    "rows_quarantined",
    "debtors_due",
    "contacts_planned",
    "contacts_suppressed",
    "messages_sent",
    "payments_matched",
    "payments_unmatched",
    "accounts_placed",
    "placement_files",
    "backfill",
)


def summary_key(as_of: date) -> str:
    return lake.partition("reports", as_of) + "/summary.json"


def build_summary(run: dict, validated: dict, loaded: dict, stats: dict[str, dict]) -> dict:
    """Assemble C3 from the stage records; ``run`` carries as_of, backfill, dry_run and ids."""
    summary: dict[str, Any] = {
        "as_of": run["as_of"],
        "invoices_ingested": loaded["invoices"],
        "rows_quarantined": validated["rows_quarantined"],
        "debtors_due": None,
        "contacts_planned": None,
        "contacts_suppressed": {},
        "messages_sent": {},
        "payments_matched": None,
        "payments_unmatched": None,
        "accounts_placed": None,
        "placement_files": [],
        "backfill": run["backfill"],
        "dry_run": run["dry_run"],
        "run_id": run.get("run_id"),
        "stages_run": ["extract", "validate", "load_ledger"],
        "debtors_loaded": loaded["debtors"],
        "quarantine_by_reason": validated["quarantine_by_reason"],
        "quarantine_file": validated["quarantine"],
        "sources": {
            name: {
                k: st.get(k)
                for k in (
                    "dataset",
                    "rows_read",
                    "rows_clean",
                    "rows_quarantined",
                    "source_as_of",
                    "open_minor",
                )
            }
            for name, st in stats.items()
        },
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return summary


def write_summary(root: Any, run: dict, validated: dict, loaded: dict) -> dict:
    stats = lake.read_json(root / validated["stats"])["sources"]
    summary = build_summary(run, validated, loaded, stats)
    key = summary_key(date.fromisoformat(run["as_of"]))
    lake.write_json(root / key, summary)
    return {"key": key, **{k: summary[k] for k in SUMMARY_FIELDS}}


def format_summary(summary: dict) -> str:
    """A plain-text table for the terminal and the task log (counts only, no PII)."""
    lines = [f"Dunning run summary — as of {summary['as_of']}"]
    for key in SUMMARY_FIELDS[1:]:
        lines.append(f"  {key:<22} {summary.get(key)}")
    for name, st in (summary.get("sources") or {}).items():
        lines.append(
            f"  source {name:<15} read {st['rows_read']:>9}  clean {st['rows_clean']:>9}  "
            f"quarantined {st['rows_quarantined']:>6}  as of {st['source_as_of']}"
        )
    for reason, count in (summary.get("quarantine_by_reason") or {}).items():
        lines.append(f"  quarantined {reason:<20} {count}")
    return "\n".join(lines)
