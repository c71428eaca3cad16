"""Contract C2 (compliance what-if check): the rule catalogue's test cases, one C2 record each.

Sources: the C2 section of the design brief (input fields, reason codes, policy) and the rule
catalogue ``domain/compliance-rules.md`` (every rule's "Tests: T1 … T3"). The C2 table is the
spec: where the catalogue differs (its own code names such as ``REGF-02_7IN7_PRESUMED_VIOLATION``,
rules C2 has no code for, per-number opt-outs, a different scope), the C2 code and policy win and
the case says so in a comment.

Conventions used by the cases:
- Times are written in UTC (``Z``); the comment next to each gives the debtor's local time.
  Summer offsets: America/New_York -4 (EDT, until 2026-11-01 02:00), America/Chicago -5,
  America/Denver -6, America/Los_Angeles -7, Europe/London and Europe/Dublin +1 (until
  2026-10-25 01:00 UTC). Winter: New York -5, London +0. Most cases sit in the week of
  Mon 2026-09-14 .. Sun 2026-09-20.
- ``rec()`` gives a neutral consumer in Austin, TX (America/Chicago) who consented to sms and
  email, so that only the rule under test fires. C2's defaults (missing field = false / empty)
  mean an absent ``consented`` is "no consent": NO_CONSENT then fires for a consumer sms.
- History entries always spell out ``connected`` and ``conversation``.
- Frequency windows ("7 local days ending on the proposed day") are the proposed local date D and
  D-6 .. D inclusive, in the debtor's FIRST listed timezone. Assumption (not spelt out in C2): the
  engine counts only history entries strictly before ``at``; EDGE-CALLFREQ-later-entry relies on it.
"""

from __future__ import annotations

import copy
import json

import pytest

from dunning.compliance import REASONS, what_if

# Catalogue cases not covered by C2 codes (skipped: no C2 input field or reason code expresses
# them; "partial" ones have their C2-expressible half encoded under the same id prefix).
# - REGF-01-T1   collector role (original creditor vs debt collector) is not a C2 field
# - REGF-01-T3   recipient relationship (spouse as consumer) is not a C2 field
# - REGF-04-T1   consent-based callbacks are not a C2 field (C2 would block with CONVERSATION_COOLDOWN)
# - REGF-05-T1   policy SMS-per-day cap: no C2 code
# - REGF-05-T2   policy rapid-succession call gap: no C2 code
# - REGF-05-T3   holiday (Thanksgiving) dialling policy: no C2 code
# - REGF-08-T3   first reply only: consumer-initiated one-response exception has no C2 input (the
#                second reply is encoded as REGF-08-T3-second-reply)
# - REGF-09-T1   workplace contact prohibition / work number: not C2 fields
# - REGF-09-T2   workplace flag / designated inconvenient place: not C2 fields
# - REGF-10-T2   consumer wrote from the employer address (exception): no C2 field; C2 blocks
#                every employer-provided address
# - REGF-11-T2   attorney's consent to direct contact: no C2 field
# - REGF-11-T3   per-debt attorney representation: C2's flag is per debtor
# - REGF-12-T2   exception templates (termination notice) are not C2 input; C2 blocks every channel
# - REGF-13-T2   first reply only: consumer-initiated one-response exception has no C2 input (the
#                second reply is encoded as REGF-13-T2-second-reply)
# - REGF-13-T3   opt-out per phone number: C2 opt-outs are per channel
# - REGF-14-T1   content lint (missing "Reply STOP")
# - REGF-14-T2   content lint (unsubscribe mechanism not simple)
# - REGF-14-T3   confirmation-message part only: exception not in C2 (the blocked SMS is encoded)
# - REGF-15-T1   e-mail safe-harbor provenance (creditor notice, 35-day window)
# - REGF-15-T2   e-mail safe-harbor provenance (opt-out window open)
# - REGF-15-T3   text safe-harbor freshness (60 days, reassigned-number check)
# - REGF-16-T1   third-party recipient (roommate) and script content
# - REGF-16-T2   location contacts with third parties
# - REGF-16-T3   call to consumer's attorney (recipient role)
# - REGF-17-T1   limited-content message wording
# - REGF-17-T2   limited-content message wording
# - REGF-17-T3   LCM vs SMS content
# - REGF-18-T1   mini-Miranda content lint
# - REGF-18-T2   mini-Miranda content lint
# - REGF-18-T3   disclosure language content lint
# - REGF-19-T1   social-media channel/visibility: not a C2 channel
# - REGF-19-T2   postcard format
# - REGF-19-T3   envelope text
# - REGF-20-T1   validation notice timing
# - REGF-20-T2   initial-communication definition (validation clock)
# - REGF-20-T3   validation notice not required after payment
# - REGF-21-T1   validation content / itemization date consistency
# - REGF-21-T2   validation content (period end date)
# - REGF-21-T3   Model Form B-1 safe harbor
# - REGF-22-T1   validation period date computation
# - REGF-22-T2   validation period date computation
# - REGF-22-T3   oral validation receipt
# - REGF-23-T1   overshadowing content lint
# - REGF-23-T2   overshadowing content lint
# - REGF-23-T3   settlement-offer expiry content
# - REGF-25-T1   credit-reporting (furnishing) gate, not contact
# - REGF-25-T2   credit-reporting gate after undeliverable letter
# - REGF-25-T3   credit-reporting gate after conversation
# - REGF-26-T1   time-barred debt (SOL) legal-action language
# - REGF-26-T2   time-barred debt (SOL) disclosure
# - REGF-26-T3   unknown SOL policy
# - REGF-27-T2   validation-notice addressee (named representative) content
# - REGF-27-T3   recipient relationship (surviving spouse) is not a C2 field
# - REGF-28-T1   placement-file gate
# - REGF-28-T2   placement-file gate
# - REGF-28-T3   placement-file gate (return to owner)
# - REGF-29-T1   E-SIGN consent for disclosures
# - REGF-29-T2   mail safe harbor / returned mail
# - REGF-29-T3   E-SIGN consent for disclosures
# - REGF-30-T1   record retention
# - REGF-30-T2   record retention
# - REGF-30-T3   record retention
# - REGF-31-T1   caller identity disclosure (script/dialer)
# - REGF-31-T2   LCM identity disclosure
# - REGF-31-T3   caller alias
# - TCPA-01-T1   TCPA consent provenance / call technology (AI voice)
# - TCPA-01-T2   call technology (manual dialling)
# - TCPA-01-T3   TCPA consent provenance (number from credit application)
# - TCPA-02-T1   prerecorded calls per landline per 30 days: call technology and line type not in C2
# - TCPA-02-T2   call technology not in C2
# - TCPA-02-T3   consent to exceed the prerecorded cap
# - TCPA-03-T2   revocation for robocalls only: call technology not in C2
# - TCPA-03-T3   confirmation text after STOP (exception)
# - TCPA-04-T2   telemarketing purpose / DNC: not a C2 purpose
# - TCPA-05-T1   reassigned-numbers database check
# - TCPA-05-T2   reassigned-numbers database check
# - TCPA-05-T3   reassigned-numbers database check
# - CANSPAM-01-T1 commercial e-mail content (postal address, opt-out)
# - CANSPAM-01-T2 e-mail content lint
# - SCRA-01-T1   SCRA / DMDC check for litigation placements
# - SCRA-01-T2   SCRA interest cap in content
# - SCRA-01-T3   SCRA status is not a C2 field (plain allowed e-mail, no C2 code involved)
# - BK-01-T3     placement half only (the contact half is encoded as BK-01-T3)
# - HOL-01-T1    holiday calendar data
# - HOL-01-T2    holiday calendar data
# - HOL-01-T3    holiday calendar data
# - MA-01-T3     debtor-requested callback (not creditor-initiated): no C2 field
# - MA-02-T1     MA 2-per-30-days to non-personal (work) numbers: number type not in C2
# - MA-02-T2     work vs personal number counts: number type not in C2
# - MA-02-T3     household members: recipient not in C2
# - MA-03-T1     call to a household member (spouse): recipient not in C2
# - MA-03-T2     household-member Eastern-time rule, no concrete time or outcome given
# - MA-04-T1     MA workplace request validity: workplace not in C2
# - MA-04-T2     MA workplace request: workplace not in C2
# - MA-04-T3     MA workplace request revocation: workplace not in C2
# - MA-05-T1     home visits: not a C2 channel
# - MA-05-T2     home visits: not a C2 channel
# - MA-05-T3     home visits: not a C2 channel
# - NYC-03-T1    language-access records
# - NYC-03-T2    language-access notice content
# - NYC-03-T3    record retention
# - NYC-04-T1    record retention
# - NYC-04-T2    time-barred notice content
# - NYC-04-T3    inbound call logging
# - NYS-01-T1    initial disclosure content
# - NYS-01-T2    initial disclosure timing
# - NYS-01-T3    initial disclosure not required after payment
# - NYS-02-T1    time-barred disclosure before payment
# - NYS-02-T2    payment page content
# - NYS-02-T3    letter content (SOL revival)
# - CA-01-T3     (catalogue gives "n/a")
# - CA-02-T1     CA licence number content
# - CA-02-T2     CA licence number type size
# - CA-02-T3     agency licensing for placements
# - CA-03-T1     CA 1812.700 notice content
# - CA-03-T2     CA 1812.700 notice type size
# - CA-03-T3     CA translated notice timing
# - CA-04-T1     CA time-barred notice content
# - CA-04-T2     CA time-barred notice content
# - CA-04-T3     time-barred litigation referral
# - WA-01-T2     work calls per week: workplace not in C2
# - TX-01-T1     TX time-barred notice content
# - TX-01-T2     time-barred litigation referral
# - CO-01-T3     agency licensing for placements
# - UK-02-T1     pressure content lint
# - UK-02-T3     customer-requested callback: no C2 field
# - UK-03-T1     forbearance / affordability: no C2 field
# - UK-03-T2     payment plan in place: no C2 field
# - UK-03-T3     hardship signals: no C2 field (plain allowed reminder)
# - UK-04-T1     vulnerability flags: no C2 field
# - UK-04-T2     bereavement pause: no C2 field
# - UK-04-T3     vulnerability flags: no C2 field (plain allowed contact)
# - UK-05-T1     letter addressing content
# - UK-05-T2     voicemail content / identity verification
# - UK-05-T3     envelope content
# - UK-07-T1     statute-barred debt (limitation)
# - UK-07-T2     Scottish prescription (limitation)
# - UK-07-T3     debt-sale file flag
# - UK-08-T1     Pre-Action Protocol litigation timing
# - UK-08-T2     Pre-Action Protocol litigation timing
# - UK-08-T3     Pre-Action Protocol litigation timing
# - UK-10-T1     FOS complaint and litigation
# - UK-10-T2     FOS complaint and litigation
# - UK-10-T3     internal complaint and litigation
# - UK-11-T1     placement-file columns
# - UK-11-T2     placement-file columns
# - UK-11-T3     placement-file columns
# - GDPR-01-T1   placement-file data minimisation
# - GDPR-01-T2   placement-file columns
# - GDPR-01-T3   placement-file whitelist
# - GDPR-02-T1   GDPR objection / marketing purpose
# - GDPR-02-T2   GDPR objection / DPO decision
# - GDPR-02-T3   Art 21 notice content
# - GDPR-03-T1   retention / purge
# - GDPR-03-T2   retention / purge
# - GDPR-03-T3   retention / purge

CODES = set(REASONS)  # the fixed C2 vocabulary; every code is used by some case below

CT = ["America/Chicago"]
ET = ["America/New_York"]
MT = ["America/Denver"]
PT = ["America/Los_Angeles"]
ALL_WEEK = [0, 1, 2, 3, 4, 5, 6]

# Debtor presets, spread into rec(); state=None leaves the field out.
GA = {"state": "GA", "city": "Atlanta", "timezones": ET}
MA = {"state": "MA", "city": "Boston", "timezones": ET}
NYC = {"state": "NY", "city": "New York", "timezones": ET}
NYS = {"state": "NY", "city": "Buffalo", "timezones": ET}
CA = {"state": "CA", "city": "Los Angeles", "timezones": PT}
WA = {"state": "WA", "city": "Seattle", "timezones": PT}
CO = {"state": "CO", "city": "Denver", "timezones": MT}
GB = {"country": "GB", "state": None, "city": "London", "timezones": ["Europe/London"]}
IE = {"country": "IE", "state": None, "city": "Dublin", "timezones": ["Europe/Dublin"]}

ALLOWED = (True, set())


def blocked(*reasons: str) -> tuple[bool, set[str]]:
    return False, set(reasons)


def rec(case_id, at, channel="call", purpose="consumer", history=(), **debtor) -> dict:
    """One C2 input record; debtor fields default to a neutral consenting consumer in Texas."""
    fields = {
        "country": "US",
        "state": "TX",
        "city": "Austin",
        "timezones": CT,
        "consented": ["sms", "email"],
    }
    fields.update(debtor)
    return {
        "id": case_id,
        "at": at,
        "channel": channel,
        "debt": {"purpose": purpose},
        "debtor": copy.deepcopy({k: v for k, v in fields.items() if v is not None}),
        "history": [dict(h) for h in history],
    }


def att(at, channel="call", *, connected=True, conversation=False) -> dict:
    """One history entry (an earlier attempt to this person about this debt)."""
    return {"at": at, "channel": channel, "connected": connected, "conversation": conversation}


def calls(*ats, **flags) -> list[dict]:
    return [att(at, "call", **flags) for at in ats]


def case(case_id, expected, at, channel="call", **kwargs):
    allowed, reasons = expected
    return pytest.param(rec(case_id, at, channel, **kwargs), allowed, reasons, id=case_id)


# REGF-02: calls Mon 10:00, Mon 14:00, Tue..Sat 10:00 CDT in the week of Mon 2026-09-14 (Austin).
WEEK_OF_CALLS = calls(
    "2026-09-14T15:00:00Z",  # Mon 10:00 CDT
    "2026-09-14T19:00:00Z",  # Mon 14:00
    "2026-09-15T15:00:00Z",  # Tue 10:00
    "2026-09-16T15:00:00Z",  # Wed
    "2026-09-17T15:00:00Z",  # Thu
    "2026-09-18T15:00:00Z",  # Fri
    "2026-09-19T15:00:00Z",  # Sat
)
TUESDAY_NOT_CONNECTED = [
    {**h, "connected": False} if h["at"].startswith("2026-09-15") else h for h in WEEK_OF_CALLS
]
SATURDAY_NOT_CONNECTED = [*WEEK_OF_CALLS[:6], {**WEEK_OF_CALLS[6], "connected": False}]

# CA-01: the same week in Los Angeles (10:00 PDT = 17:00Z, 14:00 PDT = 21:00Z).
WEEK_OF_CALLS_PT = calls(
    "2026-09-14T17:00:00Z",
    "2026-09-14T21:00:00Z",
    "2026-09-15T17:00:00Z",
    "2026-09-16T17:00:00Z",
    "2026-09-17T17:00:00Z",
    "2026-09-18T17:00:00Z",
    "2026-09-19T17:00:00Z",
)

# Conversation (consumer called in) on Tue 2026-09-08 14:00 CDT: day 1 of the cooldown.
CONVERSATION_0908 = [att("2026-09-08T19:00:00Z", conversation=True)]

# NYC-01 / MA-01: Mon 09-14, Tue 09-15, Wed 09-16 at 10:00 EDT (14:00Z).
MON_ET, TUE_ET, WED_ET = "2026-09-14T14:00:00Z", "2026-09-15T14:00:00Z", "2026-09-16T14:00:00Z"
THU_ET = "2026-09-17T14:00:00Z"  # Thu 10:00 EDT
FRI_ET = "2026-09-18T14:00:00Z"  # Fri 10:00 EDT

WED_10_CT = "2026-09-16T15:00:00Z"  # Wed 10:00 CDT, a plain daytime moment in Austin
WED_10_BST = "2026-09-16T09:00:00Z"  # Wed 10:00 BST in London

CATALOGUE_CASES = [
    # --- REGF-01 coverage: Reg F (and every consumer-only C2 rule) is off for business debts.
    # 7 counted calls this week would be CALL_FREQUENCY for a consumer; commercial -> allowed.
    case(
        "REGF-01-T2", ALLOWED, "2026-09-20T15:00:00Z", purpose="commercial", history=WEEK_OF_CALLS
    ),
    # --- REGF-02 7-in-7 (catalogue code REGF-02_7IN7_PRESUMED_VIOLATION -> C2 CALL_FREQUENCY).
    # Sun 09-20 10:00 CDT: window Mon 09-14 .. Sun 09-20 holds 7 counted calls.
    case("REGF-02-T1", blocked("CALL_FREQUENCY"), "2026-09-20T15:00:00Z", history=WEEK_OF_CALLS),
    # Mon 09-21 10:00 CDT: window Tue 09-15 .. Mon 09-21 holds 5 calls.
    case("REGF-02-T2", ALLOWED, "2026-09-21T15:00:00Z", history=WEEK_OF_CALLS),
    # Tuesday's call never connected: 6 counted, this Sunday call is the 7th -> allowed.
    case("REGF-02-T3", ALLOWED, "2026-09-20T15:00:00Z", history=TUESDAY_NOT_CONNECTED),
    # --- REGF-03 7-day wait after a conversation (REGF-03_POST_CONVERSATION).
    # Conversation Tue 09-08 = day 1; Mon 09-14 10:00 CDT is day 7.
    case(
        "REGF-03-T1",
        blocked("CONVERSATION_COOLDOWN"),
        "2026-09-14T15:00:00Z",
        history=CONVERSATION_0908,
    ),
    # Tue 09-15 10:00 CDT is day 8.
    case("REGF-03-T2", ALLOWED, "2026-09-15T15:00:00Z", history=CONVERSATION_0908),
    # C2 has no debt ids: the D2 record's history carries the conversation (it covered D2 too).
    case(
        "REGF-03-T3",
        blocked("CONVERSATION_COOLDOWN"),
        "2026-09-10T15:00:00Z",  # Thu 10:00 CDT, day 3
        history=CONVERSATION_0908,
    ),
    # --- REGF-04 excluded calls.
    # Consent given in a conversation on Tue 09-08; next Tue (day 8) the call counts normally and
    # the cooldown is over -> allowed.
    case("REGF-04-T2", ALLOWED, "2026-09-15T15:00:00Z", history=CONVERSATION_0908),
    # Saturday's call hit a network failure: not counted -> 6 counted, allowed.
    case("REGF-04-T3", ALLOWED, "2026-09-20T15:00:00Z", history=SATURDAY_NOT_CONNECTED),
    # Ring-no-answer IS connected: all 7 count.
    case(
        "REGF-04-T3-ring-no-answer",
        blocked("CALL_FREQUENCY"),
        "2026-09-20T15:00:00Z",
        history=WEEK_OF_CALLS,
    ),
    # --- REGF-06 default window 08:00-21:00 local.
    case("REGF-06-T1", blocked("OUTSIDE_HOURS"), "2026-09-16T12:55:00Z"),  # 07:55 CDT
    case("REGF-06-T2-2059", ALLOWED, "2026-09-17T00:59:00Z", "sms", **GA),  # Wed 20:59 EDT
    case("REGF-06-T2-2100", blocked("OUTSIDE_HOURS"), "2026-09-17T01:00:00Z", "sms", **GA),
    # E-mail batch 06:00 PDT (09:00 EDT) to a California consumer.
    case("REGF-06-T3", blocked("OUTSIDE_HOURS"), "2026-09-16T13:00:00Z", "email", **CA),
    # --- REGF-07 several candidate zones: convenient in all of them (LA address, 212 cell).
    case(
        "REGF-07-T1",
        ALLOWED,
        "2026-09-16T15:30:00Z",  # 11:30 EDT / 08:30 PDT
        **{**CA, "timezones": [*PT, *ET]},
    ),
    case(
        "REGF-07-T2",
        blocked("OUTSIDE_HOURS"),
        "2026-09-16T14:30:00Z",  # 10:30 EDT / 07:30 PDT
        **{**CA, "timezones": [*PT, *ET]},
    ),
    case(
        "REGF-07-T3",
        blocked("OUTSIDE_HOURS"),
        "2026-09-17T01:30:00Z",  # 18:30 PDT / 21:30 EDT
        "sms",
        **{**CA, "timezones": [*PT, *ET]},
    ),
    # --- REGF-08 consumer-designated inconvenient times (REGF-08_DESIGNATED_TIME).
    # "Don't call me before 10 a.m." -> window 00:00-10:00 every day; call Wed 09:30 CDT.
    case(
        "REGF-08-T1",
        blocked("INCONVENIENT_TIME"),
        "2026-09-16T14:30:00Z",
        inconvenient_times=[{"weekdays": ALL_WEEK, "start": "00:00", "end": "10:00"}],
    ),
    # "I'm busy" designates nothing: Wed 14:00 CDT call, no history -> allowed.
    case("REGF-08-T2", ALLOWED, "2026-09-16T19:00:00Z"),
    # ... but saying it on Tue 14:00 was a conversation (a person was spoken to): the catalogue's
    # own caveat "still subject to REGF-03" -> cooldown only, no INCONVENIENT_TIME.
    case(
        "REGF-08-T2-conversation",
        blocked("CONVERSATION_COOLDOWN"),
        "2026-09-16T19:00:00Z",
        history=[att("2026-09-15T19:00:00Z", conversation=True)],
    ),
    # Designated 06:00-09:00; second reply e-mail at 07:20 CDT: inside the window and before 08:00.
    case(
        "REGF-08-T3-second-reply",
        blocked("INCONVENIENT_TIME", "OUTSIDE_HOURS"),
        "2026-09-16T12:20:00Z",
        "email",
        inconvenient_times=[{"weekdays": ALL_WEEK, "start": "06:00", "end": "09:00"}],
    ),
    # --- REGF-10 employer-provided e-mail address.
    case("REGF-10-T1", blocked("EMPLOYER_EMAIL"), WED_10_CT, "email", employer_email=True),
    case("REGF-10-T3", ALLOWED, WED_10_CT, "email", employer_email=False),  # gmail.com
    # --- REGF-11 attorney representation blocks every consumer channel (here a letter).
    case(
        "REGF-11-T1",
        blocked("ATTORNEY_REPRESENTED"),
        WED_10_CT,
        "letter",
        attorney_represented=True,
    ),
    # --- REGF-12 written cease (REGF-12_CEASE). Cease received 05-01; SMS Sun 05-03 12:00 CDT.
    case(
        "REGF-12-T1",
        blocked("CEASE_COMMUNICATION"),
        "2026-05-03T17:00:00Z",
        "sms",
        cease_communication=True,
    ),
    # Letter announcing suit on a time-barred debt after a cease: C2 blocks letters too.
    case(
        "REGF-12-T3",
        blocked("CEASE_COMMUNICATION"),
        "2026-05-11T15:00:00Z",  # Mon 10:00 CDT
        "letter",
        cease_communication=True,
    ),
    # --- REGF-13 medium opt-out ("stop calling me").
    case("REGF-13-T1", blocked("CHANNEL_OPT_OUT"), WED_10_CT, opted_out=["call"]),
    case("REGF-13-T1-email", ALLOWED, WED_10_CT, "email", opted_out=["call"]),
    # Consumer texted in after opting out of SMS; the second outbound SMS is blocked.
    case(
        "REGF-13-T2-second-reply",
        blocked("CHANNEL_OPT_OUT"),
        WED_10_CT,
        "sms",
        opted_out=["sms"],
    ),
    # --- REGF-14 "please quit texting" is an SMS opt-out: subsequent SMS blocked.
    case("REGF-14-T3", blocked("CHANNEL_OPT_OUT"), WED_10_CT, "sms", opted_out=["sms"]),
    # --- REGF-24 written dispute pauses collection (REGF-24_DISPUTE_PENDING).
    case("REGF-24-T1", blocked("DISPUTE_PENDING"), WED_10_CT, "sms", dispute="pending"),
    case("REGF-24-T2", ALLOWED, WED_10_CT, "sms", dispute="resolved"),  # verification sent
    # Catalogue: a dispute after the validation period does not trigger the legal pause (ALLOW by
    # law, policy routes to the dispute workflow). C2 wins: any pending dispute blocks.
    case("REGF-24-T3", blocked("DISPUTE_PENDING"), WED_10_CT, "sms", dispute="pending"),
    # --- REGF-27 deceased, no representative: all contact to the decedent blocked.
    case("REGF-27-T1", blocked("DECEASED"), WED_10_CT, deceased=True),
    # --- TCPA-03 "cancel" replied to a text on Fri 09-11; automated SMS Thu 09-17 12:00 CDT.
    # Honoured at once: the reply is an SMS opt-out and withdraws the SMS consent.
    case(
        "TCPA-03-T1",
        blocked("CHANNEL_OPT_OUT", "NO_CONSENT"),
        "2026-09-17T17:00:00Z",
        "sms",
        opted_out=["sms"],
        consented=["email"],
    ),
    # --- TCPA-04 the collection window comes from Reg F: 21:15 CDT collection call.
    case("TCPA-04-T1", blocked("OUTSIDE_HOURS"), "2026-09-17T02:15:00Z"),
    # Telemarketing at 07:45: C2 has no telemarketing purpose; the same 08:00 window blocks it.
    case("TCPA-04-T3", blocked("OUTSIDE_HOURS"), "2026-09-16T12:45:00Z"),
    # --- CANSPAM-01 e-mail opt-out received 12 business days ago, still sending.
    case("CANSPAM-01-T3", blocked("CHANNEL_OPT_OUT"), WED_10_CT, "email", opted_out=["email"]),
    # --- BK-01 bankruptcy.
    case("BK-01-T1", blocked("BANKRUPTCY"), WED_10_CT, bankruptcy=True),  # filed
    case("BK-01-T2", ALLOWED, WED_10_CT, bankruptcy=False),  # dismissed: flag cleared
    case("BK-01-T3", blocked("BANKRUPTCY"), WED_10_CT, "email", bankruptcy=True),  # discharged
    # --- MA-01 Massachusetts 2 calls/texts in 7 days (MA-01_2IN7 -> STATE_FREQUENCY).
    # Mon call (voicemail left), Wed SMS -> Fri 10:00 EDT call blocked.
    case(
        "MA-01-T1",
        blocked("STATE_FREQUENCY"),
        FRI_ET,
        history=[att(MON_ET), att(WED_ET, "sms")],
        **MA,
    ),
    # Mon call rang out with no voicemail capability: still connected, so it counts.
    case(
        "MA-01-T2",
        blocked("STATE_FREQUENCY"),
        FRI_ET,
        history=[att(MON_ET, connected=True), att(WED_ET, "sms")],
        **MA,
    ),
    # --- MA-03 debtor awake 12:00-24:00 only -> 00:00-12:00 designated; call at 10:00 EDT.
    case(
        "MA-03-T3",
        blocked("INCONVENIENT_TIME"),
        WED_ET,
        inconvenient_times=[{"weekdays": ALL_WEEK, "start": "00:00", "end": "12:00"}],
        **MA,
    ),
    # --- NYC-01 3 attempts in 7 days across all channels (NYC-01_3IN7 -> STATE_FREQUENCY).
    # E-mail Mon, SMS Tue, call Wed -> Thu 10:00 EDT call blocked.
    case(
        "NYC-01-T1",
        blocked("STATE_FREQUENCY"),
        THU_ET,
        history=[att(MON_ET, "email"), att(TUE_ET, "sms"), att(WED_ET)],
        **NYC,
    ),
    # Second account: C2 history is per debt, and this debt has no attempts -> allowed.
    case("NYC-01-T2", ALLOWED, THU_ET, **NYC),
    # Before 1 Sep 2026 (Mon 08-17 .. Thu 08-20): C2 has no effective date, and the earlier NYC
    # rule also capped attempts at 3 in 7 days (per consumer) -> still blocked.
    case(
        "NYC-01-T3",
        blocked("STATE_FREQUENCY"),
        "2026-08-20T14:00:00Z",
        history=[
            att("2026-08-17T14:00:00Z", "email"),
            att("2026-08-18T14:00:00Z", "sms"),
            att("2026-08-19T14:00:00Z"),
        ],
        **NYC,
    ),
    # --- NYC-02 electronic contact needs consent in New York City.
    case("NYC-02-T1", blocked("NO_CONSENT"), WED_ET, "email", consented=["sms"], **NYC),
    case("NYC-02-T2", ALLOWED, WED_ET, "email", consented=["email"], **NYC),
    case("NYC-02-T3", blocked("CHANNEL_OPT_OUT"), WED_ET, "sms", opted_out=["sms"], **NYC),
    case("NYC-02-T3-email", ALLOWED, WED_ET, "email", opted_out=["sms"], **NYC),
    # --- NYS-03 New York State e-mail consent: C2's NO_CONSENT covers e-mail only in New York
    # City. C2 wins: Buffalo without e-mail consent is allowed (catalogue says BLOCK).
    case("NYS-03-T1", ALLOWED, WED_ET, "email", consented=["sms"], **NYS),
    case("NYS-03-T2", ALLOWED, WED_ET, "email", consented=["sms", "email"], **NYS),
    case("NYS-03-T3", ALLOWED, WED_ET, "email", consented=["sms"], **NYS),  # consent revoked
    # --- CA-01 Rosenthal: 8th call in 7 days; call at 21:30 PDT.
    case(
        "CA-01-T1",
        blocked("CALL_FREQUENCY"),
        "2026-09-20T17:00:00Z",  # Sun 10:00 PDT
        history=WEEK_OF_CALLS_PT,
        **CA,
    ),
    case("CA-01-T2", blocked("OUTSIDE_HOURS"), "2026-09-17T04:30:00Z", **CA),  # Wed 21:30 PDT
    # --- WA-01 Washington 3 communications a week: C2 has no Washington cap (STATE_FREQUENCY is
    # MA and NYC only). C2 wins: call, letter, e-mail then a call on Thu 10:00 PDT -> allowed.
    case(
        "WA-01-T1",
        ALLOWED,
        "2026-09-17T17:00:00Z",
        history=[
            att("2026-09-14T17:00:00Z"),
            att("2026-09-15T17:00:00Z", "letter"),
            att("2026-09-16T17:00:00Z", "email"),
        ],
        **WA,
    ),
    # 07:45 PDT: allowed by the DFI text (07:30) but C2's 08:00 window blocks.
    case("WA-01-T3", blocked("OUTSIDE_HOURS"), "2026-09-16T14:45:00Z", **WA),
    # --- TX-01 Texas creditor, 8th call in 7 days.
    case("TX-01-T3", blocked("CALL_FREQUENCY"), "2026-09-20T15:00:00Z", history=WEEK_OF_CALLS),
    # --- CO-01 Colorado (MDT, UTC-6).
    case("CO-01-T1-2059", ALLOWED, "2026-09-17T02:59:00Z", **CO),  # Wed 20:59 MDT
    case("CO-01-T1-2100", blocked("OUTSIDE_HOURS"), "2026-09-17T03:00:00Z", **CO),  # 21:00 MDT
    case(
        "CO-01-T2",
        blocked("ATTORNEY_REPRESENTED"),
        "2026-09-16T16:00:00Z",  # 10:00 MDT
        attorney_represented=True,
        **CO,
    ),
    # --- IE-01 Ireland (no calls 21:00-09:00, Sundays, holidays). C2 has one 08:00-21:00 window
    # for every country and no Sunday rule. C2 wins: T1 and T2 are allowed (catalogue: BLOCK).
    case("IE-01-T1", ALLOWED, "2026-09-20T10:00:00Z", **IE),  # Sun 11:00 IST
    case("IE-01-T2", ALLOWED, "2026-09-21T07:45:00Z", **IE),  # Mon 08:45 IST
    case("IE-01-T3", ALLOWED, "2026-09-21T08:15:00Z", **IE),  # Mon 09:15 IST
    # --- UK-01 reasonable times (policy 08:00-21:00) and reasonable requests.
    case("UK-01-T1", blocked("OUTSIDE_HOURS"), "2026-09-16T20:30:00Z", **GB),  # 21:30 BST
    # Shift worker: "only after 14:00" -> 00:00-14:00 designated; call at 10:00 BST.
    case(
        "UK-01-T2",
        blocked("INCONVENIENT_TIME"),
        WED_10_BST,
        inconvenient_times=[{"weekdays": ALL_WEEK, "start": "00:00", "end": "14:00"}],
        **GB,
    ),
    case("UK-01-T3", ALLOWED, "2026-09-19T11:00:00Z", "sms", **GB),  # Sat 12:00 BST
    # --- UK-02 policy cap of 3 call attempts a week: not a C2 rule (CALL_FREQUENCY needs 7).
    # C2 wins: 3 calls Mon-Wed then a 4th on Thu 10:00 BST -> allowed (catalogue: BLOCK).
    case(
        "UK-02-T2",
        ALLOWED,
        "2026-09-17T09:00:00Z",
        history=calls("2026-09-14T09:00:00Z", "2026-09-15T09:00:00Z", "2026-09-16T09:00:00Z"),
        **GB,
    ),
    # --- UK-06 disputes suspend recovery.
    case("UK-06-T1", blocked("DISPUTE_PENDING"), WED_10_BST, "email", dispute="pending", **GB),
    # Dispute over part of the balance: C2 has no portion, a pending dispute blocks every channel.
    case("UK-06-T2", blocked("DISPUTE_PENDING"), WED_10_BST, "letter", dispute="pending", **GB),
    case("UK-06-T3", ALLOWED, WED_10_BST, "email", dispute="resolved", **GB),
    # --- UK-09 Breathing Space (started 04-01, standard 60 days).
    case(
        "UK-09-T1",
        blocked("BREATHING_SPACE"),
        "2026-04-15T11:00:00Z",  # Wed 12:00 BST
        "sms",
        breathing_space=True,
        **GB,
    ),
    # Statement of account without a payment request: policy blocks every channel.
    case(
        "UK-09-T2",
        blocked("BREATHING_SPACE"),
        "2026-04-20T11:00:00Z",
        "letter",
        breathing_space=True,
        **GB,
    ),
    # After the recorded end date the flag is cleared.
    case("UK-09-T3", ALLOWED, "2026-06-15T11:00:00Z", "sms", breathing_space=False, **GB),
]

# EDGE-CALLFREQ: proposed call Sat 2026-09-19 16:00 CDT (21:00Z); window Sun 09-13 .. Sat 09-19.
SIX_CALLS = calls(
    "2026-09-13T14:00:00Z",  # Sun 09:00 CDT = D-6, the window's first day
    "2026-09-19T14:00:00Z",  # Sat 09:00 = D
    "2026-09-19T15:00:00Z",
    "2026-09-19T16:00:00Z",
    "2026-09-19T17:00:00Z",
    "2026-09-19T18:00:00Z",  # Sat 13:00
)
SEVENTH_CALL = att("2026-09-19T19:00:00Z")  # Sat 14:00 CDT
SAT_16_CT = "2026-09-19T21:00:00Z"

# Across the US fall-back: proposed Mon 2026-11-02 11:00 EST (16:00Z), window Tue 10-27 .. 11-02.
FALL_BACK_SIX = calls(
    "2026-10-28T14:00:00Z",  # Wed 10:00 EDT
    "2026-10-29T14:00:00Z",
    "2026-10-30T14:00:00Z",
    "2026-10-31T14:00:00Z",  # Sat 10:00 EDT
    "2026-11-01T15:00:00Z",  # Sun 10:00 EST (clocks went back at 02:00)
    "2026-11-02T14:00:00Z",  # Mon 09:00 EST
)

# Two zones, frequency counted in the FIRST one: proposed Sun 09-20 12:00 PDT / 15:00 EDT.
TWO_ZONE_CALLS = calls(
    "2026-09-14T05:00:00Z",  # Sun 09-13 22:00 PDT (D-7 in LA) = Mon 09-14 01:00 EDT (D-6 in NY)
    "2026-09-15T19:00:00Z",  # Tue 12:00 PDT
    "2026-09-16T19:00:00Z",
    "2026-09-17T19:00:00Z",
    "2026-09-18T19:00:00Z",
    "2026-09-19T19:00:00Z",
    "2026-09-20T16:00:00Z",  # Sun 09:00 PDT
)

MULTI_US = {
    "bankruptcy": True,
    "cease_communication": True,
    "dispute": "pending",
    "deceased": True,
    "attorney_represented": True,
    "opted_out": ["call"],
    "inconvenient_times": [{"weekdays": ALL_WEEK, "start": "06:00", "end": "09:00"}],
}

EDGE_CASES = [
    # --- Daylight-saving changes (America/New_York; a neutral Georgia debtor).
    # Day after the fall-back (EST, UTC-5): 08:30 EST inside; 07:30 EST outside (an engine stuck on
    # EDT would read 08:30 and allow it).
    case("EDGE-DST-US-fall-after-0830", ALLOWED, "2026-11-02T13:30:00Z", **GA),
    case("EDGE-DST-US-fall-after-0730", blocked("OUTSIDE_HOURS"), "2026-11-02T12:30:00Z", **GA),
    # Fall-back day itself, after 02:00: 08:30 EST.
    case("EDGE-DST-US-fall-day-0830", ALLOWED, "2026-11-01T13:30:00Z", **GA),
    # Day before (still EDT): 12:30Z is 08:30 EDT (EST would read 07:30).
    case("EDGE-DST-US-fall-before-0830", ALLOWED, "2026-10-31T12:30:00Z", **GA),
    # Spring-forward 2026-03-08: day before 07:30 EST, day after 07:30 EDT -> both outside.
    case("EDGE-DST-US-spring-before-0730", blocked("OUTSIDE_HOURS"), "2026-03-07T12:30:00Z", **GA),
    case("EDGE-DST-US-spring-after-0730", blocked("OUTSIDE_HOURS"), "2026-03-09T11:30:00Z", **GA),
    # Day after: 12:30Z is 08:30 EDT -> inside (EST would read 07:30).
    case("EDGE-DST-US-spring-after-0830", ALLOWED, "2026-03-09T12:30:00Z", **GA),
    # Europe/London, clocks back 2026-10-25 01:00 UTC.
    case("EDGE-DST-London-before-0830", ALLOWED, "2026-10-24T07:30:00Z", **GB),  # 08:30 BST
    case("EDGE-DST-London-before-0730", blocked("OUTSIDE_HOURS"), "2026-10-24T06:30:00Z", **GB),
    case("EDGE-DST-London-day-0730", blocked("OUTSIDE_HOURS"), "2026-10-25T07:30:00Z", **GB),
    case("EDGE-DST-London-after-0730", blocked("OUTSIDE_HOURS"), "2026-10-26T07:30:00Z", **GB),
    case("EDGE-DST-London-after-0800", ALLOWED, "2026-10-26T08:00:00Z", **GB),  # 08:00 GMT
    case("EDGE-DST-London-after-2059", ALLOWED, "2026-10-26T20:59:00Z", "sms", **GB),
    # 7-day window across the US fall-back: 10-27 00:30 EDT (04:30Z) is D-6 -> 7 counted.
    case(
        "EDGE-DST-CALLFREQ-across-fall-back-7",
        blocked("CALL_FREQUENCY"),
        "2026-11-02T16:00:00Z",
        history=[att("2026-10-27T04:30:00Z"), *FALL_BACK_SIX],
        **GA,
    ),
    # ... while 10-26 23:30 EDT (10-27 03:30Z) is D-7 locally: 6 counted -> allowed.
    case(
        "EDGE-DST-CALLFREQ-across-fall-back-6",
        ALLOWED,
        "2026-11-02T16:00:00Z",
        history=[att("2026-10-27T03:30:00Z"), *FALL_BACK_SIX],
        **GA,
    ),
    # --- Two time zones (Chicago first, Los Angeles second).
    case(
        "EDGE-TWO-TZ-outside-in-second",
        blocked("OUTSIDE_HOURS"),
        "2026-09-16T14:00:00Z",  # 09:00 CDT / 07:00 PDT
        timezones=[*CT, *PT],
    ),
    case(
        "EDGE-TWO-TZ-outside-in-first",
        blocked("OUTSIDE_HOURS"),
        "2026-09-17T03:30:00Z",  # 22:30 CDT / 20:30 PDT
        "email",
        timezones=[*CT, *PT],
    ),
    case(
        "EDGE-TWO-TZ-inside-both",
        ALLOWED,
        "2026-09-16T17:00:00Z",  # 12:00 CDT / 10:00 PDT
        timezones=[*CT, *PT],
    ),
    # Local days come from the first zone: in LA the earliest call is D-7 (6 counted) ...
    case(
        "EDGE-TWO-TZ-frequency-first-zone-LA",
        ALLOWED,
        "2026-09-20T19:00:00Z",
        history=TWO_ZONE_CALLS,
        timezones=[*PT, *ET],
    ),
    # ... in New York it is D-6 (7 counted).
    case(
        "EDGE-TWO-TZ-frequency-first-zone-NY",
        blocked("CALL_FREQUENCY"),
        "2026-09-20T19:00:00Z",
        history=TWO_ZONE_CALLS,
        timezones=[*ET, *PT],
    ),
    # --- 7th and 8th call in 7 days (Austin).
    case("EDGE-CALLFREQ-7th-call", ALLOWED, SAT_16_CT, history=SIX_CALLS),
    case(
        "EDGE-CALLFREQ-8th-call",
        blocked("CALL_FREQUENCY"),
        SAT_16_CT,
        history=[*SIX_CALLS, SEVENTH_CALL],
    ),
    case(
        "EDGE-CALLFREQ-7-prior-one-not-connected",
        ALLOWED,
        SAT_16_CT,
        history=[*SIX_CALLS, {**SEVENTH_CALL, "connected": False}],
    ),
    # Sat 09-12 23:30 CDT (= 09-13 04:30Z) is D-7 locally although its UTC date is D-6.
    case(
        "EDGE-CALLFREQ-local-day-before-window",
        ALLOWED,
        SAT_16_CT,
        history=[att("2026-09-13T04:30:00Z"), *SIX_CALLS],
    ),
    # Texts, e-mails and letters are not calls for the 7-in-7 count.
    case(
        "EDGE-CALLFREQ-other-channels-not-counted",
        ALLOWED,
        SAT_16_CT,
        history=[
            *SIX_CALLS,
            att("2026-09-19T19:00:00Z", "sms"),
            att("2026-09-18T19:00:00Z", "email"),
        ],
    ),
    # Assumption: only attempts strictly before `at` count; a later entry (Sat 18:00) is ignored.
    case(
        "EDGE-CALLFREQ-later-entry-ignored",
        ALLOWED,
        SAT_16_CT,
        history=[*SIX_CALLS, att("2026-09-19T23:00:00Z")],
    ),
    # CALL_FREQUENCY only blocks calls: an SMS after 7 calls is fine.
    case(
        "EDGE-CALLFREQ-sms-not-blocked",
        ALLOWED,
        SAT_16_CT,
        "sms",
        history=[*SIX_CALLS, SEVENTH_CALL],
    ),
    # --- Conversation cooldown: conversation Tue 09-01 11:00 CDT is day 1.
    case(
        "EDGE-COOLDOWN-day-7",
        blocked("CONVERSATION_COOLDOWN"),
        "2026-09-07T16:00:00Z",  # Mon 11:00 CDT
        history=[att("2026-09-01T16:00:00Z", conversation=True)],
    ),
    case(
        "EDGE-COOLDOWN-day-8",
        ALLOWED,
        "2026-09-08T16:00:00Z",  # Tue 11:00 CDT
        history=[att("2026-09-01T16:00:00Z", conversation=True)],
    ),
    # Conversation Tue 09-01 23:00 CDT (09-02 04:00Z): local day 1 is 09-01, so Tue 09-08 is day 8.
    case(
        "EDGE-COOLDOWN-local-day",
        ALLOWED,
        "2026-09-08T15:00:00Z",
        history=[att("2026-09-02T04:00:00Z", conversation=True)],
    ),
    # The cooldown blocks calls only.
    case(
        "EDGE-COOLDOWN-sms-not-blocked",
        ALLOWED,
        "2026-09-02T16:00:00Z",
        "sms",
        history=[att("2026-09-01T16:00:00Z", conversation=True)],
    ),
    # --- New York City counts every channel, letters included (Mon e-mail, Tue SMS, Wed letter).
    case(
        "EDGE-NYC-3-mixed-prior-email",
        blocked("STATE_FREQUENCY"),
        THU_ET,
        "email",
        history=[att(MON_ET, "email"), att(TUE_ET, "sms"), att(WED_ET, "letter")],
        **NYC,
    ),
    case(
        "EDGE-NYC-2-prior-email",
        ALLOWED,
        THU_ET,
        "email",
        history=[att(MON_ET, "email"), att(WED_ET, "letter")],
        **NYC,
    ),
    # "Any contact": a letter is blocked too.
    case(
        "EDGE-NYC-3-prior-letter",
        blocked("STATE_FREQUENCY"),
        THU_ET,
        "letter",
        history=[att(MON_ET, "email"), att(TUE_ET, "sms"), att(WED_ET, "letter")],
        **NYC,
    ),
    # --- Massachusetts counts calls and texts only, and caps calls and texts only.
    case(
        "EDGE-MA-2-prior-emails-call",
        ALLOWED,
        FRI_ET,
        history=[att(MON_ET, "email"), att(WED_ET, "email")],
        **MA,
    ),
    case(
        "EDGE-MA-call-and-sms-then-call",
        blocked("STATE_FREQUENCY"),
        FRI_ET,
        history=[att(MON_ET), att(WED_ET, "sms")],
        **MA,
    ),
    case(
        "EDGE-MA-call-and-sms-then-sms",
        blocked("STATE_FREQUENCY"),
        FRI_ET,
        "sms",
        history=[att(MON_ET), att(WED_ET, "sms")],
        **MA,
    ),
    case(
        "EDGE-MA-2-prior-calls-then-email",
        ALLOWED,
        FRI_ET,
        "email",
        history=[att(MON_ET), att(WED_ET)],
        **MA,
    ),
    case("EDGE-MA-1-prior-call", ALLOWED, FRI_ET, history=[att(MON_ET)], **MA),
    # --- Dispute status.
    case("EDGE-DISPUTE-none", ALLOWED, WED_10_CT, dispute="none"),
    case("EDGE-DISPUTE-resolved", ALLOWED, WED_10_CT, dispute="resolved"),
    case("EDGE-DISPUTE-pending", blocked("DISPUTE_PENDING"), WED_10_CT, dispute="pending"),
    # --- Commercial debt: consumer-only rules stay silent; all-debt rules still block.
    case("EDGE-COMMERCIAL-deceased", ALLOWED, WED_10_CT, purpose="commercial", deceased=True),
    case(
        "EDGE-COMMERCIAL-bankruptcy",
        blocked("BANKRUPTCY"),
        WED_10_CT,
        purpose="commercial",
        bankruptcy=True,
        deceased=True,
    ),
    # Attorney, breathing space, employer e-mail, no consent in NYC, designated window, 3 prior
    # attempts: every one consumer-only.
    case(
        "EDGE-COMMERCIAL-consumer-only-email",
        ALLOWED,
        THU_ET,
        "email",
        purpose="commercial",
        history=[att(MON_ET, "email"), att(TUE_ET, "sms"), att(WED_ET)],
        attorney_represented=True,
        breathing_space=True,
        employer_email=True,
        consented=[],
        inconvenient_times=[{"weekdays": ALL_WEEK, "start": "09:00", "end": "17:00"}],
        **NYC,
    ),
    # 7 calls this week incl. a conversation yesterday, MA: no frequency rule applies.
    case(
        "EDGE-COMMERCIAL-consumer-only-call",
        ALLOWED,
        "2026-09-20T14:00:00Z",  # Sun 10:00 EDT
        purpose="commercial",
        history=[
            *calls(MON_ET, "2026-09-14T18:00:00Z", TUE_ET, WED_ET, THU_ET, FRI_ET),
            att("2026-09-19T14:00:00Z", conversation=True),
        ],
        **MA,
    ),
    case(
        "EDGE-COMMERCIAL-sms-no-consent",
        ALLOWED,
        WED_10_CT,
        "sms",
        purpose="commercial",
        consented=None,
    ),
    case(
        "EDGE-COMMERCIAL-all-debt-rules",
        blocked("CEASE_COMMUNICATION", "DISPUTE_PENDING", "CHANNEL_OPT_OUT", "OUTSIDE_HOURS"),
        "2026-09-17T03:00:00Z",  # 22:00 CDT
        "sms",
        purpose="commercial",
        cease_communication=True,
        dispute="pending",
        opted_out=["sms"],
        consented=[],
    ),
    # --- Hours boundaries (Austin, CDT).
    case("EDGE-HOURS-letter-2300", ALLOWED, "2026-09-17T04:00:00Z", "letter"),  # 23:00 CDT
    case("EDGE-HOURS-letter-0300", ALLOWED, "2026-09-16T08:00:00Z", "letter"),  # 03:00 CDT
    case("EDGE-HOURS-call-2100", blocked("OUTSIDE_HOURS"), "2026-09-17T02:00:00Z"),
    case("EDGE-HOURS-email-2100", blocked("OUTSIDE_HOURS"), "2026-09-17T02:00:00Z", "email"),
    case("EDGE-HOURS-call-2059", ALLOWED, "2026-09-17T01:59:00Z"),
    case("EDGE-HOURS-sms-2059-59", ALLOWED, "2026-09-17T01:59:59Z", "sms"),
    case("EDGE-HOURS-call-0800", ALLOWED, "2026-09-16T13:00:00Z"),
    case("EDGE-HOURS-sms-0759", blocked("OUTSIDE_HOURS"), "2026-09-16T12:59:00Z", "sms"),
    # --- Consent defaults.
    # No `consented` at all = empty: a consumer SMS has no consent.
    case("EDGE-CONSENT-missing-sms", blocked("NO_CONSENT"), WED_10_CT, "sms", consented=None),
    # Outside New York City e-mail needs no consent; calls and letters never do.
    case("EDGE-CONSENT-missing-email", ALLOWED, WED_10_CT, "email", consented=None),
    case("EDGE-CONSENT-nyc-call", ALLOWED, WED_ET, consented=[], **NYC),
    case("EDGE-CONSENT-nyc-letter", ALLOWED, WED_ET, "letter", consented=[], **NYC),
    case("EDGE-CONSENT-nyc-sms", blocked("NO_CONSENT"), WED_ET, "sms", consented=["email"], **NYC),
    # --- Designated windows use the debtor's local weekday and time.
    # Fridays 19:00-21:00; Fri 20:00 CDT is Saturday 01:00 in UTC.
    case(
        "EDGE-INCONVENIENT-local-weekday",
        blocked("INCONVENIENT_TIME"),
        "2026-09-19T01:00:00Z",
        "sms",
        inconvenient_times=[{"weekdays": [4], "start": "19:00", "end": "21:00"}],
    ),
    # Weekdays 09:00-17:00; Saturday 10:00 CDT is outside the designation.
    case(
        "EDGE-INCONVENIENT-weekend",
        ALLOWED,
        "2026-09-19T15:00:00Z",
        inconvenient_times=[{"weekdays": [0, 1, 2, 3, 4], "start": "09:00", "end": "17:00"}],
    ),
    # Letters are not subject to designated times.
    case(
        "EDGE-INCONVENIENT-letter",
        ALLOWED,
        WED_10_CT,
        "letter",
        inconvenient_times=[{"weekdays": [0, 1, 2, 3, 4], "start": "09:00", "end": "17:00"}],
    ),
    case(
        "EDGE-OPT-OUT-letter", blocked("CHANNEL_OPT_OUT"), WED_10_CT, "letter", opted_out=["letter"]
    ),
    # --- Several reasons at once: all listed.
    # MA consumer, call Sun 07:00 EDT, 7 calls this week with a conversation on Saturday.
    case(
        "EDGE-MULTI-call",
        blocked(
            "BANKRUPTCY",
            "CEASE_COMMUNICATION",
            "DISPUTE_PENDING",
            "CHANNEL_OPT_OUT",
            "OUTSIDE_HOURS",
            "DECEASED",
            "ATTORNEY_REPRESENTED",
            "INCONVENIENT_TIME",
            "CALL_FREQUENCY",
            "CONVERSATION_COOLDOWN",
            "STATE_FREQUENCY",
        ),
        "2026-09-20T11:00:00Z",
        history=[
            *calls(MON_ET, "2026-09-14T18:00:00Z", TUE_ET, WED_ET, THU_ET, FRI_ET),
            att("2026-09-19T14:00:00Z", conversation=True),
        ],
        **MULTI_US,
        **MA,
    ),
    # NYC consumer, e-mail Thu 22:00 EDT to an employer address, no consent, opted out, 3 prior.
    case(
        "EDGE-MULTI-nyc-email",
        blocked(
            "CHANNEL_OPT_OUT", "OUTSIDE_HOURS", "NO_CONSENT", "EMPLOYER_EMAIL", "STATE_FREQUENCY"
        ),
        "2026-09-18T02:00:00Z",
        "email",
        history=[att(MON_ET, "email"), att(TUE_ET, "sms"), att(WED_ET, "letter")],
        employer_email=True,
        consented=[],
        opted_out=["email"],
        **NYC,
    ),
    # UK consumer in Breathing Space, deceased, SMS 21:30 BST, opted out, no consent.
    case(
        "EDGE-MULTI-uk-sms",
        blocked("BREATHING_SPACE", "DECEASED", "CHANNEL_OPT_OUT", "NO_CONSENT", "OUTSIDE_HOURS"),
        "2026-09-16T20:30:00Z",
        "sms",
        breathing_space=True,
        deceased=True,
        opted_out=["sms"],
        consented=["email"],
        **GB,
    ),
    # Missing optional flags take the safe default: only the required shape, allowed.
    pytest.param(
        {
            "id": "EDGE-MINIMAL-record",
            "at": WED_10_CT,
            "channel": "email",
            "debt": {"purpose": "consumer"},
            "debtor": {"country": "US", "state": "TX", "city": "Austin", "timezones": CT},
        },
        True,
        set(),
        id="EDGE-MINIMAL-record",
    ),
]

CASES = CATALOGUE_CASES + EDGE_CASES


def expected_output(param) -> dict:
    record, allowed, reasons = param.values
    return {"id": record["id"], "allowed": allowed, "reasons": sorted(reasons)}


def test_cases_are_well_formed():
    """Guards the table itself: unique ids equal to the record ids, known codes, all codes used."""
    ids = [p.id for p in CASES]
    assert len(ids) == len(set(ids))
    used = set()
    for p in CASES:
        record, allowed, reasons = p.values
        assert record["id"] == p.id
        assert reasons <= CODES, p.id
        assert allowed == (not reasons), p.id
        used |= reasons
    assert used == CODES


@pytest.mark.parametrize(("record", "allowed", "reasons"), CASES)
def test_catalogue_case(record, allowed, reasons):
    (out,) = list(what_if([json.dumps(record)]))
    assert out == {"id": record["id"], "allowed": allowed, "reasons": sorted(reasons)}


def test_all_cases_in_one_stream_keep_order_and_count():
    lines = [json.dumps(p.values[0]) + "\n" for p in CASES]  # as read from a JSON Lines file
    outs = list(what_if(iter(lines)))
    assert len(outs) == len(CASES)
    assert [o["id"] for o in outs] == [p.id for p in CASES]
    assert outs == [expected_output(p) for p in CASES]


def test_malformed_lines_give_errors_and_the_rest_still_run():
    good_first, good_last = CASES[0], CASES[-1]
    fax = rec("bad-fax", WED_10_CT, "fax")
    no_at = rec("bad-no-at", WED_10_CT)
    del no_at["at"]
    bad_time = rec("bad-time", "not-a-timestamp")
    lines = [
        json.dumps(good_first.values[0]),
        '{"id": "broken", "at": ',  # invalid JSON: the id cannot be read
        json.dumps(fax),
        json.dumps(no_at),
        "[1]",
        json.dumps(bad_time),
        json.dumps(good_last.values[0]),
    ]
    outs = list(what_if(lines))
    assert len(outs) == len(lines)
    assert outs[0] == expected_output(good_first)
    assert outs[-1] == expected_output(good_last)
    for out, expected_id in zip(
        outs[1:-1], [None, "bad-fax", "bad-no-at", None, "bad-time"], strict=True
    ):
        assert set(out) == {"id", "error"}, out
        assert out["id"] == expected_id
        assert isinstance(out["error"], str)
        assert out["error"].strip()
