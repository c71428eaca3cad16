"""Telling people: an e-mail when a daily run fails and when it has not finished in time.

Both go through the Airflow SMTP connection the config names, to the config's recipients, and
are built when the DAG file is parsed (like the schedule), so changing a recipient is a config
change, not a code change.  The failure mail is a DAG-level callback -- one mail per failed run,
not one per failed task -- and carries no debtor data, only where to look.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk.definitions.callback import AsyncCallback
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

from dunning.airflow.tasks import parse_time_config

FAILED_SUBJECT = "Dunning: {dag_id} run {run_id} failed"
FAILED_BODY = (
    "<p>The Dunning run <b>{run_id}</b> of <b>{dag_id}</b> failed.</p>"
    "<p>The run summary, with any gate that stopped it, is in the lake under "
    "<code>reports/as_of=&lt;date&gt;/summary.json</code>; its report is the run's "
    "<i>Report</i> tab in the Airflow UI.  Nobody was contacted by the steps that did not run."
    "</p>"
)
LATE_SUBJECT = "Dunning: {dag_id} has not finished within {minutes} minutes"
LATE_BODY = (
    "<p>A <b>{dag_id}</b> run was queued more than {minutes} minutes ago and has not finished. "
    "Reminders due today may be late. Check the run in the Airflow UI.</p>"
)


def on_failure() -> list[Callable[[dict], None]]:
    """The DAG's failure callbacks: an e-mail to ``alerts.email_to`` (none without them).

    A plain callable rather than ``SmtpNotifier``: the notifier renders Jinja with the DAG's
    template environment, which the serialized DAG that ``dag.test()`` hands to DAG callbacks
    lacks in 3.3.2 (AttributeError ``get_template_env``), so the mail would never go out there.
    """
    cfg = parse_time_config()
    if cfg is None or not cfg.alerts.email_to:
        return []
    alerts = cfg.alerts

    def mail_failure(context: dict) -> None:
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        names = {"dag_id": context["dag"].dag_id, "run_id": context["run_id"]}
        with SmtpHook(smtp_conn_id=alerts.smtp_conn_id) as hook:
            hook.send_email_smtp(
                to=alerts.email_to,
                from_email=alerts.email_from,
                subject=FAILED_SUBJECT.format(**names),
                html_content=FAILED_BODY.format(**names),
            )

    return [mail_failure]


def deadline(dag_id: str) -> DeadlineAlert | None:
    """Mail when a run is still going ``alerts.finish_within_minutes`` after it was queued;
    the triggerer fires it even if the run never ends."""
    cfg = parse_time_config()
    if cfg is None or not cfg.alerts.email_to or not cfg.alerts.finish_within_minutes:
        return None
    alerts = cfg.alerts
    minutes = alerts.finish_within_minutes
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(minutes=minutes),
        callback=AsyncCallback(
            SmtpNotifier,
            kwargs={
                "to": alerts.email_to,
                "from_email": alerts.email_from,
                "subject": LATE_SUBJECT.format(dag_id=dag_id, minutes=minutes),
                "html_content": LATE_BODY.format(dag_id=dag_id, minutes=minutes),
                "smtp_conn_id": alerts.smtp_conn_id,
            },
        ),
        name=f"{dag_id}_late",
    )
