"""Baseline accuracy of the zoo's training recipes (issue "foundation" floors).

Runs ``evoprune train`` for each (model, dataset, seed) and tabulates validation accuracy (used for selection)
and test accuracy (reported once), with wall times on this machine.

    .venv/bin/python benchmarks/bench_accuracy.py [--seeds 0 1 2] [--fashion-seeds 0] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from _common import write_results
from evoprune.cli import main as evoprune
from evoprune.device import machine


def run_one(model: str, data: str, seed: int, threads: int, workdir: Path) -> dict:
    out = workdir / f"{model}-{data}-s{seed}.pt"
    code = evoprune(["train", "--model", model, "--data", data, "--seed", str(seed), "--threads", str(threads),
                     "--quiet", "--out", str(out)])
    if code != 0:
        raise SystemExit(f"evoprune train failed for {model} {data} seed {seed}")
    return json.loads(out.with_suffix(".json").read_text())


def summarise(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fashion-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    plan = [("lenet5", "mnist5k", args.seeds), ("lenet5", "fashion", args.fashion_seeds)]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, data, seeds in plan:
            for seed in seeds:
                runs.append(run_one(model, data, seed, args.threads, Path(tmp)))
    lines = [
        "| model | data | seeds | val acc % (selection) | test acc % (reported once) | wall time per run (s) |",
        "|---|---|---|---|---|---|",
    ]
    for model, data, seeds in plan:
        rows = [r for r in runs if r["model"] == model and r["data"] == data]
        lines.append(
            f"| {model} | {data} | {', '.join(map(str, seeds))} | {summarise([r['val_accuracy'] for r in rows])} | "
            f"{summarise([r['test_accuracy'] for r in rows])} | {statistics.mean(r['seconds'] for r in rows):.0f} |"
        )
    info = machine()
    lines += ["", f"Preset `lenet5` (Adam lr 2e-3, cosine, 20 epochs, batch 64, ±2 px shifts), {args.threads} thread(s); "
              f"machine: {info['nproc']} cores, {info['cpu']}, torch {info['torch']}."]
    write_results("accuracy", {"machine": info, "threads": args.threads, "runs": runs}, "\n".join(lines))


if __name__ == "__main__":
    main()
