"""Invariant 1 the hard way: kill the sending process mid-wave, run the task again, and count
what the real SMTP server and the real SMS provider received."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from dunning import lake, ledger, sms_sink, waves
from dunning.config import REPO_ROOT, load_config
from dunning.smtp_sink import ENVELOPE_TO, read_mailbox
from tests.factories import ledger_debtor

pytestmark = pytest.mark.services

AS_OF = date(2026, 11, 23)
NOW = "2026-11-23T16:30:00Z"
DEBTORS = 300


@pytest.fixture
def wave_setup(tmp_path, smtp_server, sms_server):
    """A ledger with DEBTORS consenting Texans, and today's wave (one email and one SMS each)
    rendered into the lake; sending is rate-limited so the wave lasts long enough to be killed."""
    tag = uuid.uuid4().hex[:8]
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(
        yaml.safe_dump(
            {
                "portfolio": {"name": "Kill Test Ltd"},
                "sources": [{"name": "a", "path": "a.csv", "columns": {}}],
                "channels": {
                    "email": {"rate_per_second": 150, "messages_per_connection": 50},
                    "sms": {"rate_per_second": 150},
                },
            }
        )
    )
    cfg = load_config(cfg_path)
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    ledger.migrate(url)
    ids = [f"K{tag}-{i:04d}" for i in range(DEBTORS)]
    debtors = pd.DataFrame(
        {
            "debtor_id": ids,
            "name": [f"Debtor {i}" for i in range(DEBTORS)],
            "locale": "en",
            "country": "US",
            "region": "TX",
            "city": "Austin",
            "postal_code": "78701",
            "email": [f"d{i}@{tag}.example.com" for i in range(DEBTORS)],
            "phone": [f"+1512555{1000 + i:04d}" for i in range(DEBTORS)],
            "timezones": "America/Chicago",
        }
    )
    with ledger.ledger(url) as engine, engine.begin() as conn:
        conn.execute(
            sa.insert(ledger.Debtor.__table__),
            [ledger_debtor(r.pop("debtor_id"), AS_OF, **r) for r in debtors.to_dict("records")],
        )
    due = pd.concat(
        [
            pd.DataFrame(
                {
                    "contact_key": [f"{d}:standard:overdue:{ch}:{AS_OF}" for d in ids],
                    "debtor_id": ids,
                    "channel": ch,
                    "template": "reminder_overdue",
                    "currency": "USD",
                    "send_at": pd.Timestamp(NOW),
                }
            )
            for ch in ("email", "sms")
        ],
        ignore_index=True,
    )
    invoices = pd.DataFrame(
        {
            "debtor_id": ids,
            "invoice_id": [f"INV-{i}" for i in range(DEBTORS)],
            "reference": None,
            "due_date": pd.Timestamp("2026-10-01"),
            "currency": "USD",
            "open_minor": 12_345,
            "disputed": False,
            "doc_type": "invoice",
        }
    )
    wave, _ = waves.build_wave(
        cfg, AS_OF, due, debtors, invoices, link=lambda k, t: f"https://pay.example/{t}/",
    )  # fmt: skip
    lake_url = (tmp_path / "lake").as_uri()
    lake.write_parquet(lake.root(lake_url) / "wave.parquet", wave)
    setup = {
        "config": str(cfg_path),
        "ledger": url,
        "lake": lake_url,
        "wave": "wave.parquet",
        "as_of": AS_OF.isoformat(),
        "now": NOW,
        "smtp_port": smtp_server.port,
        "sms": {
            "base_url": f"http://127.0.0.1:{sms_server.port}",
            "account": sms_server.extra["account"],
            "token": sms_server.extra["token"],
            "sender": sms_server.extra["sender"],
        },
    }
    setup_file = tmp_path / "setup.json"
    setup_file.write_text(json.dumps(setup))
    return {"file": setup_file, "url": url, "tag": tag, "debtors": debtors}


def _worker(setup_file: Path, channel: str) -> list[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "plugins"), str(REPO_ROOT)]),
    }
    return [sys.executable, "-m", "tests.wave_worker", str(setup_file), channel], env


def _kill_when(cmd_env, received, at_least: int, timeout: float = 60) -> None:
    """Start the worker; SIGKILL it (no clean-up, no finally) once ``received()`` reaches
    ``at_least`` -- mid-wave, with more to send."""
    cmd, env = cmd_env
    proc = subprocess.Popen(
        cmd, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + timeout
    while received() < at_least:
        assert proc.poll() is None, (
            f"worker ended before the kill: {proc.stdout.read().decode()[-2000:]}"
        )
        assert time.monotonic() < deadline, "the wave never got going"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _rerun(cmd_env) -> dict:
    cmd, env = cmd_env
    done = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _statuses(url: str, channel: str) -> collections.Counter:
    with ledger.ledger(url) as engine, engine.connect() as conn:
        m = ledger.Message.__table__.c
        rows = conn.execute(sa.select(m.status).where(m.channel == channel)).scalars()
        return collections.Counter(rows)


def _check(received: collections.Counter, expected: set[str], url: str, channel: str) -> None:
    statuses = _statuses(url, channel)
    assert max(received.values()) == 1, "somebody was contacted twice"
    assert set(received) <= expected
    missing = expected - set(received)
    # only a send whose outcome the kill lost may be missing -- and it is flagged for review
    assert len(missing) <= statuses["unknown"] <= 1
    assert statuses["sent"] + statuses["unknown"] == len(expected)
    assert statuses["sent"] >= len(expected) - 1


def test_killing_the_email_wave_mid_send_then_rerunning_contacts_everyone_once(
    wave_setup, smtp_server
):
    maildir = Path(smtp_server.extra["maildir"])
    tag = wave_setup["tag"]

    def ours() -> list:
        return [m for m in read_mailbox(maildir) if m[ENVELOPE_TO] and tag in str(m[ENVELOPE_TO])]

    def count() -> int:  # cheap: file names only, the envelope is checked after
        return sum(
            1 for p in maildir.glob("*.eml") if tag in p.read_bytes()[:300].decode(errors="ignore")
        )

    cmd = _worker(wave_setup["file"], "email")
    _kill_when(cmd, count, at_least=40)
    killed_at = count()
    assert killed_at < DEBTORS
    result = _rerun(cmd)
    assert result["unknown_flagged"] <= 1
    received = collections.Counter(str(m[ENVELOPE_TO]) for m in ours())
    _check(received, set(wave_setup["debtors"]["email"]), wave_setup["url"], "email")


def test_killing_the_sms_wave_mid_send_then_rerunning_texts_everyone_once(wave_setup, sms_server):
    folder = Path(sms_server.extra["dir"])
    phones = set(wave_setup["debtors"]["phone"])

    def received() -> collections.Counter:
        return collections.Counter(
            m["to"] for m in sms_sink.read_messages(folder) if m["to"] in phones
        )

    cmd = _worker(wave_setup["file"], "sms")
    _kill_when(cmd, lambda: sum(received().values()), at_least=40)
    assert sum(received().values()) < DEBTORS
    _rerun(cmd)
    _check(received(), phones, wave_setup["url"], "sms")
