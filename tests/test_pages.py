"""The debtor's personal payment page (page/payment.<locale>.html), checked in headless Chromium.

Each locale is rendered with a realistic context (money and dates as the debtor's country writes
them), opened at phone widths, and checked for what a debtor needs: no sideways scrolling, the
pay button on screen and pointing at the checkout, the dispute link, the right direction (Arabic
is right to left) and the balance as the locale writes it.  Screenshots are kept in
``var/screenshots/`` for a human to look at.
"""

from __future__ import annotations

import os
import shutil
import struct
from datetime import date
from pathlib import Path

import pytest

from dunning.templates import REPO_TEMPLATES, format_day, format_money, render, sample_context
from tests.browser import check_page, chromium_path

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "var" / "screenshots"
WIDTHS = (390, 320)
DISCLOSURE = "This is a communication from a debt collector."
LICENCE = "10000-99"

# locale -> (Babel locale, currency, debtor name, invoice amounts in minor units)
CASES = {
    "en": ("en_US", "USD", "Alex Example", (120_000, 35_050)),
    "fr": ("fr_FR", "EUR", "Camille Dupont-Lefèvre", (120_000, 35_050)),
    "ar": ("ar_SA", "SAR", "مؤسسة النور للتجارة", (120_000, 35_050)),
}


@pytest.fixture(scope="module")
def chromium() -> str:
    path = chromium_path()
    if path is None:
        message = (
            "Chromium is not installed (Debian package 'chromium'); scripts/test.sh installs it"
        )
        if os.environ.get("CI"):
            pytest.fail(message + " -- in CI it must be there", pytrace=False)
        pytest.skip(message)
    return path


def page_context(locale: str) -> dict:
    """``sample_context`` with the money, dates and names a real debtor of that locale gets,
    plus a long invoice number (the kind that overflows a phone screen if the page lets it)."""
    place, currency, name, amounts = CASES[locale]
    context = sample_context(DISCLOSURE, LICENCE, locale=locale)
    total = sum(amounts)
    context["debtor"] = {**context["debtor"], "name": name}
    context["currency"] = currency
    context["today"] = format_day(date(2026, 11, 23), place)
    context["total"] = format_money(total, currency, place)
    numbers = ("INV-1001", "INV-2026-000000123456789")
    due = (date(2026, 10, 1), date(2026, 10, 15))
    context["invoices"] = [
        {"number": n, "due_date": format_day(d, place), "amount": format_money(a, currency, place)}
        for n, d, a in zip(numbers, due, amounts, strict=True)
    ]
    context["plans"] = [
        {
            "count": count,
            "amount": format_money(-(-total // count), currency, place),
            "first_due": format_day(date(2026, 12, 7), place),
        }
        for count in (3, 6)
    ]
    return context


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize("locale", list(CASES))
def test_the_payment_page_works_on_a_phone(chromium, tmp_path, locale):
    context = page_context(locale)
    html = render(REPO_TEMPLATES, "page", "payment", locale, "html", context).body
    page = tmp_path / f"payment.{locale}.html"
    page.write_text(html, encoding="utf-8")

    # self-contained and private: no script, no outside resource, not indexed, no referrer
    assert "<script" not in html.lower()
    assert 'name="robots" content="noindex, nofollow"' in html
    assert 'name="referrer" content="no-referrer"' in html
    assert 'name="viewport" content="width=device-width, initial-scale=1"' in html
    assert "<link" not in html.lower() and "@import" not in html and "url(" not in html

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for width in WIDTHS:
        shot = tmp_path / f"payment-{locale}-{width}.png"
        facts = check_page(page.as_uri(), shot, width=width)
        shutil.copyfile(shot, SCREENSHOTS / shot.name)

        assert shot.is_file()
        shot_width, shot_height = png_size(shot)
        assert 10_000 < shot.stat().st_size < 5_000_000
        assert shot_width == width  # a full-page shot as wide as the phone: nothing sticks out
        assert shot_height >= 844

        assert facts["viewport_width"] == width
        assert facts["scroll_width"] <= width, f"{locale} overflows sideways at {width}px"
        assert facts["pay_visible"], f"{locale}: the pay button is not on screen at {width}px"
        assert facts["pay_href"] == context["checkout_url"]
        assert facts["dispute_href"] == context["dispute_url"]
        assert facts["direction"] == ("rtl" if locale == "ar" else "ltr")
        assert facts["lang"] == locale
        assert facts["scripts"] == 0
        assert facts["requests"] == []  # nothing fetched besides the page itself

        text = facts["text"]
        assert context["total"] in text  # as the locale writes it (Arabic: with its RLMs)
        assert context["company"]["name"] in facts["title"]
        for item in (
            context["debtor"]["name"],
            context["company"]["email"],
            DISCLOSURE,
            LICENCE,
            *(invoice["number"] for invoice in context["invoices"]),
            *(invoice["amount"] for invoice in context["invoices"]),
            *(plan["amount"] for plan in context["plans"]),
        ):
            assert item in text, f"{item!r} missing from the {locale} page"


def test_the_arabic_page_shows_the_balance_in_arabic_formatting(chromium, tmp_path):
    context = page_context("ar")
    total = format_money(155_050, "SAR", "ar_SA")
    assert context["total"] == total and "ر.س." in total
    page = tmp_path / "payment.ar.html"
    page.write_text(render(REPO_TEMPLATES, "page", "payment", "ar", "html", context).body, "utf-8")
    facts = check_page(page.as_uri(), tmp_path / "ar.png")
    assert facts["direction"] == "rtl"
    assert total in facts["text"]
    assert f"ادفع {total}" in facts["text"]  # the button says "Pay <total>"
    assert "الرصيد المستحق" in facts["text"]  # "balance due"


def test_the_plan_options_link_to_the_checkout_with_the_plan(chromium):
    """Each plan is a link to the checkout carrying ``plan=<count>``, added to any query."""
    context = page_context("en")
    html = render(REPO_TEMPLATES, "page", "payment", "en", "html", context).body
    assert 'id="plans"' in html
    for plan in context["plans"]:
        assert f'href="{context["checkout_url"]}&amp;plan={plan["count"]}"' in html
    context["checkout_url"] = "https://checkout.example.com/pay/abc"
    html = render(REPO_TEMPLATES, "page", "payment", "en", "html", context).body
    assert 'href="https://checkout.example.com/pay/abc?plan=3"' in html
    context["plans"] = []
    html = render(REPO_TEMPLATES, "page", "payment", "en", "html", context).body
    assert 'id="plans"' not in html
