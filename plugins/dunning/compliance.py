"""The compliance gate: may we contact this person now, on this channel?  Every reason that
applies is recorded, not just the first.

One engine serves the daily run (a day's planned contacts against the ledger's compliance state
and contact history) and the what-if check (contract C2, ``python -m dunning compliance check``),
so what a compliance officer tests is what the pipeline does.  It works on whole frames: one row
per proposed contact, one per earlier attempt; time zones are converted per distinct zone, never
per row.

The rules and their legal sources are in the domain catalogue (REGF-*, TCPA, MA-01, NYC-01/02,
UK-09 ...).  Numbers the law leaves open are ``config.Policy`` fields marked POLICY-DEFAULT.
Which rules apply depends on the kind of debt (consumer rules do not reach commercial debts),
who collects (``Policy.creditor_follows_reg_f``) and where the debtor is (state packs).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import cache
from typing import Any
from zoneinfo import available_timezones

import numpy as np
import pandas as pd
import sqlalchemy as sa

from dunning import clock, lake
from dunning.config import Config, Policy
from dunning.feedback import channel_opt_outs
from dunning.ledger import (
    ComplianceEvent,
    ContactAttempt,
    ContactDecision,
    Debtor,
    InvoiceSnapshot,
    Message,
    Snapshot,
    bulk_insert,
    sent_contacts,
)
from dunning.quality import isin
from dunning.schema import CHANNELS

RULES_VERSION = "2026.11.1"  # bump when the rules below change meaning

# The fixed vocabulary of contract C2, in the order of the design brief.
REASONS = (
    "BANKRUPTCY",
    "CEASE_COMMUNICATION",
    "DISPUTE_PENDING",
    "CHANNEL_OPT_OUT",
    "OUTSIDE_HOURS",
    "DECEASED",
    "ATTORNEY_REPRESENTED",
    "BREATHING_SPACE",
    "NO_CONSENT",
    "EMPLOYER_EMAIL",
    "INCONVENIENT_TIME",
    "CALL_FREQUENCY",
    "CONVERSATION_COOLDOWN",
    "STATE_FREQUENCY",
)
# Reasons that only say "not at this time": such a contact is moved to the next allowed window.
TIME_REASONS = frozenset({"OUTSIDE_HOURS", "INCONVENIENT_TIME"})
# Reg F rules a creditor collecting its own debts follows only by policy (or where state law
# extends them to creditors: California's Rosenthal Act, CA-01).
REG_F_ONLY = ("ATTORNEY_REPRESENTED", "EMPLOYER_EMAIL", "INCONVENIENT_TIME")
REG_F_FREQUENCY = ("CALL_FREQUENCY", "CONVERSATION_COOLDOWN")
TIMED_CHANNELS = ("call", "sms", "email")  # letters are exempt from hours and designated times
NYC_CITIES = frozenset(
    {"new york", "new york city", "nyc", "manhattan", "brooklyn", "bronx", "queens"}
    | {"staten island", "the bronx"}
)
DISPUTE_STATES = ("none", "pending", "resolved")
_DAY_NS = 86_400 * 10**9

# Columns of the contacts frame ``evaluate`` takes (one row per proposed contact).
FLAG_COLUMNS = (
    "deceased",
    "bankruptcy",
    "cease_communication",
    "attorney_represented",
    "breathing_space",
    "employer_email",
)


def policy_version(policy: Policy) -> str:
    """The rule-set version a decision was made under: rules code plus the policy's numbers."""
    digest = hashlib.sha256(policy.model_dump_json().encode()).hexdigest()[:8]
    return f"{RULES_VERSION}+{digest}"


# --- the frames ---------------------------------------------------------------------------------


def _minutes(value: str | time) -> int:
    t = value if isinstance(value, time) else time.fromisoformat(value)
    return t.hour * 60 + t.minute


@cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


@dataclass
class Batch:
    """What ``evaluate`` needs; built from C2 records or from the ledger.

    ``contacts``: person, at (UTC), channel, consumer, third_party, country, state, city,
    dispute, the ``FLAG_COLUMNS``, ``opt_out_<channel>`` and ``consent_<channel>`` booleans.
    ``zones``: row (into contacts), order (0 = first listed), tz.
    ``windows``: row, weekdays (bit mask, Monday = bit 0), start, end (minutes, local).
    ``history``: person, at (UTC), channel, connected, conversation.
    """

    contacts: pd.DataFrame
    zones: pd.DataFrame
    windows: pd.DataFrame
    history: pd.DataFrame


def utc_ns(values: Any) -> np.ndarray:
    """Instants (aware, or naive meaning UTC) as int64 nanoseconds since the epoch, UTC."""
    index = pd.DatetimeIndex(values)
    if index.tz is None:
        index = index.tz_localize("UTC")
    return index.tz_convert("UTC").as_unit("ns").asi8


def _by_zone(codes: np.ndarray, zones: Any) -> Iterator[tuple[str, np.ndarray]]:
    """(zone, positions) per distinct zone code: one sort, not a scan per zone."""
    order = np.argsort(codes, kind="stable")
    bounds = np.cumsum(np.bincount(codes, minlength=len(zones)))
    for k, zone in enumerate(zones):
        yield zone, order[(bounds[k - 1] if k else 0) : bounds[k]]


def _local(
    at_ns: np.ndarray, tz: np.ndarray, zones: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local minute of day, weekday and day number (days since the epoch) of each UTC instant
    in its zone; one conversion per distinct zone.  ``tz`` holds zone names, or codes into
    ``zones`` when given (cheaper for millions of rows)."""
    codes, zones = (tz, zones) if zones is not None else pd.factorize(tz)
    minute = np.zeros(len(at_ns), dtype="int64")
    weekday = np.zeros(len(at_ns), dtype="int64")
    day = np.zeros(len(at_ns), dtype="int64")
    for zone, idx in _by_zone(codes, zones):
        local = pd.DatetimeIndex(at_ns[idx], tz="UTC").tz_convert(zone)
        minute[idx] = local.hour * 60 + local.minute
        weekday[idx] = local.weekday
        day[idx] = local.tz_localize(None).normalize().as_unit("ns").asi8 // _DAY_NS
    return minute, weekday, day


def _time_blocks(batch: Batch, at_ns: np.ndarray, policy: Policy) -> tuple[np.ndarray, np.ndarray]:
    """OUTSIDE_HOURS and INCONVENIENT_TIME per contact at the instants ``at_ns``: outside the
    hours in *any* listed zone; inside a designated window in any listed zone (the debtor's
    local time is uncertain between them, so the careful reading)."""
    c = batch.contacts
    n = len(c)
    outside = np.zeros(n, dtype=bool)
    inconvenient = np.zeros(n, dtype=bool)
    z = batch.zones
    if not len(z):
        return outside, inconvenient
    rows = z["row"].to_numpy()
    minute, weekday, _ = _local(at_ns[rows], z["tz"].to_numpy())
    start, end = _minutes(policy.hours_start), _minutes(policy.hours_end)
    out = (minute < start) | (minute >= end)
    if policy.uk_no_sunday:
        out |= (c["country"].to_numpy()[rows] == "GB") & (weekday == 6)
    np.logical_or.at(outside, rows, out)
    w = batch.windows
    if len(w):
        pairs = w.merge(pd.DataFrame({"row": rows, "minute": minute, "weekday": weekday}), on="row")
        m = pairs["minute"].to_numpy()
        s, e = pairs["start"].to_numpy(), pairs["end"].to_numpy()
        in_span = np.where(s <= e, (m >= s) & (m < e), (m >= s) | (m < e))
        on_day = (pairs["weekdays"].to_numpy() >> pairs["weekday"].to_numpy()) & 1 == 1
        np.logical_or.at(inconvenient, pairs["row"].to_numpy(), in_span & on_day)
    timed = isin(c["channel"], TIMED_CHANNELS).to_numpy()
    return outside & timed, inconvenient & timed


def _first_zone_day(batch: Batch, at_ns: np.ndarray) -> np.ndarray:
    """Each contact's local day number in its first listed zone (frequency windows use it)."""
    z = batch.zones[batch.zones["order"] == 0]
    day = np.zeros(len(batch.contacts), dtype="int64")
    rows = z["row"].to_numpy()
    day[rows] = _local(at_ns[rows], z["tz"].to_numpy())[2]
    return day


def _frequency(
    batch: Batch, at_ns: np.ndarray, day: np.ndarray, policy: Policy, in_batch: bool
) -> dict[str, Any]:
    """Counts of earlier attempts in the 7 local days ending on each contact's day (first
    listed zone).

    History is matched by person; with ``in_batch`` the same person's earlier contacts in this
    batch count too (a day's email and SMS to a New York City debtor are two attempts).
    """
    c = batch.contacts
    n = len(c)
    calls = np.zeros(n, dtype="int64")
    calls_sms = np.zeros(n, dtype="int64")
    anything = np.zeros(n, dtype="int64")
    conversation = np.zeros(n, dtype=bool)
    h = batch.history
    if len(h):
        # People as integer codes: the joins below run on ints, not strings.
        codes, people = pd.factorize(pd.concat([c["person"], h["person"]], ignore_index=True))
        person, h_person = codes[:n], codes[n:]
        zone0 = batch.zones[batch.zones["order"] == 0]
        zone_codes, zone_names = pd.factorize(zone0["tz"])
        first_tz = np.zeros(len(people), dtype="int64")  # people without a zone: the first one
        first_tz[person[zone0["row"].to_numpy()]] = zone_codes
        known = np.zeros(len(people), dtype=bool)
        known[person] = True
        keep = known[h_person]
        h_ns = utc_ns(h["at"])[keep]
        h_person = h_person[keep]
        hist = pd.DataFrame(
            {
                "person": h_person,
                "h_ns": h_ns,
                "hday": _local(h_ns, first_tz[h_person], zone_names)[2],
                "channel": pd.Index(CHANNELS).get_indexer(h["channel"])[keep],
                "connected": h["connected"].to_numpy()[keep],
                "conversation": h["conversation"].to_numpy()[keep],
            }
        )
        pairs = pd.DataFrame({"row": np.arange(n), "person": person, "day": day, "at_ns": at_ns})
        pairs = pairs.merge(hist, on="person")
        age = pairs["day"].to_numpy() - pairs["hday"].to_numpy()
        # Attempts before the proposed instant, on its local day or the days before it.
        window = (pairs["h_ns"].to_numpy() < pairs["at_ns"].to_numpy()) & (
            age <= max(6, policy.conversation_cooldown_days - 1)
        )
        pairs = pairs[window]
        rows = pairs["row"].to_numpy()
        channel = pairs["channel"].to_numpy()
        is_call = channel == CHANNELS.index("call")
        counted = is_call & pairs["connected"].fillna(True).astype(bool).to_numpy()
        seven = age[window] <= 6  # the 7 local days ending on the proposed day
        calls = np.bincount(rows, weights=counted & seven, minlength=n).astype("int64")
        texts = channel == CHANNELS.index("sms")
        calls_sms = np.bincount(rows, weights=(is_call | texts) & seven, minlength=n)
        anything = np.bincount(rows, weights=seven, minlength=n).astype("int64")
        talk = pairs["conversation"].fillna(False).astype(bool).to_numpy().copy()
        talk &= age[window] < policy.conversation_cooldown_days
        conversation = np.bincount(rows, weights=talk, minlength=n) > 0
    if in_batch and n:
        order = pd.DataFrame(
            {
                "person": pd.factorize(c["person"])[0],
                "day": day,
                "call": (c["channel"] == "call").to_numpy(),
                "call_sms": isin(c["channel"], ("call", "sms")).to_numpy(),
            }
        )
        group = order.groupby(["person", "day"], sort=False)
        anything = anything + group.cumcount().to_numpy()
        calls = calls + (group["call"].cumsum() - order["call"]).to_numpy()
        calls_sms = calls_sms + (group["call_sms"].cumsum() - order["call_sms"]).to_numpy()
    return {
        "calls": calls,
        "calls_sms": np.asarray(calls_sms, dtype="int64"),
        "anything": anything,
        "conversation": conversation,
    }


def reason_text(mask: int) -> str:
    """A reason bit mask as the sorted, comma-joined codes (the form stored and reported)."""
    return ",".join(sorted(r for i, r in enumerate(REASONS) if mask >> i & 1))


def evaluate(batch: Batch, policy: Policy, *, in_batch: bool = False) -> pd.DataFrame:
    """One row per contact: a boolean column per reason code, ``reasons`` (sorted list),
    ``allowed`` and, for contacts held back only by the clock, ``next_allowed_at``.

    ``reasons`` is the sorted, comma-joined codes ("" when allowed)."""
    c = batch.contacts
    n = len(c)
    channel = c["channel"]
    consumer = c["consumer"].to_numpy(dtype=bool)
    ch = {name: (channel == name).to_numpy() for name in CHANNELS}
    state = c["state"].fillna("").str.upper().to_numpy()
    city = c["city"].fillna("").str.strip().str.casefold().to_numpy()
    us = c["country"].fillna("").str.upper().to_numpy() == "US"
    ma = us & (state == "MA")
    nyc = us & (state == "NY") & np.isin(city, list(NYC_CITIES))
    wa = us & (state == "WA")
    reg_f = c["third_party"].to_numpy(dtype=bool) | policy.creditor_follows_reg_f | (state == "CA")
    opted_out = np.zeros(n, dtype=bool)
    for name in CHANNELS:
        opted_out |= ch[name] & c[f"opt_out_{name}"].to_numpy(dtype=bool)

    at_ns = utc_ns(c["at"])
    outside, inconvenient = _time_blocks(batch, at_ns, policy)
    day = _first_zone_day(batch, at_ns)
    freq = _frequency(batch, at_ns, day, policy, in_batch)
    calls_or_sms = ch["call"] | ch["sms"]
    state_cap = (ma & calls_or_sms & (freq["calls_sms"] >= policy.ma_calls_texts_per_7_days)) | (
        nyc & (freq["anything"] >= policy.nyc_attempts_per_7_days)
    )
    if policy.wa_communications_per_7_days is not None:
        state_cap |= wa & (freq["anything"] >= policy.wa_communications_per_7_days)

    flags = {
        "BANKRUPTCY": c["bankruptcy"].to_numpy(dtype=bool),
        "CEASE_COMMUNICATION": c["cease_communication"].to_numpy(dtype=bool),
        "DISPUTE_PENDING": (c["dispute"] == "pending").to_numpy(),
        "CHANNEL_OPT_OUT": opted_out,
        "OUTSIDE_HOURS": outside,
        "DECEASED": consumer & c["deceased"].to_numpy(dtype=bool),
        "ATTORNEY_REPRESENTED": consumer & c["attorney_represented"].to_numpy(dtype=bool),
        "BREATHING_SPACE": consumer & c["breathing_space"].to_numpy(dtype=bool),
        "NO_CONSENT": consumer
        & (
            (ch["sms"] & ~c["consent_sms"].to_numpy(dtype=bool))
            | (nyc & ch["email"] & ~c["consent_email"].to_numpy(dtype=bool))
        ),
        "EMPLOYER_EMAIL": consumer & ch["email"] & c["employer_email"].to_numpy(dtype=bool),
        "INCONVENIENT_TIME": consumer & inconvenient,
        "CALL_FREQUENCY": consumer & ch["call"] & (freq["calls"] >= policy.calls_per_7_days),
        "CONVERSATION_COOLDOWN": consumer & ch["call"] & freq["conversation"],
        "STATE_FREQUENCY": consumer & state_cap,
    }
    for code in (*REG_F_ONLY, *REG_F_FREQUENCY):
        flags[code] = flags[code] & reg_f
    out = pd.DataFrame(flags, index=c.index)[list(REASONS)]
    matrix = out.to_numpy()
    # Reasons as text ("A,B", sorted) through the few distinct combinations, not per row.
    mask = matrix.astype("int64") @ (1 << np.arange(len(REASONS), dtype="int64"))
    uniques, inverse = np.unique(mask, return_inverse=True)
    texts = np.array([reason_text(int(m)) for m in uniques], dtype=object)
    out["reasons"] = texts[inverse] if n else np.array([], dtype=object)
    out["allowed"] = mask == 0
    time_bits = sum(1 << REASONS.index(r) for r in TIME_REASONS)
    only_time = (mask != 0) & (mask & ~time_bits == 0)
    out["next_allowed_at"] = pd.Series(pd.NaT, index=c.index, dtype="datetime64[ns, UTC]")
    if only_time.any():
        out.loc[only_time, "next_allowed_at"] = next_allowed(batch, at_ns, only_time, policy)
    return out


def next_allowed(
    batch: Batch, at_ns: np.ndarray, rows_mask: np.ndarray, policy: Policy
) -> np.ndarray:
    """The earliest instant after each masked contact's ``at`` inside the hours in all its zones
    and outside its designated windows, looking up to two local days ahead; NaT if none.

    The answer is one of a few candidate instants per contact: the start of the hours or the end
    of a designated window, on its local day or the next two, in each of its zones.  Wall times
    are localized per zone, so a DST change moves them correctly.
    """
    rows = np.flatnonzero(rows_mask)
    z = batch.zones[batch.zones["row"].isin(rows)]
    z_rows, z_tz = z["row"].to_numpy(), z["tz"].to_numpy()
    z_day = _local(at_ns[z_rows], z_tz)[2]
    w = batch.windows[batch.windows["row"].isin(rows)]
    ends = w.merge(pd.DataFrame({"row": z_rows, "tz": z_tz, "day": z_day}), on="row")
    parts = []
    for offset in (0, 1, 2):
        parts.append(
            (z_rows, z_tz, z_day + offset, np.full(len(z_rows), _minutes(policy.hours_start)))
        )
        parts.append(
            (
                ends["row"].to_numpy(),
                ends["tz"].to_numpy(),
                ends["day"].to_numpy() + offset,
                ends["end"].to_numpy(),
            )
        )
    cand_row = np.concatenate([p[0] for p in parts])
    cand_tz = np.concatenate([p[1] for p in parts])
    wall = np.concatenate([p[2] * _DAY_NS + p[3] * 60 * 10**9 for p in parts])
    cand_at = _localize(wall, cand_tz)
    later = cand_at > at_ns[cand_row]
    cand_row, cand_at = cand_row[later], cand_at[later]
    sub = Batch(
        contacts=batch.contacts.iloc[cand_row].reset_index(drop=True),
        zones=_remap(batch.zones, cand_row),
        windows=_remap(batch.windows, cand_row),
        history=batch.history.iloc[0:0],
    )
    outside, inconvenient = _time_blocks(sub, cand_at, policy)
    ok = ~outside & ~(inconvenient & sub.contacts["consumer"].to_numpy(dtype=bool))
    best = pd.Series(cand_at[ok]).groupby(cand_row[ok]).min()
    result = np.full(len(batch.contacts), np.iinfo("int64").min, dtype="int64")  # NaT
    result[best.index.to_numpy()] = best.to_numpy()
    return pd.DatetimeIndex(result[rows], tz="UTC")


def _localize(wall_ns: np.ndarray, tz: np.ndarray) -> np.ndarray:
    """Local wall-clock instants (ns since the epoch) to UTC ns, per zone.  A wall time skipped
    by a spring-forward moves forward; a repeated one takes its first occurrence."""
    out = np.zeros(len(wall_ns), dtype="int64")
    for zone, idx in _by_zone(*pd.factorize(tz)):
        aware = pd.DatetimeIndex(wall_ns[idx]).tz_localize(
            zone, ambiguous=np.ones(len(idx), dtype=bool), nonexistent="shift_forward"
        )
        out[idx] = aware.tz_convert("UTC").as_unit("ns").asi8
    return out


def _remap(frame: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """Rows of a per-contact side frame (zones, windows) for contacts repeated as ``rows``."""
    new = pd.DataFrame({"row": np.arange(len(rows)), "_old": rows})
    return frame.rename(columns={"row": "_old"}).merge(new, on="_old").drop(columns="_old")


# --- contract C2: the what-if check -------------------------------------------------------------


class RecordError(ValueError):
    """One C2 line that cannot be evaluated; the message says which field and why."""


def _bool(value: Any, field: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RecordError(f"{field} must be true or false")
    return value


def _instant(value: Any, field: str) -> pd.Timestamp:
    if not isinstance(value, str):
        raise RecordError(f"{field} must be an ISO 8601 date-time string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise RecordError(f"{field}: {exc}") from exc
    if parsed.tzinfo is None:
        raise RecordError(f"{field} needs a UTC offset or Z")
    return pd.Timestamp(parsed).tz_convert("UTC")


def _channels(value: Any, field: str) -> set[str]:
    if value is None:
        return set()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RecordError(f"{field} must be a list of channels")
    unknown = sorted(set(value) - set(CHANNELS))
    if unknown:
        raise RecordError(f"{field}: unknown channel(s) {unknown}; known: {list(CHANNELS)}")
    return set(value)


def _windows(value: Any) -> list[tuple[int, int, int]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RecordError("debtor.inconvenient_times must be a list")
    out = []
    for i, w in enumerate(value):
        field = f"debtor.inconvenient_times[{i}]"
        if not isinstance(w, dict):
            raise RecordError(f"{field} must be an object")
        days = w.get("weekdays", list(range(7)))
        if not isinstance(days, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 6 for d in days
        ):
            raise RecordError(f"{field}.weekdays must be a list of 0 (Monday) .. 6")
        try:
            start, end = _minutes(w["start"]), _minutes(w["end"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordError(f"{field} needs start and end as HH:MM") from exc
        out.append((sum(1 << d for d in set(days)), start, end))
    return out


def parse_record(record: Any) -> dict[str, Any]:
    """A C2 line's object to flat columns (missing optional fields take the safe default)."""
    if not isinstance(record, dict):
        raise RecordError("each line must be a JSON object")
    channel = record.get("channel")
    if channel not in CHANNELS:
        raise RecordError(f"channel must be one of {list(CHANNELS)}, got {channel!r}")
    debt = record.get("debt") or {}
    debtor = record.get("debtor") or {}
    if not isinstance(debt, dict) or not isinstance(debtor, dict):
        raise RecordError("debt and debtor must be objects")
    purpose = debt.get("purpose", "consumer")
    if purpose not in ("consumer", "commercial"):
        raise RecordError(f"debt.purpose must be consumer or commercial, got {purpose!r}")
    collector = debt.get("collector", "third_party")
    if collector not in ("creditor", "third_party"):
        raise RecordError(f"debt.collector must be creditor or third_party, got {collector!r}")
    zones = debtor.get("timezones")
    if not isinstance(zones, list) or not zones or not all(isinstance(z, str) for z in zones):
        raise RecordError("debtor.timezones must be a non-empty list of IANA zone names")
    unknown = [z for z in zones if z not in _zones()]
    if unknown:
        raise RecordError(f"debtor.timezones: unknown zone(s) {unknown}")
    dispute = debtor.get("dispute", "none") or "none"
    if dispute not in DISPUTE_STATES:
        raise RecordError(f"debtor.dispute must be one of {list(DISPUTE_STATES)}")
    for key in ("country", "state", "city"):
        if not isinstance(debtor.get(key, ""), str | None):
            raise RecordError(f"debtor.{key} must be a string")
    opted_out = _channels(debtor.get("opted_out"), "debtor.opted_out")
    consented = _channels(debtor.get("consented"), "debtor.consented")
    history = record.get("history") or []
    if not isinstance(history, list):
        raise RecordError("history must be a list")
    attempts = []
    for i, h in enumerate(history):
        if not isinstance(h, dict):
            raise RecordError(f"history[{i}] must be an object")
        if h.get("channel") not in CHANNELS:
            raise RecordError(f"history[{i}].channel must be one of {list(CHANNELS)}")
        attempts.append(
            {
                "at": _instant(h.get("at"), f"history[{i}].at"),
                "channel": h["channel"],
                "connected": h.get("connected") is not False,
                "conversation": _bool(h.get("conversation"), f"history[{i}].conversation"),
            }
        )
    row = {
        "at": _instant(record.get("at"), "at"),
        "channel": channel,
        "consumer": purpose == "consumer",
        "third_party": collector == "third_party",
        "country": debtor.get("country") or "",
        "state": debtor.get("state") or "",
        "city": debtor.get("city") or "",
        "dispute": dispute,
        **{f: _bool(debtor.get(f), f"debtor.{f}") for f in FLAG_COLUMNS},
        **{f"opt_out_{c}": c in opted_out for c in CHANNELS},
        **{f"consent_{c}": c in consented for c in CHANNELS},
    }
    return {
        "contact": row,
        "zones": zones,
        "windows": _windows(debtor.get("inconvenient_times")),
        "history": attempts,
    }


def batch_from_records(parsed: list[dict[str, Any]]) -> Batch:
    """C2 records to a Batch: each record is its own person (its history is about it alone)."""
    contacts = pd.DataFrame([p["contact"] for p in parsed])
    contacts["person"] = [str(i) for i in range(len(parsed))]
    zones = pd.DataFrame(
        [
            {"row": i, "order": k, "tz": z}
            for i, p in enumerate(parsed)
            for k, z in enumerate(p["zones"])
        ],
        columns=["row", "order", "tz"],
    )
    windows = pd.DataFrame(
        [
            {"row": i, "weekdays": d, "start": s, "end": e}
            for i, p in enumerate(parsed)
            for d, s, e in p["windows"]
        ],
        columns=["row", "weekdays", "start", "end"],
    ).astype("int64")
    history = pd.DataFrame(
        [{"person": str(i), **h} for i, p in enumerate(parsed) for h in p["history"]],
        columns=["person", "at", "channel", "connected", "conversation"],
    )
    history["at"] = pd.to_datetime(history["at"], utc=True)
    contacts["at"] = pd.to_datetime(contacts["at"], utc=True)
    return Batch(contacts=contacts, zones=zones, windows=windows, history=history)


def what_if(
    lines: Iterable[str], policy: Policy | None = None, *, explain: bool = False
) -> Iterator[dict[str, Any]]:
    """Contract C2: one output object per input line, same order; a malformed line gets an
    ``error`` and the others still run.  ``explain`` adds ``next_allowed_at`` and ``rules``."""
    policy = policy or Policy()
    results: list[dict[str, Any]] = []
    parsed: list[dict[str, Any]] = []
    slots: list[int] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        ident = None
        try:
            record = json.loads(line)
            ident = record.get("id") if isinstance(record, dict) else None
            parsed.append(parse_record(record))
            slots.append(len(results))
            results.append({"id": ident})
        except (json.JSONDecodeError, RecordError) as exc:
            results.append({"id": ident, "error": f"line {number}: {exc}"})
    if parsed:
        decided = evaluate(batch_from_records(parsed), policy)
        version = policy_version(policy)
        rows = zip(
            slots, decided["allowed"], decided["reasons"], decided["next_allowed_at"], strict=True
        )
        for slot, allowed, reasons, nxt in rows:
            results[slot].update(
                allowed=bool(allowed), reasons=reasons.split(",") if reasons else []
            )
            if explain:
                results[slot]["next_allowed_at"] = (
                    None if pd.isna(nxt) else nxt.isoformat().replace("+00:00", "Z")
                )
                results[slot]["rules"] = version
    yield from results


# --- the daily run: the day's planned contacts against the ledger ------------------------------

# Events that set (True) or clear (False) a debtor-level state, latest effective one wins.
STATE_EVENTS: dict[str, dict[str, bool]] = {
    "bankruptcy": {"bankruptcy": True, "bankruptcy_closed": False},
    "deceased": {"deceased": True},
    "cease_communication": {"cease_communication": True, "cease_withdrawn": False},
    "attorney_represented": {"attorney_represented": True, "attorney_withdrawn": False},
    "breathing_space": {"breathing_space_start": True, "breathing_space_end": False},
    # Not contact rules, but what placement must know and pass on (CONC 7.13.5G).
    "vulnerable": {"vulnerability": True, "vulnerability_end": False},
    "estate_representative": {"estate_representative": True},
}
# Per-channel events (the channel column says which); channel feedback maps onto opt-outs.
OPT_OUT_EVENTS = {"opt_out": True, "unsubscribed": True, "sms_stop": True, "opt_in": False}
CONSENT_EVENTS = {"consent": True, "consent_revoked": False}
DISPUTE_EVENTS = {"dispute_opened": "pending", "dispute_resolved": "resolved"}
KNOWN_EVENTS = frozenset(
    {e for states in STATE_EVENTS.values() for e in states}
    | set(OPT_OUT_EVENTS)
    | set(CONSENT_EVENTS)
    | set(DISPUTE_EVENTS)
    | {"inconvenient_time", "placement_recall"}  # a person asks an account back from the agency
)
DECISION_COLUMNS = (
    "contact_key",
    "as_of",
    "debtor_id",
    "channel",
    "status",
    "reasons",
    "send_at",
    "rules_version",
    "snapshot_ids",
    "decided_at",
)


def _latest(events: pd.DataFrame, keys: list[str], mapping: dict[str, Any]) -> pd.DataFrame:
    """The newest event of ``mapping`` per ``keys`` (ties: the later row), mapped to its value."""
    rows = events[isin(events["event"], mapping)]
    rows = rows.sort_values(["effective_date", "_seq"]).drop_duplicates(keys, keep="last")
    return rows.assign(value=rows["event"].map(mapping))


def compliance_state(
    debtors: pd.DataFrame, events: pd.DataFrame, policy: Policy, open_invoices: pd.Series
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per debtor, the state that decides contact (flags, dispute, opt-outs, consents), and the
    designated inconvenient windows (debtor_id, weekdays, start, end).

    ``debtors``: the ledger's debtor rows.  ``events``: compliance events effective on or before
    the business date (so a backfill sees the state as of its date).  ``open_invoices``: invoice
    ids open today; a dispute about one of them is pending for the whole debtor only where
    ``policy.whole_debtor_dispute_countries`` says so (UK-06), otherwise the disputed invoice is
    simply left out of the message.
    """
    master = debtors.set_index("debtor_id")
    state = master[["kind", "country", "region", "city", "timezones", "employer_email"]].copy()
    events = events.assign(_seq=np.arange(len(events)))

    def latest(rows: pd.DataFrame, mapping: dict[str, Any]) -> pd.Series:
        return _latest(rows, ["debtor_id"], mapping).set_index("debtor_id")["value"]

    for flag, mapping in STATE_EVENTS.items():
        state[flag] = latest(events, mapping).reindex(state.index).fillna(False).astype(bool)
    opted_out = "|" + master["opted_out"].fillna("") + "|"
    for ch in CHANNELS:
        about = events[events["channel"] == ch]
        by_event = latest(about, OPT_OUT_EVENTS).reindex(state.index).fillna(False)
        state[f"opt_out_{ch}"] = by_event.astype(bool) | opted_out.str.contains(
            f"|{ch}|", regex=False
        )
        given = master.get(f"consent_{ch}", pd.Series(False, index=state.index))
        by_consent = latest(about, CONSENT_EVENTS).reindex(state.index)
        state[f"consent_{ch}"] = by_consent.fillna(given.fillna(False)).astype(bool)
    disputes = events[isin(events["event"], DISPUTE_EVENTS)]
    invoice = disputes["detail"].fillna("").str.extract(r'"invoice_id"\s*:\s*"([^"]+)"')[0]
    disputes = disputes.assign(invoice=invoice.fillna(""))
    last = _latest(disputes, ["debtor_id", "invoice"], DISPUTE_EVENTS)
    pending = last[last["value"] == "pending"]
    on_open = pending[isin(pending["invoice"], open_invoices)]
    whole = isin(
        state["country"].reindex(on_open["debtor_id"]), policy.whole_debtor_dispute_countries
    )
    blocking = set(pending[pending["invoice"] == ""]["debtor_id"])
    blocking |= set(on_open["debtor_id"][whole.to_numpy()])
    resolved = set(last[last["value"] == "resolved"]["debtor_id"])
    ids = state.index.to_series()
    state["dispute"] = np.where(
        isin(ids, blocking).to_numpy(),
        "pending",
        np.where(isin(ids, resolved).to_numpy(), "resolved", "none"),
    )
    return state, _event_windows(events[events["event"] == "inconvenient_time"])


def _event_windows(events: pd.DataFrame) -> pd.DataFrame:
    """Designated inconvenient times from the events' JSON detail (validated at history load)."""
    detail = events["detail"].fillna("")
    days = detail.str.extract(r'"weekdays"\s*:\s*\[([0-9,\s]*)\]')[0].fillna("0,1,2,3,4,5,6")
    mask = sum(days.str.contains(str(d), regex=False).astype("int64") * (1 << d) for d in range(7))
    start = detail.str.extract(r'"start"\s*:\s*"(\d\d):(\d\d)"').astype(float)
    end = detail.str.extract(r'"end"\s*:\s*"(\d\d):(\d\d)"').astype(float)
    frame = pd.DataFrame(
        {
            "debtor_id": events["debtor_id"].to_numpy(),
            "weekdays": mask.to_numpy(),
            "start": (start[0] * 60 + start[1]).to_numpy(),
            "end": (end[0] * 60 + end[1]).to_numpy(),
        }
    ).dropna()
    return frame.astype({"weekdays": "int64", "start": "int64", "end": "int64"})


def batch_from_plan(
    plan: pd.DataFrame,
    state: pd.DataFrame,
    windows: pd.DataFrame,
    history: pd.DataFrame,
    at: pd.Timestamp,
    third_party: bool,
) -> Batch:
    """The day's planned contacts (one row each, as planning wrote them) as a Batch; a debtor the
    ledger does not know gets the safe defaults of C2 (no consent) and UTC."""
    joined = state.reindex(plan["debtor_id"].to_numpy())
    contacts = pd.DataFrame(
        {
            "person": plan["debtor_id"].to_numpy(),
            "at": pd.DatetimeIndex(np.full(len(plan), at.value), tz="UTC"),
            "channel": plan["channel"].to_numpy(),
            "consumer": (joined["kind"].fillna("consumer") != "commercial").to_numpy(),
            "third_party": np.full(len(plan), third_party),
            "country": joined["country"].fillna("").to_numpy(),
            "state": joined["region"].fillna("").to_numpy(),
            "city": joined["city"].fillna("").to_numpy(),
            "dispute": joined["dispute"].fillna("none").to_numpy(),
        }
    )
    for column in (*FLAG_COLUMNS, *(f"{k}_{c}" for k in ("opt_out", "consent") for c in CHANNELS)):
        contacts[column] = joined[column].fillna(False).astype(bool).to_numpy()
    zones = (
        pd.DataFrame({"row": np.arange(len(plan)), "tz": joined["timezones"].fillna("UTC")})
        .assign(tz=lambda f: f["tz"].str.split("|"))
        .explode("tz")
    )
    zones["order"] = zones.groupby("row").cumcount()
    zones = zones[isin(zones["tz"], _zones())].reset_index(drop=True)
    windows = (
        pd.DataFrame({"row": np.arange(len(plan)), "debtor_id": plan["debtor_id"].to_numpy()})
        .merge(windows, on="debtor_id")
        .drop(columns="debtor_id")
    )
    return Batch(
        contacts=contacts,
        zones=zones[["row", "order", "tz"]],
        windows=windows,
        history=history.rename(columns={"debtor_id": "person"}),
    )


def decide(
    engine: sa.Engine,
    cfg: Config,
    as_of: date,
    contacts: pd.DataFrame,
    at: pd.Timestamp,
    *,
    in_batch: bool,
) -> tuple[pd.DataFrame, str, pd.DataFrame]:
    """``contacts`` (debtor_id, channel) against the ledger's state as of ``as_of``, at instant
    ``at``: the gate's decision frame (see ``evaluate``), the snapshot ids it read and the
    debtors' designated inconvenient windows (the call queue needs them).

    The daily gate decides the whole plan at the wave's planned time (``in_batch``: the day's
    contacts count against each other); the waves stage asks again right before sending, at the
    real clock, so an opt-out that arrived since or a late run is caught.
    """
    with engine.connect() as conn:
        debtors, events, history, open_ids, snapshot_ids = _ledger_inputs(conn, as_of)
    state, windows = compliance_state(debtors, events, cfg.compliance, open_ids)
    third_party = cfg.portfolio.collector == "third_party"
    batch = batch_from_plan(contacts, state, windows, history, at, third_party)
    return evaluate(batch, cfg.compliance, in_batch=in_batch), snapshot_ids, windows


def debtor_state(engine: sa.Engine, cfg: Config, as_of: date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The state the gate decides on (see ``compliance_state``), for the other stages that must
    respect it too: placement reads the same flags before an account leaves for an agency."""
    with engine.connect() as conn:
        debtors, events, _, open_ids, _ = _ledger_inputs(conn, as_of)
    return compliance_state(debtors, events, cfg.compliance, open_ids)


def comply_to_lake(cfg: Config, as_of: date, root: Any, engine: sa.Engine, plan_key: str) -> dict:
    """Decide every planned contact of the day; decisions go to the lake (for the waves stage)
    and to the ledger (the audit record), replacing an earlier run's for the same date."""
    plan = lake.read_parquet(root / plan_key)
    policy = cfg.compliance
    local = datetime.combine(as_of, time.fromisoformat(policy.send_time))
    at = pd.Timestamp(local, tz=cfg.schedule.timezone).tz_convert("UTC")
    decided, snapshot_ids, _ = decide(engine, cfg, as_of, plan, at, in_batch=True)
    status = np.where(
        decided["allowed"],
        "allowed",
        np.where(decided["next_allowed_at"].notna(), "scheduled", "blocked"),
    )
    send_at = decided["next_allowed_at"].where(~decided["allowed"], at)
    version = policy_version(policy)
    decisions = pd.DataFrame(
        {
            "contact_key": plan["contact_key"].to_numpy(),
            "as_of": as_of,
            "debtor_id": plan["debtor_id"].to_numpy(),
            "channel": plan["channel"].to_numpy(),
            "status": status,
            "reasons": decided["reasons"].to_numpy(),
            "send_at": send_at.to_numpy(),
            "rules_version": version,
            "snapshot_ids": snapshot_ids,
            "decided_at": clock.now().floor("s"),
        }
    )
    key = lake.partition("decisions", as_of) + "/decisions.parquet"
    lake.write_parquet(root / key, pd.concat([decisions, decided[list(REASONS)]], axis=1))
    with engine.begin() as conn:
        _record_decisions(conn, as_of, decisions[list(DECISION_COLUMNS)])
    blocked = status == "blocked"
    suppressed = {
        code: int((decided[code].to_numpy() & blocked).sum())
        for code in REASONS
        if (decided[code].to_numpy() & blocked).any()
    }
    return {
        "decisions": key,
        "rules_version": version,
        "contacts_allowed": int((status == "allowed").sum()),
        "contacts_scheduled": int((status == "scheduled").sum()),
        "contacts_blocked": int(blocked.sum()),
        "contacts_suppressed": suppressed,
    }


def _record_decisions(conn: sa.Connection, as_of: date, decisions: pd.DataFrame) -> None:
    """The day's decisions into the ledger without losing one a message was sent under: those
    stay, superseded by a new version when the re-run decided again; the rest are replaced."""
    t, m = ContactDecision.__table__, Message.__table__
    acted = sa.select(m.c.contact_key).where(m.c.as_of == as_of)
    conn.execute(t.delete().where(t.c.as_of == as_of, t.c.contact_key.not_in(acted)))
    kept = pd.read_sql(
        sa.select(t.c.contact_key, sa.func.max(t.c.version).label("version"))
        .where(t.c.as_of == as_of)
        .group_by(t.c.contact_key),
        conn,
    )
    again = isin(decisions["contact_key"], kept["contact_key"])
    if again.any():
        superseded = decisions.loc[again, "contact_key"].tolist()
        conn.execute(
            t.update()
            .where(t.c.contact_key.in_(superseded), t.c.superseded_at.is_(None))
            .values(superseded_at=clock.utcnow())
        )
    version = decisions["contact_key"].map(kept.set_index("contact_key")["version"])
    bulk_insert(conn, t, decisions.assign(version=(version.fillna(0) + 1).astype("int64")))


def _ledger_inputs(
    conn: sa.Connection, as_of: date
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.Series, str]:
    """What the gate reads: debtors, events effective by ``as_of``, the last eight days of
    attempts (the longest window is seven local days; a day more covers every zone), the
    invoices open today of debtors who ever disputed one, and the ids of today's snapshots."""
    d, ev, ca, inv, snap = (
        t.__table__.c for t in (Debtor, ComplianceEvent, ContactAttempt, InvoiceSnapshot, Snapshot)
    )
    debtors = pd.read_sql(
        sa.select(
            d.debtor_id, d.kind, d.country, d.region, d.city, d.timezones, d.employer_email,
            d.consent_email, d.consent_sms, d.opted_out,
        ),
        conn,
    )  # fmt: skip
    events = pd.read_sql(
        sa.select(ev.debtor_id, ev.event, ev.channel, ev.effective_date, ev.detail)
        .where(ev.effective_date <= as_of)
        .order_by(ev.id),
        conn,
    )
    start = pd.Timestamp(as_of - timedelta(days=8), tz="UTC").to_pydatetime()
    end = pd.Timestamp(as_of + timedelta(days=1), tz="UTC").to_pydatetime()
    history = pd.read_sql(
        sa.select(ca.debtor_id, ca.at, ca.channel, ca.connected, ca.conversation).where(
            ca.at >= start, ca.at < end
        ),
        conn,
    )
    history["at"] = pd.to_datetime(history["at"], utc=True)
    # Our own waves count too (calls only once an agent makes them: the AR history brings those),
    # and what the channels told us (bounces, unsubscribes, STOP) is part of the state.
    ours = sent_contacts(conn, start, end, channels=("email", "sms", "letter"))
    if len(ours):
        ours = ours.assign(connected=True, conversation=False)[list(history.columns)]
        history = pd.concat([history, ours], ignore_index=True)
    feedback = channel_opt_outs(conn, as_of)
    if len(feedback):
        events = pd.concat([events, feedback[list(events.columns)]], ignore_index=True)
    disputing = sa.select(ev.debtor_id).where(
        ev.event == "dispute_opened", ev.effective_date <= as_of
    )
    open_ids = pd.read_sql(
        sa.select(inv.invoice_id).where(inv.as_of == as_of, inv.debtor_id.in_(disputing)), conn
    )["invoice_id"]
    ids = conn.execute(sa.select(snap.id).where(snap.as_of == as_of).order_by(snap.id)).scalars()
    return debtors, events, history, open_ids, ",".join(str(i) for i in ids)
