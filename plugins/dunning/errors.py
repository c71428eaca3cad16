"""Errors that decide how a run reacts, kept import-light: Airflow's retry policy resolves these
names at DAG-parse time, and nothing heavy (pandas, pyarrow) should load then."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the key."""


class SourceError(RuntimeError):
    """A source that cannot be read at all; the run stops before anyone is contacted."""


class SourceMissing(SourceError):
    """The file has not arrived (yet): worth the normal retries, unlike a broken one."""


class SourceGateError(RuntimeError):
    """One or more sources failed a source-level gate; carries every failure, not just the first."""

    def __init__(self, failures: list[dict]):
        self.failures = failures
        lines = [f"{f['source']} ({f['file']}): {f['gate']}: {f['message']}" for f in failures]
        super().__init__("source gates failed, nobody will be contacted:\n  " + "\n  ".join(lines))


class NotEnoughHistory(ValueError):
    """Too little closed history to train or backtest a model; more days will not come by retry."""


class DateBusy(RuntimeError):
    """Another business date is being run: this one is refused, with the date and run that
    hold the ledger, rather than books that depend on which run got there first."""
