"""Speed floors of the criteria benchmark (issue 12): the oracle of a trained ResNet-20, and one metric's curve.

    .venv/bin/python benchmarks/bench_oracle.py              # 1 thread, ResNet-20 on MNIST-5k (28x28x1)
    .venv/bin/python benchmarks/bench_oracle.py --tiny       # seconds-long smoke run (runs/bench_oracle/tiny)

The oracle: every prunable group's channels removed one at a time, 1,000 class-balanced validation images
(``criteria.oracle_importance``). The curve: ``criteria.metric_curve`` with one metric (scoring on 1,000 training
images, uniform ratios 10-50%, test loss/accuracy on the 1,000 MNIST-5k test images right after pruning and after
BN recalibration on 20 batches of 64). The trained model comes from ``evoprune.baseline`` (cached under
runs/bench_oracle/, git-ignored); the timings do not depend on its accuracy. Writes benchmarks/results/oracle.json
and oracle.md, with the machine and its load average (the machine is shared: a busy one runs slower).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_results
from evoprune.baseline import BaselineSpec, DataSpec, get_baseline
from evoprune.criteria import group_scores, metric_curve, oracle_importance, recalibrate_batchnorm
from evoprune.device import machine
from evoprune.train import TrainConfig, evaluate

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "runs" / "bench_oracle"
NAME = "oracle"
# A few epochs are enough for a trained-looking net; the oracle's and the curve's cost do not depend on accuracy.
RECIPE = TrainConfig(epochs=4, optimizer="adam", lr=2e-3, schedule="cosine", batch_size=128)


def run(args: argparse.Namespace) -> dict[str, Any]:
    depth, samples = (8, 200) if args.tiny else (20, 1000)
    spec = BaselineSpec("resnet_cifar", DataSpec("mnist5k", val_fraction=0.25), RECIPE.with_overrides(
        epochs=1 if args.tiny else RECIPE.epochs), model_args={"depth": depth})
    base = get_baseline(spec, cache_dir=CACHE, device="cpu", threads=torch.get_num_threads())
    model, data = base.model.eval(), base.data
    load_before = os.getloadavg()[0]

    cpu_start = time.process_time()
    oracle = oracle_importance(model, data.val.x, data.val.y, samples=samples, batch_size=args.batch_size,
                               ablations=args.ablations, device="cpu")
    oracle_cpu = time.process_time() - cpu_start
    groups = [{"group": g.label, "channels": g.width, "seconds": oracle.group_seconds[name]}
              for name, g in oracle.groups.items()]

    start, cpu_start = time.perf_counter(), time.process_time()
    points = metric_curve(model, args.metric, data, scoring_samples=samples, device="cpu")
    curve_seconds, curve_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    start = time.perf_counter()
    group_scores(model, args.metric, data, samples=samples)
    scoring_seconds = time.perf_counter() - start
    start = time.perf_counter()
    evaluate(model, data.test.x, data.test.y)
    eval_seconds = time.perf_counter() - start
    recal = copy.deepcopy(model)
    start = time.perf_counter()
    recalibrate_batchnorm(recal, data.train.x[:20 * 64])
    recal_seconds = time.perf_counter() - start
    return {
        "machine": machine(), "load_average": [load_before, os.getloadavg()[0]],
        "model": f"resnet_cifar depth {depth}", "data": "mnist5k (28x28x1), val_fraction 0.25",
        "baseline_test_accuracy": base.meta.get("test_accuracy"),
        "oracle": {"seconds": oracle.seconds, "cpu_seconds": oracle_cpu, "samples": oracle.samples, "channels": sum(g.width for g in oracle.groups.values()),
                   "groups": groups, "head_seconds": oracle.head_seconds, "batch_size": args.batch_size,
                   "ablations": args.ablations},
        "curve": {"metric": args.metric, "seconds": curve_seconds, "cpu_seconds": curve_cpu, "test_images": len(data.test.y),
                  "scoring_seconds": scoring_seconds, "unpruned_eval_seconds": eval_seconds,
                  "unpruned_recalibration_seconds": recal_seconds,
                  "points": [vars(p) for p in points]},
    }


def markdown(r: dict[str, Any]) -> str:
    m, o, c = r["machine"], r["oracle"], r["curve"]
    lines = [
        f"# Criteria benchmark speed floors ({r['model']}, {r['data']})", "",
        f"{m['cpu']}, {m['nproc']} cores, torch {m['torch']}, {m['threads']} thread(s); load average "
        f"{r['load_average'][0]:.1f} → {r['load_average'][1]:.1f}", "",
        "| measurement | wall s | CPU s | floor s |", "| --- | ---: | ---: | ---: |",
        f"| oracle: {o['channels']} channels, {o['samples']} images | {o['seconds']:.1f} | {o['cpu_seconds']:.1f} | 120 |",
        f"| one metric's curve ({c['metric']}): 5 ratios × 2 measurements on {c['test_images']} test images "
        f"| {c['seconds']:.1f} | {c['cpu_seconds']:.1f} | 20 |", "",
        "CPU s: the process's own CPU time, what the wall time is on an idle machine with one thread.", "",
        f"Oracle per group (cached activations: {o['head_seconds']:.1f} s in all):", "",
        "| group | channels | seconds |", "| --- | ---: | ---: |",
        *(f"| {g['group']} | {g['channels']} | {g['seconds']:.1f} |" for g in o["groups"]), "",
        f"Curve parts: scoring {c['scoring_seconds']:.1f} s; one evaluation of the unpruned net "
        f"{c['unpruned_eval_seconds']:.2f} s; one BN recalibration of it {c['unpruned_recalibration_seconds']:.2f} s.",
        "", "| ratio | MACs | params | acc pruned | acc recalibrated |", "| ---: | ---: | ---: | ---: | ---: |",
        *(f"| {p['ratio']:.1f} | {p['macs']:,} | {p['params']:,} | {p['accuracy_pruned']:.3f} | "
          f"{p['accuracy_recalibrated']:.3f} |" for p in c["points"]),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--metric", default="eq3")
    parser.add_argument("--batch-size", type=int, default=128, help="rows per oracle forward (images × ablations)")
    parser.add_argument("--ablations", type=int, default=4, help="channels removed per oracle forward")
    parser.add_argument("--tiny", action="store_true", help="seconds-long smoke run (results under runs/bench_oracle/tiny)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = run(args)
    write_results(NAME, result, markdown(result), out=CACHE / "tiny" if args.tiny else RESULTS)


if __name__ == "__main__":
    main()
