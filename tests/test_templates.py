"""Templates: every configured template exists, renders safely and passes the content lint."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from markupsafe import escape

from dunning.channels import sms
from dunning.config import ConfigError, load_config
from dunning.generate import DEMO_STRATEGY
from dunning.templates import (
    CHANNEL_PARTS,
    REPO_TEMPLATES,
    direction,
    format_money,
    lint,
    locales,
    missing_parts,
    render,
    sample_context,
)


def write_config(folder: Path, **extra) -> Path:
    raw = {
        "portfolio": {"name": "t"},
        "sources": [{"name": "a", "path": "a.csv", "columns": {}}],
        **DEMO_STRATEGY,
        **extra,
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def copy_templates(folder: Path) -> Path:
    target = folder / "templates"
    for file in REPO_TEMPLATES.rglob("*.*"):
        dest = target / file.relative_to(REPO_TEMPLATES)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(file.read_text(encoding="utf-8"), encoding="utf-8")
    return target


def test_the_demo_strategies_templates_all_exist_and_pass_the_lint_in_every_mode(tmp_path):
    cfg = load_config(write_config(tmp_path))
    uses = cfg.template_uses()
    assert ("sms", "reminder_firm") in uses
    assert ("email", "reminder_overdue_short") in uses  # an experiment arm's template
    for third_party in (False, True):
        for licence in (False, True):
            found = lint(REPO_TEMPLATES, uses, third_party=third_party, licence_required=licence)
            assert found == [], [str(p) for p in found]


def test_a_missing_arm_template_names_the_experiment_key(tmp_path):
    experiments = [
        {
            "name": "e",
            "arms": [{"name": "b", "templates": {"overdue": "reminder_overdue_missing"}}],
        }
    ]
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, experiments=experiments))
    message = str(err.value)
    assert str(tmp_path / "config.yaml") in message
    assert (
        "experiments.0.arms.b.templates.overdue: no email template 'reminder_overdue_missing'"
        in (message)
    )


def test_a_template_directory_relative_to_the_config_is_used(tmp_path):
    templates = copy_templates(tmp_path)
    (templates / "sms" / "reminder_firm.en.txt").unlink()
    with pytest.raises(
        ConfigError, match=r"no sms template 'reminder_firm'.*reminder_firm\.en\.txt"
    ):
        load_config(write_config(tmp_path, templates="templates"))


@pytest.mark.parametrize(
    ("channel", "file", "body", "third_party", "licence", "problem"),
    [
        ("email", "email/x.en.txt", "Pay: {{ pay_url }}", False, False, "no unsubscribe link"),
        ("sms", "sms/x.en.txt", "Pay {{ pay_url }}", False, False, "no STOP opt-out"),
        (
            "sms",
            "sms/x.en.txt",
            "Pay {{ pay_url }}. Reply STOP to opt out.",
            True,
            False,
            "no debt-collector disclosure",
        ),
        (
            "sms",
            "sms/x.en.txt",
            "{{ disclosure }} Pay {{ pay_url }}. Reply STOP to opt out.",
            True,
            True,
            "no California licence number",
        ),
        ("sms", "sms/x.en.txt", "{{ nonsense.deep }} STOP", False, False, "does not render"),
        ("call", "call/x.en.txt", "{% include 'nope.txt' %}", False, False, "missing file"),
    ],
)
def test_the_lint_fails_with_the_template_name(
    tmp_path, channel, file, body, third_party, licence, problem
):
    (tmp_path / file).parent.mkdir(parents=True)
    (tmp_path / file).write_text(body, encoding="utf-8")
    found = lint(tmp_path, {(channel, "x"): "k"}, third_party=third_party, licence_required=licence)
    assert len(found) == 1
    assert problem in str(found[0])
    assert str(found[0]).startswith(f"template 'x' ({file})")


def test_debtor_data_is_data_never_template_code():
    context = sample_context()
    context["debtor"] = {"name": "{{ 7*7 }} <script>alert(1)</script>"}
    html = render(REPO_TEMPLATES, "email", "reminder_overdue", "en", "html", context).body
    text = render(REPO_TEMPLATES, "email", "reminder_overdue", "en", "txt", context).body
    assert "{{ 7*7 }} &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>" not in html and "49" not in html
    assert "{{ 7*7 }} <script>alert(1)</script>" in text  # plain text is not HTML-escaped


def test_the_email_subject_comes_from_the_text_part():
    rendered = render(REPO_TEMPLATES, "email", "final_notice", "en", "txt", sample_context())
    assert rendered.subject == "Final notice: $1,550.50 overdue"
    assert "Final notice" not in rendered.body.splitlines()[0]


def test_a_lint_failure_stops_the_dag_at_parse_time_with_the_template_name(tmp_path, monkeypatch):
    from dunning.airflow import tasks

    templates = copy_templates(tmp_path)
    sms = templates / "sms" / "reminder_firm.en.txt"
    sms.write_text(sms.read_text(encoding="utf-8").replace("Reply STOP to opt out.", ""), "utf-8")
    monkeypatch.setenv("DUNNING_CONFIG", str(write_config(tmp_path, templates="templates")))
    with pytest.raises(
        ConfigError, match=r"template 'reminder_firm' \(sms/reminder_firm\.en\.txt\)"
    ):
        tasks.daily_schedule()  # what dags/dunning_daily.py calls when it is parsed


# --- every template in every locale -------------------------------------------------------------

LOCALES = ("en", "fr", "ar")


def repo_templates() -> list[tuple[str, str]]:
    """(channel, template) for every template file in the repository, from the directory listing."""
    return sorted(
        {
            (channel, file.name.split(".")[0])
            for channel in CHANNEL_PARTS
            if (REPO_TEMPLATES / channel).is_dir()
            for file in (REPO_TEMPLATES / channel).iterdir()
            if file.is_file() and file.name.count(".") == 2
        }
    )


ALL_TEMPLATES = repo_templates()
ALL_PARTS = [
    (channel, template, locale, part)
    for channel, template in ALL_TEMPLATES
    for locale in LOCALES
    for part in CHANNEL_PARTS[channel]
]


def test_the_listing_finds_every_channel_with_templates():
    channels = {channel for channel, _ in ALL_TEMPLATES}
    assert channels == {"email", "sms", "letter", "call", "page"}
    assert ("page", "payment") in ALL_TEMPLATES
    assert ("email", "reminder_nudge") in ALL_TEMPLATES


@pytest.mark.parametrize(("channel", "template"), ALL_TEMPLATES)
def test_every_template_exists_in_every_locale_for_every_part(channel, template):
    assert locales(REPO_TEMPLATES, channel, template) == sorted(LOCALES)
    for locale in LOCALES:
        assert missing_parts(REPO_TEMPLATES, channel, template, locale) == []


@pytest.mark.parametrize("third_party", [False, True], ids=["creditor", "third_party"])
@pytest.mark.parametrize("licence", [False, True], ids=["no_licence", "licence"])
def test_every_template_in_every_locale_passes_the_lint(third_party, licence):
    uses = {(channel, template): f"{channel}/{template}" for channel, template in ALL_TEMPLATES}
    found = lint(REPO_TEMPLATES, uses, third_party=third_party, licence_required=licence)
    assert found == [], [str(p) for p in found]


_HTML_TAG = re.compile(r"<html\b[^>]*>", re.IGNORECASE)


@pytest.mark.parametrize(
    ("channel", "template", "locale"),
    [
        (channel, template, locale)
        for channel, template in ALL_TEMPLATES
        for locale in LOCALES
        if "html" in CHANNEL_PARTS[channel]
    ],
)
def test_html_declares_its_language_and_direction(channel, template, locale):
    html = render(
        REPO_TEMPLATES, channel, template, locale, "html", sample_context(locale=locale)
    ).body
    tag = _HTML_TAG.search(html)
    assert tag is not None, "no <html> element"
    assert f'lang="{locale}"' in tag.group(0)
    assert f'dir="{direction(locale)}"' in tag.group(0)
    assert '<meta charset="utf-8">' in html
    if locale == "ar":
        assert 'dir="rtl"' in tag.group(0) and 'lang="ar"' in tag.group(0)
        assert "'DejaVu Sans'" in html  # the system font with Arabic glyphs (WeasyPrint, Chromium)


def test_templates_keep_the_wording_of_their_locale():
    """A spot check that the fr/ar files are translations, not copies of the English."""
    for locale, words in {"fr": ("Bonjour", "Payer"), "ar": ("ادفع", "الفواتير")}.items():
        html = render(
            REPO_TEMPLATES,
            "email",
            "reminder_overdue",
            locale,
            "html",
            sample_context(locale=locale),
        ).body
        assert all(word in html for word in words), locale
        assert "Dear " not in html and "Pay now" not in html


# --- debtor data never runs as template code, in any channel or locale ---------------------------

_NAMES = ("{{ 7*7 }}", "<script>alert(1)</script>")


@pytest.mark.parametrize(("channel", "template", "locale", "part"), ALL_PARTS)
def test_debtor_data_is_data_in_every_channel_and_locale(channel, template, locale, part):
    plain = sample_context(locale=locale)
    baseline = render(REPO_TEMPLATES, channel, template, locale, part, plain).body
    for name in _NAMES:
        context = sample_context(locale=locale)
        context["debtor"] = {"name": name, "address": [name, "12 Main Street", "Boston MA 02108"]}
        body = render(REPO_TEMPLATES, channel, template, locale, part, context).body
        # the debtor's name is used by every template except the short SMS (no name in a text)
        if channel != "sms":
            expected = name if part == "txt" else str(escape(name))
            assert expected in body
        assert body.count("49") == baseline.count("49")  # {{ 7*7 }} was not evaluated
        if part == "html":
            assert "<script" not in body.lower()
            if channel != "sms" and "script" in name:
                assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


# --- SMS cost --------------------------------------------------------------------------------------

SMS_VALUES = [
    ("sms", template, locale)
    for channel, template in ALL_TEMPLATES
    if channel == "sms"
    for locale in LOCALES
]


@pytest.mark.parametrize(("channel", "template", "locale"), SMS_VALUES)
def test_an_sms_fits_two_segments(channel, template, locale):
    body = render(REPO_TEMPLATES, channel, template, locale, "txt", sample_context(locale=locale))
    text = body.body.strip()
    if locale == "ar":
        assert sms.encoding(text) == "UCS-2"
        assert sms.units(text) <= 2 * sms.UCS2_MULTI, (sms.units(text), text)
    else:
        # en/fr stay in GSM-7: no curly quotes, no accents outside the GSM alphabet (ê, ç, ...)
        outside = sorted({c for c in text if c not in sms.GSM7_BASIC | sms.GSM7_EXTENSION})
        assert outside == [], f"not GSM-7: {outside} in {text!r}"
        assert sms.units(text) <= 2 * sms.GSM7_MULTI, (sms.units(text), text)
    assert sms.segments(text) <= 2


@pytest.mark.parametrize(("channel", "template", "locale"), SMS_VALUES)
def test_an_sms_with_the_disclosure_and_licence_still_renders_them(channel, template, locale):
    context = sample_context("This is from a debt collector.", "10000-99", locale=locale)
    text = render(REPO_TEMPLATES, channel, template, locale, "txt", context).body
    assert text.startswith("This is from a debt collector.")
    assert "10000-99" in text and "STOP" in text


# --- letters are print-ready ---------------------------------------------------------------------


@pytest.mark.parametrize("locale", ["fr", "ar"])
@pytest.mark.parametrize("third_party", [False, True], ids=["creditor", "third_party"])
def test_a_letter_lays_out_on_one_a4_page(locale, third_party):
    weasyprint = pytest.importorskip("weasyprint")
    disclosure = (
        "This is a communication from a debt collector. This is an attempt to collect a debt "
        "and any information obtained will be used for that purpose."
    )
    context = sample_context(
        disclosure if third_party else "", "10000-99" if third_party else "", locale=locale
    )
    html = render(REPO_TEMPLATES, "letter", "final_notice", locale, "html", context).body
    assert "@page { size: A4; margin: 20mm; }" in html
    document = weasyprint.HTML(string=html).render()
    assert len(document.pages) == 1
    page = document.pages[0]
    # A4 in CSS pixels (96 per inch): 210 x 297 mm
    assert round(page.width * 25.4 / 96) == 210 and round(page.height * 25.4 / 96) == 297
    for line in context["debtor"]["address"]:
        assert line in html
    assert context["pay_url"] in html and context["dispute_url"] in html


@pytest.mark.parametrize(("channel", "template", "locale"), SMS_VALUES)
def test_an_sms_with_amounts_formatted_for_the_debtors_country_fits_two_segments(
    channel, template, locale
):
    """Babel writes ``1 550,50 €`` with narrow no-break spaces (not GSM-7): the French texts
    turn them into plain spaces so a real French SMS stays GSM-7, and the Arabic one (with the
    right-to-left marks Babel puts around ``ر.س.``) still fits two UCS-2 segments."""
    place, currency = {"en": ("en_US", "USD"), "fr": ("fr_FR", "EUR"), "ar": ("ar_SA", "SAR")}[
        locale
    ]
    context = sample_context(locale=locale)
    context["total"] = format_money(155050, currency, place)
    text = render(REPO_TEMPLATES, channel, template, locale, "txt", context).body.strip()
    assert sms.encoding(text) == ("UCS-2" if locale == "ar" else "GSM-7"), text
    assert sms.segments(text) <= 2
