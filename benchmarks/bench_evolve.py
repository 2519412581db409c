"""Evolution benchmarks: cost of one evaluation per task, serial vs process executor, operators, a whole preset.

    python benchmarks/bench_evolve.py                    # parts: evaluations, executors, operators (~3 min here)
    python benchmarks/bench_evolve.py --preset quick     # + one whole run of a preset (wall time, per-generation stats)
    python benchmarks/bench_evolve.py --preset cpu --only-preset   # the hour-long cpu run, for docs/benchmarks.md
    python benchmarks/bench_evolve.py --from-run runs/evolve-cpu-s0  # the same report from a finished `evoprune evolve` run

Writes ``benchmarks/results/evolve.{json,md}`` (and ``evolve_<preset>.{json,md}`` for a preset run). The tasks are
the ``quick`` preset's (LeNet-5 on MNIST-5k with the paper's schedule, VGG-11 w0.25 on digits), pretrained once in
``--work`` and reused. Every evaluation runs with 1 torch thread, as in evolution. Timings are medians; the executor
comparison alternates serial and process rounds in one process and reports their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_results
from evoprune.device import machine
from evoprune.evolve import PAPER_SEEDS, evolve, load_preset
from evoprune.evolve.fitness import FitnessJob, prepare_task, run_fitness_job
from evoprune.evolve.operators import Variation, VariationStats
from evoprune.metrics import get_metric
from evoprune.parallel import Job, ProcessExecutor, SerialExecutor

SEEDS = [get_metric(name).formula for name in PAPER_SEEDS]


def prepared_tasks(work: Path) -> tuple[Any, dict[str, Any]]:
    config = load_preset("quick")
    tasks = {t.name: prepare_task(t, config, work / "models") for t in config.tasks}
    return config, tasks


def bench_evaluations(tasks: dict[str, Any]) -> dict[str, Any]:
    """Seconds per evaluation (prune + fine-tune + validate) of each seed function on each task, 1 thread."""
    out = {}
    for name, prepared in tasks.items():
        bundle = prepared.bundle
        run_fitness_job(FitnessJob(SEEDS[0], name, 0, 1), bundle)  # warm-up: imports, first optimiser
        seconds, accuracies = [], {}
        for metric, formula in zip(PAPER_SEEDS, SEEDS):
            start = time.perf_counter()
            result = run_fitness_job(FitnessJob(formula, name, 0, 1), bundle)
            seconds.append(time.perf_counter() - start)
            accuracies[metric] = result["score"]
        finetune = bundle.finetune
        out[name] = {
            "median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds),
            "evaluations": len(seconds), "train_samples": len(bundle.train_y), "val_samples": len(bundle.val_y),
            "finetune_epochs_per_step": finetune["epochs"], "schedule": bundle.schedule,
            "val_accuracy_by_seed": accuracies, "pretrained_val_accuracy": prepared.pretrained_val_accuracy,
        }
    return out


def bench_executors(tasks: dict[str, Any], rounds: int) -> dict[str, Any]:
    """The same 14 evaluations (7 seeds x 2 tasks) through serial and a 2-worker process pool, alternately."""
    jobs = [Job(f"{t}-{i}", FitnessJob(f, t, 0, 1), shared=t) for t in tasks for i, f in enumerate(SEEDS)]
    serial = SerialExecutor(threads=1)
    start = time.perf_counter()
    pool = ProcessExecutor(2, threads=1, preload=("torch._dynamo", "evoprune.evolve.fitness", "evoprune.prune"))
    for ex in (serial, pool):
        for name, prepared in tasks.items():
            ex.share(name, prepared.bundle)
    pool.run(run_fitness_job, jobs[:2])  # start-up: workers import, receive the bundles, first optimiser
    startup = time.perf_counter() - start
    times: dict[str, list[float]] = {"serial": [], "process": []}
    values: dict[str, list[float]] = {}
    try:
        for _ in range(rounds):
            for label, ex in (("serial", serial), ("process", pool)):
                t0 = time.perf_counter()
                outs = ex.run(run_fitness_job, jobs)
                times[label].append(time.perf_counter() - t0)
                values[label] = [o.value["score"] for o in outs]
    finally:
        pool.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"jobs": len(jobs), "rounds": rounds, "median_s": med, "speedup": med["serial"] / med["process"],
            "process_startup_s": startup, "same_accuracies": values["serial"] == values["process"]}


def bench_operators(count: int) -> dict[str, Any]:
    """Time per child (crossover of a pair + mutation, with validity checks) from the seed functions."""
    var = Variation(load_preset("quick").operators)
    parents = [var.from_formula(f) for f in SEEDS]
    rng, stats = random.Random(0), VariationStats()
    start = time.perf_counter()
    for i in range(count):
        a, b, _ = var.crossover(parents[i % 7], parents[(i * 3 + 1) % 7], rng, stats)
        var.mutate(a, rng, stats)
    seconds = time.perf_counter() - start
    return {"children": count, "ms_per_child": 1000 * seconds / count, **stats.as_dict()}


def bench_preset(name: str, work: Path) -> dict[str, Any]:
    config = load_preset(name)
    run_dir = work / f"run-{name}"
    start = time.perf_counter()
    result = evolve(config, run_dir, overwrite=True)
    wall = time.perf_counter() - start
    return {
        "preset": name, "wall_s": wall, "generation_s": result.seconds, "evaluations": result.evaluations,
        "failures": result.failures, "executor": result.executor, "run_dir": str(run_dir),
        "best": {"formula": result.best.formula, "infix": result.best.infix, "fitness": result.best.fitness,
                 "accuracies": result.best.accuracies},
        "best_seed": None if not result.seeds else {"name": result.seeds[0].origin, "fitness": result.seeds[0].fitness,
                                                    "accuracies": result.seeds[0].accuracies},
        "tasks": result.tasks,
        "history": [{k: h[k] for k in ("generation", "best", "mean", "median", "unique", "evaluated", "reevaluated",
                                       "cache_hits", "failed", "seconds", "best_infix", "hall_of_fame_best")}
                    for h in result.history],
    }


def preset_from_run(run_dir: Path) -> dict[str, Any]:
    """``bench_preset``'s record of a run made with ``evoprune evolve``: scores from ``results.json``, wall time
    (first start to last finish) and per-generation seconds and jobs from ``events.jsonl``."""
    results = json.loads((run_dir / "results.json").read_text())
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]
    start = next(e for e in events if e["event"] == "start")
    finish = next(e for e in reversed(events) if e["event"] == "finish")
    timing = {e["generation"]: e for e in events if e["event"] == "generation"}
    history = []
    for h in results["history"]:
        t = timing.get(h["generation"], {})
        history.append({k: h.get(k) for k in ("generation", "best", "mean", "median", "unique", "evaluated",
                                             "reevaluated", "cache_hits", "failed", "best_infix",
                                             "hall_of_fame_best", "best_fidelity", "fidelities")}
                       | {"seconds": t.get("seconds", 0.0), "jobs": t.get("jobs")})
    best, seeds = results["best"], results["seed_functions"]
    return {
        "preset": results["config"]["name"], "wall_s": (datetime.fromisoformat(finish["time"]) - datetime.fromisoformat(start["time"])).total_seconds(),
        "generation_s": finish["seconds"], "evaluations": results["evaluations"], "failures": results["failures"],
        "executor": start["executor"], "run_dir": str(run_dir),
        "best": {k: best[k] for k in ("formula", "infix", "fitness", "accuracies", "fidelity")},
        "best_seed": None if not seeds else {"name": seeds[0]["origin"], "fitness": seeds[0]["fitness"],
                                             "accuracies": seeds[0]["accuracies"], "fidelity": seeds[0]["fidelity"]},
        "tasks": results["tasks"], "history": history,
        "jobs_per_fidelity": {level: sum(h["fidelities"][level]["evaluated"] for h in history if h.get("fidelities"))
                              for level in results["config"]["fidelity"]["levels"]} if history[0].get("fidelities") else {},
    }


def preset_markdown(p: dict[str, Any], info: dict[str, Any]) -> str:
    lines = [f"## Evolution preset `{p['preset']}`", "",
             f"Machine: {info['nproc']} cores ({info['cpu']}), torch {info['torch']}"
             + (f", load average {info['load_average_at_start']:.1f} at start" if "load_average_at_start" in info else "")
             + f"; executor {p['executor']}.",
             f"Wall time {p['wall_s']:.0f} s ({p['wall_s'] / 60:.1f} min) including pretraining; "
             f"{p['evaluations']} task evaluations ({p['failures']} failed) in {p['generation_s']:.0f} s of generations.",
             "Fitness: weighted geometric mean of validation accuracies after pruning and fine-tuning (test never used).",
             ]
    levels = list(p.get("jobs_per_fidelity", {}))
    if levels:
        lines += [f"With several fidelities, `best`, `mean` and `median` describe the population at the cheapest "
                  f"fidelity ({levels[0]}: the mean over tasks of the Spearman correlation with the oracle, for "
                  f"`oracle`), and `best so far` is the hall of fame's best at the highest fidelity reached "
                  f"({levels[-1]}); selection is lexicographic (fidelity reached, then fitness there). `new at F` "
                  "counts candidates scored at fidelity F for the first time that generation.",
                  "Candidates scored per fidelity over the run: "
                  + ", ".join(f"{level} {n}" for level, n in p["jobs_per_fidelity"].items()) + "."]
    per_level = "".join(f" new at {level} |" for level in levels)
    lines += ["", f"| gen | best | best so far | mean | median | unique | new | re-eval |{per_level} cache hits | "
              "failed | s |", "| ---: " * (11 + len(levels)) + "|"]
    for h in p["history"]:
        counts = "".join(f" {h['fidelities'][level]['candidates']} |" for level in levels)
        lines.append(f"| {h['generation']} | {h['best']:.4f} | {h['hall_of_fame_best']:.4f} | {h['mean']:.4f} | "
                     f"{h['median']:.4f} | {h['unique']} | {h['evaluated']} | {h['reevaluated']} |{counts} "
                     f"{h['cache_hits']} | {h['failed']} | {h['seconds']:.0f} |")
    b = p["best"]
    lines += ["", f"Best: `{b['infix']}` fitness {b['fitness']:.4f} "
              f"({', '.join(f'{k} {v:.4f}' for k, v in b['accuracies'].items())})"]
    if p["best_seed"]:
        s = p["best_seed"]
        lines.append(f"Best seed function: {s['name']} fitness {s['fitness']:.4f} "
                     f"({', '.join(f'{k} {v:.4f}' for k, v in s['accuracies'].items())})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=None, help="folder for pretrained task models and runs")
    parser.add_argument("--rounds", type=int, default=3, help="alternating serial/process rounds")
    parser.add_argument("--preset", default=None, help="also time one whole run of this preset")
    parser.add_argument("--only-preset", action="store_true", help="only the preset run")
    parser.add_argument("--from-run", type=Path, default=None,
                        help="write the preset report of a finished `evoprune evolve` run instead of running one")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args()
    if args.from_run:
        preset = preset_from_run(args.from_run)
        info = machine()
        write_results(f"evolve_{preset['preset']}", {"machine": info, "preset": preset}, preset_markdown(preset, info),
                      args.out)
        return
    torch.set_num_threads(1)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-evolve-"))
    info = machine()
    info["load_average_at_start"] = os.getloadavg()[0]  # the machine is shared: other jobs slow every timing
    if not args.only_preset:
        config, tasks = prepared_tasks(work)
        evaluations = bench_evaluations(tasks)
        executors = bench_executors(tasks, args.rounds)
        operators = bench_operators(200)
        payload = {"machine": info, "evaluations": evaluations, "executors": executors, "operators": operators}
        md = ["## Evolution: cost of one candidate", "",
              f"Machine: {info['nproc']} cores ({info['cpu']}), torch {info['torch']}, 1 torch thread per evaluation, "
              f"load average {info['load_average_at_start']:.1f} at start (a shared machine). "
              "Tasks of the `quick` preset; each evaluation prunes with the candidate (Torch-Pruning), fine-tunes and "
              "measures validation accuracy. Median over the 7 seed functions.", "",
              "| task | schedule | train / val samples | fine-tune epochs per step | s per evaluation (median, min–max) |",
              "| --- | --- | ---: | ---: | ---: |"]
        for name, e in evaluations.items():
            md.append(f"| {name} | {e['schedule']} | {e['train_samples']} / {e['val_samples']} | "
                      f"{e['finetune_epochs_per_step']} | {e['median_s']:.2f} ({e['min_s']:.2f}–{e['max_s']:.2f}) |")
        ex = executors
        md += ["", f"Executors, {ex['jobs']} evaluations, {ex['rounds']} alternating rounds: serial "
               f"{ex['median_s']['serial']:.1f} s, 2 worker processes {ex['median_s']['process']:.1f} s "
               f"(×{ex['speedup']:.2f}); pool start-up {ex['process_startup_s']:.1f} s; identical accuracies: "
               f"{ex['same_accuracies']}.",
               f"Operators: {operators['ms_per_child']:.1f} ms per child (crossover + mutation with validity checks; "
               f"{operators['invalid']} invalid attempts retried, {operators['gave_up']} gave up, of "
               f"{operators['crossovers'] + operators['mutations']} operations)."]
        if args.preset:
            preset = bench_preset(args.preset, work)
            payload["preset"] = preset
            md += ["", preset_markdown(preset, info)]
        write_results("evolve", payload, "\n".join(md))
    else:
        preset = bench_preset(args.preset or "cpu", work)
        write_results(f"evolve_{preset['preset']}", {"machine": info, "preset": preset}, preset_markdown(preset, info))


if __name__ == "__main__":
    main()
