"""Message templates: where they live, how they render, and the content lint that checks them.

Layout: ``<templates>/<channel>/<template>.<locale>.<part>`` where the parts a channel needs are
``CHANNEL_PARTS`` (an email is an HTML and a plain-text body; the text body sets ``subject``).
Shared layouts sit in ``_layouts/``.  The config names templates per strategy step; a name that
has no file for a channel the step uses is a config error at load, not a failed send weeks later.

Rendering is a sandboxed, autoescaping Jinja2 environment with strict undefined variables:
debtor data is passed as data and can never run as template code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.numbers import format_currency, get_currency_precision
from jinja2 import FileSystemLoader, StrictUndefined, TemplateNotFound, select_autoescape
from jinja2.sandbox import ImmutableSandboxedEnvironment

REPO_TEMPLATES = Path(__file__).resolve().parents[2] / "include" / "templates"
DEFAULT_LOCALE = "en"
CHANNEL_PARTS: dict[str, tuple[str, ...]] = {
    "email": ("html", "txt"),
    "sms": ("txt",),
    "letter": ("html",),
    "call": ("txt",),
    "page": ("html",),  # the debtor's personal payment page (published, linked in messages)
}
RTL_LOCALES = frozenset({"ar", "he", "fa", "ur"})
# Channels whose every message must tell the debtor how to stop that channel (Reg F 1006.6(e),
# CAN-SPAM, TCPA/CTIA STOP keyword).
OPT_OUT_CHANNELS = ("email", "sms")
# Channels that are "written or digital communications" for the California licence number.
LICENCE_CHANNELS = ("email", "sms", "letter")


def file_name(channel: str, template: str, locale: str, part: str) -> str:
    return f"{channel}/{template}.{locale}.{part}"


def locales(directory: Path, channel: str, template: str) -> list[str]:
    """The locales that have at least one file of ``template`` for ``channel``."""
    return sorted({f.name.split(".")[-2] for f in (directory / channel).glob(f"{template}.*.*")})


def missing_parts(directory: Path, channel: str, template: str, locale: str) -> list[str]:
    """The files a channel needs for ``template`` in ``locale`` that are not in ``directory``."""
    return [
        name
        for part in CHANNEL_PARTS[channel]
        if not (directory / (name := file_name(channel, template, locale, part))).is_file()
    ]


@lru_cache(maxsize=8)
def environment(directory: Path) -> ImmutableSandboxedEnvironment:
    """One sandboxed environment per template directory (Jinja caches compiled templates in it)."""
    return ImmutableSandboxedEnvironment(
        loader=FileSystemLoader(directory),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=False,
        keep_trailing_newline=False,
    )


@dataclass(frozen=True)
class Rendered:
    """One channel part, rendered: ``body`` and, for templates that set one, ``subject``."""

    body: str
    subject: str | None


def render(
    directory: Path,
    channel: str,
    template: str,
    locale: str,
    part: str,
    context: dict[str, Any],
    loaded: dict[str, Any] | None = None,
) -> Rendered:
    """Render one part; ``TemplateNotFound`` names the file when the locale has none.

    ``loaded``: a dict the caller keeps for one batch, so a wave of a hundred thousand messages
    loads (and checks the modification time of) each file once, not once per message.
    """
    name = file_name(channel, template, locale, part)
    if loaded is None:
        tmpl = environment(directory).get_template(name)
    elif (tmpl := loaded.get(name)) is None:
        tmpl = loaded[name] = environment(directory).get_template(name)
    module = tmpl.make_module(context)
    subject = getattr(module, "subject", None)
    return Rendered(body=str(module), subject=str(subject).strip() if subject else None)


# --- locale formatting ----------------------------------------------------------------------------


@lru_cache(maxsize=256)
def babel_locale(locale: str, country: str = "") -> str:
    """The most specific Babel locale for a debtor: ``fr`` + ``FR`` -> ``fr_FR``, so dates and
    money read as the debtor's country writes them; the bare language when Babel has no such pair."""
    for name in (f"{locale}_{country}", locale) if country else (locale,):
        try:
            Locale.parse(name)
            return name
        except (UnknownLocaleError, ValueError):
            continue
    return DEFAULT_LOCALE


def _babel_money(minor: int, currency: str, locale: str) -> str:
    digits = get_currency_precision(currency)
    return format_currency(Decimal(minor).scaleb(-digits), currency, locale=locale)


def _shaped(shape: tuple[str, str, str, str, int], minor: int) -> str:
    prefix, group, decimal, suffix, digits = shape
    major, cents = divmod(minor, 10**digits)
    body = f"{major:,}".replace(",", group)
    return prefix + body + (f"{decimal}{cents:0{digits}d}" if digits else "") + suffix


@lru_cache(maxsize=256)
def _money_shape(currency: str, locale: str) -> tuple[str, str, str, str, int] | None:
    """How a locale writes one currency -- prefix, group and decimal signs, suffix -- read off
    Babel's own output for 1,234,567.89 and checked against it; None when the shape is not a
    plain three-digit grouping (then every amount goes through Babel)."""
    digits = get_currency_precision(currency)
    cents = "891"[:digits]
    text = _babel_money(int(f"1234567{cents}"), currency, locale)
    frac = f"(\\D+){cents}" if digits else "()"
    m = re.fullmatch(f"(\\D*)1(\\D+)234(\\D+)567{frac}(\\D*)", text)
    if not m or m[2] != m[3]:
        return None
    shape = (m[1], m[2], m[4], m[5], digits)
    probes = (0, 7, 99, 100, 1234, 12_345, 123_456, 1_000_000, 98_765_432_101)
    if any(_shaped(shape, v) != _babel_money(v, currency, locale) for v in probes):
        return None
    return shape


def format_money(minor: int, currency: str, locale: str) -> str:
    """Minor units as the locale writes money (``$1,200.00``, ``1 200,00 €``, ``١٬٢٠٠٫٠٠ ر.س.``).

    Babel decides the format; the amounts themselves are laid out from the shape Babel gave for
    this currency and locale, because a full Babel call per amount made rendering a large
    wave several times slower.
    """
    shape = _money_shape(currency, locale) if minor >= 0 else None
    return _shaped(shape, minor) if shape else _babel_money(minor, currency, locale)


@lru_cache(maxsize=4096)
def format_day(day: date, locale: str) -> str:
    """A date in the locale's medium form (``Oct 1, 2026``, ``1 oct. 2026``)."""
    return format_date(day, format="medium", locale=locale)


def direction(locale: str) -> str:
    """``rtl`` for right-to-left scripts (Arabic), else ``ltr``: the templates' ``dir`` value."""
    return "rtl" if locale.split("_")[0] in RTL_LOCALES else "ltr"


# --- content lint --------------------------------------------------------------------------------

# Sentinels: the lint renders with these and checks they come out, so a template that drops the
# opt-out link, the disclosure or the licence number fails by name, whatever its wording.
_UNSUBSCRIBE = "https://lint.invalid/unsubscribe/UNSUBSCRIBE-SENTINEL"
_DISCLOSURE = "DISCLOSURE-SENTINEL"
_LICENCE = "LICENCE-SENTINEL"


def sample_context(disclosure: str = "", licence: str = "", locale: str = "en") -> dict[str, Any]:
    """A realistic context for previews and the lint; it has every key the waves stage gives a
    real message (``dunning.waves.CONTEXT_KEYS``), so a template that renders here renders there."""
    return {
        "lang": locale,
        "dir": direction(locale),
        "company": {"name": "Example Supplies Inc.", "email": "billing@example.com"},
        "debtor": {
            "name": "Alex Example",
            "address": ["Alex Example", "12 Main Street", "Boston MA 02108", "US"],
        },
        "invoices": [
            {"number": "INV-1001", "due_date": "Oct 1, 2026", "amount": "$1,200.00"},
            {"number": "INV-1002", "due_date": "Oct 15, 2026", "amount": "$350.50"},
        ],
        "total": "$1,550.50",
        "today": "Nov 23, 2026",
        "currency": "USD",
        "pay_url": "https://pay.example.com/p/abc",
        "dispute_url": "https://pay.example.com/p/abc#dispute",
        "checkout_url": "https://checkout.example.com/pay?ref=abc",
        "plans": [
            {"count": 3, "amount": "$516.84", "first_due": "Dec 7, 2026"},
            {"count": 6, "amount": "$258.42", "first_due": "Dec 7, 2026"},
        ],
        "call_window": "08:00-21:00 America/New_York",
        "unsubscribe_url": _UNSUBSCRIBE,
        "disclosure": disclosure,
        "licence": licence,
    }


@dataclass(frozen=True)
class LintProblem:
    template: str
    file: str
    problem: str

    def __str__(self) -> str:
        return f"template {self.template!r} ({self.file}): {self.problem}"


def lint(
    directory: Path,
    uses: dict[tuple[str, str], str],
    *,
    third_party: bool,
    licence_required: bool,
) -> list[LintProblem]:
    """Content rules every message must meet, checked on each (channel, template) in ``uses``
    (mapped to the config key that uses it) in every locale that has files.

    - email and SMS carry an opt-out instruction: the unsubscribe link (email) or the STOP
      keyword (SMS);
    - a third-party collector's messages carry the debt-collector disclosure;
    - a portfolio with California debtors shows the licence number on written and digital
      messages.
    """
    problems: list[LintProblem] = []
    for (channel, template), _key in sorted(uses.items()):
        for locale in locales(directory, channel, template):
            context = sample_context(
                disclosure=_DISCLOSURE if third_party else "",
                licence=_LICENCE if licence_required else "",
                locale=locale,
            )
            for part in CHANNEL_PARTS[channel]:
                name = file_name(channel, template, locale, part)
                if not (directory / name).is_file():
                    continue
                try:
                    text = render(directory, channel, template, locale, part, context).body
                except TemplateNotFound as exc:
                    problems.append(LintProblem(template, name, f"includes a missing file {exc}"))
                    continue
                except Exception as exc:  # a template error is a lint finding, with its message
                    problems.append(LintProblem(template, name, f"does not render: {exc}"))
                    continue
                if channel == "email" and _UNSUBSCRIBE not in text:
                    problems.append(LintProblem(template, name, "no unsubscribe link"))
                if channel == "sms" and "STOP" not in text:
                    problems.append(LintProblem(template, name, "no STOP opt-out instruction"))
                if third_party and _DISCLOSURE not in text:
                    problems.append(
                        LintProblem(template, name, "no debt-collector disclosure (third_party)")
                    )
                if licence_required and channel in LICENCE_CHANNELS and _LICENCE not in text:
                    problems.append(LintProblem(template, name, "no California licence number"))
    return problems
