"""The letter channel: the day's letters as one print-ready PDF and the print vendor's manifest.

Each letter is one rendered HTML document (``letter/<template>.<locale>.html``); the batch is one
PDF in which every letter starts on a new page, and the manifest tells the vendor which pages
belong to which contact and where to post them.

Rendering fetches nothing: templates are self-contained, so only ``data:`` URIs load and any
other URL (http, file, ...) is refused without a connection being made.  The PDF's metadata is
fixed ("Dunning letters", no author, no dates, no outline) so no debtor data leaves through it
and the same batch always gives the same bytes.

Speed (WeasyPrint 70, the en final notice, measured on the 2-core dev machine): about 25 ms to
lay out a letter and 6 ms to write it into the batch, i.e. ~31 ms/letter or ~32 letters/second
on an idle core (300 letters: 36 ms/letter, 28 letters/s; 36-50 ms/letter while other processes
share the machine), plus ~250 KB of memory per letter until the PDF is written.  That is under
the 50 ms/letter mark where a process pool would be worth its start-up, and a pool could only
return PDF bytes (laid-out pages hold cffi pointers and do not pickle), which would then need a
PDF merger the project does not ship; so rendering stays in-process.  The one cheap gain is
keeping the garbage collector off the laid-out pages (``gc.freeze``): without it big batches
cost ~38 ms/letter instead of ~25 ms to lay out.
"""

from __future__ import annotations

import gc
from typing import Any

import pandas as pd
from weasyprint import CSS, HTML
from weasyprint.pdf.metadata import DocumentMetadata
from weasyprint.text.fonts import FontConfiguration
from weasyprint.urls import URLFetcher

from dunning.quality import neutralize

PDF_TITLE = "Dunning letters"
ADDRESS_LINES = 5
MANIFEST_COLUMNS = (
    "contact_key",
    "debtor_id",
    "first_page",
    "pages",
    *(f"address_{i}" for i in range(1, ADDRESS_LINES + 1)),
    "country",
    "postage",
)
DEFAULT_POSTAGE = "standard"
# Headings would otherwise become the PDF outline (bookmarks), which can carry debtor names.
_NO_OUTLINE = "h1, h2, h3, h4, h5, h6 { bookmark-level: none !important; }"


def _fetcher() -> URLFetcher:
    """Loads ``data:`` URIs only; anything else fails before a connection is attempted."""
    return URLFetcher(allowed_protocols={"data"}, allow_redirects=False, timeout=1)


def letters_pdf(documents: list[str], base_url: str | None = None) -> tuple[bytes, list[int]]:
    """One PDF for the day's letters (one HTML document each, in order) and each letter's page
    count, so the manifest can give page ranges.  Every letter starts on a new page.

    ``base_url`` only resolves relative URLs; whatever they point to is still refused unless it
    is a ``data:`` URI.  Raises ``ValueError`` for an empty batch (there is nothing to print).
    """
    if not documents:
        raise ValueError("no letters to print")
    fetcher = _fetcher()
    fonts = FontConfiguration()  # shared: fonts are loaded once, and outlive every document
    stylesheets = [CSS(string=_NO_OUTLINE, url_fetcher=fetcher, font_config=fonts)]
    frozen_before = gc.get_freeze_count()
    rendered: list[Any] = []
    try:
        for html in documents:
            rendered.append(
                HTML(string=html, base_url=base_url, url_fetcher=fetcher).render(
                    font_config=fonts, stylesheets=stylesheets
                )
            )
            # The laid-out pages live until the PDF is written; freezing them keeps each later
            # collection from rescanning every earlier letter (quadratic on big batches).
            gc.freeze()
        pages = [len(doc.pages) for doc in rendered]
        batch = rendered[0].copy([page for doc in rendered for page in doc.pages])
        batch.metadata = DocumentMetadata(title=PDF_TITLE)
        pdf = batch.write_pdf()
    finally:
        gc.unfreeze()
        del rendered
        if frozen_before:  # someone (Airflow's forking executors) had frozen the heap: restore
            gc.collect()
            gc.freeze()
    return pdf, pages


def _address_lines(frame: pd.DataFrame) -> pd.DataFrame:
    """``address_1`` .. ``address_5``: taken as they are, or split from an ``address`` list
    column (lines beyond the fifth are joined onto the fifth, comma-separated)."""
    names = [f"address_{i}" for i in range(1, ADDRESS_LINES + 1)]
    if "address" not in frame.columns:
        return pd.DataFrame(
            {n: frame[n] if n in frame.columns else "" for n in names}, index=frame.index
        )
    lines = pd.Series(frame["address"].to_numpy(), index=pd.RangeIndex(len(frame))).explode()
    lines = lines[lines.notna()].astype(str)
    slot = lines.groupby(level=0).cumcount().clip(upper=ADDRESS_LINES - 1).to_numpy()
    wide = (
        lines.groupby([lines.index.to_numpy(), slot])
        .agg(", ".join)
        .unstack()
        .reindex(index=range(len(frame)), columns=range(ADDRESS_LINES))
    )
    wide.index, wide.columns = frame.index, names
    return wide


def print_manifest(frame: pd.DataFrame, pages: list[int]) -> bytes:
    """The print vendor's manifest, one row per letter in PDF order: contact_key, debtor_id,
    first_page (1-based), pages, address_1..address_5, country, postage.

    ``frame``: one row per letter in the order given to ``letters_pdf``, with contact_key,
    debtor_id, country and either ``address`` (a list of lines) or address_1..address_5;
    ``postage`` is optional (default "standard").  UTF-8 CSV with a header; cells a spreadsheet
    would run as a formula are neutralized (C4).
    """
    if len(frame) != len(pages):
        raise ValueError(f"{len(frame)} manifest rows for {len(pages)} letters")
    counts = pd.Series(pages, index=frame.index, dtype="int64")
    first = counts.cumsum() - counts + 1
    text = pd.concat(
        [
            frame[["contact_key", "debtor_id"]],
            _address_lines(frame),
            frame[["country"]],
            pd.DataFrame(
                {"postage": frame["postage"] if "postage" in frame.columns else DEFAULT_POSTAGE},
                index=frame.index,
            ),
        ],
        axis=1,
    )
    text = neutralize(text.astype("string").fillna("").astype(object))
    out = text.assign(first_page=first, pages=counts)[list(MANIFEST_COLUMNS)]
    return out.to_csv(index=False).encode("utf-8")
