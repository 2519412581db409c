"""Benchmark: how MetricImportance should combine the members of a coupled group (``coupling=``).

A group's members are the conv/linear layers whose output channels one pruning decision removes (the convs writing
into a residual sum, an expand conv and its depthwise conv). Each rule of ``evoprune.prune.importance`` (mean, max,
params, root, last) is measured the way a new user meets it: three nets trained briefly on Fashion-MNIST, every
prunable group cut by the same uniform ratio (10, 20, 30% of its channels; one architecture per ratio, so only the
choice of channels differs), no fine-tuning, test accuracy right after pruning and after BatchNorm recalibration
(``evoprune.criteria.recalibrate_batchnorm``: running statistics re-estimated on training batches, no gradient step).
Metrics: WL1, WL2, eq3 and random; Torch-Pruning's own group L1 (``GroupMagnitudeImportance(p=1)``, its default
mean reduction and mean normaliser) is a reference row. Each metric scores the unpruned net once; every rule
combines those same scores, and plans that come out identical are measured once.

Nets (Fashion-MNIST, a seeded subset of ``--train-samples`` training and ``--eval-samples`` validation and test
images, split and training seed 0, baselines cached under ``runs/bench_coupling``): ``mobilenetv2`` (width 0.5,
expansion 3, 256 features: expand→depthwise pairs and residual streams), ``resnet_cifar`` depth 20 (residual
streams), ``vgg`` depth 16 width 0.5 (no coupled group: every rule is the same there, a check).

Writes ``benchmarks/results/coupling.json`` and ``coupling.md``.

    .venv/bin/python benchmarks/bench_coupling.py --threads 1
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_results
from evoprune.baseline import BaselineSpec, DataSpec, get_baseline
from evoprune.criteria import recalibrate_batchnorm
from evoprune.data import DatasetSplits
from evoprune.device import machine
from evoprune.prune import ModelGraph, PruneSchedule, count_macs_params, resolve
from evoprune.prune.importance import COUPLINGS, MetricImportance
from evoprune.prune.selection import select_local
from evoprune.train import TrainConfig, evaluate

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "runs" / "bench_coupling"
NETS: dict[str, dict[str, Any]] = {
    "mobilenetv2": {"width": 0.5, "expansion": 3, "features": 256},
    "resnet_cifar": {"depth": 20},
    "vgg": {"depth": 16, "width": 0.5},
}
METRICS = ("WL1", "WL2", "eq3", "random")
RATIOS = (0.1, 0.2, 0.3)
REFERENCE = "TP group L1"
# Short Adam run: these nets reach 85-90% on Fashion-MNIST in a few epochs, enough to make channels differ.
RECIPE = TrainConfig(epochs=4, batch_size=128, optimizer="adam", lr=2e-3, schedule="cosine")

Plan = tuple[tuple[str, tuple[int, ...]], ...]


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    p.add_argument("--train-samples", type=int, default=10000)
    p.add_argument("--eval-samples", type=int, default=1000, help="validation and test images (each)")
    p.add_argument("--epochs", type=int, default=RECIPE.epochs)
    p.add_argument("--scoring-samples", type=int, default=500, help="class-balanced scoring set (training split)")
    p.add_argument("--recal-batches", type=int, default=20, help="BatchNorm recalibration batches of 64")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args()


class Measurer:
    """Prunes copies of one trained net by a plan and measures test accuracy/loss before and after BN recalibration;
    each distinct plan is measured once (rules that pick the same channels share the measurement)."""

    def __init__(self, model: nn.Module, data: DatasetSplits, recal_batches: int) -> None:
        self.model, self.data, self.recal_batches = model, data, recal_batches
        self.example = data.train.x[:1]
        order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))
        self.recal_x = data.train.x[order[: recal_batches * 64]]
        self.base_macs = count_macs_params(model, self.example)[0]
        self.cache: dict[Plan, dict[str, float]] = {}

    def __call__(self, plan: dict[str, list[int]]) -> dict[str, float]:
        key: Plan = tuple(sorted((name, tuple(idxs)) for name, idxs in plan.items()))
        if key not in self.cache:
            model = copy.deepcopy(self.model)
            graph = ModelGraph(model, self.example)
            groups = {g.name: g for g in graph.prunable_groups()}
            for name, idxs in plan.items():
                graph.prune(groups[name], idxs)
            raw = evaluate(model, self.data.test.x, self.data.test.y)
            recalibrate_batchnorm(model, self.recal_x, batches=self.recal_batches, batch_size=64)
            bn = evaluate(model, self.data.test.x, self.data.test.y)
            self.cache[key] = {"accuracy": raw.accuracy, "loss": raw.loss, "accuracy_bn": bn.accuracy,
                               "loss_bn": bn.loss, "macs_kept": count_macs_params(model, self.example)[0] / self.base_macs}
        return self.cache[key]


def bench_net(name: str, args: argparse.Namespace) -> dict[str, Any]:
    spec = BaselineSpec(name, DataSpec("fashion", train_samples=args.train_samples, eval_samples=args.eval_samples),
                        RECIPE.with_overrides(epochs=args.epochs), seed=0, model_args=NETS[name])
    base = get_baseline(spec, cache_dir=CACHE, device="cpu", threads=args.threads, log=print)
    model, data = base.model.eval(), base.data
    graph = ModelGraph(model, data.train.x[:1])
    groups = graph.prunable_groups()
    measure = Measurer(model, data, args.recal_batches)
    unpruned = evaluate(model, data.test.x, data.test.y)
    plans = {r: {n: c[0] for n, c in resolve(PruneSchedule(ratio=r), groups, graph.all_groups()).removals.items()}
             for r in RATIOS}
    rows: list[dict[str, Any]] = []

    def add(metric: str, rule: str, scores: dict[str, torch.Tensor]) -> None:
        for ratio, counts in plans.items():
            row = {"metric": metric, "rule": rule, "ratio": ratio, **measure(select_local(scores, counts))}
            rows.append(row)
            print(f"{name:13s} {metric:7s} {rule:12s} {ratio:.0%}: {row['accuracy']:.4f} / BN {row['accuracy_bn']:.4f}",
                  flush=True)

    members = [m for g in groups for m in g.members]
    for metric in METRICS:
        importance = MetricImportance(metric, model, data.train.x, data.train.y, samples=args.scoring_samples,
                                      layers=members)
        importance.layer_scores()  # scored once; every rule combines these scores
        for rule in COUPLINGS:
            importance.coupling = rule
            add(metric, rule, {g.name: importance(graph.tp_group(g)) for g in groups})
    reference = tp.importance.GroupMagnitudeImportance(p=1)
    add(REFERENCE, "(its own)", {g.name: reference(graph.tp_group(g)) for g in groups})
    return {
        "model": name, "model_args": NETS[name], "baseline": {k: base.meta[k] for k in
                                                              ("val_accuracy", "test_accuracy", "best_epoch", "train_seconds")},
        "unpruned": {"accuracy": unpruned.accuracy, "loss": unpruned.loss},
        "groups": len(groups), "coupled_groups": sum(len(g.members) > 1 for g in groups),
        "coupled": {g.name: list(g.members) for g in groups if len(g.members) > 1},
        "distinct_plans_measured": len(measure.cache), "rows": rows,
    }


def _ranks(values: list[float]) -> list[float]:
    """Rank 1 = highest, ties share their mean rank."""
    order = sorted(values, reverse=True)
    return [statistics.mean(i + 1 for i, v in enumerate(order) if v == x) for x in values]


def summary(nets: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per rule, over the cells (net with coupled groups, metric other than random, ratio): mean accuracy and mean
    rank among the rules, right after pruning and after BN recalibration."""
    out: dict[str, dict[str, float]] = {r: {} for r in COUPLINGS}
    for field in ("accuracy", "accuracy_bn"):
        acc: dict[str, list[float]] = {r: [] for r in COUPLINGS}
        rank: dict[str, list[float]] = {r: [] for r in COUPLINGS}
        for net in nets:
            if not net["coupled_groups"]:
                continue
            for metric in METRICS[:-1]:
                for ratio in RATIOS:
                    cell = {row["rule"]: row[field] for row in net["rows"]
                            if row["metric"] == metric and row["ratio"] == ratio}
                    values = [cell[r] for r in COUPLINGS]
                    for r, v, k in zip(COUPLINGS, values, _ranks(values), strict=True):
                        acc[r].append(v)
                        rank[r].append(k)
        for r in COUPLINGS:
            out[r][f"mean_{field}"] = statistics.mean(acc[r])
            out[r][f"mean_rank_{field}"] = statistics.mean(rank[r])
    return out


def render(payload: dict[str, Any]) -> str:
    s = payload["settings"]
    lines = [
        "# Coupling rules: accuracy right after uniform pruning, no fine-tuning",
        "",
        f"Fashion-MNIST, {s['train_samples']} training images, {s['eval_samples']} test images, split and training "
        f"seed 0, {s['epochs']} epochs (Adam 2e-3, cosine); scoring set {s['scoring_samples']} images; BN "
        f"recalibration on {s['recal_batches']} batches of 64. Machine: {payload['machine']['cpu']}, "
        f"{payload['machine']['threads']} thread(s); {payload['seconds']:.0f} s.",
        "",
        "Each cell: test accuracy right after pruning / after BN recalibration.",
    ]
    for net in payload["nets"]:
        args = ", ".join(f"{k}={v}" for k, v in net["model_args"].items())
        lines += ["", f"## {net['model']} ({args})", "",
                  f"Unpruned test accuracy {net['unpruned']['accuracy']:.4f}; {net['groups']} prunable groups, "
                  f"{net['coupled_groups']} with several members. MACs kept: "
                  + ", ".join(f"{r:.0%} → {next(x['macs_kept'] for x in net['rows'] if x['ratio'] == r):.1%}"
                              for r in RATIOS) + ".", "",
                  "| metric | rule | " + " | ".join(f"{r:.0%}" for r in RATIOS) + " |",
                  "| --- | --- | " + " | ".join("---:" for _ in RATIOS) + " |"]
        for metric in [*METRICS, REFERENCE]:
            by_rule: dict[str, list[dict[str, Any]]] = {}
            for row in net["rows"]:
                if row["metric"] == metric:
                    by_rule.setdefault(row["rule"], []).append(row)
            cells = {rule: " | ".join(f"{x['accuracy']:.3f} / {x['accuracy_bn']:.3f}" for x in rs)
                     for rule, rs in by_rule.items()}
            if len(set(cells.values())) == 1 and len(cells) > 1:
                cells = {"(every rule)": next(iter(cells.values()))}
            lines += [f"| {metric} | {rule} | {text} |" for rule, text in cells.items()]
    lines += ["", "## Summary over the nets with coupled groups (WL1, WL2, eq3; every ratio)", "",
              "| rule | mean accuracy | mean accuracy, BN recal. | mean rank | mean rank, BN recal. |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for rule, v in payload["summary"].items():
        lines.append(f"| {rule} | {v['mean_accuracy']:.3f} | {v['mean_accuracy_bn']:.3f} | "
                     f"{v['mean_rank_accuracy']:.2f} | {v['mean_rank_accuracy_bn']:.2f} |")
    se = (0.8 * 0.2 / s["eval_samples"]) ** 0.5
    lines += ["", "Mean rank among the 5 rules per (net, metric, ratio) cell, 1 = best; one training seed, "
              f"{s['eval_samples']} test images (one accuracy of 80% has a standard error of {se:.1%})."]
    return "\n".join(lines)


def main() -> None:
    args = _args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    nets = [bench_net(name, args) for name in args.nets]
    payload = {
        "benchmark": "coupling", "machine": machine(),
        "settings": {k: getattr(args, k) for k in ("train_samples", "eval_samples", "epochs", "scoring_samples",
                                                   "recal_batches", "threads")} | {"ratios": list(RATIOS),
                                                                                   "metrics": list(METRICS)},
        "nets": nets, "summary": summary(nets), "seconds": time.perf_counter() - start,
    }
    write_results("coupling", payload, render(payload), out=args.out)
    print(render(payload))


if __name__ == "__main__":
    main()
