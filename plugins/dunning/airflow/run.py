"""Run one DAG end to end in this process with ``dag.test()``: the demo's and the tests' runner.

Airflow reads its configuration from the environment at import, so this runs as its own process
(``python -m dunning.airflow.run``) with the environment already set by the caller.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from airflow.dag_processing.dagbag import DagBag

from dunning import clock

DAGS = Path(__file__).resolve().parents[3] / "dags"


def run_dag(dag_id: str, conf: dict, **test_kwargs: object) -> tuple[str, dict[str, str]]:
    """Returns the run state and each task's state (mapped tasks as ``task[i]``).

    ``test_kwargs`` go to ``dag.test``.  By default the run has no logical date and is due at
    the product clock's now (``run_after``): a replay or a test that pins the clock runs the day
    it pinned, not the day the machine says, and each run still gets its own run id.
    """
    test_kwargs.setdefault("logical_date", None)
    test_kwargs.setdefault("run_after", clock.utcnow())
    bag = DagBag(dag_folder=str(DAGS))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    dag = bag.dags[dag_id]
    # dag.test() has no triggerer to fire a deadline alert, and in 3.3.2 it crashes closing a
    # run of a DAG that has one (DagRun.update_state looks the serialized alert up as a UUID:
    # "'dict' object has no attribute 'hex'"); the real scheduler path is unaffected.
    dag.deadline = None
    run = dag.test(run_conf=conf, **test_kwargs)
    states = {
        (ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): str(ti.state)
        for ti in run.get_task_instances()
    }
    return str(run.state), states


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dunning.airflow.run")
    parser.add_argument("--dag", default="dunning_daily")
    parser.add_argument("--conf", default="{}", help="run conf (params) as JSON")
    parser.add_argument("--result", type=Path, help="also write the outcome as JSON here")
    args = parser.parse_args(argv)
    state, tasks = run_dag(args.dag, json.loads(args.conf))
    outcome = json.dumps({"state": state, "tasks": tasks})
    print(outcome)
    if args.result:
        args.result.write_text(outcome, encoding="utf-8")
    return 0 if state == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
