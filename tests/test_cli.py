"""The command line (contract C1) as an operator calls it: a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO


def dunning(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'plugins'}{os.pathsep}{REPO}"}
    return subprocess.run(
        [sys.executable, "-m", "dunning", *args], env=env, capture_output=True, text=True
    )


def test_help_lists_the_subcommands():
    out = dunning("--help")
    assert out.returncode == 0
    for sub in ("generate", "bench", "demo", "ui", "services"):
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
    records = tmp_path / "bench.jsonl"
    out = dunning("bench", "--sizes", "300,600", "--json", str(records))
    assert out.returncode == 0, out.stderr
    assert "extract+validate" in out.stdout
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    stages = {(r["size"], r["stage"]) for r in rows}
    for size in (300, 600):
        assert {(size, s) for s in ("extract", "validate", "load_ledger", "age", "plan")} <= stages
    timed = rows
    assert all(r["seconds"] > 0 and r["peak_mb"] > 50 for r in timed)
