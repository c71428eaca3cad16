"""The day's report inside the Airflow UI: a FastAPI app the API server mounts at ``/dunning``
and a "Report" tab on every DAG run page that shows the run's report.

Served from the lake through the API server, because the lake is often a private bucket the
browser cannot read and a ``file://`` link opens nothing.  The report holds aggregates only (no
debtor data), and the API server listens on loopback unless an operator puts it behind the
organisation's proxy.
"""

from __future__ import annotations

import json
import re
from datetime import date

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from dunning.airflow.tasks import lake_root
from dunning.reports import daily

app = FastAPI(title="Dunning reports", docs_url=None, redoc_url=None)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _missing(what: str) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><meta charset='utf-8'><title>No report</title>"
        f"<p style='font-family:sans-serif'>No Dunning report for {what}. Reports are written by "
        "the <code>summarize</code> task of <code>dunning_daily</code>; other DAGs and runs that "
        "did not reach it have none.</p>",
        status_code=404,
    )


@app.get("/runs/{run_id}", response_class=HTMLResponse)
def run_report(run_id: str) -> HTMLResponse:
    """The report of one DAG run, found through the run index the summarize task writes."""
    root = lake_root()
    index = root / daily.run_index_key(run_id)
    if not index.exists():
        return _missing(f"run {run_id}")
    key = json.loads(index.read_text())["report"]
    return HTMLResponse((root / key).read_text(encoding="utf-8"))


@app.get("/reports/{as_of}", response_class=HTMLResponse)
def day_report(as_of: str) -> HTMLResponse:
    """The latest report of a business date: the link finance bookmarks."""
    if not _DATE.match(as_of):
        return HTMLResponse("as_of must be YYYY-MM-DD", status_code=400)
    path = lake_root() / daily.report_key(date.fromisoformat(as_of))
    if not path.exists():
        return _missing(f"business date {as_of}")
    return HTMLResponse(path.read_text(encoding="utf-8"))
