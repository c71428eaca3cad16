"""Templates: every configured template exists, renders safely and passes the content lint."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dunning.config import ConfigError, load_config
from dunning.generate import DEMO_STRATEGY
from dunning.templates import REPO_TEMPLATES, lint, render, sample_context


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
