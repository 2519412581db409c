"""Choose an evolution run's winner honestly: its hall of fame re-evaluated at the ``finetune`` fidelity with fresh
seeds, next to reference functions, on the run's own tasks and validation data (never test, never a held-out net).

    python benchmarks/evolve_finalists.py runs/evolve-cpu-s0 --top 8 --seeds 3 --workers 2

The run picked its hall of fame with the seeds it also selected on, so its best fitness is biased upward (the
winner's curse). Here every finalist, and every reference (the best seed function, ``eq3``, the library's evolved
``EP_Func1`` and ``EP_Func2``), is pruned and fine-tuned again with ``--seeds`` seeds the run never used, per task;
fitness is the run's combination (the weighted geometric mean of validation accuracies) of the per-task means. The
finalist with the best fresh fitness is the one to add to the library. Each function's seeds are drawn from its
formula, so two functions never share seeds: the comparison is not paired. Writes
``benchmarks/results/evolve_<preset>_finalists.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_results
from evoprune.device import machine
from evoprune.evolve import config_from_dict
from evoprune.evolve.fitness import FitnessJob, combine_fitness, derive_seed, prepare_task, run_fitness_job
from evoprune.expr import parse, to_infix
from evoprune.metrics import get_metric
from evoprune.parallel import Job, ProcessExecutor

REFERENCES = ("eq3", "EP_Func1", "EP_Func2")


def candidates(run_dir: Path, top: int) -> list[dict[str, Any]]:
    """The run's ``top`` hall-of-fame functions, its best seed function and the references, each once."""
    results = json.loads((run_dir / "results.json").read_text())
    found: list[dict[str, Any]] = [
        {"name": f"HoF #{h['rank']}", "formula": h["formula"], "run_fitness": h["fitness"],
         "run_evaluations": h["evaluations"], "fidelity": h.get("fidelity")}
        for h in results["hall_of_fame"][:top]]
    if results.get("seed_functions"):
        best_seed = results["seed_functions"][0]
        found.append({"name": best_seed["origin"], "formula": best_seed["formula"], "run_fitness": best_seed["fitness"],
                      "run_evaluations": best_seed["evaluations"], "fidelity": best_seed.get("fidelity")})
    for name in REFERENCES:
        found.append({"name": name, "formula": get_metric(name).formula, "run_fitness": None, "run_evaluations": 0,
                      "fidelity": None})
    seen: set[str] = set()
    unique = []
    for c in found:
        if c["formula"] not in seen:
            seen.add(c["formula"])
            unique.append(c)
    return unique


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--top", type=int, default=8, help="hall-of-fame functions re-evaluated")
    parser.add_argument("--seeds", type=int, default=3, help="fresh fine-tuning seeds per function and task")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args()

    config = config_from_dict(json.loads((args.run_dir / "config.json").read_text()), source=str(args.run_dir))
    weights = {t.name: t.weight for t in config.tasks}
    finalists = candidates(args.run_dir, args.top)
    info = machine()
    start = time.perf_counter()
    with ProcessExecutor(args.workers, threads=config.evaluation.threads) as ex:
        for task in config.tasks:
            prepared = prepare_task(task, config, args.run_dir / "models", oracle_dir=args.run_dir / "oracle")
            ex.share(task.name, prepared.bundle)
        jobs = [Job(f"{i}/{t.name}/{s}", FitnessJob(c["formula"], t.name, s,
                                                      derive_seed(config.seed, "finalists", c["formula"], t.name, s)),
                    shared=t.name)
                for i, c in enumerate(finalists) for t in config.tasks for s in range(args.seeds)]
        done = 0

        def progress(_outcome: Any) -> None:
            nonlocal done
            done += 1
            print(f"\r{done}/{len(jobs)} evaluations", end="", file=sys.stderr, flush=True)

        outcomes = {o.id: o for o in ex.run(run_fitness_job, jobs, timeout=config.evaluation.timeout,
                                             on_done=progress)}
    print(file=sys.stderr)
    seconds = time.perf_counter() - start
    for i, c in enumerate(finalists):
        per_task: dict[str, list[float]] = {}
        for t in config.tasks:
            per_task[t.name] = [outcomes[f"{i}/{t.name}/{s}"].value["score"] if outcomes[f"{i}/{t.name}/{s}"].ok
                                else 0.0 for s in range(args.seeds)]
        c["infix"] = to_infix(parse(c["formula"]))
        c["fresh"] = per_task
        c["fresh_means"] = {k: statistics.fmean(v) for k, v in per_task.items()}
        c["fresh_fitness"] = combine_fitness("finetune", c["fresh_means"], weights)
    ranked = sorted(finalists, key=lambda c: -c["fresh_fitness"])
    chosen = next(c for c in ranked if c["name"].startswith("HoF"))
    payload = {"machine": info, "run_dir": str(args.run_dir), "preset": config.name, "seeds": args.seeds,
               "top": args.top, "seconds": seconds, "chosen": chosen["name"], "finalists": ranked}
    write_results(f"evolve_{config.name}_finalists", payload, markdown(payload, [t.name for t in config.tasks]),
                  args.out)


def markdown(p: dict[str, Any], tasks: list[str]) -> str:
    lines = [f"## Finalists of `{p['run_dir']}` re-evaluated with {p['seeds']} fresh seeds", "",
             f"Machine: {p['machine']['nproc']} cores ({p['machine']['cpu']}); {p['seconds']:.0f} s. Fitness: weighted "
             "geometric mean over the run's tasks of the mean validation accuracy after pruning and fine-tuning "
             "(the run's `finetune` fidelity), with seeds the run never used. Chosen: the best hall-of-fame entry.", "",
             "| function | run fitness (evals) | fresh fitness | " + " | ".join(f"{t} (mean ± sd)" for t in tasks)
             + " | formula |", "|---|---:|---:|" + "---:|" * len(tasks) + "---|"]
    for c in p["finalists"]:
        run = "—" if c["run_fitness"] is None else f"{c['run_fitness']:.4f} ({c['run_evaluations']})"
        name = f"**{c['name']}**" if c["name"] == p["chosen"] else c["name"]
        cells = [f"{statistics.fmean(c['fresh'][t]):.4f} ± {statistics.pstdev(c['fresh'][t]):.4f}" for t in tasks]
        lines.append(f"| {name} | {run} | {c['fresh_fitness']:.4f} | " + " | ".join(cells) + f" | `{c['infix']}` |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
