"""The send task as its own process, so a test can kill it mid-wave and run it again.

``python -m tests.wave_worker SETUP.json CHANNEL`` runs ``waves.send_wave`` for one channel with
the settings in SETUP.json (config, ledger, lake, wave key, SMTP port, SMS provider) -- exactly
what the DAG's send task does, minus Airflow's context.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd

from dunning import clock, lake, ledger, waves
from dunning.channels.email import SmtpSettings
from dunning.channels.sms import SmsSettings
from dunning.config import load_config


def main(setup_file: str, channel: str) -> int:
    setup = json.loads(Path(setup_file).read_text())
    os.environ[clock.PIN] = setup["now"]  # the send task's clock, as the test pinned it
    cfg = load_config(setup["config"])
    transports = {
        "email": lambda: waves.EmailTransport(
            cfg,
            SmtpSettings(
                host="127.0.0.1",
                port=setup["smtp_port"],
                ssl=False,
                rate_per_second=cfg.channels.email.rate_per_second,
            ),
        ),
        "sms": lambda: waves.SmsTransport(
            SmsSettings(
                base_url=setup["sms"]["base_url"],
                account_sid=setup["sms"]["account"],
                auth_token=setup["sms"]["token"],
                sender=setup["sms"]["sender"],
                rate_per_second=cfg.channels.sms.rate_per_second,
            )
        ),
    }
    with ledger.ledger(setup["ledger"]) as engine:
        result = waves.send_wave(
            cfg,
            pd.Timestamp(setup["as_of"]).date(),
            lake.root(setup["lake"]),
            engine,
            setup["wave"],
            channel,
            mode=waves.Mode(True, "send"),
            claim=waves.new_claim("kill-test", channel),
            transport=transports[channel],
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
