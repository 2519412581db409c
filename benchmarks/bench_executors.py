"""Executors compared: candidate evaluations per minute for serial, 2 worker processes, Ray on a local instance
and Ray on a real 2-node cluster, idle and with one competing job per core.

    python benchmarks/bench_executors.py --condition idle      # the machine otherwise idle: check uptime first
    python benchmarks/bench_executors.py --condition loaded    # starts one busy 1-thread job per core itself
    python benchmarks/bench_executors.py --condition loaded --rounds 1 --kinds process,ray-cluster

Writes ``benchmarks/results/executors.{json,md}``, one section per condition (a run replaces its condition's and
keeps the other). Each executor runs the same small evolution: the ``quick`` preset's tasks with their full data
and fine-tuning (so an evaluation costs what it costs in a real run) but short pretraining, population 6,
2 generations, 1 torch thread per evaluation; the pretrained models are built once and copied into every run, so
a run times evaluations only. In every round each executor is started anew (Ray: ``ray.init`` of a local
instance, or a cluster of a head and a second node, each ``ray start --num-cpus 1`` on this machine with its
workers at niceness 0, the README's commands), warmed by two evaluations, timed on one run and closed (the
cluster stopped), so no executor's idle processes weigh on another's run; rounds alternate the order and the best
round counts (other jobs only slow a round). The load average is recorded with every run. A second measure
isolates what each executor adds per job: the median round trip of a job that does nothing but name the shared
task bundle.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

if (Path.home() / ".ray" / "auth_token").exists():  # Ray 2.60: the cluster's head then wants the token, and Ray
    os.environ.setdefault("RAY_AUTH_MODE", "token")  # reads this once, at import (the test module imports it)
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import RESULTS, write_results
from evoprune.device import machine
from evoprune.evolve import evolve, load_config
from evoprune.evolve.fitness import FitnessJob, prepare_task, run_fitness_job
from evoprune.metrics import get_metric
from evoprune.parallel import Executor, Job, ProcessExecutor, RayExecutor, SerialExecutor, available_cores
from test_ray_faults import LocalCluster  # the fault tests' cluster of `ray start` nodes

SHRINK = {
    "evolution.generations": 2, "evolution.population": 6, "evolution.elites": 2, "evaluation.threads": 1,
    "tasks.lenet5-mnist5k.pretrain.epochs": 1, "tasks.vgg-digits.pretrain.epochs": 3,
}
PRELOAD = ("torch._dynamo", "evoprune.evolve.fitness", "evoprune.prune")
KINDS = ("serial", "process", "ray", "ray-cluster")
LABELS = {"serial": "serial", "process": "process, 2 workers", "ray": "Ray, local instance (`ray.init`)",
          "ray-cluster": "Ray, 2-node cluster (`ray start` head + node, 1 CPU each)"}


def noop_job(payload: Any, shared: Any) -> int:
    """A job that only names the shared bundle: its round trip is the executor's own cost per job."""
    return payload


@contextlib.contextmanager
def started_executor(kind: str, tasks: dict[str, Any]) -> Iterator[tuple[Executor, float]]:
    """An executor (for ``ray-cluster``, on a fresh 2-node cluster) with the task bundles shared and two real
    evaluations run (worker start, imports, bundle transfer), the seconds that took; closed (cluster stopped) after."""
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if kind == "serial":
            ex: Executor = SerialExecutor(threads=1)
        elif kind == "process":
            ex = ProcessExecutor(2, threads=1, preload=PRELOAD)
        elif kind == "ray":
            ex = RayExecutor("local", threads=1, init_kwargs={"num_cpus": 2})
        else:
            folder = Path(tempfile.mkdtemp(prefix="epray-", dir="/tmp"))  # short: Ray's socket paths live below
            stack.callback(shutil.rmtree, folder, ignore_errors=True)
            cluster = stack.enter_context(LocalCluster(folder / "t"))
            cluster.start(head_cpus=1, node_cpus=(1,))
            ex = RayExecutor(cluster.address, threads=1)
        stack.callback(ex.close)
        for name, prepared in tasks.items():
            ex.share(name, prepared.bundle)
        formula = get_metric("WL1").formula
        warm = [Job(f"warm-{t}", FitnessJob(formula, t, 0, 1), shared=t) for t in tasks]
        ex.run(run_fitness_job, warm)
        yield ex, time.perf_counter() - start


@contextlib.contextmanager
def competing_jobs(count: int) -> Iterator[None]:
    """``count`` single-threaded busy loops (one per core: the issue's loaded condition) for the block, each in a
    session of its own, as another user's jobs would be: where the kernel schedules by autogroup (one group per
    session, `/proc/sys/kernel/sched_autogroup_enabled`), busy loops started in this script's session would share
    its group with the process executor's workers but not with Ray's (a `ray start` node is a session of its own),
    and the comparison would measure the sessions, not the executors."""
    jobs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True) for _ in range(count)]
    try:
        yield
    finally:
        for job in jobs:
            job.kill()
            job.wait()


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


def section(name: str, payload: dict[str, Any]) -> list[str]:
    """One condition's table."""
    info, best = payload["machine"], payload["best"]
    some = next(iter(best.values()))
    lines = [f"### {name}: {payload['condition_text']}", "",
             f"Machine: {info['nproc']} cores ({info['cpu']}), torch {info['torch']}, Ray {payload['ray']}, 1 torch "
             f"thread per evaluation. The `quick` tasks with short pretraining, population 6, 2 generations "
             f"({some['evaluations']} task evaluations per run); {payload['rounds']} alternating round(s), best round "
             f"shown; load average (1 min) before and after each shown run; started {payload['started']} UTC.", "",
             "| executor | start-up + 2 evaluations s | evaluations per minute | s per evaluation | vs process | "
             "no-op job ms | load before → after |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for kind, run in best.items():
        ratio = best["process"]["per_minute"] / run["per_minute"] if "process" in best else float("nan")
        lines.append(f"| {LABELS[kind]} | {payload['startup_s'][kind]:.1f} | {run['per_minute']:.1f} | "
                     f"{60 / run['per_minute']:.2f} | {ratio:.2f}× | {payload['noop_ms'][kind]:.1f} | "
                     f"{run['load_before']:.2f} → {run['load_after']:.2f} |")
    lines += ["", "Every run, in order: " + "; ".join(
        f"{r['executor']} {r['per_minute']:.1f}/min (load {r['load_before']:.2f})" for r in payload["runs"]) + ".", ""]
    return lines


def markdown(conditions: dict[str, dict[str, Any]]) -> str:
    lines = ["## Executors: candidate evaluations per minute", ""]
    for name in sorted(conditions):
        lines += section(name, conditions[name])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--condition", choices=["idle", "loaded", "shared"], required=True,
                        help="idle: nothing added (check that nothing else runs); loaded: one busy job per core "
                        "added; shared: nothing added while other jobs run (their load is recorded)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per executor")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"executors to time, of {','.join(KINDS)}")
    parser.add_argument("--noop-jobs", type=int, default=20, help="no-op jobs timed per executor")
    parser.add_argument("--work", type=Path, default=None, help="folder for pretrained models and runs")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of executors.{json,md}")
    args = parser.parse_args()
    import ray

    kinds = tuple(k for k in args.kinds.split(",") if k)
    if not set(kinds) <= set(KINDS):
        parser.error(f"--kinds: choose among {', '.join(KINDS)}")
    torch.set_num_threads(1)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-executors-"))
    config = load_config("quick", SHRINK)
    info = machine()
    info["load_average_at_start"] = os.getloadavg()[0]
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    tasks = {t.name: prepare_task(t, config, work / "models") for t in config.tasks}
    compete = available_cores() if args.condition == "loaded" else 0
    startup: dict[str, float] = {}
    noop: dict[str, float] = {}
    runs = []
    with competing_jobs(compete):
        for r in range(args.rounds):
            for kind in kinds if r % 2 == 0 else kinds[::-1]:
                with started_executor(kind, tasks) as (ex, seconds):
                    startup.setdefault(kind, seconds)
                    if kind not in noop:
                        noop[kind] = job_overhead_ms(ex, config.tasks[0].name, args.noop_jobs)
                    run = timed_run(ex, config, work / "models", work / f"run-{kind}-{r}")
                runs.append({"executor": kind, "round": r, "startup_s": seconds, **run})
                print(f"{kind} round {r}: {run['per_minute']:.1f} evaluations/min, load {run['load_before']:.2f}",
                      flush=True)
    best = {k: max((r for r in runs if r["executor"] == k), key=lambda r: r["per_minute"]) for k in kinds}
    text = {"idle": "nothing else running; load average at start {:.2f}",
            "shared": "nothing added by the script while other jobs shared the machine; load average at start {:.2f}",
            "loaded": f"{compete} competing single-threaded busy jobs (one per core, each in its own session) "
                      "started by the script; "
                      "load average at start {:.2f}"}[args.condition].format(info["load_average_at_start"])
    payload = {"condition": args.condition, "condition_text": text, "competing_jobs": compete, "started": started,
               "machine": info, "ray": ray.__version__, "config": SHRINK, "rounds": args.rounds,
               "startup_s": startup, "noop_ms": noop, "runs": runs, "best": best,
               "ray_vs_process_per_evaluation": {k: best["process"]["per_minute"] / best[k]["per_minute"]
                                                 for k in kinds if k.startswith("ray") and "process" in best}}
    previous = args.out / "executors.json"
    conditions = {}
    if previous.exists():
        conditions = json.loads(previous.read_text()).get("conditions", {})
    conditions[args.condition] = payload
    write_results("executors", {"conditions": conditions}, markdown(conditions), args.out)


if __name__ == "__main__":
    main()
