"""Open a page in headless Chromium and report the facts tests check (direction, overflow, links).

Uses the Python Playwright sync API against the system Chromium (Debian's ``chromium`` package;
``scripts/test.sh`` installs it), not a Playwright-downloaded browser, so no browser download is
needed.  Works for ``file://`` and ``http(s)://`` URLs (for example a presigned S3 URL on a
loopback SeaweedFS server).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

# Without the background-networking flags Chromium keeps calling home (component updates, sync,
# safe browsing, QUIC probes) and hammers a machine that has no outside network.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
_CANDIDATES = ("/usr/bin/chromium", "/usr/lib/chromium/chromium")
TIMEOUT_MS = 30_000

# One evaluation in the page collects every fact at once, after layout.
_FACTS_JS = """() => {
  const pay = document.querySelector('#pay');
  const dispute = document.querySelector('#dispute');
  let payVisible = false;
  if (pay) {
    const box = pay.getBoundingClientRect();
    const style = getComputedStyle(pay);
    payVisible = box.width > 0 && box.height > 0 && style.visibility !== 'hidden'
      && style.display !== 'none' && box.left >= 0 && box.right <= window.innerWidth;
  }
  return {
    direction: getComputedStyle(document.documentElement).direction,
    scroll_width: document.documentElement.scrollWidth,
    viewport_width: window.innerWidth,
    pay_visible: payVisible,
    pay_href: pay ? pay.getAttribute('href') : null,
    dispute_href: dispute ? dispute.getAttribute('href') : null,
    text: document.body ? document.body.innerText : '',
    title: document.title,
    lang: document.documentElement.getAttribute('lang'),
    scripts: document.scripts.length,
  };
}"""


def chromium_path() -> str | None:
    """The system Chromium binary, or None when this machine has none."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    return next((c for c in _CANDIDATES if Path(c).is_file()), None)


def check_page(url: str, screenshot: Path, *, width: int = 390, height: int = 844) -> dict:
    """Open ``url`` in headless Chromium with a ``width`` x ``height`` viewport, save a full-page
    PNG screenshot to ``screenshot`` and return what the page looks like:

    ``direction`` (computed direction of ``<html>``), ``scroll_width``
    (``documentElement.scrollWidth``; larger than ``viewport_width`` means horizontal overflow),
    ``viewport_width`` (``window.innerWidth``), ``pay_visible`` (``#pay`` is rendered and lies
    inside the viewport width), ``pay_href`` / ``dispute_href`` (the ``href`` attributes of
    ``#pay`` / ``#dispute``, None when missing), ``text`` (``document.body.innerText``),
    ``title``, ``lang``, ``scripts`` (number of ``<script>`` elements), ``status`` (the HTTP
    status of the document; Chromium reports 200 for a ``file://`` that exists) and
    ``requests`` (every URL the page fetched besides itself: a self-contained page fetches none).

    Raises RuntimeError when Chromium is not installed.
    """
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise RuntimeError(
            "Chromium is not installed: scripts/test.sh installs it "
            "(apt-get install --no-install-recommends chromium)"
        )
    screenshot = Path(screenshot)
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=list(CHROMIUM_ARGS)
        )
        try:
            context = browser.new_context(
                viewport={"width": width, "height": height}, device_scale_factor=1
            )
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.on(
                "request",
                lambda request: requests.append(request.url) if request.url != url else None,
            )
            response = page.goto(url, wait_until="load", timeout=TIMEOUT_MS)
            facts: dict[str, Any] = page.evaluate(_FACTS_JS)
            page.screenshot(path=str(screenshot), full_page=True, type="png")
            facts["status"] = response.status if response is not None else None
            facts["requests"] = [r for r in requests if r.split("#")[0] != url.split("#")[0]]
            context.close()
        finally:
            browser.close()
    return facts
