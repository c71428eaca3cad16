"""The lake on local disk: whole objects only, and readable by its owner alone (it holds PII)."""

from __future__ import annotations

import stat
from datetime import date

import pandas as pd

from dunning import lake, ledger


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_and_the_folders_made_for_them_are_owner_only(tmp_path):
    root = lake.root((tmp_path / "lake").as_uri())
    key = lake.partition("snapshots", date(2026, 11, 23), source="erp") + "/debtors.parquet"
    lake.write_parquet(root / key, pd.DataFrame({"name": ["Jane Smith"]}))
    written = tmp_path / "lake" / key
    assert _mode(written) == 0o600
    folder = written.parent
    while folder != tmp_path:
        assert _mode(folder) == 0o700, folder
        folder = folder.parent
    assert [p.name for p in written.parent.iterdir()] == ["debtors.parquet"]  # no temp left


def test_a_new_sqlite_ledger_is_owner_only(tmp_path):
    url = f"sqlite:///{tmp_path / 'var' / 'ledger.sqlite'}"
    ledger.migrate(url)
    assert _mode(tmp_path / "var" / "ledger.sqlite") == 0o600
    assert _mode(tmp_path / "var") == 0o700
