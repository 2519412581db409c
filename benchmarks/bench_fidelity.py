"""Fidelities of the evolution (issue 13): what each costs per candidate, and how well the cheap ones predict the
expensive one.

    python benchmarks/bench_fidelity.py speed              # seconds per candidate at oracle / recal / finetune
    python benchmarks/bench_fidelity.py study              # >= 200 formulas at all three fidelities, correlations
    python benchmarks/bench_fidelity.py study --smoke      # tiny tasks and few formulas (the test runs this)

Both use the ``cpu`` evolution preset's tasks (LeNet-5 on MNIST-5k with the paper's schedule, VGG-11 w0.5 on digits;
pretrained once, with their oracles, in ``--work``) and the fidelity settings of that preset's ``[fidelity]`` section
(or the defaults). ``speed`` runs every candidate in this process with 1 torch thread, so its oracle rate is per
core; the one-time costs (each task's oracle, each worker's cached layer data) are reported apart.

``study`` scores one formula set at every fidelity through the evolution's own job functions and a process pool:
every library metric with a formula, the formulas an oracle-only evolution on the same tasks visited (a short GP run
in ``--work``), and random trees of the primitive set, ``--formulas`` distinct canonical forms in all. Each finished
job is appended to ``--work/study.jsonl``, so a killed study continues where it stopped. It writes
``fidelity.{json,md}`` and the scatter plot ``fidelity.png``: Spearman correlations between the fidelities' fitnesses
over the formulas every fidelity scored, per task and combined.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats as scipy_stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_results
from evoprune.atomic import save_figure
from evoprune.device import machine
from evoprune.evolve import EvolutionConfig, config_from_dict, evolve, load_preset, with_overrides
from evoprune.evolve.engine import JOB_FUNCTIONS, WORKER_PRELOAD
from evoprune.evolve.fitness import FitnessJob, combine_fitness, derive_seed, prepare_task
from evoprune.evolve.operators import Variation, VariationStats
from evoprune.evolve.screen import Screen
from evoprune.expr import parse, size, to_infix
from evoprune.metrics import list_metrics
from evoprune.parallel import Job, make_executor, torch_threads

FIDELITIES = ("oracle", "recal", "finetune")

# Two tiny tasks on the synthetic data (the smoke size: seconds).
SMOKE = {
    "name": "fidelity-smoke", "seed": 0,
    "evolution": {"population": 8, "generations": 2, "elites": 2, "random_init": 2},
    "evaluation": {"executor": "process", "workers": 2, "timeout": 120},
    "fidelity": {"oracle_samples": 100},
    "tasks": [
        {"name": "mlp-syn", "model": "mlp", "dataset": "synthetic", "schedule": {"ratio": 0.5},
         "scoring_samples": 100, "train_samples": 100, "model_args": {"hidden": [16]},
         "pretrain": {"preset": "lenet5", "epochs": 3, "augment": "none"},
         "finetune": {"preset": "finetune", "epochs": 1, "lr": 1e-4}},
        {"name": "vgg-syn", "model": "vgg", "dataset": "synthetic", "schedule": {"ratio": 0.5},
         "scoring_samples": 100, "train_samples": 100, "model_args": {"depth": 11, "width": 0.125},
         "pretrain": {"preset": "lenet5", "epochs": 3, "augment": "none"},
         "finetune": {"preset": "finetune", "epochs": 1, "lr": 1e-3}},
    ],
}


def study_config(smoke: bool) -> EvolutionConfig:
    """The tasks and fidelity settings studied: the cpu preset's (or the smoke tasks), all three fidelities."""
    base = config_from_dict(SMOKE, source="smoke") if smoke else load_preset("cpu")
    return with_overrides(base, {"fidelity.levels": list(FIDELITIES), "fidelity.promote": [1.0, 1.0],
                                 "evolution.reevaluate_elites": False})


def prepared_tasks(config: EvolutionConfig, work: Path,
                   events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Each task pretrained (or reloaded) in ``work/models``, with its oracle (``work/oracle``); ``events`` collects
    what preparation logs (``oracle_done`` with the oracle's seconds)."""
    def log(event: str, **fields: Any) -> None:
        if events is not None:
            events.append({"event": event, **fields})

    return {t.name: prepare_task(t, config, work / "models", oracle_dir=work / "oracle", log=log)
            for t in config.tasks}


# --- the formula set ----------------------------------------------------------------------------------------------


def formula_set(config: EvolutionConfig, tasks: dict[str, Any], work: Path, count: int,
                evolved_share: float = 0.4) -> list[dict[str, str]]:
    """``count`` distinct formulas (canonical forms): library metrics, an oracle-only GP run's, random trees."""
    variation = Variation(config.operators)
    variation.set_real_layers([d for p in tasks.values() for d in p.bundle.layers])
    out: dict[str, dict[str, str]] = {}

    def add(tree: Any, source: str) -> None:
        key = variation.key(tree)
        if key not in out and len(out) < count:
            out[key] = {"formula": variation.formula(tree), "key": key, "source": source}

    for metric in list_metrics():
        if metric.formula is not None:
            try:
                add(variation.from_formula(metric.formula), f"library:{metric.name}")
            except ValueError:
                continue  # outside the typed primitive set
    for key, origin in evolved_formulas(config, work, int(count * evolved_share)):
        add(variation.from_formula(key), f"evolved:{origin}")
    rng, stats = random.Random(derive_seed(config.seed, "fidelity-study")), VariationStats()
    attempts = 0
    while len(out) < count and attempts < 50 * count:
        attempts += 1
        tree = variation.random_tree(rng, stats)
        if tree is not None:
            add(tree, "random")
    return list(out.values())


def evolved_formulas(config: EvolutionConfig, work: Path, count: int) -> list[tuple[str, str]]:
    """Up to ``count`` formulas an oracle-only evolution on the same tasks evaluated, in order of discovery."""
    if count <= 0:
        return []
    population = max(8, min(60, count // 4))
    run = with_overrides(config, {"fidelity.levels": ["oracle"], "fidelity.promote": [],
                                  "evolution.population": population, "evolution.random_init": population // 2,
                                  "evolution.elites": max(2, population // 5),
                                  "evolution.generations": max(2, count // population + 2)})
    run_dir = work / "evolve-oracle"
    for name in ("models", "oracle"):
        target = run_dir / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to((work / name).resolve(), target_is_directory=True)
    resume = (run_dir / "config.json").exists()
    if not (run_dir / "results.json").exists():
        evolve(None if resume else run, run_dir, resume=resume, write_outputs=True)
    cache = json.loads((run_dir / "checkpoint.json").read_text())["cache"]
    cache.sort(key=lambda e: (e["first_generation"], e["key"]))
    return [(e["key"], e["origin"]) for e in cache if not e["origin"].startswith("seed:")][:count]


# --- scoring ------------------------------------------------------------------------------------------------------


def score_all(config: EvolutionConfig, tasks: dict[str, Any], formulas: list[dict[str, str]], work: Path,
              workers: int) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Every (formula, fidelity, task) through the evolution's job functions; resumable via ``work/study.jsonl``."""
    journal = work / "study.jsonl"
    done: dict[tuple[str, str, str], dict[str, Any]] = {}
    if journal.exists():
        for line in journal.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            done[(record["key"], record["fidelity"], record["task"])] = record
    executor = make_executor("process", workers=workers, threads=config.evaluation.threads, preload=WORKER_PRELOAD)
    try:
        for name, prepared in tasks.items():
            executor.share(name, prepared.bundle)
        with open(journal, "a", encoding="utf-8") as handle:
            for fidelity in FIDELITIES:
                jobs, meta = [], {}
                for item in formulas:
                    for task in tasks:
                        if (item["key"], fidelity, task) in done:
                            continue
                        job_id = f"{fidelity}-{len(jobs)}"
                        seed = derive_seed(config.seed, "eval", 0, task)
                        jobs.append(Job(job_id, FitnessJob(item["key"], task, 0, seed, fidelity), shared=task))
                        meta[job_id] = (item["key"], task)
                started = time.perf_counter()

                def finished(outcome: Any, fidelity: str = fidelity, meta: dict = meta) -> None:
                    key, task = meta[outcome.id]
                    record = {"key": key, "fidelity": fidelity, "task": task, "status": outcome.status,
                              "score": outcome.value["score"] if outcome.ok else None, "error": outcome.error,
                              "seconds": outcome.seconds}
                    done[(key, fidelity, task)] = record
                    handle.write(json.dumps(record) + "\n")
                    handle.flush()

                if jobs:
                    executor.run(JOB_FUNCTIONS[fidelity], jobs, timeout=config.evaluation.timeout or None,
                                 on_done=finished)
                    print(f"{fidelity}: {len(jobs)} jobs in {time.perf_counter() - started:.0f} s", flush=True)
    finally:
        executor.close()
    return done


def held_out_results(path: Path) -> dict[str, float]:
    """Per metric, the criteria benchmark's held-out result: mean test accuracy after fine-tuning, over the
    ratios and the (network, seed) cells measured for every metric (Fashion-MNIST, networks evolution never saw)."""
    if not path.exists():
        return {}
    records = [r for r in json.loads(path.read_text())["records"] if r.get("finetuned")]
    cells: dict[str, dict[tuple[str, str], float]] = {}
    for r in records:
        values = [f["test_accuracy"] for f in r["finetuned"]]
        cells.setdefault(r["metric"], {})[(r["network"], str(r["seed"]))] = statistics.fmean(values)
    common = set.intersection(*(set(c) for c in cells.values())) if cells else set()
    return {m: statistics.fmean(c[k] for k in sorted(common)) for m, c in cells.items() if common}


def spearman(a: list[float], b: list[float]) -> float | None:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(scipy_stats.spearmanr(a, b).statistic)


def study(args: argparse.Namespace) -> None:
    config = study_config(args.smoke)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()[0]
    start = time.perf_counter()
    with torch_threads(config.evaluation.threads):
        tasks = prepared_tasks(config, work)
        formulas = formula_set(config, tasks, work, args.formulas)
    records = score_all(config, tasks, formulas, work, args.workers)
    weights = config.task_weights()
    rows = []
    for item in formulas:
        row: dict[str, Any] = {**item, "infix": to_infix(parse(item["key"])), "size": size(parse(item["key"]))}
        for fidelity in FIDELITIES:
            results = [records.get((item["key"], fidelity, t)) for t in tasks]
            ok = all(r is not None and r["status"] == "ok" for r in results)
            scores = {t: r["score"] for t, r in zip(tasks, results) if r is not None and r["status"] == "ok"}
            row[fidelity] = {"ok": ok, "scores": scores, "seconds": sum(r["seconds"] for r in results if r),
                             "fitness": combine_fitness(fidelity, scores, weights) if ok else None}
        rows.append(row)
    scored = [r for r in rows if all(r[f]["ok"] for f in FIDELITIES)]
    correlations: dict[str, Any] = {}
    for a, b in (("oracle", "finetune"), ("recal", "finetune"), ("oracle", "recal")):
        pair = {"combined": spearman([r[a]["fitness"] for r in scored], [r[b]["fitness"] for r in scored])}
        for task in tasks:
            pair[task] = spearman([r[a]["scores"][task] for r in scored], [r[b]["scores"][task] for r in scored])
        correlations[f"{a}~{b}"] = pair
    held_out = held_out_results(RESULTS / "criteria-cpu.json")
    for r in rows:
        name = r["source"].removeprefix("library:")
        r["held_out"] = held_out.get(name) if r["source"].startswith("library:") else None
    known = [r for r in scored if r["held_out"] is not None]
    correlations["held_out"] = {f: spearman([r[f]["fitness"] for r in known], [r["held_out"] for r in known])
                                for f in FIDELITIES}
    correlations["held_out"]["formulas"] = len(known)
    seconds = {f: {"median": statistics.median([r[f]["seconds"] for r in rows]),
                   "mean": statistics.fmean([r[f]["seconds"] for r in rows])} for f in FIDELITIES}
    payload = {
        "machine": {**machine(), "load_average_at_start": load_start, "load_average_at_end": os.getloadavg()[0]},
        "preset": "smoke" if args.smoke else "cpu", "workers": args.workers, "wall_s": time.perf_counter() - start,
        "fidelity": {"oracle_samples": config.fidelity.oracle_samples, "recal_ratios": list(config.fidelity.recal_ratios),
                     "recal_batches": config.fidelity.recal_batches},
        "tasks": {name: {"model": p.config.model, "dataset": p.config.dataset,
                         "pretrained_val_accuracy": p.pretrained_val_accuracy} for name, p in tasks.items()},
        "formulas": len(rows), "scored_at_every_fidelity": len(scored),
        "sources": {s: sum(1 for r in rows if r["source"].split(":")[0] == s) for s in ("library", "evolved", "random")},
        "correlations": correlations, "seconds_per_candidate": seconds,
        "worker_seconds": {f: sum(r[f]["seconds"] for r in rows) for f in FIDELITIES}, "rows": rows,
    }
    out = Path(args.out)
    name = "fidelity-smoke" if args.smoke else "fidelity"
    plot(scored, out / f"{name}.png")
    write_results(name, payload, study_markdown(payload, name), out)


def plot(scored: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    colours = {"library": "C3", "evolved": "C0", "random": "C2"}
    for ax, (a, b) in zip(axes, (("oracle", "finetune"), ("recal", "finetune"), ("oracle", "recal"))):
        for source, colour in colours.items():
            pts = [(r[a]["fitness"], r[b]["fitness"]) for r in scored if r["source"].startswith(source)]
            if pts:
                ax.scatter(*zip(*pts), s=12, alpha=0.6, color=colour, label=source)
        rho = spearman([r[a]["fitness"] for r in scored], [r[b]["fitness"] for r in scored])
        ax.set_xlabel(f"{a} fitness")
        ax.set_ylabel(f"{b} fitness")
        ax.set_title(f"{a} vs {b}: Spearman {rho:.2f}" if rho is not None else f"{a} vs {b}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def study_markdown(p: dict[str, Any], name: str) -> str:
    m = p["machine"]
    tasks = list(p["tasks"])
    lines = [f"## Fidelity study ({p['preset']} tasks)", "",
             f"{p['formulas']} distinct formulas ({', '.join(f'{v} {k}' for k, v in p['sources'].items())}), "
             f"{p['scored_at_every_fidelity']} scored at every fidelity; {p['workers']} worker processes on "
             f"{m['nproc']} cores ({m['cpu']}); the jobs took "
             + ", ".join(f"{f} {s:.0f}" for f, s in p["worker_seconds"].items())
             + f" worker-seconds (this invocation: {p['wall_s']:.0f} s wall, load average "
             f"{m['load_average_at_start']:.1f} at start, {m['load_average_at_end']:.1f} at end; jobs already in "
             "the journal are not run again).", "",
             "Spearman correlation between fidelities over the formulas (fitness combined over tasks, and per task):", "",
             "| pair | combined | " + " | ".join(tasks) + " |", "| --- | ---: | " + " | ".join("---:" for _ in tasks) + " |"]
    for pair, values in p["correlations"].items():
        if pair == "held_out":
            continue
        cells = [values["combined"], *(values[t] for t in tasks)]
        lines.append(f"| {pair} | " + " | ".join("–" if v is None else f"{v:.3f}" for v in cells) + " |")
    held = p["correlations"]["held_out"]
    lines += ["", f"Spearman correlation of each fidelity's fitness with the criteria benchmark's held-out result (mean "
              f"test accuracy after fine-tuning on Fashion-MNIST networks, `criteria-cpu.json`) over the "
              f"{held['formulas']} library formulas it has: "
              + ", ".join(f"{f} {'–' if held[f] is None else format(held[f], '.3f')}" for f in FIDELITIES) + "."]
    lines += ["", "Seconds per candidate (all tasks, per worker):", "", "| fidelity | median | mean |",
              "| --- | ---: | ---: |"]
    for fidelity, s in p["seconds_per_candidate"].items():
        lines.append(f"| {fidelity} | {s['median']:.3f} | {s['mean']:.3f} |")
    lines += ["", f"![fidelity scatter]({name}.png)"]
    return "\n".join(lines)


# --- speed --------------------------------------------------------------------------------------------------------


def speed(args: argparse.Namespace) -> None:
    """Seconds per candidate at each fidelity, in this process with 1 thread (oracle also as candidates/s/core)."""
    config = study_config(args.smoke)
    work = Path(args.work)
    load_start = os.getloadavg()[0]
    with torch_threads(1):
        t0 = time.perf_counter()
        events: list[dict[str, Any]] = []
        tasks = prepared_tasks(config, work, events)
        prepare_s = time.perf_counter() - t0
        oracle_events = [e for e in events if e["event"] == "oracle_done"]
        formulas = [f["key"] for f in formula_set(config, tasks, work, args.formulas, evolved_share=0.0)]
        screen_s = {}
        for name, prepared in tasks.items():
            t = time.perf_counter()
            Screen.of(prepared.bundle)
            screen_s[name] = time.perf_counter() - t
        per: dict[str, dict[str, list[float]]] = {f: {} for f in FIDELITIES}
        cpu = dict.fromkeys(FIDELITIES, 0.0)  # CPU seconds (1 thread): a per-core cost that other jobs do not inflate
        counts = {"oracle": len(formulas), "recal": min(len(formulas), args.recal), "finetune": args.finetune}
        for fidelity in FIDELITIES:
            fn = JOB_FUNCTIONS[fidelity]
            for formula in formulas[:counts[fidelity]]:
                total, ok = 0.0, True
                cpu_start = time.process_time()
                for name, prepared in tasks.items():
                    t = time.perf_counter()
                    try:
                        fn(FitnessJob(formula, name, 0, derive_seed(config.seed, "eval", 0, name), fidelity),
                           prepared.bundle)
                    except Exception:  # a candidate failing is timed like the others (the engine records it)
                        ok = False
                    total += time.perf_counter() - t
                per[fidelity].setdefault("ok" if ok else "failed", []).append(total)
                cpu[fidelity] += time.process_time() - cpu_start
    screening = screening_rate(config, work, args.evolve_population, args.workers)
    rows = {}
    for fidelity, groups in per.items():
        times = [t for ts in groups.values() for t in ts]
        rows[fidelity] = {"candidates": len(times), "failed": len(groups.get("failed", [])),
                          "median_s": statistics.median(times), "mean_s": statistics.fmean(times),
                          "p90_s": float(np.quantile(times, 0.9)), "max_s": max(times),
                          "candidates_per_s": len(times) / sum(times),
                          "cpu_s_per_candidate": cpu[fidelity] / len(times),
                          "candidates_per_cpu_s": len(times) / cpu[fidelity]}
    payload = {
        "machine": {**machine(), "load_average_at_start": load_start, "load_average_at_end": os.getloadavg()[0]},
        "preset": "smoke" if args.smoke else "cpu", "threads": 1, "prepare_s": prepare_s,
        "oracle_computations": [{k: e[k] for k in ("groups", "samples", "seconds")} for e in oracle_events],
        "screen_build_s": screen_s, "fidelities": rows, "screening": screening,
    }
    name = "fidelity-speed-smoke" if args.smoke else "fidelity_speed"
    write_results(name, payload, speed_markdown(payload), Path(args.out))


def screening_rate(config: EvolutionConfig, work: Path, population: int, workers: int) -> dict[str, Any]:
    """End to end: an oracle-only evolution of ``population`` × 3 generations through ``workers`` processes (GP
    operators in the main process, jobs through the executor), new candidates screened per second of wall time."""
    run = with_overrides(config, {"fidelity.levels": ["oracle"], "fidelity.promote": [],
                                  "evolution.population": population, "evolution.random_init": population - 7,
                                  "evolution.elites": max(2, population // 50), "evolution.generations": 3,
                                  "evaluation.workers": workers})
    run_dir = work / "evolve-speed"
    for name in ("models", "oracle"):
        target = run_dir / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to((work / name).resolve(), target_is_directory=True)
    before = _cpu_seconds()
    start = time.perf_counter()
    result = evolve(run, run_dir, overwrite=True, write_outputs=False)
    wall = time.perf_counter() - start
    cpu = _cpu_seconds() - before  # this process and its workers (counted once they exit, at the end of the run)
    # Generation 0 also starts the workers (imports, bundles, cached layer data): a one-time cost, reported apart.
    screened = sum(h["evaluated"] for h in result.history[1:])
    seconds = sum(t["seconds"] for t in result.timing[1:])
    return {"population": population, "generations": 3, "workers": workers, "screened": screened,
            "generation_s": seconds, "generation0_s": result.timing[0]["seconds"],
            "generation0_screened": result.history[0]["evaluated"], "wall_s": wall,
            "screened_per_s": screened / seconds, "failed": sum(h["failed"] for h in result.history),
            "cpu_s": cpu, "screened_all": sum(h["evaluated"] for h in result.history),
            "screened_per_cpu_s": sum(h["evaluated"] for h in result.history) / cpu}


def _cpu_seconds() -> float:
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def speed_markdown(p: dict[str, Any]) -> str:
    m = p["machine"]
    rows = p["fidelities"]
    lines = [f"## Fidelity speed ({p['preset']} tasks, 1 torch thread, one process)", "",
             f"{m['nproc']} cores ({m['cpu']}), torch {m['torch']}; load average {m['load_average_at_start']:.1f} at "
             f"start, {m['load_average_at_end']:.1f} at end (other jobs share the cores).", "",
             "| fidelity | candidates | failed | median s | mean s | p90 s | max s | candidates/s | CPU s each | "
             "candidates per CPU-second (per core) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for fidelity, r in rows.items():
        lines.append(f"| {fidelity} | {r['candidates']} | {r['failed']} | {r['median_s']:.4f} | {r['mean_s']:.4f} | "
                     f"{r['p90_s']:.4f} | {r['max_s']:.3f} | {r['candidates_per_s']:.2f} | "
                     f"{r['cpu_s_per_candidate']:.4f} | {r['candidates_per_cpu_s']:.2f} |")
    lines += ["", "One-time costs: cached layer data per task and process "
              + ", ".join(f"{k} {v:.1f} s" for k, v in p["screen_build_s"].items())
              + "; oracle per task (computed once per run) "
              + (", ".join(f"{e['groups']} groups on {e['samples']} images {e['seconds']:.0f} s"
                           for e in p["oracle_computations"]) or "reused from an earlier run") + "."]
    sc = p["screening"]
    lines += ["", f"End to end (an oracle-only evolution, population {sc['population']} × {sc['generations']} "
              f"generations, {sc['workers']} worker processes, GP operators in the main process): generations 1-2 "
              f"screened {sc['screened']} new candidates in {sc['generation_s']:.1f} s, {sc['screened_per_s']:.1f} per "
              f"second; generation 0 ({sc['generation0_screened']} candidates) took {sc['generation0_s']:.0f} s including "
              f"the workers' start-up ({sc['failed']} failed task evaluations in all). CPU time of the whole run "
              f"(main process and workers, start-up included): {sc['cpu_s']:.0f} s for {sc['screened_all']} "
              f"candidates, {sc['screened_per_cpu_s']:.1f} per CPU-second."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("speed", "study"))
    parser.add_argument("--smoke", action="store_true", help="tiny synthetic tasks and few formulas")
    parser.add_argument("--work", default=None, help="pretrained tasks, oracles, the GP run and the study journal")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--formulas", type=int, default=None, help="distinct formulas (study 200, speed 120)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--recal", type=int, default=30, help="speed: candidates timed at recal")
    parser.add_argument("--finetune", type=int, default=4, help="speed: candidates timed at finetune")
    parser.add_argument("--evolve-population", type=int, default=None,
                        help="speed: population of the end-to-end oracle-only evolution (400; smoke 20)")
    args = parser.parse_args()
    if args.formulas is None:
        args.formulas = (12 if args.smoke else 200) if args.part == "study" else (12 if args.smoke else 120)
    args.work = args.work or str(Path("runs") / ("bench-fidelity-smoke" if args.smoke else "bench-fidelity"))
    if args.smoke:
        args.recal, args.finetune = min(args.recal, 4), min(args.finetune, 2)
    if args.evolve_population is None:
        args.evolve_population = 20 if args.smoke else 400
    torch.manual_seed(0)
    (study if args.part == "study" else speed)(args)


if __name__ == "__main__":
    main()
