"""Airflow plugin: the Dunning report as a tab of every DAG run and at ``/dunning/reports/<date>``
(the app lives in ``dunning.airflow.report_views``; ``dunning/`` itself is in .airflowignore)."""

from __future__ import annotations

from typing import ClassVar

from airflow.plugins_manager import AirflowPlugin

from dunning.airflow.report_views import app


class DunningReports(AirflowPlugin):
    name = "dunning_reports"
    fastapi_apps: ClassVar[list[dict]] = [
        {"app": app, "url_prefix": "/dunning", "name": "Dunning reports"}
    ]
    # A tab on the DAG run page; the API server fills in {RUN_ID}.  Relative, so it works
    # behind a proxy that serves Airflow under a sub-path.
    external_views: ClassVar[list[dict]] = [
        {
            "name": "Report",
            "href": "dunning/runs/{RUN_ID}",
            "destination": "dag_run",
            "url_route": "dunning_report",
        }
    ]
