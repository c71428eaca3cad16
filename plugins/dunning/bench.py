"""``python -m dunning bench``: time and peak memory of each pipeline stage on generated portfolios.

Each stage runs in a fresh spawned process so its peak resident memory is its own (interpreter
and imports included, as in a real Airflow task), not whatever an earlier stage left behind.
The stages are the real ones: the same functions the DAG calls, writing to a local lake and a
SQLite ledger.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import resource
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path

STAGES = ("generate", "extract", "validate", "load_ledger", "history", "age", "score", "plan")
TARGETS = {  # the design brief's budgets on 1M open invoices, per group of stages
    "extract+validate": (("extract", "validate"), 30),
    "segment+plan": (("age", "score", "plan"), 20),
}
AS_OF = date(2026, 11, 23)


def _stage(name: str, workdir: str, debtors: int, queue: mp.Queue) -> None:
    """One stage, exactly as the DAG task runs it, reading what the previous stages recorded."""
    from dunning import history, lake, ledger, planning, segmentation
    from dunning.config import load_config
    from dunning.generate import generate
    from dunning.quality import validate_to_lake
    from dunning.sources import extract_to_lake

    work = Path(workdir)
    state_file = work / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    url = f"sqlite:///{work / 'ledger.sqlite'}"
    start = time.perf_counter()
    if name == "generate":
        result = generate(work / "portfolio", debtors=debtors, as_of=AS_OF, seed=0)["counts"]
    else:
        cfg = load_config(work / "portfolio" / "config.yaml")
        root = lake.root((work / "lake").as_uri())
        ledger.migrate(url)
        with ledger.ledger(url) as engine:
            if name == "extract":
                result = [extract_to_lake(cfg, s.name, AS_OF, root) for s in cfg.sources]
            elif name == "validate":
                result = validate_to_lake(cfg, AS_OF, root, state["extract"], {})
            elif name == "load_ledger":
                result = ledger.load_from_lake(engine, AS_OF, root, state["validate"])
            elif name == "history":
                result = history.load_history(cfg, engine, root, AS_OF)
            elif name == "age":
                result = segmentation.aging_to_lake(cfg, AS_OF, root, state["validate"], engine)
            elif name == "score":
                view = state["age"]["debtor_view"]
                result = planning.score_to_lake(cfg, AS_OF, root, engine, view)
            else:
                view = state["score"]["scored_view"]
                result = planning.plan_to_lake(cfg, AS_OF, root, engine, view)
    seconds = time.perf_counter() - start
    state_file.write_text(json.dumps({**state, name: result}, default=str))
    queue.put({"seconds": round(seconds, 3), "peak_mb": round(_peak_rss_mb(), 1)})


def _peak_rss_mb() -> float:
    """VmHWM belongs to this address space; ru_maxrss would carry the parent's peak over exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_size(size: int, workdir: Path) -> list[dict]:
    """Generate about ``size`` open invoices and time every stage on them."""
    from dunning.generate import MEAN_OPEN_INVOICES_PER_DEBTOR

    debtors = max(1, math.ceil(size / MEAN_OPEN_INVOICES_PER_DEBTOR))
    ctx = mp.get_context("spawn")
    records = []
    for stage in STAGES:
        queue = ctx.Queue()
        proc = ctx.Process(target=_stage, args=(stage, str(workdir), debtors, queue))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"bench stage {stage} failed at size {size} (exit {proc.exitcode})")
        records.append({"size": size, "stage": stage, **queue.get()})
    return records


def main(sizes: list[int], json_path: Path | None = None, keep: Path | None = None) -> int:
    records: list[dict] = []
    print(f"{'size':>9} {'stage':<16} {'seconds':>9} {'peak MB':>9}")
    for size in sizes:
        workdir = Path(tempfile.mkdtemp(prefix=f"dunning-bench-{size}-", dir=keep))
        try:
            for rec in run_size(size, workdir):
                records.append(rec)
                print(
                    f"{size:>9} {rec['stage']:<16} {rec['seconds']:>9.2f} {rec['peak_mb']:>9.0f}",
                    flush=True,
                )
        finally:
            if keep is None:
                shutil.rmtree(workdir, ignore_errors=True)
        for group, (stages, budget) in TARGETS.items():
            part = [r for r in records if r["size"] == size and r["stage"] in stages]
            print(
                f"{size:>9} {group:<16} {sum(r['seconds'] for r in part):>9.2f} "
                f"{max(r['peak_mb'] for r in part):>9.0f}   (budget at 1M: {budget} s)",
                flush=True,
            )
    if json_path:
        json_path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return 0
