"""Canonical columns every source is mapped onto, whatever AR system it comes from.

Sources name their own columns; config maps them here.  Everything downstream (quality, ledger,
segmentation) speaks only these names.
"""

from __future__ import annotations

from typing import Final

# Canonical invoice columns as extracted (text) and what validation turns them into.
INVOICE_REQUIRED: Final = (
    "invoice_id",
    "debtor_id",
    "issue_date",
    "due_date",
    "currency",
    "amount",
    "open_amount",
)
INVOICE_OPTIONAL: Final = ("doc_type", "reference", "disputed", "customer_name")
INVOICE_TEXT_FIELDS: Final = ("invoice_id", "debtor_id", "reference", "customer_name")

DEBTOR_REQUIRED: Final = ("debtor_id", "name", "kind", "country", "timezones", "locale")
DEBTOR_OPTIONAL: Final = (
    "region",
    "city",
    "postal_code",
    "email",
    "phone",
    "employer_email",
    "consent_email",
    "consent_sms",
    "opted_out",
    "customer_since",
)
DEBTOR_TEXT_FIELDS: Final = ("debtor_id", "name", "city", "region", "postal_code", "email")

REQUIRED = {"invoices": INVOICE_REQUIRED, "debtors": DEBTOR_REQUIRED}
OPTIONAL = {"invoices": INVOICE_OPTIONAL, "debtors": DEBTOR_OPTIONAL}

# Columns extract adds: where the row came from, for quarantine messages and audit.
SOURCE_COLUMNS: Final = ("source", "source_file", "source_row")

# The ledger's column widths: a longer value is quarantined, not a failed load on PostgreSQL.
MAX_LENGTHS: Final = {
    "invoice_id": 64,
    "debtor_id": 64,
    "reference": 256,
    "name": 256,
    "region": 64,
    "city": 128,
    "postal_code": 32,
    "email": 320,
    "phone": 32,
    "timezones": 256,
    "opted_out": 64,
}

DOC_TYPES: Final = ("invoice", "credit_note")
DEBTOR_KINDS: Final = ("consumer", "commercial")
CHANNELS: Final = ("email", "sms", "letter", "call")
LOCALES: Final = ("en", "fr", "ar")
# A spreadsheet runs a cell starting with one of these (OWASP CSV injection); tab/CR too.
FORMULA_PREFIXES: Final = ("=", "+", "-", "@", "\t", "\r")
FORMULA_PATTERN: Final = r"[=+\-@\t\r]"

# Features segment rules may test (aging view, debtor attributes, behaviour, model scores).
AGING_FEATURES: Final = (
    "open_minor",
    "overdue_minor",
    "disputed_minor",
    "invoice_count",
    "overdue_count",
    "max_days_past_due",
    "weighted_days_past_due",
    "days_to_oldest_due",
    "bucket",
)
DEBTOR_FEATURES: Final = ("kind", "country", "region", "locale")
BEHAVIOUR_FEATURES: Final = (
    "avg_days_late",
    "late_trend",
    "share_paid_after_first_reminder",
    "partial_payment_share",
    "promises_kept",
    "promises_broken",
    "disputes_12m",
    "response_rate_email",
    "response_rate_sms",
    "response_rate_call",
    "response_rate_letter",
    "tenure_days",
    "balance_to_usual_invoice",
)
SCORE_FEATURES: Final = ("pay_probability", "risk_score")
SEGMENT_FEATURES: Final = AGING_FEATURES + DEBTOR_FEATURES + BEHAVIOUR_FEATURES + SCORE_FEATURES
STOP_CONDITIONS: Final = ("paid", "promise_to_pay", "payment_plan_current", "dispute", "placed")
TONES: Final = ("friendly", "neutral", "firm", "final")
