"""The letter channel: one print-ready PDF per batch, each letter on its own pages, the vendor
manifest with page ranges, and no network fetches while rendering."""

from __future__ import annotations

import io
import re
import socket
import zlib

import pandas as pd
import pytest

from dunning.channels.letters import MANIFEST_COLUMNS, PDF_TITLE, letters_pdf, print_manifest
from dunning.templates import REPO_TEMPLATES, render, sample_context

PNG_1PX = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwAD"
    "hgGAWjR9awAAAABJRU5ErkJggg=="
)

EN = (
    """<!doctype html><html lang="en" dir="ltr"><head><meta charset="utf-8">
<title>Letter for Jo Bloggs</title><meta name="author" content="Jo Bloggs">
<style>@page { size: A5 }</style></head>
<body><h1>Reminder for Jo Bloggs</h1><p>Please pay $10.00.</p><img src="PNG"></body></html>
"""
).replace("PNG", PNG_1PX)

FR = """<!doctype html><html lang="fr" dir="ltr"><head><meta charset="utf-8">
<style>@page { size: letter }</style></head>
<body><p>Madame Hélène Dupré-Müller,</p><p>Veuillez régler la somme de 1 200,00 €.</p>
<p style="break-before: page">Page deux : coordonnées bancaires, échéancier, reçu.</p>
</body></html>"""

AR = """<!doctype html><html lang="ar" dir="rtl"><head><meta charset="utf-8">
<style>@page { size: A6 } body { font-family: "DejaVu Sans"; }</style></head>
<body><p>عزيزي العميل،</p><p>نرجو سداد المبلغ المستحق وقدره ١٬٢٠٠٫٠٠ ر.س. خلال أربعة عشر يوماً.</p>
</body></html>"""

# Page sizes in points, as WeasyPrint writes them (rounded here to whole points).
A4, A5, A6, LETTER = (595, 842), (420, 595), (298, 420), (612, 792)


def pdf_objects(pdf: bytes) -> dict[int, bytes]:
    """Every object of a PDF by number, including those packed in object streams (WeasyPrint
    writes PDF 1.7 with /ObjStm), enough to read the page tree without a PDF library."""
    objects: dict[int, bytes] = {}
    for match in re.finditer(rb"(\d+) 0 obj\s*(.*?)endobj", pdf, re.S):
        num, body = int(match[1]), match[2]
        objects[num] = body
        if b"/Type /ObjStm" not in body:
            continue
        head = body[: body.index(b"stream")]
        data = zlib.decompress(body[body.index(b"stream") + 6 :].lstrip(b"\r\n"))
        first = int(re.search(rb"/First (\d+)", head)[1])
        pairs = [int(x) for x in data[:first].split()]
        numbers, offsets = pairs[0::2], [*pairs[1::2], len(data) - first]
        for k, inner in enumerate(numbers):
            objects[inner] = data[first + offsets[k] : first + offsets[k + 1]]
    return objects


def page_sizes(pdf: bytes) -> list[tuple[int, int]]:
    """The MediaBox (width, height) of each page, in page-tree order."""
    objects = pdf_objects(pdf)
    tree = next(b for b in objects.values() if re.search(rb"/Type /Pages\b", b))
    kids = [int(n) for n in re.findall(rb"(\d+) 0 R", re.search(rb"/Kids\s*\[(.*?)\]", tree)[1])]
    sizes = []
    for kid in kids:
        box = re.search(rb"/MediaBox\s*\[([^\]]*)\]", objects[kid])[1].split()
        sizes.append((round(float(box[2]) - float(box[0])), round(float(box[3]) - float(box[1]))))
    return sizes


def count_pages(pdf: bytes) -> int:
    return sum(bool(re.search(rb"/Type /Page(?![a-zA-Z])", b)) for b in pdf_objects(pdf).values())


@pytest.fixture(scope="module")
def final_notice() -> str:
    context = sample_context(licence="10099-99")
    return render(REPO_TEMPLATES, "letter", "final_notice", "en", "html", context).body


@pytest.fixture(scope="module")
def batch(final_notice: str) -> tuple[bytes, list[int]]:
    return letters_pdf([EN, FR, AR, final_notice])


def test_batch_is_one_pdf_with_each_letter_on_its_own_pages(batch) -> None:
    pdf, pages = batch
    assert pdf.startswith(b"%PDF-")
    assert pages == [1, 2, 1, 1]
    assert count_pages(pdf) == sum(pages)
    # Each letter has its own page size, so the page tree shows where each one starts.
    assert page_sizes(pdf) == [A5, LETTER, LETTER, A6, A4]


def test_metadata_is_fixed_and_carries_no_debtor_data(batch) -> None:
    pdf, _ = batch
    objects = b"".join(pdf_objects(pdf).values())
    info = next(b for b in pdf_objects(pdf).values() if b"/Producer" in b)
    assert PDF_TITLE.encode() in info or PDF_TITLE.encode("utf-16-be").hex().encode() in info
    assert b"/Author" not in info
    for secret in (b"Jo Bloggs", b"Alex Example", b"Final notice"):
        assert secret not in objects
    assert b"/Outlines" not in objects  # headings do not become bookmarks
    assert b"/Subtype /Image" in pdf  # the data: URI image was embedded


def test_arabic_letter_uses_a_font_with_arabic_glyphs() -> None:
    pdf, pages = letters_pdf([AR])
    assert pages == [1]
    fonts = [b for b in pdf_objects(pdf).values() if b"/Type /FontDescriptor" in b]
    assert fonts and all(b"+DejaVu-Sans" in f for f in fonts)


def test_same_batch_gives_same_bytes(final_notice: str) -> None:
    assert letters_pdf([final_notice])[0] == letters_pdf([final_notice])[0]


def test_empty_batch_is_refused() -> None:
    with pytest.raises(ValueError, match="no letters"):
        letters_pdf([])


@pytest.mark.timeout(60)
def test_no_external_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[object] = []

    def refuse(self, address):
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    html = """<html><head><link rel="stylesheet" href="http://127.0.0.1:9/style.css">
    <style>@import url("https://example.com/x.css");</style></head>
    <body><p>Hello</p><img src="http://127.0.0.1:9/x.png"><img src="file:///etc/passwd">
    <img src="x.png"></body></html>"""
    pdf, pages = letters_pdf([html], base_url="http://127.0.0.1:9/")
    assert pdf.startswith(b"%PDF-") and pages == [1]
    assert attempts == []
    assert b"/Subtype /Image" not in pdf


def test_manifest_page_ranges_and_neutralized_cells() -> None:
    frame = pd.DataFrame(
        {
            "contact_key": ["k1", "k2", "k3"],
            "debtor_id": ["D1", "D2", "-D3"],
            "address": [
                ['=HYPERLINK("x")', "12 Main Street", "Boston MA 02108"],
                ["Hélène Dupré", "3 rue de la Paix", "75002 Paris", "Cedex", "France", "extra"],
                None,
            ],
            "country": ["US", "FR", "SA"],
        }
    )
    manifest = pd.read_csv(
        io.BytesIO(print_manifest(frame, [1, 2, 1])), dtype=str, keep_default_na=False
    )
    assert tuple(manifest.columns) == MANIFEST_COLUMNS
    assert manifest["first_page"].tolist() == ["1", "2", "4"]
    assert manifest["pages"].tolist() == ["1", "2", "1"]
    assert manifest["address_1"].tolist() == ['\'=HYPERLINK("x")', "Hélène Dupré", ""]
    assert manifest["address_5"].tolist() == ["", "France, extra", ""]
    assert manifest["debtor_id"].tolist() == ["D1", "D2", "'-D3"]
    assert set(manifest["postage"]) == {"standard"}


def test_manifest_takes_address_columns_and_checks_lengths() -> None:
    frame = pd.DataFrame(
        {
            "contact_key": ["k1"],
            "debtor_id": ["D1"],
            "address_1": ["@SUM(A1)"],
            "address_2": ["Line 2"],
            "country": ["GB"],
            "postage": ["first_class"],
        }
    )
    manifest = pd.read_csv(io.BytesIO(print_manifest(frame, [3])), dtype=str, keep_default_na=False)
    row = manifest.iloc[0]
    assert (row["address_1"], row["address_2"], row["address_3"]) == ("'@SUM(A1)", "Line 2", "")
    assert (row["first_page"], row["pages"], row["postage"]) == ("1", "3", "first_class")
    with pytest.raises(ValueError, match="1 manifest rows for 2 letters"):
        print_manifest(frame, [1, 1])
