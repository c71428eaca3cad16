"""Run summary (contract C3): the one file a collections manager and an outside check both read.

Counts for stages this deployment does not run yet are ``null``, not ``0``: "nobody was due" and
"we did not look" are different statements and the summary must not blur them.  A run stopped by
a source gate still writes its summary, with the gates that stopped it.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from dunning import clock, lake

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
STAGES = ("validate", "load_ledger", "reconcile", "age", "place", "plan", "comply", "send")


def summary_key(as_of: date) -> str:
    return lake.partition("reports", as_of) + "/summary.json"


def _stats(root: Any, as_of: date, run: dict, validated: dict | None) -> dict | None:
    """The validate stage's stats: from its result, or -- when a gate stopped it -- from the
    file it wrote before stopping, if that file is this run's."""
    key = validated["stats"] if validated else lake.partition("snapshots", as_of) + "/stats.json"
    path = root / key
    if not path.exists():
        return None
    doc = lake.read_json(path)
    return doc if validated or doc.get("run_id") == run.get("run_id") else None


def build_summary(
    run: dict,
    stats: dict | None,
    loaded: dict | None,
    aged: dict | None,
    planned: dict | None,
    decided: dict | None = None,
    wave: dict | None = None,
    sent: list[dict | None] | None = None,
    messages: dict[str, dict[str, int]] | None = None,
    feedback: dict | None = None,
    reconciled: dict | None = None,
    returns: dict | None = None,
    placed: dict | None = None,
    cutoff: dict | None = None,
) -> dict:
    """Assemble C3 from the stage results; ``None`` for a stage that did not finish.

    ``messages`` is the day's message ledger by status and channel (``waves.day_counts``), so a
    re-run counts what an earlier attempt already sent; ``sent`` the send tasks' own results.
    """
    sends = sent or []
    sent_ok = bool(wave) and bool(sends) and all(r is not None for r in sends)
    finished = (
        stats and not stats["gate_failures"],
        loaded,
        reconciled,
        aged,
        placed,
        planned,
        decided,
        sent_ok,
    )
    done = dict(zip(STAGES, finished, strict=True))
    status = "complete" if all(done.values()) else ("stopped" if stats else "failed")
    rejected = (returns or {}).get("rejected", [])
    if status == "complete" and rejected:
        status = "agency_file_rejected"  # everything ran; a person must look at the file
    sources = (stats or {}).get("sources", {})
    return {
        "as_of": run["as_of"],
        "invoices_ingested": loaded["invoices"] if loaded else 0,
        "rows_quarantined": stats["rows_quarantined"] if stats else None,
        "debtors_due": planned["debtors_due"] if planned else None,
        "contacts_planned": planned["contacts_planned"] if planned else None,
        "contacts_suppressed": decided["contacts_suppressed"] if decided else {},
        "messages_sent": (messages or {}).get("sent", {}),
        "payments_matched": reconciled["payments_matched"] if reconciled else None,
        "payments_unmatched": reconciled["payments_unmatched"] if reconciled else None,
        "accounts_placed": placed["accounts_placed"] if placed else None,
        "placement_files": placed["placement_files"] if placed else [],
        "backfill": run["backfill"],
        "dry_run": run["dry_run"],
        "mode": run.get("mode"),
        "status": status,
        "run_id": run.get("run_id"),
        "stages_done": [name for name, ok in done.items() if ok],
        "gate_failures": (stats or {}).get("gate_failures", []),
        "accepted_gates": (stats or {}).get("accepted_gates", []),
        "debtors_loaded": loaded["debtors"] if loaded else 0,
        "quarantine_by_reason": (stats or {}).get("quarantine_by_reason", {}),
        "quarantine_files": (stats or {}).get("quarantine", {}),
        "debtors_by_bucket": aged["by_bucket"] if aged else {},
        "debtors_by_segment": planned["by_segment"] if planned else {},
        "contacts_by_channel": planned["by_channel"] if planned else {},
        "plan_file": planned["plan"] if planned else None,
        "contacts_allowed": decided["contacts_allowed"] if decided else None,
        "contacts_scheduled": decided["contacts_scheduled"] if decided else None,
        "decisions_file": decided["decisions"] if decided else None,
        "rules_version": decided["rules_version"] if decided else None,
        "sending": wave["mode"] if wave else None,
        "wave_file": wave["wave"] if wave else None,
        "feedback": feedback or {},
        "payments": {
            k: reconciled[k]
            for k in (
                "lines_read",
                "by_method",
                "duplicates",
                "reversals",
                "exceptions_by_reason",
                "declines",
                "retries_by_action",
                "instalments_by_status",
                "quarantined",
                "exceptions",
                "retries",
                "allocations",
            )
        }
        if reconciled
        else {},
        "placement": {k: v for k, v in (placed or {}).items() if k != "placement_files"},
        "agency_returns": returns or {},
        "agency_files_rejected": rejected,
        "cutoff_recommendation": cutoff or {},
        "forced_reason": run.get("force_reason") if run.get("force_send") else None,
        "messages_rendered": wave["by_channel"] if wave else {},
        "messages_previewed": wave["by_channel"] if wave and not wave["sending"] else {},
        "previews": wave["previews"] if wave else None,
        "messages_failed": (messages or {}).get("failed", {}),
        "messages_unknown": (messages or {}).get("unknown", {}),
        "messages_suppressed_at_send": (messages or {}).get("suppressed", {}),
        "messages_waiting": {
            r["channel"]: r.get("waiting", 0) for r in sends if r and r.get("waiting")
        },
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
                    "completeness",
                )
            }
            for name, st in sources.items()
        },
        "warnings": [
            f"{name}: nothing proves the delivery whole (completeness: none); a file cut "
            "short would pass every gate"
            for name, st in sources.items()
            if st.get("dataset") == "invoices" and st.get("completeness") == "none"
        ],
        "created_at": clock.utcnow().isoformat(timespec="seconds"),
    }


def write_summary(
    root: Any,
    run: dict,
    validated: dict | None,
    loaded: dict | None,
    aged: dict | None = None,
    planned: dict | None = None,
    decided: dict | None = None,
    **sending: Any,
) -> dict:
    as_of = date.fromisoformat(run["as_of"])
    stats = _stats(root, as_of, run, validated)
    summary = build_summary(run, stats, loaded, aged, planned, decided, **sending)
    key = summary_key(as_of)
    lake.write_json(root / key, summary)
    return {"key": key, "status": summary["status"], **{k: summary[k] for k in SUMMARY_FIELDS}}


def refresh_messages(root: Any, as_of: date, messages: dict[str, dict[str, int]]) -> dict | None:
    """A later wave of the day (``dunning_waves``) sent more: bring the day's summary's message
    counts up to the ledger's.  None when the day has no summary yet."""
    path = root / summary_key(as_of)
    if not path.exists():
        return None
    summary = lake.read_json(path)
    summary["messages_sent"] = messages.get("sent", {})
    summary["messages_failed"] = messages.get("failed", {})
    summary["messages_unknown"] = messages.get("unknown", {})
    summary["messages_suppressed_at_send"] = messages.get("suppressed", {})
    summary["messages_refreshed_at"] = clock.utcnow().isoformat(timespec="seconds")
    lake.write_json(path, summary)
    return summary


def format_summary(summary: dict) -> str:
    """A plain-text table for the terminal and the task log (counts only, no PII)."""
    lines = [f"Dunning run summary — as of {summary['as_of']} ({summary.get('status')})"]
    for key in SUMMARY_FIELDS[1:]:
        lines.append(f"  {key:<22} {summary.get(key)}")
    for name, st in (summary.get("sources") or {}).items():
        lines.append(
            f"  source {name:<15} read {st['rows_read']:>9}  clean {st['rows_clean']:>9}  "
            f"quarantined {st['rows_quarantined']:>6}  as of {st['source_as_of']}"
        )
    for warning in summary.get("warnings") or []:
        lines.append(f"  warning: {warning}")
    for label in (
        "mode",
        "contacts_allowed",
        "contacts_scheduled",
        "sending",
        "forced_reason",
        "messages_previewed",
        "messages_waiting",
        "messages_failed",
        "messages_unknown",
        "messages_suppressed_at_send",
        "debtors_by_bucket",
        "debtors_by_segment",
        "contacts_by_channel",
        "quarantine_by_reason",
        "payments",
    ):
        if summary.get(label):
            lines.append(f"  {label:<22} {summary[label]}")
    placement = summary.get("placement") or {}
    if placement:
        brief = (
            "mode",
            "accounts_past_cutoff",
            "by_agency",
            "accounts_recalled",
            "excluded",
            "placed_missing_from_ar",
        )
        lines.append(f"  {'placement':<22} { {k: placement[k] for k in brief if k in placement} }")
    returns = summary.get("agency_returns") or {}
    if returns.get("files") or returns.get("quarantined"):
        lines.append(f"  {'agency_returns':<22} {returns}")
    advice = (summary.get("cutoff_recommendation") or {}).get("by_segment")
    if advice:
        lines.append(f"  {'cutoff (set -> break-even)':<22} {advice}")
    for rejected in summary.get("agency_files_rejected") or []:
        lines.append(f"  REJECTED agency file {rejected['error']}")
    for failure in summary.get("gate_failures") or []:
        lines.append(f"  STOPPED {failure['source']}: {failure['gate']}: {failure['message']}")
    return "\n".join(lines)
