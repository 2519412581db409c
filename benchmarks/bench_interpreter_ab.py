"""A/B of the interpreter's raw-map path against an earlier revision, on the GP children of a finished run.

    python benchmarks/bench_interpreter_ab.py runs/evolve-cpu-s0 --old-rev 7a418d5 --formulas 150

Takes the oracle-fidelity formulas the run evaluated from generation 10 on whose simplified form needs raw feature
maps, and scores each with the `oracle` fidelity on every task of the run, once with the current
``_evaluate_materialised`` and once with the one of ``--old-rev`` (alternating which goes first), in one process
with 1 thread, timing CPU seconds. Reports the speed-up per task and the largest difference in oracle fitness.
Writes ``benchmarks/results/interpreter_ab.{json,md}``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_results
from evoprune.device import machine
from evoprune.evolve import config_from_dict
from evoprune.evolve.fitness import FitnessJob, prepare_task
from evoprune.evolve.screen import run_oracle_job
from evoprune.expr import analyse, interpreter, parse

ROOT = Path(__file__).resolve().parents[1]


def old_materialised(rev: str):
    """``_evaluate_materialised`` of the interpreter as it was at ``rev``."""
    source = subprocess.run(["git", "show", f"{rev}:src/evoprune/expr/interpreter.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_interpreter.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_interpreter", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_interpreter"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module._evaluate_materialised


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--old-rev", required=True, help="git revision of the interpreter to compare against")
    parser.add_argument("--formulas", type=int, default=150)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    variants = {"old": old_materialised(args.old_rev), "new": interpreter._evaluate_materialised}
    config = config_from_dict(json.loads((args.run_dir / "config.json").read_text()), source=str(args.run_dir))
    events = [json.loads(line) for line in (args.run_dir / "events.jsonl").read_text().splitlines() if line.strip()]
    keys = sorted({e["key"] for e in events if e["event"] == "evaluation" and e["fidelity"] == "oracle"
                   and e["generation"] >= 10 and e["status"] == "ok"})
    keys = [k for k in keys if analyse(parse(k), simplify=True).needs_features]
    random.Random(0).shuffle(keys)
    keys = keys[:args.formulas]
    tasks = {}
    for task in config.tasks:
        bundle = prepare_task(task, config, args.run_dir / "models", oracle_dir=args.run_dir / "oracle").bundle
        cpu = dict.fromkeys(variants, 0.0)
        diffs = []
        for i, key in enumerate(keys):
            scores = {}
            for name in (("old", "new") if i % 2 else ("new", "old")):
                interpreter._evaluate_materialised = variants[name]
                tick = time.process_time()
                try:
                    scores[name] = run_oracle_job(FitnessJob(key, task.name, 0, 0, "oracle"), bundle)["score"]
                except Exception as exc:  # a failing candidate must fail the same way in both
                    scores[name] = type(exc).__name__
                cpu[name] += time.process_time() - tick
            same_kind = isinstance(scores["old"], float) and isinstance(scores["new"], float)
            diffs.append(abs(scores["old"] - scores["new"]) if same_kind else
                         (0.0 if scores["old"] == scores["new"] else float("inf")))
        interpreter._evaluate_materialised = variants["new"]
        tasks[task.name] = {"cpu_s": cpu, "speedup": cpu["old"] / cpu["new"], "max_fitness_diff": max(diffs)}
    payload = {"machine": machine(), "run_dir": str(args.run_dir), "old_rev": args.old_rev, "formulas": len(keys),
               "tasks": tasks}
    lines = [f"## Interpreter raw-map path: current against `{args.old_rev}`", "",
             f"{len(keys)} raw-map GP children of `{args.run_dir}` (generation ≥ 10), oracle fidelity, 1 thread, CPU "
             "seconds, old and new alternating.", "",
             "| task | old CPU s | new CPU s | speed-up | largest oracle-fitness difference |", "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {name} | {t['cpu_s']['old']:.1f} | {t['cpu_s']['new']:.1f} | {t['speedup']:.2f}× | "
              f"{t['max_fitness_diff']:.2g} |" for name, t in tasks.items()]
    write_results("interpreter_ab", payload, "\n".join(lines), args.out)


if __name__ == "__main__":
    main()
