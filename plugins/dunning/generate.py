"""Synthetic accounts-receivable portfolio for the demo, the tests and the benchmark.

Why synthetic: real AR data is personal data.  Why this much realism: the pipeline's hard parts (an
ERP export with a title block and subtotal rows, exact decimals through SQL, time zones, consent and
opt-outs, remittance text that only sometimes names the invoice) are only exercised by data that has
them.  Every debtor carries a hidden payment behaviour that drives its invoice, payment and reminder
history, so segmentation and prediction can be measured against ``truth/behaviour.csv``.

The model is vectorised with numpy and the text is built with pyarrow compute, so 200,000 debtors
take seconds.  Everything is derived from ``seed`` through named random streams and nothing reads the
clock: the same seed and arguments give byte-identical files.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import cache
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
import yaml
from faker import Faker

from dunning import clock, feedgen

# Measured: seeds 0-4 x 20,000 debtors x as_of 2025-03-31 and 2024-11-15 gave 4.33-4.48.
# A benchmark wanting about N open invoices asks for N / MEAN_OPEN_INVOICES_PER_DEBTOR debtors.
MEAN_OPEN_INVOICES_PER_DEBTOR: Final = 4.43

COMPANY_NAME: Final = "Harbor & Pine Services Inc."
HISTORY_DAYS: Final = 365
NEVER: Final = 10**6  # a day number after any real date: "did not happen (yet)"
BEHAVIOURS: Final = ("on_time", "forgetful", "chronically_late", "partial", "never_pays")
KINDS: Final = ("consumer", "commercial")
COMMERCIAL_SHARE: Final = 0.38
# Commercial debtors are a little more often chronically late (payment runs, approval chains) and
# more rarely simply never pay; the blend is about 40/25/18/10/7.
BEHAVIOUR_MIX: Final = {
    "consumer": (0.41, 0.27, 0.15, 0.10, 0.07),
    "commercial": (0.39, 0.22, 0.23, 0.10, 0.06),
}
ON_TIME, FORGETFUL, LATE, PARTIAL, NEVER_PAYS = range(5)
ERP_COUNTRIES: Final = ("US", "GB")  # billed from the US entity's ERP
SQL_COUNTRIES: Final = ("FR", "AE", "SA")  # billed from the international AR system
EVENTS: Final = (
    "consent",
    "opt_out",
    "inconvenient_time",
    "dispute_opened",
    "dispute_resolved",
    "cease_communication",
    "attorney_represented",
    "bankruptcy",
    "deceased",
    "breathing_space_start",
    "breathing_space_end",
)
_EPOCH: Final = date(1970, 1, 1)
# Units of each currency per US dollar, so commercial amounts are comparable across countries.
_FX: Final = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79, "AED": 3.6725, "SAR": 3.75, "CAD": 1.36}
_SYMBOL: Final = {"USD": "$", "CAD": "$", "EUR": "€", "GBP": "£", "AED": "AED ", "SAR": "SAR "}
_NY, _CHI, _DEN, _LA, _PHX = (
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "America/Phoenix",
)

# The generated portfolio's business clock: its runs are dated in New York, so "today" for a
# demo or a test is New York's date (from 19:00 or 20:00 New York, UTC is a day ahead).
SCHEDULE_ZONE = "America/New_York"


def business_today() -> date:
    """Today's business date for the generated portfolio's schedule, by the product clock."""
    return clock.today(SCHEDULE_ZONE)


@dataclass(frozen=True)
class _Country:
    code: str
    weight: float
    locale: str
    currency: str
    calling_code: str
    weekmask: str  # business days, for np.busday_offset
    run_weekday: int  # weekly dunning run, Monday = 0
    consumer_terms: int  # days from bill to due date
    bill_median: float  # consumer monthly bill, major units
    mobile_bases: tuple[str, ...]  # national prefixes of mobile ranges; () = use the area codes
    nsn_len: int  # digits of a national significant number (AE landlines are one shorter)
    postal_random_digits: int
    email_domains: tuple[tuple[str, float], ...]
    company_tld: str
    consumer_methods: tuple[tuple[str, float], ...]
    commercial_methods: tuple[tuple[str, float], ...]
    faker_locale: str | None  # None: hand-written Arabic name pools
    second_zone: tuple[str, ...]  # where people with two time zones also live


@dataclass(frozen=True)
class _Place:
    country: str
    region: str
    city: str
    weight: float
    tz: str
    postal: tuple[str, ...]  # postcode prefixes (US zip3, GB outward code, FR full code, ...)
    land_bases: tuple[str, ...]  # national prefixes of the area's landlines


_COUNTRIES: Final = (
    _Country(
        "US", 0.50, "en", "USD", "1", "Mon Tue Wed Thu Fri", 1, 21, 85.0, (), 10, 2,
        (("gmail.com", 40), ("yahoo.com", 15), ("outlook.com", 12), ("icloud.com", 10),
         ("aol.com", 5), ("comcast.net", 5), ("hotmail.com", 8)),
        "com",
        (("ach", 0.40), ("card", 0.42), ("check", 0.18)),
        (("ach", 0.55), ("check", 0.25), ("wire", 0.20)),
        "en_US", (_NY, _CHI, _DEN, _LA),
    ),
    _Country(
        "GB", 0.20, "en", "GBP", "44", "Mon Tue Wed Thu Fri", 1, 14, 65.0,
        ("74", "75", "77", "78", "79"), 10, 0,
        (("gmail.com", 35), ("hotmail.co.uk", 20), ("btinternet.com", 12), ("yahoo.co.uk", 12),
         ("outlook.com", 10), ("sky.com", 6)),
        "co.uk",
        (("direct_debit", 0.45), ("card", 0.30), ("faster_payments", 0.25)),
        (("bacs", 0.60), ("faster_payments", 0.40)),
        "en_GB", ("Europe/Dublin", "Europe/Paris"),
    ),
    _Country(
        "FR", 0.12, "fr", "EUR", "33", "Mon Tue Wed Thu Fri", 2, 15, 70.0, ("6", "7"), 9, 0,
        (("gmail.com", 35), ("orange.fr", 20), ("free.fr", 12), ("laposte.net", 10),
         ("sfr.fr", 8), ("hotmail.fr", 15)),
        "fr",
        (("sepa_direct_debit", 0.45), ("card", 0.35), ("sepa_transfer", 0.15), ("cheque", 0.05)),
        (("sepa_transfer", 0.85), ("cheque", 0.15)),
        "fr_FR", ("Europe/London", "Europe/Brussels"),
    ),
    _Country(
        "AE", 0.10, "ar", "AED", "971", "Mon Tue Wed Thu Fri", 0, 30, 320.0,
        ("50", "52", "54", "55", "56", "58"), 9, 0,
        (("gmail.com", 45), ("hotmail.com", 25), ("outlook.com", 15), ("yahoo.com", 15)),
        "ae",
        (("card", 0.55), ("bank_transfer", 0.35), ("cash", 0.10)),
        (("bank_transfer", 0.85), ("cheque", 0.15)),
        None, ("Asia/Riyadh", "Europe/London"),
    ),
    _Country(
        "SA", 0.08, "ar", "SAR", "966", "Sun Mon Tue Wed Thu", 6, 30, 310.0,
        ("50", "53", "54", "55", "56", "57", "58", "59"), 9, 3,
        (("gmail.com", 45), ("hotmail.com", 30), ("outlook.sa", 10), ("yahoo.com", 15)),
        "com.sa",
        (("card", 0.50), ("sadad", 0.35), ("bank_transfer", 0.15)),
        (("bank_transfer", 0.90), ("sadad", 0.10)),
        None, ("Asia/Dubai", "Asia/Bahrain"),
    ),
)  # fmt: skip
_COUNTRY_CODES: Final = tuple(c.code for c in _COUNTRIES)
_RUN_DAY: Final = np.array([c.run_weekday for c in _COUNTRIES])
_CONSUMER_TERMS: Final = np.array([c.consumer_terms for c in _COUNTRIES])

_PLACES: Final = (
    _Place("US", "NY", "New York", 12, _NY, ("100", "101", "102", "104", "112", "113", "114"),
           ("212", "646", "718", "917", "347", "929")),
    _Place("US", "NY", "Buffalo", 1.5, _NY, ("142",), ("716",)),
    _Place("US", "NY", "Rochester", 1, _NY, ("146",), ("585",)),
    _Place("US", "NY", "Albany", 1, _NY, ("122",), ("518",)),
    _Place("US", "MA", "Boston", 5, _NY, ("021", "022"), ("617", "857")),
    _Place("US", "MA", "Worcester", 1.2, _NY, ("016",), ("508", "774")),
    _Place("US", "MA", "Springfield", 0.8, _NY, ("011",), ("413",)),
    _Place("US", "CA", "Los Angeles", 9, _LA, ("900", "902", "913"),
           ("213", "310", "323", "424", "818")),
    _Place("US", "CA", "San Francisco", 4, _LA, ("941",), ("415", "628")),
    _Place("US", "CA", "San Diego", 3.5, _LA, ("921",), ("619", "858")),
    _Place("US", "CA", "San Jose", 2.5, _LA, ("951",), ("408", "669")),
    _Place("US", "CA", "Sacramento", 1.5, _LA, ("958",), ("916",)),
    _Place("US", "WA", "Seattle", 4, _LA, ("981",), ("206",)),
    _Place("US", "WA", "Spokane", 1, _LA, ("992",), ("509",)),
    _Place("US", "WA", "Tacoma", 1, _LA, ("984",), ("253",)),
    _Place("US", "TX", "Houston", 6, _CHI, ("770",), ("713", "281", "832")),
    _Place("US", "TX", "Dallas", 5, _CHI, ("752",), ("214", "469", "972")),
    _Place("US", "TX", "Austin", 3, _CHI, ("787",), ("512", "737")),
    _Place("US", "TX", "San Antonio", 3, _CHI, ("782",), ("210",)),
    _Place("US", "TX", "El Paso", 1.2, _DEN, ("799",), ("915",)),
    _Place("US", "IL", "Chicago", 6, _CHI, ("606",), ("312", "773", "872")),
    _Place("US", "FL", "Miami", 4, _NY, ("331",), ("305", "786")),
    _Place("US", "FL", "Orlando", 2, _NY, ("328",), ("407",)),
    _Place("US", "FL", "Tampa", 2, _NY, ("336",), ("813",)),
    _Place("US", "CO", "Denver", 3, _DEN, ("802",), ("303", "720")),
    _Place("US", "AZ", "Phoenix", 3, _PHX, ("850",), ("602", "480")),
    _Place("US", "GA", "Atlanta", 3.5, _NY, ("303",), ("404", "678", "470")),
    _Place("US", "PA", "Philadelphia", 3, _NY, ("191",), ("215", "267")),
    _Place("US", "PA", "Pittsburgh", 1.5, _NY, ("152",), ("412",)),
    _Place("GB", "England", "London", 12, "Europe/London",
           ("SW1A", "SW11", "SE1", "E1", "E14", "N1", "NW1", "W1D", "W12", "EC1A"),
           ("203", "207", "208")),
    _Place("GB", "England", "Manchester", 3, "Europe/London", ("M1", "M14", "M20"), ("161",)),
    _Place("GB", "England", "Birmingham", 3, "Europe/London", ("B1", "B15", "B29"), ("121",)),
    _Place("GB", "England", "Leeds", 2, "Europe/London", ("LS1", "LS6"), ("113",)),
    _Place("GB", "England", "Bristol", 1.5, "Europe/London", ("BS1", "BS8"), ("117",)),
    _Place("GB", "England", "Liverpool", 1.5, "Europe/London", ("L1", "L17"), ("151",)),
    _Place("GB", "Scotland", "Glasgow", 2, "Europe/London", ("G1", "G12"), ("141",)),
    _Place("GB", "Scotland", "Edinburgh", 1.5, "Europe/London", ("EH1", "EH3"), ("131",)),
    _Place("GB", "Wales", "Cardiff", 1.5, "Europe/London", ("CF10", "CF24"), ("292",)),
    _Place("GB", "Northern Ireland", "Belfast", 1, "Europe/London", ("BT1", "BT9"), ("289",)),
    _Place("FR", "Île-de-France", "Paris", 10, "Europe/Paris",
           tuple(f"750{i:02d}" for i in range(1, 21)), ("14", "15", "18")),
    _Place("FR", "Auvergne-Rhône-Alpes", "Lyon", 3, "Europe/Paris",
           tuple(f"6900{i}" for i in range(1, 10)), ("47",)),
    _Place("FR", "Provence-Alpes-Côte d'Azur", "Marseille", 3, "Europe/Paris",
           tuple(f"130{i:02d}" for i in range(1, 17)), ("49",)),
    _Place("FR", "Provence-Alpes-Côte d'Azur", "Nice", 1.5, "Europe/Paris",
           ("06000", "06100", "06200", "06300"), ("49",)),
    _Place("FR", "Occitanie", "Toulouse", 2, "Europe/Paris",
           ("31000", "31100", "31200", "31300", "31400", "31500"), ("56",)),
    _Place("FR", "Nouvelle-Aquitaine", "Bordeaux", 1.5, "Europe/Paris",
           ("33000", "33100", "33200", "33300", "33800"), ("55",)),
    _Place("FR", "Hauts-de-France", "Lille", 1.5, "Europe/Paris",
           ("59000", "59160", "59260", "59800"), ("32",)),
    _Place("FR", "Pays de la Loire", "Nantes", 1.5, "Europe/Paris",
           ("44000", "44100", "44200", "44300"), ("24",)),
    _Place("FR", "Grand Est", "Strasbourg", 1, "Europe/Paris", ("67000", "67100", "67200"),
           ("38",)),
    _Place("AE", "Dubai", "Dubai", 6, "Asia/Dubai", ("",), ("4",)),
    _Place("AE", "Abu Dhabi", "Abu Dhabi", 3, "Asia/Dubai", ("",), ("2",)),
    _Place("AE", "Sharjah", "Sharjah", 2, "Asia/Dubai", ("",), ("6",)),
    _Place("SA", "Riyadh", "Riyadh", 6, "Asia/Riyadh", ("11", "12"), ("11",)),
    _Place("SA", "Makkah", "Jeddah", 4, "Asia/Riyadh", ("21", "23"), ("12",)),
    _Place("SA", "Makkah", "Mecca", 1.5, "Asia/Riyadh", ("24",), ("12",)),
    _Place("SA", "Eastern Province", "Dammam", 2, "Asia/Riyadh", ("32", "34"), ("13",)),
    _Place("SA", "Madinah", "Medina", 1.5, "Asia/Riyadh", ("42",), ("14",)),
)  # fmt: skip

_ZONES: Final = tuple(sorted({p.tz for p in _PLACES}))

# Arabic-script names with the transliteration used for e-mail addresses and Latin display.
_AR_MALE: Final = (
    ("محمد", "Mohammed"), ("أحمد", "Ahmed"), ("عبدالله", "Abdullah"), ("خالد", "Khalid"),
    ("عمر", "Omar"), ("علي", "Ali"), ("سعيد", "Saeed"), ("سلطان", "Sultan"), ("فيصل", "Faisal"),
    ("حمد", "Hamad"), ("راشد", "Rashid"), ("يوسف", "Yousef"), ("إبراهيم", "Ibrahim"),
    ("حسن", "Hassan"), ("ماجد", "Majid"), ("ناصر", "Nasser"), ("سعود", "Saud"), ("تركي", "Turki"),
    ("فهد", "Fahad"), ("منصور", "Mansour"), ("عبدالرحمن", "Abdulrahman"), ("طارق", "Tariq"),
)  # fmt: skip
_AR_FEMALE: Final = (
    ("فاطمة", "Fatima"), ("عائشة", "Aisha"), ("مريم", "Mariam"), ("نورة", "Noura"), ("سارة", "Sara"),
    ("هدى", "Huda"), ("ليلى", "Layla"), ("ريم", "Reem"), ("حصة", "Hessa"), ("أمل", "Amal"),
    ("لطيفة", "Latifa"), ("مها", "Maha"), ("شيخة", "Shaikha"), ("سلمى", "Salma"), ("لمى", "Lama"),
    ("دانة", "Dana"),
)  # fmt: skip
_AR_FAMILY: Final = {
    "AE": (
        ("المنصوري", "Al Mansoori"), ("النعيمي", "Al Nuaimi"), ("المزروعي", "Al Mazrouei"),
        ("الكتبي", "Al Ketbi"), ("الشامسي", "Al Shamsi"), ("السويدي", "Al Suwaidi"),
        ("الفلاسي", "Al Falasi"), ("الحمادي", "Al Hammadi"), ("المرزوقي", "Al Marzooqi"),
        ("الظاهري", "Al Dhaheri"), ("الكعبي", "Al Kaabi"), ("الهاشمي", "Al Hashimi"),
    ),
    "SA": (
        ("القحطاني", "Al-Qahtani"), ("العتيبي", "Al-Otaibi"), ("الغامدي", "Al-Ghamdi"),
        ("الزهراني", "Al-Zahrani"), ("الحربي", "Al-Harbi"), ("الشهري", "Al-Shehri"),
        ("الدوسري", "Al-Dosari"), ("المطيري", "Al-Mutairi"), ("العنزي", "Al-Anazi"),
        ("الشمري", "Al-Shammari"), ("السبيعي", "Al-Subaie"), ("المالكي", "Al-Malki"),
    ),
}  # fmt: skip
_AR_ACTIVITY: Final = (
    ("للتجارة", "Trading"), ("للمقاولات", "Contracting"), ("للخدمات الفنية", "Technical Services"),
    ("للتقنية", "Technology"), ("للخدمات اللوجستية", "Logistics"), ("العقارية", "Real Estate"),
)  # fmt: skip
_AR_FORM: Final = {
    "AE": (("شركة", "LLC"), ("مؤسسة", "Est.")),
    "SA": (("شركة", "Co."), ("مؤسسة", "Est.")),
}
_GULF_WORDS: Final = (
    "Gulf Horizon", "Desert Rose", "Falcon", "Pearl Coast", "Oasis", "Golden Sands", "Crescent",
    "Palm", "Red Sea", "Najd", "Arabian Star", "Dune",
)  # fmt: skip
_INDUSTRIES: Final = {
    "en": ("Logistics", "Dental Group", "Plumbing", "Construction", "Consulting", "Landscaping",
           "Auto Repair", "Bakery", "Realty", "Medical Supply", "Printing", "Electric",
           "HVAC Services", "Software", "Catering", "Freight", "Roofing", "Veterinary Clinic"),
    "fr": ("Boulangerie", "Garage", "Cabinet", "Transports", "Menuiserie", "Imprimerie",
           "Pharmacie", "Plomberie", "Conseil", "Traiteur", "Électricité", "Bâtiment"),
}  # fmt: skip
_SUFFIX: Final = {
    "US": ("LLC", "Inc.", "Co.", "Corp.", "Group"),
    "GB": ("Ltd", "Ltd", "PLC", "& Sons Ltd", "LLP"),
    "FR": ("SARL", "SAS", "S.A.", "et Fils", "Frères"),
}
# Real-world names that start with a spreadsheet formula character: exports must survive them.
_HAZARD_COMPANIES: Final = ("@Properties LLC", "+Plus Staffing Inc.", "=Equals Bookkeeping LLC")
_APOSTROPHE_NAMES: Final = ("O'Brien", "O'Connor", "O'Neill", "D'Angelo", "O'Sullivan")
_CONTACT_LOCALS: Final = ("accounts", "ap", "accounts.payable", "finance", "billing", "invoices")
_MEMO_PHRASES: Final = (
    "Maintenance Q3", "Repairs, unit 4B", "Consulting hours", "Freight, per contract",
    "Annual licence", "Parts and labour", "Site visit",
)  # fmt: skip
_CREDIT_PHRASES: Final = ("Pricing adjustment", "Returned goods, RMA", "Goodwill credit")
_INCONVENIENT: Final = (
    {"weekdays": [0, 1, 2, 3, 4], "start": "09:00", "end": "17:00"},
    {"weekdays": [0, 1, 2, 3, 4], "start": "08:00", "end": "18:00"},
    {"weekdays": [0, 1, 2, 3, 4, 5, 6], "start": "12:00", "end": "14:00"},
    {"weekdays": [5, 6], "start": "08:00", "end": "12:00"},
)
_METHOD_PREFIX: Final = {
    "ach": "ACH CREDIT", "card": "CARD PAYMENT", "check": "CHECK", "wire": "WIRE TRF",
    "direct_debit": "DD", "faster_payments": "FP", "bacs": "BACS", "sepa_transfer": "VIR SEPA",
    "sepa_direct_debit": "PRLV SEPA", "cheque": "CHQ", "bank_transfer": "TRF", "cash": "CASH",
    "sadad": "SADAD",
}  # fmt: skip
_METHODS: Final = tuple(_METHOD_PREFIX)
_WITH_NUMBER: Final = ("check", "cheque")  # the cheque number precedes the remittance text
_MISSING_REFS: Final = ("PAYMENT", "THANK YOU", "", "REMITTANCE", "INVOICE PAYMENT")
# Reminder stages the previous process ran: (days after due, template, channel preference).
# Channel preference: "digital" = email then sms then letter, "sms" = sms then email then letter.
_STAGES: Final = (
    (7, "reminder_1", "digital"),
    (21, "reminder_2", "sms"),
    (35, "final_notice", "letter"),
    (45, "call_1", "call"),
    (60, "call_2", "call"),
    (90, "pre_legal_notice", "letter"),
)
_CHANNELS: Final = ("email", "sms", "letter", "call")
_OUTCOMES: Final = {
    "email": (("delivered", 0.62), ("opened", 0.28), ("clicked", 0.10)),
    "sms": (("delivered", 0.95), ("failed", 0.05)),
    "letter": (("sent", 0.97), ("returned", 0.03)),
}
_CALL_OUTCOMES: Final = (
    "no_answer", "voicemail", "busy", "promise_to_pay", "refused_to_pay", "callback_requested",
    "wrong_party",
)  # fmt: skip
_CALL_P: Final = {
    "payer": (0.36, 0.22, 0.05, 0.20, 0.04, 0.08, 0.05),
    "never_pays": (0.50, 0.28, 0.05, 0.04, 0.07, 0.02, 0.04),
}


# ---------------------------------------------------------------- small vectorised helpers


def _rng(seed: int, stream: str) -> np.random.Generator:
    """One independent stream per concern, so changing one part does not reshuffle the rest."""
    return np.random.default_rng(np.random.SeedSequence([zlib.crc32(stream.encode()), seed]))


def _day(d: date) -> int:
    return (d - _EPOCH).days


def _weekday(days: np.ndarray) -> np.ndarray:
    return (days + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0


def _uniform_int(rng: np.random.Generator, lo: np.ndarray | int, hi: np.ndarray | int, n: int):
    """Integers in [lo, hi] inclusive, with per-row bounds; empty ranges collapse to lo."""
    lo = np.asarray(lo, dtype=np.int64)
    span = np.maximum(np.asarray(hi, dtype=np.int64) - lo + 1, 1)
    return lo + (rng.random(n) * span).astype(np.int64)


def _pick(rng: np.random.Generator, weights, n: int) -> np.ndarray:
    p = np.asarray(weights, dtype=float)
    return rng.choice(len(p), size=n, p=p / p.sum())


def _take(values: pa.Array, idx: np.ndarray) -> pa.Array:
    return values.take(pa.array(idx))


def _cat(*parts) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _str(values: np.ndarray | pa.Array) -> pa.Array:
    if isinstance(values, pa.Array):
        return values
    if values.dtype.kind in "iub":
        return pc.cast(pa.array(values), pa.string())
    out = pa.array(values, type=pa.string())
    # Large inputs come back chunked; the CSV writer needs one contiguous buffer.
    return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out


def _zpad(values: np.ndarray, width: int) -> pa.Array:
    return pc.utf8_lpad(_str(values), width, "0")


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """Zero-padded digits as an object array, for debtor-level string arithmetic."""
    return _zpad(values, width).to_numpy(zero_copy_only=False).astype(object)


def _bool(values: np.ndarray) -> pa.Array:
    return _take(pa.array(["false", "true"]), np.asarray(values, dtype=np.int8))


def _dates(days: np.ndarray, fmt: str = "%Y-%m-%d") -> pa.Array:
    """Format day numbers through a lookup table: only a few thousand distinct days exist."""
    days = np.asarray(days, dtype=np.int64)
    real = days < NEVER
    if not real.any():
        return pa.array([""] * len(days), type=pa.string())
    lo, hi = int(days[real].min()), int(days[real].max())
    labels = [(_EPOCH + timedelta(days=lo + i)).strftime(fmt) for i in range(hi - lo + 1)]
    table = pa.array([*labels, ""], type=pa.string())
    return table.take(pa.array(np.where(real, days - lo, hi - lo + 1)))


@cache
def _clock() -> pa.Array:
    sec = np.arange(86400)
    return _cat(_zpad(sec // 3600, 2), ":", _zpad(sec // 60 % 60, 2), ":", _zpad(sec % 60, 2))


def _timestamps(seconds: np.ndarray) -> pa.Array:
    """UTC epoch seconds as ISO 8601 with Z."""
    return _cat(_dates(seconds // 86400), "T", _clock().take(pa.array(seconds % 86400)), "Z")


def _money(minor: np.ndarray) -> pa.Array:
    """Minor units as an exact decimal string, e.g. -1234.50: never through a float."""
    a = np.abs(minor)
    sign = pa.array(np.where(minor < 0, "-", ""), type=pa.string())
    return _cat(sign, _str(a // 100), ".", _zpad(a % 100, 2))


def _grouped(major: np.ndarray) -> pa.Array:
    """Integers with thousands separators (1,234,567), built a three-digit group at a time."""
    top = sum((major >= 1000**k).astype(np.int64) for k in range(1, 5))
    pieces = []
    for k in range(4, -1, -1):
        group = major // 1000**k % 1000
        piece = pc.if_else(pa.array(top > k), _zpad(group, 3), _str(group))
        piece = pc.if_else(pa.array(top >= k), piece, "")
        if k:
            piece = pc.if_else(pa.array(top >= k), _cat(piece, ","), piece)
        pieces.append(piece)
    return _cat(*pieces)


def _money_erp(minor: np.ndarray, symbol: pa.Array) -> pa.Array:
    """ERP display: symbol, thousands separators, negatives in parentheses: ($1,250.00)."""
    a = np.abs(minor)
    neg = minor < 0
    left = pa.array(np.where(neg, "(", ""), type=pa.string())
    right = pa.array(np.where(neg, ")", ""), type=pa.string())
    return _cat(left, symbol, _grouped(a // 100), ".", _zpad(a % 100, 2), right)


def _lookup(values: np.ndarray, mapping: dict, dtype=object) -> np.ndarray:
    """Map a column through a small dict, one vectorised pass per distinct key."""
    out = np.empty(len(values), dtype=dtype)
    for key, value in mapping.items():
        out[values == key] = value
    return out


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in ascii_text.lower() if ch.isalnum())


def _order(*keys: np.ndarray) -> np.ndarray:
    """Row order by keys[0], then keys[1], ...: one int64 sort, 4x faster than np.lexsort."""
    n = len(keys[0])
    combined = np.zeros(n, dtype=np.int64)
    bits = 0
    for key in keys:
        key = np.asarray(key, dtype=np.int64)
        lo = int(key.min()) if n else 0
        span = (int(key.max()) - lo + 1) if n else 1
        bits += span.bit_length()
        if bits > 62:
            return np.lexsort([np.asarray(k) for k in reversed(keys)])
        combined = combined * span + (key - lo)
    return np.argsort(combined, kind="stable")


_NOT_IN_DOMAINS: Final = frozenset(
    ("and", "et", "de", "la", "le", "the", "of", "sons", "fils", "freres", "ltd", "llc", "llp",
     "inc", "co", "corp", "plc", "sarl", "sas", "sa", "group")
)  # fmt: skip


def _domain_slug(company: str) -> str:
    """The two distinctive words of a company name, as its web domain would spell them."""
    words = [w for w in (_slug(x) for x in company.split()) if w and w not in _NOT_IN_DOMAINS]
    return "".join(words[:2])[:24] or "company"


def _group_starts(keys: list[np.ndarray]) -> np.ndarray:
    """Boolean 'first row of a run' for rows already sorted by ``keys``."""
    n = len(keys[0])
    first = np.zeros(n, dtype=bool)
    if n:
        first[0] = True
        for k in keys:
            first[1:] |= k[1:] != k[:-1]
    return first


# ---------------------------------------------------------------- CSV writing


_NEEDS_QUOTES: Final = r'[,"\r\n]'


def _quote(col: pa.Array) -> pa.Array:
    """csv.QUOTE_MINIMAL for a whole column at once.

    Most columns never contain a special character; a memchr scan of the raw buffer proves that
    far faster than a per-value regex.
    """
    raw = bytes(_bytes(col))
    if not any(ch in raw for ch in (b",", b'"', b"\r", b"\n")):
        return col
    needs = pc.match_substring_regex(col, _NEEDS_QUOTES)
    if not pc.any(needs).as_py():
        return col
    return pc.if_else(needs, _cat('"', pc.replace_substring(col, '"', '""'), '"'), col)


def _csv_line(cells: list[str], eol: str) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator=eol).writerow(cells)
    return buf.getvalue()


def _write_csv(
    path: Path,
    columns: dict[str, pa.Array],
    *,
    bom: bool = False,
    crlf: bool = False,
    preamble: str = "",
    chunk: int = 250_000,
) -> int:
    """Write string columns as CSV with csv-module quoting, much faster than a csv.writer loop.

    Each chunk becomes one arrow string array of complete lines whose data buffer is exactly the
    bytes of the file, so nothing is converted to Python objects.
    """
    eol = "\r\n" if crlf else "\n"
    cols = [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in columns.values()]
    n = len(cols[0]) if cols else 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        head = preamble + _csv_line(list(columns), eol)
        fh.write(("\ufeff" if bom else "").encode() + head.encode("utf-8"))
        for start in range(0, n, chunk):
            part = [_quote(c.slice(start, chunk)) for c in cols]
            part[-1] = _cat(part[-1], eol)
            lines = pc.binary_join_element_wise(*part, ",") if len(part) > 1 else part[0]
            fh.write(_bytes(lines))
    return n


def _bytes(lines: pa.Array) -> memoryview:
    """The concatenated UTF-8 of a string array, straight from its data buffer."""
    if not len(lines):
        return memoryview(b"")
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)
    lo, hi = offsets[lines.offset], offsets[lines.offset + len(lines)]
    return memoryview(lines.buffers()[2])[lo:hi]


# ---------------------------------------------------------------- pools


@cache
def _patterns(region: str) -> tuple[str, str]:
    """libphonenumber's own national-number patterns for (mobile, fixed line) of a region."""
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
    return meta.mobile.national_number_pattern, meta.fixed_line.national_number_pattern


@cache
def _phone_prefixes(region: str, bases: tuple[str, ...], length: int, mobile: bool) -> np.ndarray:
    """National prefixes that leave six free digits, all valid per libphonenumber's metadata.

    Candidates are expanded from the area/range codes and probed with every first free digit
    against the region's pattern (not just any +44 region: Jersey and the Isle of Man share
    +44 7...), so a metadata update drops a retired range instead of producing invalid numbers.
    """
    pattern = re.compile(_patterns(region)[0 if mobile else 1])
    probes = [f"{first}{rest}" for first in range(10) for rest in ("00000", "47391", "99999")]
    out = []
    for base in bases:
        free = length - 6 - len(base)
        for tail in range(10**free):
            prefix = base + (f"{tail:0{free}d}" if free else "")
            if all(pattern.fullmatch(prefix + probe) for probe in probes):
                out.append(prefix)
    if not out:
        raise ValueError(f"no valid phone range for {region} {bases}")
    return np.array(out, dtype=object)


def _valid_national(region: str, nsn: np.ndarray, mobile: np.ndarray) -> np.ndarray:
    """Check every generated number against the metadata patterns, vectorised with RE2."""
    ok = np.zeros(len(nsn), dtype=bool)
    for flag, pattern in zip((True, False), _patterns(region), strict=True):
        idx = np.flatnonzero(mobile == flag)
        if len(idx):
            hit = pc.match_substring_regex(_str(nsn[idx]), f"^(?:{pattern})$")
            ok[idx] = hit.to_numpy(zero_copy_only=False)
    return ok


@dataclass(frozen=True)
class _Pool:
    """Names of one country: display text plus an ASCII slug for e-mail addresses."""

    first: np.ndarray
    first_slug: np.ndarray
    first_initial: np.ndarray
    first_alt: np.ndarray  # Latin form of Arabic-script names (same as first otherwise)
    last: np.ndarray
    last_slug: np.ndarray
    last_alt: np.ndarray
    company: np.ndarray
    company_alt: np.ndarray
    company_slug: np.ndarray


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _latin_pool(country: _Country, seed: int) -> _Pool:
    """Faker is slow per row, so it only fills a few hundred names that numpy then combines."""
    fake = Faker(country.faker_locale)
    fake.seed_instance(seed)
    first = _unique([fake.first_name() for _ in range(500)])[:300]
    last = _unique([fake.last_name() for _ in range(700)])[:300]
    if country.locale == "en":
        last = [*last, *_APOSTROPHE_NAMES]
    rng = _rng(seed, f"companies-{country.code}")
    industries = _INDUSTRIES[country.locale]
    suffixes = _SUFFIX[country.code]
    companies = _unique([fake.company() for _ in range(200)])
    for _ in range(400):
        a, b, c = (last[i] for i in rng.integers(0, len(last), 3))
        ind = industries[rng.integers(len(industries))]
        suf = suffixes[rng.integers(len(suffixes))]
        style = rng.integers(4)
        if country.locale == "fr":
            name = (f"{ind} {a}", f"{a} {suf}", f"{a} & {b}", f"{ind} {a} {suf}")[style]
        else:
            name = (f"{a} {ind} {suf}", f"{a}, {b} & {c} {suf}", f"{a} & {b}", f"{a} {ind}")[style]
        companies.append(name)
    companies = _unique(companies)
    arr = np.array
    return _Pool(
        first=arr(first, dtype=object),
        first_slug=arr([_slug(x) for x in first], dtype=object),
        first_initial=arr([_slug(x)[:1] for x in first], dtype=object),
        first_alt=arr(first, dtype=object),
        last=arr(last, dtype=object),
        last_slug=arr([_slug(x) for x in last], dtype=object),
        last_alt=arr(last, dtype=object),
        company=arr(companies, dtype=object),
        company_alt=arr(companies, dtype=object),
        company_slug=arr([_domain_slug(x) for x in companies], dtype=object),
    )


def _arabic_pool(country: _Country) -> _Pool:
    """Hand-written Arabic names: Faker has no transliterations, and e-mails need Latin letters."""
    family = _AR_FAMILY[country.code]
    given = (*_AR_MALE, *_AR_FEMALE)
    companies, latin, slugs = [], [], []
    for fam_ar, fam_lat in family:
        for act_ar, act_lat in _AR_ACTIVITY:
            for form_ar, form_lat in _AR_FORM[country.code]:
                companies.append(f"{form_ar} {fam_ar} {act_ar}")
                latin.append(f"{fam_lat} {act_lat} {form_lat}")
                slugs.append(_slug(fam_lat) + _slug(act_lat)[:6])
    for word in _GULF_WORDS:
        for _, act_lat in _AR_ACTIVITY:
            name = f"{word} {act_lat} {'LLC' if country.code == 'AE' else 'Co.'}"
            companies.append(name)
            latin.append(name)
            slugs.append(_slug(word) + _slug(act_lat)[:6])
    arr = np.array
    return _Pool(
        first=arr([g[0] for g in given], dtype=object),
        first_slug=arr([_slug(g[1]) for g in given], dtype=object),
        first_initial=arr([_slug(g[1])[:1] for g in given], dtype=object),
        first_alt=arr([g[1] for g in given], dtype=object),
        last=arr([f[0] for f in family], dtype=object),
        last_slug=arr([_slug(f[1].removeprefix("Al").lstrip(" -")) for f in family], dtype=object),
        last_alt=arr([f[1] for f in family], dtype=object),
        company=arr(companies, dtype=object),
        company_alt=arr(latin, dtype=object),
        company_slug=arr(slugs, dtype=object),
    )


# ---------------------------------------------------------------- debtors


@dataclass
class _Debtors:
    """Debtor attributes as parallel arrays (row i = debtor D{i+1:07d}), visible and hidden."""

    n: int
    country: np.ndarray  # index into _COUNTRIES
    place: np.ndarray  # index into _PLACES
    commercial: np.ndarray
    behaviour: np.ndarray
    currency: np.ndarray  # object
    since: np.ndarray  # day number
    zone: np.ndarray  # index into _ZONES of the first time zone
    columns: dict[str, pa.Array]  # customers.csv
    currency_text: pa.Array
    symbol_text: pa.Array  # ERP currency symbol
    consent_email: np.ndarray
    consent_sms: np.ndarray
    email_ok: np.ndarray  # the previous process could e-mail them (consented, not at work)
    sms_ok: np.ndarray
    call_ok: np.ndarray
    opt_out_day: dict[str, np.ndarray]  # channel -> day the opt-out took effect (NEVER: none)
    bounces: np.ndarray
    terms: np.ndarray  # commercial payment terms, days
    base_minor: np.ndarray  # typical invoice amount
    rate: np.ndarray  # commercial invoices per month
    run_weekday: np.ndarray  # commercial payment run (-1: pays any day)
    method: np.ndarray  # preferred payment method, index into _METHODS


def _make_debtors(n: int, as_of: int, seed: int) -> _Debtors:
    """Who the debtors are: place, names, contact data and consent, and how they pay."""
    rng = _rng(seed, "debtors")
    country = _pick(rng, [c.weight for c in _COUNTRIES], n)
    place = np.zeros(n, dtype=np.int64)
    for ci, c in enumerate(_COUNTRIES):
        mask = country == ci
        ids = [i for i, p in enumerate(_PLACES) if p.country == c.code]
        place[mask] = np.asarray(ids)[_pick(rng, [_PLACES[i].weight for i in ids], mask.sum())]
    commercial = rng.random(n) < COMMERCIAL_SHARE
    behaviour = np.where(
        commercial,
        _pick(rng, BEHAVIOUR_MIX["commercial"], n),
        _pick(rng, BEHAVIOUR_MIX["consumer"], n),
    )
    code = np.array(_COUNTRY_CODES, dtype=object)[country]
    currency = np.array([c.currency for c in _COUNTRIES], dtype=object)[country]
    foreign = rng.random(n)  # a few US companies are billed in EUR or CAD
    currency = np.where(commercial & (code == "US") & (foreign < 0.04), "EUR", currency)
    currency = np.where(commercial & (code == "US") & (foreign > 0.97), "CAD", currency)

    # Customers since: mostly years, some joined inside the history window.
    recent = rng.random(n) < 0.15
    since = as_of - np.where(
        recent, _uniform_int(rng, 40, HISTORY_DAYS, n), _uniform_int(rng, 366, 5500, n)
    )

    name = np.empty(n, dtype=object)
    email_local = np.empty(n, dtype=object)
    email_domain = np.empty(n, dtype=object)
    phone = np.empty(n, dtype=object)
    postal = np.empty(n, dtype=object)
    employer = np.zeros(n, dtype=bool)
    fmt = _pick(rng, [30, 15, 12, 10, 18, 15], n)  # e-mail local-part style
    digits2 = _uniform_int(rng, 1, 99, n).astype(str).astype(object)
    year = _uniform_int(rng, 1955, 2003, n).astype(str).astype(object)
    for ci, c in enumerate(_COUNTRIES):
        idx = np.flatnonzero(country == ci)
        m = len(idx)
        if not m:
            continue
        pool = _latin_pool(c, seed) if c.faker_locale else _arabic_pool(c)
        com = commercial[idx]
        fi = rng.integers(0, len(pool.first), m)
        la = rng.integers(0, len(pool.last), m)
        co = rng.integers(0, len(pool.company), m)
        if c.faker_locale:
            person = pool.first[fi] + " " + pool.last[la]
            company = pool.company[co]
            if c.code == "US":
                hazard = rng.random(m) < 0.004
                company = np.where(
                    hazard, np.array(_HAZARD_COMPANIES, dtype=object)[co % 3], company
                )
        else:  # Arabic script for some, the Latin transliteration for the others
            script = rng.random(m) < 0.4
            person = np.where(
                script,
                pool.first[fi] + " " + pool.last[la],
                pool.first_alt[fi] + " " + pool.last_alt[la],
            )
            company = np.where(rng.random(m) < 0.4, pool.company[co], pool.company_alt[co])
        name[idx] = np.where(com, company, person)

        f, la_slug = pool.first_slug[fi], pool.last_slug[la]
        styles = np.array(
            [f + "." + la_slug, f + la_slug, pool.first_initial[fi] + la_slug,
             f + "_" + la_slug, f + "." + la_slug + digits2[idx], f + year[idx]],
            dtype=object,
        )  # fmt: skip
        local = styles[fmt[idx], np.arange(m)]
        domains = np.array([d for d, _ in c.email_domains], dtype=object)
        domain = domains[_pick(rng, [w for _, w in c.email_domains], m)]
        company_domain = pool.company_slug[co] + "." + c.company_tld
        work = (~com) & (rng.random(m) < 0.03)  # a consumer who gave a work address
        other_co = pool.company_slug[rng.integers(0, len(pool.company), m)] + "." + c.company_tld
        locals_ = np.array(_CONTACT_LOCALS, dtype=object)[rng.integers(0, 6, m)]
        email_local[idx] = np.where(com, np.where(rng.random(m) < 0.8, locals_, f + "." + la_slug),
                                    np.where(work, f + "." + la_slug, local))  # fmt: skip
        email_domain[idx] = np.where(com, company_domain, np.where(work, other_co, domain))
        employer[idx] = work

        # Phones: mobile ranges for most consumers, the area's landlines for most businesses.
        mobile = rng.random(m) < np.where(com, 0.35, 0.9)
        nsn = np.empty(m, dtype=object)
        for pi, p in enumerate(_PLACES):
            if p.country != c.code:
                continue
            here = place[idx] == pi
            land_len = c.nsn_len - (1 if c.code == "AE" else 0)
            land = _phone_prefixes(c.code, p.land_bases, land_len, False)
            mob = (
                _phone_prefixes(c.code, c.mobile_bases, c.nsn_len, True) if c.mobile_bases else land
            )
            nsn[here & mobile] = mob[rng.integers(0, len(mob), (here & mobile).sum())]
            nsn[here & ~mobile] = land[rng.integers(0, len(land), (here & ~mobile).sum())]
            codes = np.array(p.postal, dtype=object)[rng.integers(0, len(p.postal), here.sum())]
            if c.code == "GB":
                letters = np.array(list("ABDEFGHJLNPQRSTUWXYZ"), dtype=object)
                inward = (
                    rng.integers(0, 10, here.sum()).astype(str).astype(object)
                    + letters[rng.integers(0, 20, here.sum())]
                    + letters[rng.integers(0, 20, here.sum())]
                )
                codes = codes + " " + inward
            elif c.postal_random_digits:
                k = c.postal_random_digits
                tail = rng.integers(0, 10**k, here.sum())
                codes = codes + _digits(tail, k)
            postal[idx[here]] = codes
        # Every prefix was probed; this re-draws the rare subscriber number that still misses.
        full = nsn + _digits(rng.integers(0, 10**6, m), 6)
        for _ in range(20):
            bad = np.flatnonzero(~_valid_national(c.code, full, mobile))
            if not len(bad):
                break
            full[bad] = nsn[bad] + _digits(rng.integers(0, 10**6, len(bad)), 6)
        else:
            raise ValueError(f"cannot draw valid {c.code} phone numbers, e.g. {full[bad[:3]]}")
        phone[idx] = "+" + c.calling_code + full
        _check_phones(phone[idx], c.code, rng)

    has_email = rng.random(n) >= 0.04
    has_phone = rng.random(n) >= 0.02
    email = np.where(has_email, email_local + "@" + email_domain, "")
    phone = np.where(has_phone, phone, "")
    employer &= has_email

    tz = np.array([p.tz for p in _PLACES], dtype=object)[place]
    two = rng.random(n) < 0.02
    second = np.empty(n, dtype=object)
    for ci, c in enumerate(_COUNTRIES):
        idx = np.flatnonzero(country == ci)
        second[idx] = np.array(c.second_zone, dtype=object)[
            rng.integers(0, len(c.second_zone), len(idx))
        ]
    # A US debtor who moved gets a second US zone; choosing from four keeps it distinct.
    second = np.where(second == tz, np.where(tz == _NY, _LA, _NY), second)
    timezones = np.where(two, tz + "|" + second, tz)

    consent_email = has_email & (rng.random(n) < 0.9)
    consent_sms = has_phone & (rng.random(n) < 0.62)
    u = rng.random(n)
    opt = {
        "sms": (u < 0.03) | ((u >= 0.045) & (u < 0.05)),
        "email": (u >= 0.03) & (u < 0.05),
        "call": (u >= 0.05) & (u < 0.055),
    }
    opted = np.select(
        [opt["sms"] & opt["email"], opt["sms"], opt["email"], opt["call"]],
        ["email|sms", "sms", "email", "call"],
        "",
    ).astype(object)
    window = np.maximum(since, as_of - HISTORY_DAYS)
    opt_day = _uniform_int(rng, window, as_of - 1, n)
    opt_out_day = {ch: np.where(hit, opt_day, NEVER) for ch, hit in opt.items()}

    # Amount model: consumers pay a similar bill monthly, businesses vary widely by size.
    fx = _lookup(currency, _FX, float)
    bill = np.array([c.bill_median for c in _COUNTRIES])[country] * rng.lognormal(0, 0.45, n)
    size = 2500 * fx * rng.lognormal(0, 0.9, n)
    base_minor = np.round(np.where(commercial, size, bill) * 100).astype(np.int64)
    terms = np.array([30, 60, 45, 15])[_pick(rng, [55, 25, 10, 10], n)]
    rate = np.clip(rng.lognormal(np.log(3.0), 0.6, n), 0.5, 12)
    run = np.where(commercial & (rng.random(n) < 0.7), rng.integers(0, 5, n), -1)
    method = np.zeros(n, dtype=np.int64)
    for ci, c in enumerate(_COUNTRIES):
        for is_com, table in ((False, c.consumer_methods), (True, c.commercial_methods)):
            mask = (country == ci) & (commercial == is_com)
            chosen = _pick(rng, [w for _, w in table], mask.sum())
            method[mask] = np.array([_METHODS.index(m) for m, _ in table])[chosen]

    locale = np.array([c.locale for c in _COUNTRIES], dtype=object)[country]
    columns = {
        "debtor_id": _cat("D", _zpad(np.arange(1, n + 1), max(7, len(str(n))))),
        "name": _str(name),
        "kind": _str(np.where(commercial, "commercial", "consumer")),
        "country": _str(code),
        "region": _str(np.array([p.region for p in _PLACES], dtype=object)[place]),
        "city": _str(np.array([p.city for p in _PLACES], dtype=object)[place]),
        "postal_code": _str(postal),
        "timezones": _str(timezones),
        "locale": _str(locale),
        "email": _str(email),
        "phone": _str(phone),
        "employer_email": _bool(employer),
        "consent_email": _bool(consent_email),
        "consent_sms": _bool(consent_sms),
        "opted_out": _str(opted),
        "customer_since": _dates(since),
    }
    return _Debtors(
        n=n,
        country=country,
        place=place,
        commercial=commercial,
        behaviour=behaviour,
        currency=currency,
        since=since,
        zone=np.array([_ZONES.index(p.tz) for p in _PLACES])[place],
        columns=columns,
        currency_text=_str(currency),
        symbol_text=_str(_lookup(currency, _SYMBOL)),
        consent_email=consent_email,
        consent_sms=consent_sms,
        email_ok=consent_email & ~employer & has_email,
        sms_ok=consent_sms & has_phone,
        call_ok=has_phone,
        opt_out_day=opt_out_day | {"letter": np.full(n, NEVER)},
        bounces=has_email & (rng.random(n) < 0.03),
        terms=np.where(commercial, terms, 0),
        base_minor=base_minor,
        rate=rate,
        run_weekday=run,
        method=method,
    )


def _check_phones(phone: np.ndarray, region: str, rng: np.random.Generator) -> None:
    """The library itself on a sample: guards the pattern shortcut above."""
    sample = phone[rng.integers(0, len(phone), min(len(phone), 100))]
    bad = [
        p
        for p in sample
        if not phonenumbers.is_valid_number_for_region(phonenumbers.parse(p), region)
    ]
    if bad:
        raise ValueError(f"generated invalid phone numbers, e.g. {bad[:3]}")


# ---------------------------------------------------------------- compliance cases


@dataclass
class _Cases:
    cease: np.ndarray  # day the case starts, NEVER if none
    bankrupt: np.ndarray
    deceased: np.ndarray
    attorney: np.ndarray
    bs_start: np.ndarray
    bs_end: np.ndarray
    inconvenient: np.ndarray
    inconvenient_kind: np.ndarray


def _make_cases(d: _Debtors, as_of: int, seed: int) -> _Cases:
    """Rare legal states; bankruptcy and death cluster among debtors who stopped paying."""
    rng = _rng(seed, "cases")
    n = d.n
    risk = np.select([d.behaviour == NEVER_PAYS, d.behaviour == LATE], [4.0, 2.0], 1.0)
    window = np.maximum(d.since + 30, as_of - 240)

    def pick(share: float, weight: np.ndarray | float = 1.0) -> np.ndarray:
        hit = rng.random(n) < share * weight
        return np.where(hit, _uniform_int(rng, window, as_of - 1, n), NEVER)

    gb_consumer = (np.array(_COUNTRY_CODES)[d.country] == "GB") & ~d.commercial
    bs_start = np.where(
        gb_consumer & (rng.random(n) < 0.02),
        _uniform_int(rng, np.maximum(as_of - 150, d.since + 30), as_of - 1, n),
        NEVER,
    )
    bs_end = np.where((bs_start < NEVER) & (bs_start + 60 < as_of), bs_start + 60, NEVER)
    return _Cases(
        cease=pick(0.006),
        bankrupt=pick(0.002, risk),
        deceased=pick(0.0015, np.where(d.commercial, 0.0, risk)),
        attorney=pick(0.005),
        bs_start=bs_start,
        bs_end=bs_end,
        inconvenient=np.where(
            rng.random(n) < 0.015, _uniform_int(rng, d.since, as_of - 1, n), NEVER
        ),
        inconvenient_kind=rng.integers(0, len(_INCONVENIENT), n),
    )


# ---------------------------------------------------------------- text builders


def _by_case(case: np.ndarray, builders) -> pa.Array:
    """Build text per row where each row needs one of several formats.

    Building every format for every row and choosing costs one pass per format over all rows;
    this builds each format only for its rows (``builder(indices)``) and puts them back in order.
    """
    case = np.asarray(case, dtype=np.int64)
    order = np.argsort(case, kind="stable")
    counts = np.bincount(case, minlength=len(builders))
    parts, pos = [], 0
    for k, build in enumerate(builders):
        idx = order[pos : pos + counts[k]]
        pos += counts[k]
        if len(idx):
            part = build(idx)
            parts.append(pa.repeat(part, len(idx)) if isinstance(part, str) else part)
    if not parts:
        return pa.array([], type=pa.string())
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return pa.concat_arrays([x.cast(pa.string()) for x in parts]).take(pa.array(inverse))


# ---------------------------------------------------------------- invoices and payments


@dataclass
class _Docs:
    """All invoices and credit notes, sorted by issue date; amounts in minor units."""

    debtor: np.ndarray
    credit: np.ndarray  # True for credit notes
    issue: np.ndarray
    due: np.ndarray
    amount: np.ndarray
    open: np.ndarray
    closed: np.ndarray  # day fully settled, NEVER while open at as_of
    disputed: np.ndarray
    memo_kind: np.ndarray  # which memo text (see _memo)
    memo_num: np.ndarray  # its number: PO, phrase index or the credited invoice
    ids: pa.Array
    width: int  # digits in document numbers
    invoice_row: np.ndarray  # invoice number -> row, so remittance text can reuse ``ids``


@dataclass
class _Settlement:
    """What happened to each invoice (in issue order, before credit notes are interleaved)."""

    debtor: np.ndarray
    due: np.ndarray
    settled: np.ndarray  # day it was fully settled (may be after as_of), NEVER if not
    blocked_from: np.ndarray  # day a still-pending dispute was opened: no reminders after it
    payments: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # debtor, number, day, minor
    disputes: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # debtor, number, day, event


def _issue_dates(d: _Debtors, as_of: int, rng: np.random.Generator):
    """Consumers get a monthly bill on their billing day; businesses a few invoices a month."""
    start = np.maximum(d.since, as_of - HISTORY_DAYS)
    cons = np.flatnonzero(~d.commercial)
    billing_day = rng.integers(0, 28, d.n)
    month0 = start.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
    di = np.repeat(cons, 13)
    k = np.tile(np.arange(13), len(cons))
    issue = (month0[di] + k).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    issue += billing_day[di]
    keep = (issue >= start[di]) & (issue <= as_of)
    di_c, issue_c = di[keep], issue[keep]
    del di, k, issue, keep

    com = np.flatnonzero(d.commercial)
    months = (as_of - start[com] + 1) / 30.44
    count = np.maximum(rng.poisson(d.rate[com] * months), 1)
    di_m = np.repeat(com, count)
    issue_m = _uniform_int(rng, start[di_m], as_of, len(di_m))
    for ci, c in enumerate(_COUNTRIES):  # businesses invoice on business days
        mask = d.country[di_m] == ci
        days = issue_m[mask].astype("datetime64[D]")
        rolled = np.busday_offset(days, 0, roll="backward", weekmask=c.weekmask)
        issue_m[mask] = rolled.astype(np.int64)
    issue_m = np.maximum(issue_m, start[di_m])
    di_all = np.concatenate([di_c, di_m])
    issue_all = np.concatenate([issue_c, issue_m])
    order = _order(issue_all, di_all)
    return di_all[order], issue_all[order]


def _stage_day(due: np.ndarray, offset: int, run: np.ndarray) -> np.ndarray:
    """The previous process sent letters and e-mails on its weekly run day after due + offset."""
    day = due + offset
    return day + (run - _weekday(day)) % 7


def _amounts(d: _Debtors, di: np.ndarray, issue: np.ndarray, rng: np.random.Generator):
    """Bills vary a little month to month; business invoices vary a lot and are often round."""
    n = len(di)
    com = d.commercial[di]
    scale = np.where(com, rng.lognormal(0, 0.6, n), rng.lognormal(0, 0.12, n))
    amount = np.maximum(np.round(d.base_minor[di] * scale), 500).astype(np.int64)
    del scale
    round_units = com & (rng.random(n) < 0.3)
    amount = np.where(round_units, np.maximum(amount // 10000, 1) * 10000, amount)
    cap = (750_000 * _lookup(d.currency, _FX, float) * 100).astype(np.int64)
    amount = np.minimum(amount, cap[di])
    due = issue + np.where(com, d.terms[di], _CONSUMER_TERMS[d.country[di]])
    return amount, due


def _payment_plan(d, cases, di, issue, due, need, floor, as_of, rng):
    """Up to two payments per invoice, as the debtor's hidden behaviour dictates.

    on_time pays before the due date; forgetful pays a few days after the first reminder;
    chronically_late 30-90 days late; partial pays part, sometimes the rest weeks later;
    never_pays behaved like a late payer until some months ago and has paid nothing since.
    """
    n = len(di)
    beh = d.behaviour[di]
    p1 = np.full(n, NEVER, dtype=np.int64)
    p2 = np.full(n, NEVER, dtype=np.int64)
    p1_amt = need.copy()
    p2_amt = np.zeros(n, dtype=np.int64)
    stop = as_of - _uniform_int(rng, 120, 300, d.n)
    for b in range(len(BEHAVIOURS)):
        ix = np.flatnonzero(beh == b)
        k = len(ix)
        u = rng.random(k)
        iss, du = issue[ix], due[ix]
        early = iss + np.ceil((du - iss) * rng.uniform(0.35, 1.0, k)).astype(np.int64)
        late = du + np.where(u < 0.1, _uniform_int(rng, 12, 30, k), _uniform_int(rng, 30, 90, k))
        if b == ON_TIME:
            p = np.where(u < 0.06, du + _uniform_int(rng, 1, 6, k), early)
        elif b == FORGETFUL:
            run = _RUN_DAY[d.country[di[ix]]]
            s1 = _stage_day(du, _STAGES[0][0], run)
            s2 = _stage_day(du, _STAGES[1][0], run)
            after = _uniform_int(rng, 1, 5, k)
            p = np.select([u < 0.25, u < 0.85], [early, s1 + after], s2 + after)
        elif b == LATE:
            p = late
        elif b == PARTIAL:
            p = np.where(
                u < 0.3, du + _uniform_int(rng, -3, 10, k), du + _uniform_int(rng, 0, 25, k)
            )
            nd = need[ix]
            split = (u >= 0.3) & (nd >= 2000)
            part = np.clip(np.round(nd * rng.uniform(0.25, 0.75, k), -2), 100, nd - 100)
            part = part.astype(np.int64)
            p1_amt[ix] = np.where(split, part, nd)
            p2_amt[ix] = np.where(split, nd - part, 0)
            # They catch up on the rest a month or two later, only rarely never.
            rest = split & (rng.random(k) < 0.93)
            p2[ix] = np.where(rest, p + _uniform_int(rng, 20, 80, k), NEVER)
        else:
            p = np.where(late < stop[di[ix]], late, NEVER)
        p1[ix] = p

    # Some businesses short-pay by the bank fee of an international transfer.
    fee = d.commercial[di] & (rng.random(n) < 0.015) & (need > 10000) & (p2_amt == 0)
    p1_amt = np.where(fee, need - _uniform_int(rng, 15, 35, n) * 100, p1_amt)

    # Businesses pay in weekly runs: on-time payers in the run before, the others in the next.
    run = d.run_weekday[di]
    ix = np.flatnonzero((run >= 0) & (p1 < NEVER))
    p, r = p1[ix], run[ix]
    back = p - (_weekday(p) - r) % 7
    fwd = p + (r - _weekday(p)) % 7
    p1[ix] = np.where((beh[ix] == ON_TIME) & (back > issue[ix]), back, fwd)
    p1 = np.maximum(p1, floor + 1)
    p2 = np.where(p2 < NEVER, np.maximum(p2, p1 + 7), NEVER)

    # Nobody pays after bankruptcy or death, nor for an invoice credited in full.
    halt = np.minimum(cases.bankrupt, cases.deceased)[di]
    p1[(p1 >= halt) | (need <= 0)] = NEVER
    p2[p2 >= halt] = NEVER
    p1_amt[p1 >= NEVER] = 0
    p2_amt[p2 >= NEVER] = 0
    return p1, p1_amt, p2, p2_amt


def _make_docs(d: _Debtors, cases: _Cases, as_of: int, seed: int) -> tuple[_Docs, _Settlement]:
    """A year of invoices and credit notes, settled as each debtor's behaviour dictates."""
    rng = _rng(seed, "invoices")
    di, issue = _issue_dates(d, as_of, rng)
    n = len(di)
    amount, due = _amounts(d, di, issue, rng)

    # Credit notes: most are applied to their invoice at once, the rest sit as open credit.
    has_credit = (rng.random(n) < 0.025) & (issue <= as_of - 2)
    cn = np.flatnonzero(has_credit)
    frac = np.where(rng.random(len(cn)) < 0.25, 1.0, rng.uniform(0.05, 0.5, len(cn)))
    cn_amount = np.round(amount[cn] * frac).astype(np.int64)
    cn_day = np.minimum(issue[cn] + _uniform_int(rng, 1, 20, len(cn)), as_of)
    cn_applied = rng.random(len(cn)) < 0.7
    need = amount.copy()
    need[cn[cn_applied]] -= cn_amount[cn_applied]
    floor = issue.copy()
    floor[cn] = cn_day  # payments come after the credit note
    credited = np.full(n, NEVER, dtype=np.int64)
    credited[cn[cn_applied]] = cn_day[cn_applied]

    p1, p1_amt, p2, p2_amt = _payment_plan(d, cases, di, issue, due, need, floor, as_of, rng)
    del floor
    open_ = need - np.where(p1 <= as_of, p1_amt, 0) - np.where(p2 <= as_of, p2_amt, 0)
    settled = np.select(
        [need <= 0, p1_amt == need, p1_amt + p2_amt == need], [credited, p1, p2], NEVER
    )
    closed = np.where((open_ == 0) & (settled <= as_of), settled, NEVER)

    # Disputes: a few open invoices are disputed now; a few closed ones were, and got resolved.
    u = rng.random(n)
    pi = np.flatnonzero((open_ > 0) & (issue <= as_of - 10) & (u < 0.025))
    ri = np.flatnonzero((closed < NEVER) & (closed - issue > 20) & (u > 0.99))
    pending_day = _uniform_int(rng, issue[pi] + 5, as_of - 1, len(pi))
    mid = (issue[ri] + closed[ri]) // 2
    opened_day = _uniform_int(rng, issue[ri] + 5, mid, len(ri))
    resolved_day = _uniform_int(rng, mid + 1, closed[ri], len(ri))
    blocked_from = np.full(n, NEVER, dtype=np.int64)
    blocked_from[pi] = pending_day
    disputed = np.zeros(n, dtype=bool)
    disputed[pi] = True

    # Memo: purchase orders for businesses, statement/account notes for consumers.
    com = d.commercial[di]
    v = rng.random(n)
    memo_kind = np.where(
        com,
        np.select([v < 0.55, v < 0.7, v < 0.8], [0, 1, 2], 3),
        np.select([v < 0.45, v < 0.65], [3, 4], 5),
    ).astype(np.int8)
    memo_num = np.select(
        [memo_kind == 0, memo_kind == 1, memo_kind == 2],
        [
            rng.integers(4_500_000_000, 4_600_000_000, n),
            rng.integers(0, 100_000, n),
            rng.integers(0, len(_MEMO_PHRASES), n),
        ],
        0,
    )
    del v, com

    # Interleave the credit notes and number everything in issue order.
    cols = {
        "debtor": (di, di[cn]),
        "credit": (np.zeros(n, dtype=bool), np.ones(len(cn), dtype=bool)),
        "issue": (issue, cn_day),
        "due": (due, cn_day),
        "amount": (amount, -cn_amount),
        "open": (open_, np.where(cn_applied, 0, -cn_amount)),
        "closed": (closed, np.where(cn_applied, cn_day, NEVER)),
        "disputed": (disputed, np.zeros(len(cn), dtype=bool)),
        "memo_kind": (memo_kind, np.where(rng.random(len(cn)) < 0.7, 6, 7).astype(np.int8)),
        "source": (np.arange(n), cn),
    }
    merged = {k: np.concatenate(v) for k, v in cols.items()}
    del cols
    order = _order(merged["issue"], merged["debtor"], merged["source"], merged["credit"])
    merged = {k: v[order] for k, v in merged.items()}
    del order
    credit = merged["credit"]
    number = np.zeros(len(credit), dtype=np.int64)
    number[~credit] = np.arange(1, n + 1)
    number[credit] = np.arange(1, len(cn) + 1)
    width = max(7, len(str(n)))
    inv_number = np.zeros(n, dtype=np.int64)
    inv_number[merged["source"][~credit]] = number[~credit]
    memo_num_all = np.where(
        credit,
        np.where(merged["memo_kind"] == 6, inv_number[merged["source"]], 0),
        memo_num[np.where(credit, 0, merged["source"])],
    )
    memo_num_all = np.where(
        merged["memo_kind"] == 7, merged["source"] % len(_CREDIT_PHRASES), memo_num_all
    )
    ids = _cat(pc.if_else(pa.array(credit), "CRN-", "INV-"), _zpad(number, width))
    del merged["source"]
    invoice_row = np.zeros(n + 1, dtype=np.int64)
    invoice_row[number[~credit]] = np.flatnonzero(~credit)
    docs = _Docs(memo_num=memo_num_all, ids=ids, width=width, invoice_row=invoice_row, **merged)

    paid1 = (p1 <= as_of) & (p1_amt > 0)
    paid2 = (p2 <= as_of) & (p2_amt > 0)
    payments = (
        np.concatenate([di[paid1], di[paid2]]),
        np.concatenate([inv_number[paid1], inv_number[paid2]]),
        np.concatenate([p1[paid1], p2[paid2]]),
        np.concatenate([p1_amt[paid1], p2_amt[paid2]]),
    )
    dispute_event, resolved_event = EVENTS.index("dispute_opened"), EVENTS.index("dispute_resolved")
    disputes = (
        np.concatenate([di[pi], di[ri], di[ri]]),
        np.concatenate([inv_number[pi], inv_number[ri], inv_number[ri]]),
        np.concatenate([pending_day, opened_day, resolved_day]),
        np.concatenate(
            [
                np.full(len(pi), dispute_event),
                np.full(len(ri), dispute_event),
                np.full(len(ri), resolved_event),
            ]
        ),
    )
    return docs, _Settlement(di, due, settled, blocked_from, payments, disputes)


def _memo(d: _Debtors, docs: _Docs, rows: np.ndarray) -> pa.Array:
    """Memo text of the selected documents (only the ERP and SQL outputs carry it)."""
    kind = docs.memo_kind[rows]
    num = docs.memo_num[rows]
    return _by_case(
        kind,
        [
            lambda ix: _cat("PO ", _str(num[ix])),
            lambda ix: _cat("PO-", _zpad(num[ix], 5)),
            lambda ix: _take(pa.array(_MEMO_PHRASES), num[ix]),
            lambda ix: "",
            lambda ix: _cat("Statement ", _dates(docs.issue[rows[ix]], "%b %Y")),
            lambda ix: _cat("Acct ", _take(d.columns["debtor_id"], docs.debtor[rows[ix]])),
            lambda ix: _cat("Credit for INV-", _zpad(num[ix], docs.width)),
            lambda ix: _take(pa.array(_CREDIT_PHRASES), num[ix]),
        ],
    )


def _typo(number: np.ndarray) -> np.ndarray:
    """Swap two adjacent low digits, or bump one when they are equal: a typical keying error."""
    pos = 10 ** (number % 4)
    lo, hi = number // pos % 10, number // (pos * 10) % 10
    swapped = number - lo * pos - hi * pos * 10 + hi * pos + lo * pos * 10
    bumped = number - lo * pos + (lo + 1) % 10 * pos
    return np.where(lo == hi, bumped, swapped)


def _invoice_text(style: int, number: np.ndarray, docs: _Docs) -> pa.Array:
    """How payers write an invoice number in remittance text: 0 INV-0001234, 1 INV0001234,
    2 inv 1234, 3 Invoice 0001234, 4 INV-0001234 with a typo."""
    if style == 2:
        return _cat("inv ", _str(number))
    if style == 4:
        return _cat("INV-", _zpad(_typo(number), docs.width))
    canonical = _take(docs.ids, docs.invoice_row[number])
    if style == 0:
        return canonical
    other = "INV" if style == 1 else "Invoice "
    return pc.replace_substring(canonical, "INV-", other, max_replacements=1)


def _append(text: pa.Array, mask: np.ndarray, more: pa.Array) -> pa.Array:
    """``text + " " + more`` on the rows where mask is true (``more`` has one value per such row)."""
    return _by_case(
        mask.astype(np.int64),
        [lambda j: _take(text, j), lambda j: _cat(_take(text, j), " ", more)],
    )


def _make_payments(d: _Debtors, st: _Settlement, docs: _Docs, seed: int) -> dict[str, pa.Array]:
    """One line per payment; a payment on one day covers every invoice settled that day."""
    rng = _rng(seed, "payments")
    di, number, day, amt = st.payments
    order = _order(di, day, number)
    di, number, day, amt = di[order], number[order], day[order], amt[order]
    starts = np.flatnonzero(_group_starts([di, day]))
    size = np.diff(np.append(starts, len(di)))
    p_di, p_day = di[starts], day[starts]
    total = np.add.reduceat(amt, starts) if len(starts) else amt[:0]
    m = len(starts)
    nums = [
        np.where(size > k, number[np.minimum(starts + k, len(number) - 1)], 0) for k in (0, 1, 2)
    ]

    def listed(style: int):
        def build(ix: np.ndarray) -> pa.Array:
            text = _invoice_text(style, nums[0][ix], docs)
            for extra in nums[1:]:  # a multi-invoice payment lists the others too
                e = extra[ix]
                if (e > 0).any():
                    more = _invoice_text(0 if style == 4 else style, e[e > 0], docs)
                    text = _append(text, e > 0, more)
            return text

        return build

    def missing(ix: np.ndarray) -> pa.Array:
        k = rng.integers(0, 3, len(ix))
        names = d.columns["name"]
        return _by_case(
            k,
            [
                lambda j: _take(
                    pa.array(_MISSING_REFS), rng.integers(0, len(_MISSING_REFS), len(j))
                ),
                lambda j: pc.utf8_slice_codeunits(pc.utf8_upper(_take(names, p_di[ix[j]])), 0, 18),
                lambda j: _cat("ACCT ", _take(d.columns["debtor_id"], p_di[ix[j]])),
            ],
        )

    style = _pick(rng, [55, 10, 7, 8, 5, 15], m)
    body = _by_case(style, [*(listed(s) for s in range(5)), missing])

    method = d.method[p_di].copy()
    other = rng.random(m) >= 0.9  # sometimes they use another method they have
    for ci, c in enumerate(_COUNTRIES):
        for is_com, table in ((False, c.consumer_methods), (True, c.commercial_methods)):
            mask = other & (d.country[p_di] == ci) & (d.commercial[p_di] == is_com)
            options = np.array([_METHODS.index(x) for x, _ in table])
            method[mask] = options[rng.integers(0, len(options), mask.sum())]
    prefixes = pa.array([_METHOD_PREFIX[x] for x in _METHODS])
    cheque = np.isin(method, [_METHODS.index(x) for x in _WITH_NUMBER])
    prefix = _by_case(
        cheque,
        [
            lambda ix: _take(prefixes, method[ix]),
            lambda ix: _cat(
                _take(prefixes, method[ix]), " ", _str(rng.integers(1000, 99999, len(ix)))
            ),
        ],
    )
    reference = pc.if_else(pc.equal(body, ""), prefix, _cat(prefix, " ", body))

    order = _order(p_day, p_di)
    return {
        "payment_id": _cat("P", _zpad(np.arange(1, m + 1), 8)),
        "debtor_id": _take(d.columns["debtor_id"], p_di[order]),
        "paid_on": _dates(p_day[order]),
        "currency": _take(d.currency_text, p_di[order]),
        "amount": _money(total[order]),
        "method": _take(pa.array(_METHODS), method[order]),
        "reference": _take(reference, order),
    }


# ---------------------------------------------------------------- contact history


def _utc_offsets(lo: int, hi: int) -> np.ndarray:
    """Seconds east of UTC at local noon per zone and day: a few thousand zoneinfo calls."""
    out = np.zeros((len(_ZONES), hi - lo + 1), dtype=np.int64)
    for zi, zone in enumerate(_ZONES):
        tz = ZoneInfo(zone)
        for i in range(hi - lo + 1):
            noon = datetime.combine(_EPOCH + timedelta(days=lo + i), time(12))
            out[zi, i] = int(tz.utcoffset(noon).total_seconds())
    return out


def _busday_forward(days: np.ndarray, country: np.ndarray) -> np.ndarray:
    out = days.copy()
    for ci, c in enumerate(_COUNTRIES):
        mask = country == ci
        rolled = np.busday_offset(
            days[mask].astype("datetime64[D]"), 0, roll="forward", weekmask=c.weekmask
        )
        out[mask] = rolled.astype(np.int64)
    return out


def _channel(d: _Debtors, dd: np.ndarray, day: np.ndarray, pref: str) -> np.ndarray:
    """Which channel the previous process used, honouring consent and opt-outs on that day."""

    def ok(channel: str) -> np.ndarray:
        allowed = {"email": d.email_ok, "sms": d.sms_ok, "call": d.call_ok}[channel]
        return allowed[dd] & (day < d.opt_out_day[channel][dd])

    if pref == "digital":
        return np.select([ok("email"), ok("sms")], [0, 1], 2)
    if pref == "sms":
        return np.select([ok("sms"), ok("email")], [1, 0], 2)
    if pref == "letter":
        return np.full(len(dd), 2)
    return np.where(ok("call"), 3, -1)


_OUTCOME_NAMES: Final = (
    "delivered", "opened", "clicked", "bounced", "failed", "sent", "returned", *_CALL_OUTCOMES,
)  # fmt: skip


def _make_contacts(d: _Debtors, cases: _Cases, st: _Settlement, as_of: int, seed: int):
    """Reminders the previous process sent while an invoice stayed unpaid, one per debtor/day."""
    rng = _rng(seed, "contacts")
    first_stage = st.due + _STAGES[0][0]  # no stage comes earlier
    overdue = np.flatnonzero(
        (first_stage < st.settled) & (first_stage < as_of) & (first_stage < st.blocked_from)
    )
    di, due = st.debtor[overdue], st.due[overdue]
    settled, blocked_from = st.settled[overdue], st.blocked_from[overdue]
    run = _RUN_DAY[d.country[di]]
    parts = []
    for si, (offset, _template, pref) in enumerate(_STAGES):
        if pref == "call":
            day = _busday_forward(due + offset, d.country[di])
        else:
            day = _stage_day(due, offset, run)
        idx = np.flatnonzero((day < settled) & (day < as_of) & (day < blocked_from))
        dd, tday = di[idx], day[idx]
        parts.append((dd, tday, _channel(d, dd, tday, pref), np.full(len(idx), si)))
    dd, day, chan, stage = (np.concatenate(p) for p in zip(*parts, strict=True))
    del parts, run

    # Legal states silence everybody; breathing space only while it lasts.
    stop = np.minimum.reduce([cases.cease, cases.bankrupt, cases.deceased, cases.attorney])[dd]
    in_space = (day >= cases.bs_start[dd]) & (day < cases.bs_end[dd])
    keep = np.flatnonzero((chan >= 0) & (day < stop) & ~in_space)
    dd, day, chan, stage = dd[keep], day[keep], chan[keep], stage[keep]
    # Several invoices reaching a stage on the same run day share one contact.
    order = _order(dd, day, stage)
    dd, day, chan, stage = dd[order], day[order], chan[order], stage[order]
    first = _group_starts([dd, day, stage])
    dd, day, chan, stage = dd[first], day[first], chan[first], stage[first]
    m = len(dd)

    # Local time of day: batches in the morning, letters posted in the afternoon, calls all day.
    hour = 3600
    local = np.select(
        [chan <= 1, chan == 2],
        [_uniform_int(rng, 9 * hour, 11 * hour, m), _uniform_int(rng, 14 * hour, 17 * hour, m)],
        _uniform_int(rng, 9 * hour, 19 * hour + 1800, m),
    )
    # Calls avoid a declared inconvenient window once it is known (all windows end by 18:00).
    avoid = (chan == 3) & (day >= cases.inconvenient[dd])
    local[avoid] = _uniform_int(rng, 18 * hour + 300, 19 * hour + 3300, int(avoid.sum()))
    lo, hi = (int(day.min()), int(day.max())) if m else (0, 0)
    at = day * 86400 + local - _utc_offsets(lo, hi)[d.zone[dd], day - lo]

    outcome = np.zeros(m, dtype=np.int64)
    for ci, channel in enumerate(("email", "sms", "letter")):
        mask = chan == ci
        names = [_OUTCOME_NAMES.index(o) for o, _ in _OUTCOMES[channel]]
        outcome[mask] = np.array(names)[_pick(rng, [p for _, p in _OUTCOMES[channel]], mask.sum())]
    outcome[(chan == 0) & d.bounces[dd]] = _OUTCOME_NAMES.index("bounced")
    calls = np.flatnonzero(chan == 3)
    never = d.behaviour[dd[calls]] == NEVER_PAYS
    call = np.where(
        never,
        _pick(rng, _CALL_P["never_pays"], len(calls)),
        _pick(rng, _CALL_P["payer"], len(calls)),
    )
    outcome[calls] = call + _OUTCOME_NAMES.index(_CALL_OUTCOMES[0])
    flags = np.zeros((2, m), dtype=np.int64)  # 0 "", 1 true, 2 false
    flags[0, calls] = np.where(call >= 3, 1, 2)  # connected: someone picked up
    flags[1, calls] = np.where((call >= 3) & (call <= 5), 1, 2)  # conversation with the debtor

    order = _order(at, dd, stage)
    bools = pa.array(["", "true", "false"])
    return {
        "contact_id": _cat("C", _zpad(np.arange(1, m + 1), 9)),
        "debtor_id": _take(d.columns["debtor_id"], dd[order]),
        "at": _timestamps(at[order]),
        "channel": _take(pa.array(_CHANNELS), chan[order]),
        "template": _take(pa.array([t for _, t, _ in _STAGES]), stage[order]),
        "outcome": _take(pa.array(_OUTCOME_NAMES), outcome[order]),
        "connected": _take(bools, flags[0, order]),
        "conversation": _take(bools, flags[1, order]),
    }


# ---------------------------------------------------------------- compliance events


def _make_events(d: _Debtors, cases: _Cases, st: _Settlement, width: int, as_of: int, seed: int):
    """The compliance log: consents, opt-outs, disputes and legal states, oldest first."""
    rng = _rng(seed, "events")
    consent_day = d.since + _uniform_int(rng, 0, 30, d.n)
    rows: list[tuple[np.ndarray, ...]] = []  # debtor, event, channel, day, detail, invoice number

    def add(day: np.ndarray, event: str, channel: str = "", detail=None) -> None:
        idx = np.flatnonzero(day < NEVER)
        k = len(idx)
        rows.append(
            (
                idx,
                np.full(k, EVENTS.index(event)),
                np.full(k, _CHANNELS.index(channel) if channel else -1),
                np.minimum(day[idx], as_of),
                np.full(k, -1) if detail is None else detail[idx],
                np.zeros(k, dtype=np.int64),
            )
        )

    add(np.where(d.consent_email, consent_day, NEVER), "consent", "email")
    add(np.where(d.consent_sms, consent_day, NEVER), "consent", "sms")
    for ch in ("email", "sms", "call"):
        add(d.opt_out_day[ch], "opt_out", ch)
    add(cases.inconvenient, "inconvenient_time", "call", cases.inconvenient_kind)
    add(cases.cease, "cease_communication")
    add(cases.attorney, "attorney_represented")
    add(cases.bankrupt, "bankruptcy")
    add(cases.deceased, "deceased")
    add(cases.bs_start, "breathing_space_start")
    add(cases.bs_end, "breathing_space_end")
    ddi, dnum, dday, devent = st.disputes
    k = len(ddi)
    rows.append((ddi, devent, np.full(k, -1), dday, np.full(k, -1), dnum))

    debtor, event, channel, day, detail, number = (
        np.concatenate(c) for c in zip(*rows, strict=True)
    )
    order = _order(day, debtor, event, number)
    debtor, event, channel, day, detail, number = (
        a[order] for a in (debtor, event, channel, day, detail, number)
    )
    details = pa.array([json.dumps(x, separators=(",", ":")) for x in _INCONVENIENT])
    text = _by_case(
        np.select([number > 0, detail >= 0], [2, 1], 0),
        [
            lambda ix: "",
            lambda ix: _take(details, detail[ix]),
            lambda ix: _cat('{"invoice_id":"INV-', _zpad(number[ix], width), '"}'),
        ],
    )
    channels = _by_case(
        (channel >= 0).astype(np.int64),
        [lambda ix: "", lambda ix: _take(pa.array(_CHANNELS), channel[ix])],
    )
    return {
        "debtor_id": _take(d.columns["debtor_id"], debtor),
        "event": _take(pa.array(EVENTS), event),
        "channel": channels,
        "effective_date": _dates(day),
        "detail": text,
    }


# ---------------------------------------------------------------- outputs


def _write_erp(path: Path, d: _Debtors, docs: _Docs, as_of: date) -> int:
    """The A/R Aging Detail export: title block, rows grouped by customer, subtotals, totals."""
    codes = np.array(_COUNTRY_CODES)[d.country]
    sel = np.flatnonzero((docs.open != 0) & np.isin(codes[docs.debtor], ERP_COUNTRIES))
    table = pa.table(
        {
            "name": _take(d.columns["name"], docs.debtor[sel]),
            "debtor": pa.array(docs.debtor[sel]),
            "row": pa.array(sel),
        }
    )
    keys = [(k, "ascending") for k in ("name", "debtor", "row")]
    sel = sel[pc.sort_indices(table, sort_keys=keys).to_numpy()]
    del table
    di = docs.debtor[sel]
    cur = d.currency[di]
    symbol = _take(d.symbol_text, di)
    first = _group_starts([di])
    starts = np.flatnonzero(first)
    m, g = len(sel), len(starts)
    # Detail row k of group j lands at k + j (one subtotal row after each earlier group).
    positions = np.concatenate(
        [np.arange(m) + np.cumsum(first) - 1, np.append(starts[1:], m) + np.arange(g)]
    )
    placing = pa.array(np.argsort(positions, kind="stable"))
    amount, open_ = docs.amount[sel], docs.open[sel]
    amt_sum = np.add.reduceat(amount, starts) if g else amount[:0]
    open_sum = np.add.reduceat(open_, starts) if g else open_[:0]
    currencies = sorted(set(cur.tolist()))
    grand_amt = np.array([amount[cur == c].sum() for c in currencies], dtype=np.int64)
    grand_open = np.array([open_[cur == c].sum() for c in currencies], dtype=np.int64)
    grand_sym = pa.array([_SYMBOL[c] for c in currencies], type=pa.string())

    def place(detail, total="", grand="") -> pa.Array:
        def full(x, k):
            return pa.repeat(x, k) if isinstance(x, str) else x

        body = pa.concat_arrays([full(detail, m), full(total, g)]).take(placing)
        return pa.concat_arrays([body, full(grand, len(currencies))])

    sym_t = _take(symbol, starts)
    columns = {
        "Customer": place(
            _take(d.columns["name"], di),
            _cat("Total ", _take(d.columns["name"], di[starts])),
            pa.array([f"Grand Total {c}" for c in currencies], type=pa.string()),
        ),
        "Customer ID": place(_take(d.columns["debtor_id"], di)),
        "Type": place(pc.if_else(pa.array(docs.credit[sel]), "Credit Memo", "Invoice")),
        "Date": place(_dates(docs.issue[sel], "%d/%m/%Y")),
        "Num": place(_take(docs.ids, sel)),
        "Due Date": place(_dates(docs.due[sel], "%d/%m/%Y")),
        "Currency": place(_take(d.currency_text, di), "", pa.array(currencies, type=pa.string())),
        "Amount": place(
            _money_erp(amount, symbol), _money_erp(amt_sum, sym_t), _money_erp(grand_amt, grand_sym)
        ),
        "Open Balance": place(
            _money_erp(open_, symbol),
            _money_erp(open_sum, sym_t),
            _money_erp(grand_open, grand_sym),
        ),
        "Memo": place(_memo(d, docs, sel)),
    }
    eol = "\r\n"
    title = [COMPANY_NAME, "A/R Aging Detail", f"As of {as_of:%d/%m/%Y}"]
    preamble = "".join(_csv_line([x], eol) for x in title) + eol
    _write_csv(path, columns, bom=True, crlf=True, preamble=preamble)
    return m


_DDL: Final = (
    "CREATE TABLE ar_invoices ("
    "invoice_no TEXT PRIMARY KEY, customer_id TEXT NOT NULL, doc_type TEXT NOT NULL, "
    "issued_on TEXT, due_on TEXT, currency TEXT, amount {num}, open_balance {num}, "
    "reference TEXT, disputed INTEGER, closed_on TEXT NULL)",
    "CREATE TABLE ar_extract_runs (as_of TEXT)",
)
_SQL_COLUMNS: Final = (
    "invoice_no", "customer_id", "doc_type", "issued_on", "due_on", "currency", "amount",
    "open_balance", "reference", "disputed", "closed_on",
)  # fmt: skip


def _write_sql(url: str, d: _Debtors, docs: _Docs, as_of: date) -> int:
    """The international AR system's tables, replaced wholesale.

    PostgreSQL stores NUMERIC(18,2).  SQLite would turn '1234.50' into the REAL 1234.5 in a
    NUMERIC column (type affinity), so there amounts are exact decimal TEXT; either way
    CAST(amount AS TEXT) gives '1234.50'.
    """
    import sqlalchemy as sa

    codes = np.array(_COUNTRY_CODES)[d.country]
    sel = np.flatnonzero(np.isin(codes[docs.debtor], SQL_COUNTRIES))
    di = docs.debtor[sel]
    cols = [
        _take(docs.ids, sel),
        _take(d.columns["debtor_id"], di),
        pc.if_else(pa.array(docs.credit[sel]), "CRN", "INV"),
        _dates(docs.issue[sel]),
        _dates(docs.due[sel]),
        _take(d.currency_text, di),
        _money(docs.amount[sel]),
        _money(docs.open[sel]),
        _memo(d, docs, sel),
        _str(docs.disputed[sel].astype(np.int64)),
        _dates(docs.closed[sel]),
    ]
    engine = sa.create_engine(url)
    try:
        dialect = engine.dialect.name
        numeric = "TEXT" if dialect == "sqlite" else "NUMERIC(18,2)"
        with engine.begin() as conn:
            for table in ("ar_invoices", "ar_extract_runs"):
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
            for ddl in _DDL:
                conn.exec_driver_sql(ddl.format(num=numeric))
            conn.execute(
                sa.text("INSERT INTO ar_extract_runs (as_of) VALUES (:as_of)"),
                {"as_of": as_of.isoformat()},
            )
        if dialect == "postgresql":
            _copy_postgres(engine, cols)
        else:
            _insert_rows(engine, cols)
    finally:
        engine.dispose()
    return len(sel)


def _insert_rows(engine, cols: list[pa.Array]) -> None:
    import sqlalchemy as sa

    names = _SQL_COLUMNS
    stmt = sa.text(
        f"INSERT INTO ar_invoices ({', '.join(names)}) VALUES ({', '.join(':' + x for x in names)})"
    )
    chunk = 200_000
    with engine.begin() as conn:
        for start in range(0, len(cols[0]), chunk):
            part = [c.slice(start, chunk).to_pylist() for c in cols]
            part[9] = [int(x) for x in part[9]]
            part[10] = [x or None for x in part[10]]  # closed_on: NULL while open
            rows = zip(*part, strict=True)
            if engine.dialect.name == "sqlite":  # the DBAPI directly: 5x faster for 1M rows
                marks = ", ".join("?" * len(names))
                conn.connection.driver_connection.executemany(
                    f"INSERT INTO ar_invoices VALUES ({marks})", rows
                )
            else:
                conn.execute(stmt, [dict(zip(names, row, strict=True)) for row in rows])


def _copy_postgres(engine, cols: list[pa.Array]) -> None:
    """COPY is an order of magnitude faster than INSERT for a million rows."""
    text = [_quote(c) for c in cols[:10]]
    text[8] = pc.if_else(pc.equal(cols[8], ""), '""', text[8])  # '' stays '', not NULL
    text.append(_cat(cols[10], "\n"))  # an unquoted empty closed_on is NULL
    lines = pc.binary_join_element_wise(*text, ",")
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        sql = f"COPY ar_invoices ({', '.join(_SQL_COLUMNS)}) FROM STDIN WITH (FORMAT csv)"
        if hasattr(cur, "copy_expert"):  # psycopg2
            cur.copy_expert(sql, io.BytesIO(_bytes(lines)))
        else:  # psycopg 3
            with cur.copy(sql) as copy:
                copy.write(bytes(_bytes(lines)))
        raw.commit()
    finally:
        raw.close()


# How the ERP "A/R Aging Detail" export is read: the source config that goes with the file shape
# written above (tests build hand-made exports with the same layout).
ERP_LAYOUT: Final = {
    "kind": "file",
    "dataset": "invoices",
    "format": "csv",
    "encoding": "utf-8-sig",
    "columns": {
        "Customer": "customer_name",
        "Customer ID": "debtor_id",
        "Type": "doc_type",
        "Date": "issue_date",
        "Num": "invoice_id",
        "Due Date": "due_date",
        "Currency": "currency",
        "Amount": "amount",
        "Open Balance": "open_amount",
        "Memo": "reference",
    },
    "date_format": "%d/%m/%Y",
    "number": {"decimal": ".", "thousands": ",", "parentheses_negative": True, "strip": "$£€"},
    "header_starts_with": "Customer,Customer ID",
    "as_of_pattern": r"As of (?P<d>\d{2}/\d{2}/\d{4})",
    "total_row_column": "customer_name",
    "grand_total_pattern": r"^Grand Total (?P<cur>[A-Z]{3})$",
}


def _step(name: str, offset: int, channels: list[str], template: str, tone: str) -> dict:
    return {
        "name": name,
        "offset_days": offset,
        "channels": channels,
        "template": template,
        "tone": tone,
    }


# A collections manager's first strategy set: gentle with the forgetful, firm with the chronically
# late, fast with the risky, a phone call for key accounts, nobody chased over a dispute.
DEMO_STRATEGY: Final = {
    "strategies": {
        "gentle": {
            "min_gap_days": 5,
            "steps": [
                _step("nudge", -3, ["email"], "reminder_nudge", "friendly"),
                _step("overdue", 3, ["email"], "reminder_overdue", "friendly"),
                _step("firm", 14, ["email", "sms"], "reminder_firm", "firm"),
                _step("final", 30, ["letter"], "final_notice", "final"),
            ],
        },
        "standard": {
            "min_gap_days": 4,
            "steps": [
                _step("overdue", 1, ["email"], "reminder_overdue", "neutral"),
                _step("firm", 10, ["email", "sms"], "reminder_firm", "firm"),
                _step("call", 20, ["call"], "agent_call", "firm"),
                _step("final", 30, ["letter"], "final_notice", "final"),
            ],
        },
        "intensive": {
            "min_gap_days": 3,
            "steps": [
                _step("overdue", 1, ["email", "sms"], "reminder_overdue", "neutral"),
                _step("call", 7, ["call"], "agent_call", "firm"),
                _step("final", 14, ["letter", "email"], "final_notice", "final"),
            ],
        },
        "key_account": {
            "min_gap_days": 7,
            "steps": [
                _step("call", 5, ["call"], "account_manager_call", "neutral"),
                _step("statement", 15, ["email"], "statement_of_account", "firm"),
                _step("final", 45, ["letter"], "final_notice", "final"),
            ],
        },
    },
    "segments": [
        {
            "name": "disputed",
            "when": {"disputed_minor": {"gt": 0}, "overdue_minor": {"le": 0}},
            "strategy": None,
            "description": "only disputed items open: wait for the dispute",
        },
        {
            "name": "key_account",
            "when": {"kind": {"eq": "commercial"}, "overdue_minor": {"ge": 500_000}},
            "strategy": "key_account",
            "description": "commercial, over 5,000 overdue",
        },
        {
            "name": "high_risk",
            "when": {"risk_score": {"ge": 0.6}},
            "strategy": "intensive",
            "description": "unlikely to pay within 30 days without escalation",
        },
        {"name": "chronically_late", "when": {"avg_days_late": {"ge": 30}}, "strategy": "standard"},
        {
            "name": "forgetful",
            "when": {"share_paid_after_first_reminder": {"ge": 0.5}},
            "strategy": "gentle",
            "description": "usually pays once reminded",
        },
        {"name": "everyone_else", "strategy": "standard"},
    ],
    "experiments": [
        {
            "name": "short_first_reminder",
            "segments": ["forgetful", "everyone_else"],
            "holdout_share": 0.1,
            "arms": [
                {"name": "control"},
                {"name": "short_copy", "templates": {"overdue": "reminder_overdue_short"}},
            ],
        },
    ],
}


def _config(sql_url: str) -> dict:
    from dunning.config import Gates

    customers = (
        "debtor_id", "name", "kind", "country", "region", "city", "postal_code", "timezones",
        "locale", "email", "phone", "employer_email", "consent_email", "consent_sms", "opted_out",
        "customer_since",
    )  # fmt: skip
    return {
        "portfolio": {"name": COMPANY_NAME, "collector": "creditor", "home_currency": "USD"},
        "schedule": {"cron": "0 6 * * *", "timezone": SCHEDULE_ZONE},
        # The collections team hears of a failed or late run (the local SMTP server keeps it).
        "alerts": {"email_to": ["collections-ops@example.com"], "finish_within_minutes": 180},
        # Two debtor shards render the wave, so a second worker has something to do.
        "channels": {"render_shards": 2},
        # Some debtors live in California: the licence number goes on every written message.
        "compliance": {"collects_in_california": True, "california_licence": "10099-99"},
        "sources": [
            {"name": "erp_us", "path": "ar_aging_detail.csv", **ERP_LAYOUT},
            {
                "name": "ar_db",
                "kind": "sql",
                "dataset": "invoices",
                "url": sql_url,
                "query": "ar_open_invoices.sql",
                "control_query": "ar_control_totals.sql",
                "freshness_query": "ar_freshness.sql",
            },
            {
                "name": "customers",
                "kind": "file",
                "dataset": "debtors",
                "path": "customers.csv",
                "format": "csv",
                "encoding": "utf-8",
                "columns": {c: c for c in customers},
                "date_format": "%Y-%m-%d",
            },
        ],
        "gates": Gates().model_dump(),
        "aging": {"buckets": [0, 30, 60, 90, 120]},
        "history": {
            "invoices": "invoice_history.csv",
            "payments": "payments.csv",
            "contacts": "contact_history.csv",
            "compliance_events": "compliance_events.csv",
        },
        "risk": {"horizon_days": 30, "min_auc": 0.6, "test_months": 3},
        # Where channel feedback arrives: DSNs in a mailbox folder, provider event files.
        "feedback": {
            "bounce_mailbox": "feedback/bounces",
            "sms_events": ["feedback/sms_events.jsonl"],
            "email_events": ["feedback/email_events.jsonl"],
        },
        **DEMO_STRATEGY,
        "placement": DEMO_PLACEMENT,
    }


# Two agencies: a champion with a modern CSV layout and a challenger on a legacy fixed-width
# platform; each gets only the fields its layout lists.
DEMO_PLACEMENT = {
    "enabled": True,
    "cutoff": {"days_past_due": 90, "min_balance_minor": 5000, "statute_years": {"GB": 6}},
    "cooling_days": 90,
    "agencies": [
        {
            "name": "northwind",
            "weight": 4,
            "commission_rate": 0.22,
            "returns": "agency_returns/northwind",
            "notify_email": "placements@northwind-recovery.example",
            "layout": {
                "format": "csv",
                "fields": [
                    "account_ref", "customer_ref", "placement_date", "name", "kind", "city",
                    "region", "postal_code", "country", "email", "email_consent",
                    "email_opt_out", "phone", "sms_consent", "sms_opt_out", "call_opt_out",
                    "currency", "balance_minor", "principal_minor", "interest_minor",
                    "fees_minor", "invoice_count", "due_date", "first_delinquency_date",
                    "last_payment_date", "last_payment_minor", "itemization_date",
                    "itemization_type", "itemization_minor", "interest_since_minor",
                    "fees_since_minor", "payments_since_minor", "original_creditor", "dispute",
                    "cease_communication", "attorney_represented", "inconvenient_times",
                    "payment_plan", "vulnerable",
                ],
            },
        },
        {
            "name": "keystone",
            "weight": 1,
            "commission_rate": 0.3,
            "returns": "agency_returns/keystone",
            "layout": {
                "format": "fixed",
                "date_format": "%Y%m%d",
                "trailer": True,
                "fields": [
                    {"field": "account_ref", "width": 30},
                    {"field": "name", "width": 60},
                    {"field": "country", "width": 2},
                    {"field": "phone", "width": 20},
                    {"field": "currency", "width": 3},
                    {"field": "principal_minor", "width": 12},
                    {"field": "interest_minor", "width": 12},
                    {"field": "fees_minor", "width": 12},
                    {"field": "due_date", "width": 8},
                    {"field": "dispute", "width": 8},
                    {"field": "cease_communication", "width": 1},
                ],
            },
        },
    ],
}  # fmt: skip


def _write_files(paths, d, cases, docs, st, day: int, seed: int, as_of: date) -> dict[str, int]:
    """The CSV outputs, each built and written in turn so only one is in memory at a time."""
    counts = {
        "debtors": d.n,
        "open_invoices": int((docs.open != 0).sum()),
        "history_invoices": len(docs.debtor),
        "credit_notes": int(docs.credit.sum()),
    }
    _write_csv(paths["customers"], d.columns)
    _write_csv(
        paths["invoice_history"],
        {
            "invoice_id": docs.ids,
            "debtor_id": _take(d.columns["debtor_id"], docs.debtor),
            "doc_type": pc.if_else(pa.array(docs.credit), "credit_note", "invoice"),
            "issue_date": _dates(docs.issue),
            "due_date": _dates(docs.due),
            "currency": _take(d.currency_text, docs.debtor),
            "amount": _money(docs.amount),
            "open_amount": _money(docs.open),
            "paid_date": _dates(docs.closed),
            "disputed": _bool(docs.disputed),
        },
    )
    counts["payments"] = _write_csv(paths["payments"], _make_payments(d, st, docs, seed))
    counts["contacts"] = _write_csv(
        paths["contact_history"], _make_contacts(d, cases, st, day, seed)
    )
    counts["compliance_events"] = _write_csv(
        paths["compliance_events"], _make_events(d, cases, st, docs.width, day, seed)
    )
    behaviour = _take(pa.array(BEHAVIOURS), d.behaviour)
    _write_csv(paths["behaviour"], {"debtor_id": d.columns["debtor_id"], "behaviour": behaviour})
    counts["erp_open_invoices"] = _write_erp(paths["ar_aging_detail"], d, docs, as_of)
    return counts


def _open_items(d: _Debtors, docs: _Docs) -> pd.DataFrame:
    """The open invoices as the payment-feed generator needs them."""
    rows = np.flatnonzero((docs.open > 0) & ~docs.credit)
    di = docs.debtor[rows]
    return pd.DataFrame(
        {
            "invoice_id": docs.ids.take(pa.array(rows)).to_numpy(zero_copy_only=False),
            "debtor_id": d.columns["debtor_id"].take(pa.array(di)).to_numpy(zero_copy_only=False),
            "name": d.columns["name"].take(pa.array(di)).to_numpy(zero_copy_only=False),
            "currency": d.currency_text.take(pa.array(di)).to_numpy(zero_copy_only=False),
            "open_minor": docs.open[rows],
            "due_date": pd.Timestamp(_EPOCH) + pd.to_timedelta(docs.due[rows], unit="D"),
            "disputed": docs.disputed[rows].astype(bool),
        }
    )


def generate(
    out: Path, debtors: int, as_of: date, seed: int = 0, sql_url: str | None = None
) -> dict:
    """Write a synthetic AR portfolio and its config into ``out``; return a JSON-able summary.

    The summary has counts per file (debtors, open_invoices, history_invoices, payments, contacts,
    compliance_events, plus credit notes and the ERP/SQL split), the behaviour mix, the country
    mix and the paths written.  ``sql_url`` None writes SQLite ``out/ar.sqlite``.
    """
    if debtors < 1:
        raise ValueError("debtors must be at least 1")
    if seed < 0:
        raise ValueError("seed must be non-negative")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    day = _day(as_of)
    paths = {
        "customers": out / "customers.csv",
        "ar_aging_detail": out / "ar_aging_detail.csv",
        "invoice_history": out / "invoice_history.csv",
        "payments": out / "payments.csv",
        "contact_history": out / "contact_history.csv",
        "compliance_events": out / "compliance_events.csv",
        "behaviour": out / "truth" / "behaviour.csv",
        "config": out / "config.yaml",
    }
    if sql_url is None:
        db = out / "ar.sqlite"
        db.unlink(missing_ok=True)  # replaced, so the file is byte-identical for a seed
        url = f"sqlite:///{db.resolve()}"
        paths["ar_db"] = db
    else:
        url = sql_url

    d = _make_debtors(debtors, day, seed)
    cases = _make_cases(d, day, seed)
    docs, st = _make_docs(d, cases, day, seed)
    # The SQL load is bound by the DB driver; it overlaps with building and writing the CSVs.
    with ThreadPoolExecutor(max_workers=1) as pool:
        sql_job = pool.submit(_write_sql, url, d, docs, as_of)
        counts = _write_files(paths, d, cases, docs, st, day, seed, as_of)
        counts["sql_invoices"] = sql_job.result()
    payments = feedgen.write_feeds(out, _open_items(d, docs), as_of, seed)
    counts["feed_payments"] = payments["payments"]
    paths["config"].write_text(
        yaml.safe_dump(
            {**_config(sql_url or "sqlite:///ar.sqlite"), "payments": payments.pop("config")},
            sort_keys=False,
            allow_unicode=True,
        ),
        encoding="utf-8",
    )
    codes = np.array(_COUNTRY_CODES)[d.country]
    return {
        "as_of": as_of.isoformat(),
        "seed": seed,
        "counts": counts,
        "behaviour_mix": {b: int((d.behaviour == i).sum()) for i, b in enumerate(BEHAVIOURS)},
        "countries": {c: int((codes == c).sum()) for c in _COUNTRY_CODES},
        "paths": {k: str(v) for k, v in paths.items()},
    }
