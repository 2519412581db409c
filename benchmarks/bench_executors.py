"""Executors compared: candidate evaluations per minute for serial, 2 worker processes and Ray (local ``ray.init``).

    python benchmarks/bench_executors.py               # ~10 min on a loaded 2-core machine
    python benchmarks/bench_executors.py --rounds 1    # one run per executor

Writes ``benchmarks/results/executors.{json,md}``. Each executor runs the same small evolution: the ``quick``
preset's tasks with their full data and fine-tuning (so an evaluation costs what it costs in a real run) but short
pretraining, population 6, 2 generations, 1 torch thread per evaluation; the pretrained models are built once and copied into
every run, so a run times evaluations only. Executors are started (and warmed by two evaluations) before their
runs, rounds alternate the executors, and the best round counts (the machine is shared: other jobs only slow a
round). The load average is recorded with every run: issue 15 asks for the numbers idle and with one competing job
per core. A second measure isolates what each executor adds per job: the median round trip of a job that does
nothing but name the shared task bundle.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results
from evoprune.device import machine
from evoprune.evolve import evolve, load_config
from evoprune.evolve.fitness import FitnessJob, prepare_task, run_fitness_job
from evoprune.metrics import get_metric
from evoprune.parallel import Executor, Job, ProcessExecutor, RayExecutor, SerialExecutor

SHRINK = {
    "evolution.generations": 2, "evolution.population": 6, "evolution.elites": 2, "evaluation.threads": 1,
    "tasks.lenet5-mnist5k.pretrain.epochs": 1, "tasks.vgg-digits.pretrain.epochs": 3,
}
PRELOAD = ("torch._dynamo", "evoprune.evolve.fitness", "evoprune.prune")


def noop_job(payload: Any, shared: Any) -> int:
    """A job that only names the shared bundle: its round trip is the executor's own cost per job."""
    return payload


def start_executor(kind: str, tasks: dict[str, Any]) -> tuple[Executor, float]:
    """An executor with the task bundles shared and two real evaluations run (worker start, imports, bundle
    transfer), and the seconds that took."""
    start = time.perf_counter()
    if kind == "serial":
        ex: Executor = SerialExecutor(threads=1)
    elif kind == "process":
        ex = ProcessExecutor(2, threads=1, preload=PRELOAD)
    else:
        ex = RayExecutor("local", threads=1, init_kwargs={"num_cpus": 2})
    for name, prepared in tasks.items():
        ex.share(name, prepared.bundle)
    formula = get_metric("WL1").formula
    warm = [Job(f"warm-{t}", FitnessJob(formula, t, 0, 1), shared=t) for t in tasks]
    ex.run(run_fitness_job, warm)
    return ex, time.perf_counter() - start


def job_overhead_ms(ex: Executor, task: str, count: int) -> float:
    """Median milliseconds per no-op job, ``count`` jobs submitted one at a time."""
    times = []
    for i in range(count):
        t0 = time.perf_counter()
        ex.run(noop_job, [Job(f"noop-{i}", i, shared=task)])
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def timed_run(ex: Executor, config: Any, models: Path, run_dir: Path) -> dict[str, Any]:
    """One shrunk evolution through ``ex`` on copies of the pretrained models."""
    shutil.copytree(models, run_dir / "models")
    load = os.getloadavg()[0]
    start = time.perf_counter()
    result = evolve(config, run_dir, executor=ex)
    wall = time.perf_counter() - start
    return {"evaluations": result.evaluations, "failures": result.failures, "generation_s": result.seconds,
            "wall_s": wall, "per_minute": 60 * result.evaluations / result.seconds, "load_before": load,
            "load_after": os.getloadavg()[0], "best_fitness": result.best.fitness}


def markdown(payload: dict[str, Any]) -> str:
    info, best = payload["machine"], payload["best"]
    lines = ["## Executors: candidate evaluations per minute", "",
             f"Machine: {info['nproc']} cores ({info['cpu']}), torch {info['torch']}, Ray {payload['ray']}, 1 torch "
             f"thread per evaluation. The `quick` tasks with short pretraining, population 6, 2 generations "
             f"({best['serial']['evaluations']} task evaluations per run); "
             f"{payload['rounds']} alternating round(s), best round shown; load average (1 min) before and after "
             "each shown run.", "",
             "| executor | start-up + 2 evaluations s | evaluations per minute | s per evaluation | vs process | "
             "no-op job ms | load before → after |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for kind, run in best.items():
        ratio = best["process"]["per_minute"] / run["per_minute"]
        lines.append(f"| {kind} | {payload['startup_s'][kind]:.1f} | {run['per_minute']:.1f} | "
                     f"{60 / run['per_minute']:.2f} | {ratio:.2f}× | {payload['noop_ms'][kind]:.1f} | "
                     f"{run['load_before']:.2f} → {run['load_after']:.2f} |")
    lines += ["", "Every run, in order: " + "; ".join(
        f"{r['executor']} {r['per_minute']:.1f}/min (load {r['load_before']:.2f})" for r in payload["runs"]) + "."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per executor")
    parser.add_argument("--noop-jobs", type=int, default=20, help="no-op jobs timed per executor")
    parser.add_argument("--work", type=Path, default=None, help="folder for pretrained models and runs")
    args = parser.parse_args()
    import ray

    torch.set_num_threads(1)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-executors-"))
    config = load_config("quick", SHRINK)
    info = machine()
    info["load_average_at_start"] = os.getloadavg()[0]
    tasks = {t.name: prepare_task(t, config, work / "models") for t in config.tasks}
    kinds = ("serial", "process", "ray")
    executors, startup, noop = {}, {}, {}
    try:
        for kind in kinds:
            executors[kind], startup[kind] = start_executor(kind, tasks)
            noop[kind] = job_overhead_ms(executors[kind], config.tasks[0].name, args.noop_jobs)
        runs = []
        for r in range(args.rounds):
            for kind in kinds if r % 2 == 0 else kinds[::-1]:
                run = timed_run(executors[kind], config, work / "models", work / f"run-{kind}-{r}")
                runs.append({"executor": kind, "round": r, **run})
                print(f"{kind} round {r}: {run['per_minute']:.1f} evaluations/min, load {run['load_before']:.2f}",
                      flush=True)
    finally:
        for ex in executors.values():
            ex.close()
    best = {k: max((r for r in runs if r["executor"] == k), key=lambda r: r["per_minute"]) for k in kinds}
    payload = {"machine": info, "ray": ray.__version__, "config": SHRINK, "rounds": args.rounds, "startup_s": startup,
               "noop_ms": noop, "runs": runs, "best": best,
               "ray_vs_process_per_evaluation": best["process"]["per_minute"] / best["ray"]["per_minute"]}
    write_results("executors", payload, markdown(payload))


if __name__ == "__main__":
    main()
