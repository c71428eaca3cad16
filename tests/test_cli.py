"""The command line (contract C1) as an operator calls it: a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO


def dunning(*args: str, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'plugins'}{os.pathsep}{REPO}", **env_vars}
    return subprocess.run(
        [sys.executable, "-m", "dunning", *args], env=env, capture_output=True, text=True
    )


def test_help_lists_the_subcommands():
    out = dunning("--help")
    assert out.returncode == 0
    for sub in ("generate", "bench", "demo", "ui", "services", "compliance", "review"):
        assert sub in out.stdout


def test_generate_writes_a_usable_portfolio(tmp_path):
    out = dunning(
        "generate",
        "--out",
        str(tmp_path),
        "--debtors",
        "30",
        "--as-of",
        "2026-11-23",
        "--seed",
        "4",
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["counts"]["debtors"] == 30
    assert (tmp_path / "config.yaml").is_file()
    assert (tmp_path / "ar_aging_detail.csv").read_bytes().startswith(b"\xef\xbb\xbf")


def test_bench_prints_a_table_and_writes_one_record_per_size_and_stage(tmp_path):
    """Every stage once, at one size: each stage is its own process, so a second size would
    double the time for nothing more than ``test_bench_times_each_size`` shows."""
    records = tmp_path / "bench.jsonl"
    out = dunning("bench", "--sizes", "300", "--json", str(records))
    assert out.returncode == 0, out.stderr
    assert "extract+validate" in out.stdout
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    stages = {(r["size"], r["stage"]) for r in rows}
    for size in (300,):
        expected = ("extract", "validate", "load_ledger", "age", "plan", "comply", "comply_engine",
                    "report")  # fmt: skip
        assert {(size, s) for s in expected} <= stages
        # Reconciliation is timed as a whole and split: matching (the budget) and recording.
        assert {(size, s) for s in ("reconcile", "reconcile.match", "reconcile.record")} <= stages
        placed = next(r for r in rows if r["size"] == size and r["stage"] == "place")
        assert placed["accounts"] > 0  # every overdue account, encrypted and published
    assert "match N payments" in out.stdout and "place N/10 accounts" in out.stdout
    assert "daily report" in out.stdout
    assert "accounts placed" in out.stdout
    timed = rows
    assert all(r["seconds"] > 0 and r["peak_mb"] > 50 for r in timed)


def test_bench_times_each_size(tmp_path):
    records = tmp_path / "bench.jsonl"
    out = dunning(
        "bench", "--sizes", "300,500", "--stages", "generate,extract", "--json", str(records)
    )
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    assert sorted((r["size"], r["stage"]) for r in rows) == [
        (300, "extract"), (300, "generate"), (500, "extract"), (500, "generate")
    ]  # fmt: skip


def test_compliance_check_answers_each_line_in_order_and_survives_bad_lines(tmp_path):
    ok = {
        "id": "s1",
        "at": "2026-09-16T14:00:00Z",
        "channel": "call",
        "debt": {"purpose": "consumer"},
        "debtor": {
            "country": "US",
            "state": "MA",
            "city": "Boston",
            "timezones": ["America/New_York"],
            "opted_out": ["sms"],
            "consented": ["email"],
            "inconvenient_times": [{"weekdays": [0, 1, 2, 3, 4], "start": "09:00", "end": "17:00"}],
        },
        "history": [
            {"at": "2026-09-14T15:00:00Z", "channel": "call", "connected": True},
            {"at": "2026-09-15T15:00:00Z", "channel": "sms"},
        ],
    }
    late = {"id": "s2", "at": "2026-09-17T02:30:00Z", "channel": "letter", "debtor": ok["debtor"]}
    bad_zone = {**late, "id": "s3", "debtor": {"timezones": ["Mars/Olympus"]}}
    file = tmp_path / "contacts.jsonl"
    lines = [json.dumps(ok), "{not json", json.dumps(late), json.dumps(bad_zone)]
    file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = dunning("compliance", "check", str(file))
    assert out.returncode == 0, out.stderr
    results = [json.loads(line) for line in out.stdout.splitlines()]
    assert results[0] == {
        "id": "s1",
        "allowed": False,
        "reasons": ["INCONVENIENT_TIME", "STATE_FREQUENCY"],
    }
    assert results[1]["id"] is None and "line 2" in results[1]["error"]
    assert results[2] == {"id": "s2", "allowed": True, "reasons": []}  # letters ignore the hour
    assert results[3]["id"] == "s3" and "Mars/Olympus" in results[3]["error"]
    assert len(results) == 4


def test_review_lists_unknown_sends_and_resolves_them(tmp_path):
    from datetime import UTC, date, datetime

    import sqlalchemy as sa

    from dunning import ledger

    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    ledger.migrate(url)
    row = {
        "as_of": date(2026, 11, 23),
        "debtor_id": "D1",
        "channel": "email",
        "template": "reminder_overdue",
        "template_version": "abc",
        "locale": "en",
        "claim": "run|email|1",
        "claimed_at": datetime(2026, 11, 23, 15, tzinfo=UTC),
    }
    with ledger.ledger(url) as engine, engine.begin() as conn:
        conn.execute(
            sa.insert(ledger.Message.__table__),
            [
                {**row, "contact_key": "D1:s:a:email:2026-11-23", "status": "unknown"},
                {
                    **row,
                    "contact_key": "D2:s:a:email:2026-11-23",
                    "status": "sent",
                    "debtor_id": "D2",
                },
                # a crash left this one mid-send, and no later send of that day came
                {
                    **row,
                    "contact_key": "D3:s:a:sms:2026-11-23",
                    "status": "sending",
                    "debtor_id": "D3",
                    "channel": "sms",
                },
            ],
        )
    listed = dunning("review", DUNNING_LEDGER_URL=url, DUNNING_NOW="2026-11-24T09:00:00Z")
    assert listed.returncode == 0, listed.stderr
    keys = [json.loads(line)["contact_key"] for line in listed.stdout.splitlines()]
    assert keys == ["D1:s:a:email:2026-11-23", "D3:s:a:sms:2026-11-23"]
    half = dunning("review", "--resolve", "D1:s:a:email:2026-11-23", DUNNING_LEDGER_URL=url)
    assert half.returncode == 2 and "--outcome" in half.stderr
    for key, outcome in (("D1:s:a:email", "not-delivered"), ("D3:s:a:sms", "delivered")):
        done = dunning(
            "review", "--resolve", f"{key}:2026-11-23", "--outcome", outcome,
            "--note", "provider log checked", "--by", "ops-anna", DUNNING_LEDGER_URL=url,
            DUNNING_NOW="2026-11-24T09:05:00Z",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert dunning("review", DUNNING_LEDGER_URL=url).stdout == ""
    with ledger.ledger(url) as engine, engine.connect() as conn:
        kept = conn.execute(sa.select(ledger.Message.__table__)).mappings().all()
    reviewed = {r["contact_key"]: r for r in kept if r["reviewed_by"]}
    # Who, when and what: kept.  The not-delivered contact's key is free for the day's next wave.
    assert set(reviewed) == {"D1:s:a:email:2026-11-23#review1", "D3:s:a:sms:2026-11-23"}
    assert reviewed["D1:s:a:email:2026-11-23#review1"]["status"] == "not_delivered"
    assert reviewed["D3:s:a:sms:2026-11-23"]["status"] == "sent"
    assert all(r["reviewed_by"] == "ops-anna" for r in reviewed.values())
    assert all(r["error"] == "review: provider log checked" for r in reviewed.values())
