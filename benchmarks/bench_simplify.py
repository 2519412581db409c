"""Benchmark: scoring ``EP_Func1`` as evolved against its simplified form (issue 13, "Simplify before scoring").

As evolved, ``EP_Func1`` adds a zero term that divides by the raw maps ``P``, so it needs every layer's raw
feature maps; simplified (``evoprune.expr.simplify``) it is scored from streamed class statistics. Times
``score_layers`` (what ``MetricImportance`` runs once per pruning step: the forward passes over the scoring set and
the scoring of every prunable layer) on the MobileNetV2-style net (depthwise-separable blocks) for ``eq3``,
``EP_Func1`` as scoring evaluates it, and ``EP_Func1`` as evolved (the same engine, ``simplify=False``), and
checks that the two ``EP_Func1`` scorings agree. Untrained, seeded network and uniform inputs with balanced
labels: scoring cost does not depend on training.

    .venv/bin/python benchmarks/bench_simplify.py --samples 500 --threads 1
"""

from __future__ import annotations

import argparse
import os
import sys


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=500, help="scoring images (the issue's measurement used 2000)")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


ARGS = _args() if __name__ == "__main__" else None
if ARGS is not None:  # before torch loads its thread pools
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import median_seconds, write_results
from evoprune.expr import evaluate, simplify, to_prefix
from evoprune.metrics import LayerData, Metric, Needs, get_metric, score_layers
from evoprune.models import build_model


def as_evolved(metric: Metric) -> Metric:
    """The metric scored from its tree as written: the raw feature maps, no simplification."""
    tree = metric.tree

    def score(data: LayerData) -> torch.Tensor:
        return evaluate(tree, features=data.features, labels=data.labels, weight=data.weight, layer=data.name,
                        simplify=False)

    return Metric(f"{metric.name} as evolved", metric.kind, metric.doc, metric.source,
                  Needs(features=True, labels=True, weight=True), tree=tree, fn=score)


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = build_model("mobilenetv2", width=args.width).eval()
    x = torch.rand(args.samples, 1, 28, 28)
    y = torch.arange(args.samples) % 10
    ep = get_metric("EP_Func1")
    runs = {"eq3": get_metric("eq3"), "EP_Func1 (simplified)": ep, "EP_Func1 (as evolved)": as_evolved(ep)}
    seconds, scores = {}, {}
    for label, metric in runs.items():
        seconds[label] = median_seconds(lambda m=metric, lb=label: scores.__setitem__(lb, score_layers(model, m, x, y)),
                                        args.repeats, warmup=0)
    fast, slow = scores["EP_Func1 (simplified)"], scores["EP_Func1 (as evolved)"]
    worst = max(float(((fast[k] - slow[k]).abs() / slow[k].abs().clamp_min(1e-300)).max()) for k in slow)
    same_order = all(torch.equal(fast[k].argsort(stable=True), slow[k].argsort(stable=True)) for k in slow)
    speedup = seconds["EP_Func1 (as evolved)"] / seconds["EP_Func1 (simplified)"]
    payload = {"model": f"mobilenetv2 width {args.width}", "layers": len(slow), "samples": args.samples,
               "threads": args.threads, "repeats": args.repeats, "seconds": seconds, "speedup": speedup,
               "max_relative_difference": worst, "identical_ranking": same_order,
               "as_evolved": ep.formula, "simplified": to_prefix(simplify(ep.tree)), "torch": torch.__version__}
    rows = "\n".join(f"| {label} | {s:.2f} |" for label, s in seconds.items())
    markdown = f"""# Scoring EP_Func1 as evolved vs simplified

`score_layers` (forward passes + scoring of all {len(slow)} prunable layers, as `MetricImportance` runs once per
step) on the MobileNetV2-style net (width {args.width}), {args.samples} scoring images, {args.threads} thread(s),
median of {args.repeats}.

| metric | seconds |
| --- | ---: |
{rows}

Simplification speed-up for EP_Func1: **{speedup:.1f}×**; largest relative score difference {worst:.1e}
(moments vs raw maps, float64), identical per-layer ranking: {same_order}.

- as evolved: `{ep.formula}`
- simplified: `{to_prefix(simplify(ep.tree))}`
"""
    write_results("simplify", payload, markdown)


if __name__ == "__main__":
    main(ARGS)
