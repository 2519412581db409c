"""Oracle-fidelity throughput on the GP children of a finished evolution run (issue 13 floor: ≥ 10 per second per core).

    .venv/bin/python benchmarks/bench_oracle_children.py runs/evolve-cpu-s0 --formulas 300
    PYTHONPATH=/tmp/old/src .venv/bin/python benchmarks/bench_oracle_children.py runs/evolve-cpu-s0 --label old

Library and random trees are cheaper than what evolution breeds (trees grow from 7 to about 40 nodes), so the floor
is measured on the run's own children: ``--formulas`` distinct formulas drawn (fixed seed) from those the run scored
at the ``oracle`` fidelity from generation ``--min-generation`` on, failures included. Each is scored on every task
of the run with its cached oracle and layer data, in this one process with 1 torch thread, timing CPU seconds (on a
shared machine wall time measures the neighbours). A candidate is one formula on all tasks, as in the run.
``--set KEY=VALUE`` (repeatable) changes a setting of the run's configuration, e.g. ``--set
fidelity.screen_dtype=float32`` (single precision), ``--set fidelity.feature_samples=50`` or ``--set
operators.max_operations=1e9`` (a tighter cost limit: the candidates it refuses fail at once, as in a run).
``--label`` names the code measured (the current checkout, or an older one put first on ``PYTHONPATH``): each label
is a row of ``benchmarks/results/oracle_children.{json,md}``, so two checkouts can be compared on the same sample.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

import evoprune

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_results
from evoprune.config import parse_assignment
from evoprune.device import machine
from evoprune.evolve import config_from_dict, with_overrides
from evoprune.evolve.fitness import FitnessJob, prepare_task
from evoprune.evolve.screen import run_oracle_job

NAME = "oracle_children"


def sample(run_dir: Path, count: int, min_generation: int) -> list[str]:
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]
    keys = sorted({e["key"] for e in events if e["event"] == "evaluation" and e["fidelity"] == "oracle"
                   and e["generation"] >= min_generation})
    random.Random(0).shuffle(keys)
    return keys[:count]


def measure(run_dir: Path, keys: list[str], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    config = config_from_dict(json.loads((run_dir / "config.json").read_text()), source=str(run_dir))
    if overrides:
        config = with_overrides(config, overrides)
    tasks: dict[str, Any] = {}
    for task in config.tasks:
        bundle = prepare_task(task, config, run_dir / "models", oracle_dir=run_dir / "oracle").bundle
        run_oracle_job(FitnessJob(keys[0], task.name, 0, 0, "oracle"), bundle)  # warm the layer data caches
        times, fitness, failures = [], [], 0
        for key in keys:
            tick = time.process_time()
            try:
                fitness.append(run_oracle_job(FitnessJob(key, task.name, 0, 0, "oracle"), bundle)["score"])
            except Exception:  # a candidate that fails (memory limit, non-finite scores) costs its time too
                fitness.append(None)
                failures += 1
            times.append(time.process_time() - tick)
        ordered = sorted(times)
        tasks[task.name] = {"cpu_s": sum(times), "per_candidate_s": sum(times) / len(times),
                            "median_s": ordered[len(ordered) // 2], "p95_s": ordered[int(0.95 * (len(ordered) - 1))],
                            "max_s": ordered[-1], "failures": failures, "fitness": fitness}
    total = sum(t["cpu_s"] for t in tasks.values())
    return {"tasks": tasks, "cpu_s": total, "candidates_per_cpu_second": len(keys) / total}


def largest_difference(row: dict[str, Any], reference: dict[str, Any]) -> float:
    """The largest oracle-fitness difference from ``reference`` over formulas and tasks (inf if one failed alone)."""
    gaps = [0.0 if a is None and b is None else float("inf") if a is None or b is None else abs(a - b)
            for name, task in row["tasks"].items() for a, b in zip(task["fitness"], reference["tasks"][name]["fitness"])]
    return max(gaps)


def markdown(payload: dict[str, Any]) -> str:
    lines = ["# Oracle-fidelity throughput on a run's own GP children", "",
             f"{payload['formulas']} formulas drawn from those `{payload['run_dir']}` scored at `oracle` from generation "
             f"{payload['min_generation']} on; every task of the run, 1 torch thread, CPU seconds. A candidate is one "
             "formula on all tasks. Floor (issue 13): 10 per second per core.", "",
             "| code | candidates per CPU-second | " + " | ".join(
                 f"{name}: s per candidate (median, p95, max)" for name in payload["task_names"])
             + " | failures | largest fitness difference from the first row | load average |",
             "| --- | ---: | " + " | ".join("---:" for _ in payload["task_names"]) + " | ---: | ---: | ---: |"]
    first = next(iter(payload["rows"].values()))
    for label, row in payload["rows"].items():
        cells = [f"{row['tasks'][n]['per_candidate_s']:.3f} ({row['tasks'][n]['median_s']:.3f}, "
                 f"{row['tasks'][n]['p95_s']:.3f}, {row['tasks'][n]['max_s']:.2f})" for n in payload["task_names"]]
        failures = sum(t["failures"] for t in row["tasks"].values())
        lines.append(f"| {label} | **{row['candidates_per_cpu_second']:.1f}** | " + " | ".join(cells)
                     + f" | {failures} | {largest_difference(row, first):.2g} | {row['load_average']:.1f} |")
    lines += ["", "Load average: the mean of the 1-minute load before and after (this machine has 2 cores); the "
              "machine per row is in the JSON file beside this one."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--formulas", type=int, default=300)
    parser.add_argument("--min-generation", type=int, default=10)
    parser.add_argument("--label", default="current")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="change a setting of the run's configuration (repeatable), e.g. "
                        "fidelity.screen_dtype=float32")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    keys = sample(args.run_dir, args.formulas, args.min_generation)
    start = time.perf_counter()
    load = os.getloadavg()[0]
    overrides = dict(parse_assignment(text) for text in args.overrides)
    row = {**measure(args.run_dir, keys, overrides), "overrides": overrides,
           "code": str(Path(evoprune.__file__).resolve().parent),
           "machine": machine(), "wall_s": time.perf_counter() - start,
           "load_average": (load + os.getloadavg()[0]) / 2}
    path = args.out / f"{NAME}.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    same_sample = previous.get("keys") == keys
    payload = {"run_dir": str(args.run_dir), "formulas": len(keys), "min_generation": args.min_generation,
               "task_names": list(row["tasks"]), "keys": keys,
               "rows": {**(previous.get("rows", {}) if same_sample else {}), args.label: row}}
    write_results(NAME, payload, markdown(payload), args.out)
    print(markdown(payload))


if __name__ == "__main__":
    main()
