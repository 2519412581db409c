"""Benchmark: score every prunable layer of a CIFAR-style VGG-16 (width 0.5) with eq3 (GA_Func2).

Compares evoprune's vectorised scoring (streaming per-class moments + one tree evaluation per layer) with
the straightforward per-channel, per-class numpy reference of the test suite
(``tests/test_metrics_reference.py::ref_ga_func2``), which mirrors how the official code scores a layer.

Timed, alternately in one process, ``--repeats`` times:

* ``scoring stage``: both start from the same materialised activations ``[N, C, D]`` of every layer;
  ours builds the streaming statistics (float64) and evaluates the tree, the reference loops over
  channels and classes in numpy (float64). ``--backend`` picks the statistics backend: ``auto`` (the C
  extension where it was built at install time) or ``torch`` (the pure-torch fallback);
* ``end to end``: ``score_layers(model, "eq3", x, y)`` (forward passes included), next to one plain
  forward pass over the data (a lower bound for the reference's activation collection).

Writes ``benchmarks/results/scoring.json`` and ``scoring.md`` (``--name`` changes the stem, e.g.
``--classes 100 --name scoring.c100``). Synthetic inputs (uniform 3x32x32 with
balanced labels) and an untrained, seeded network: scoring cost does not depend on training.

    .venv/bin/python benchmarks/bench_scoring.py --repeats 3 --threads 1
"""

from __future__ import annotations

import argparse
import os
import sys


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch and BLAS threads for both sides (default 1)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--device", default="cpu", help="device for our side (the reference is numpy on CPU)")
    p.add_argument("--backend", choices=("auto", "torch"), default="auto",
                   help="statistics backend: auto (C extension if built) or torch (the pure-torch fallback)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    p.add_argument("--name", default="scoring", help="result file stem (default scoring: scoring.json, scoring.md)")
    return p.parse_args()


ARGS = _args() if __name__ == "__main__" else None
if ARGS is not None:  # before numpy/torch load their thread pools
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import gc
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import evoprune.expr.stats as stats_mod
from _common import write_results
from evoprune.device import machine
from evoprune.expr import ClassStats
from evoprune.metrics import LayerData, get_metric, prunable_layers, score_layers
from evoprune.metrics.feature_points import Capture, feature_points
from evoprune.models import build_model
from test_metrics_reference import ref_ga_func2

LOAD_AT_START = os.getloadavg()[0]


def _all_activations(model, layers, x, batch_size, device) -> dict[str, torch.Tensor]:
    """Every layer's feature-point maps ``[N, C, D]`` from one forward pass per batch (setup, not timed)."""
    store: dict[str, list[torch.Tensor]] = {k: [] for k in layers}
    with Capture(model, feature_points(model, layers)) as cap, torch.no_grad():
        cap.sink = lambda key, t: store[key].append(t.detach().reshape(t.shape[0], t.shape[1], -1).cpu().clone())
        for i in range(0, x.shape[0], batch_size):
            cap.run(x[i:i + batch_size].to(device))
    return {k: torch.cat(v) for k, v in store.items()}


def _timed(fn):
    gc.collect()
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    if args.backend == "torch":
        stats_mod._native = None
    torch.manual_seed(args.seed)
    model = build_model("vgg", depth=16, width=args.width, in_channels=3, num_classes=args.classes,
                        image_size=(32, 32)).eval()
    device = torch.device(args.device)
    backend = "torch" if stats_mod._native is None or device.type != "cpu" else f"C extension ({stats_mod.NATIVE})"
    model.to(device)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.rand(args.samples, 3, 32, 32, generator=g)
    y = (torch.arange(args.samples) % args.classes)[torch.randperm(args.samples, generator=g)]
    layers = prunable_layers(model)
    metric = get_metric("eq3")

    t_collect, feats = _timed(lambda: _all_activations(model, layers, x, args.batch_size, device))
    y_np = y.numpy()
    shapes = {k: tuple(f.shape[1:]) for k, f in feats.items()}
    print(f"VGG-16 width {args.width}: {len(layers)} layers, {args.samples} samples, "
          f"{sum(f.numel() for f in feats.values()) * 4 / 2**20:.0f} MiB of activations "
          f"(collected in {t_collect:.1f} s); threads {args.threads}; statistics backend: {backend}", flush=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def ours() -> dict[str, tuple[float, torch.Tensor, float]]:
        """Per layer: (seconds in all, scores, seconds of the statistics part)."""
        out = {}
        for k, f in feats.items():
            fd, yd = f.to(device), y.to(device)
            sync()
            t = time.perf_counter()
            st = ClassStats.from_features(fd, yd, batch_size=args.batch_size)
            sync()
            t_stats = time.perf_counter() - t
            s = metric.score(LayerData(k, stats=st))
            sync()
            out[k] = (time.perf_counter() - t, s.cpu(), t_stats)
        return out

    def reference() -> dict[str, tuple[float, np.ndarray]]:
        out = {}
        for k, f in feats.items():
            t = time.perf_counter()
            r = ref_ga_func2(f.numpy(), y_np)
            out[k] = (time.perf_counter() - t, r)
        return out

    def forward() -> None:
        with torch.no_grad():
            for i in range(0, args.samples, args.batch_size):
                model(x[i:i + args.batch_size].to(device))

    runs = []
    for r in range(args.repeats):
        _, o64 = _timed(ours)
        _, ref = _timed(reference)
        t_e2e, e2e = _timed(lambda: score_layers(model, "eq3", x, y, batch_size=args.batch_size))
        t_fwd, _ = _timed(forward)
        run = {
            "ours_s": sum(v[0] for v in o64.values()),
            "ours_statistics_s": sum(v[2] for v in o64.values()),
            "reference_s": sum(v[0] for v in ref.values()),
            "end_to_end_s": t_e2e,
            "forward_s": t_fwd,
            "per_layer": {k: {"ours_s": o64[k][0], "reference_s": ref[k][0]} for k in layers},
            "load_average_after": os.getloadavg()[0],
        }
        runs.append(run)
        print(f"repeat {r + 1}: ours {run['ours_s']:.3f} s (statistics {run['ours_statistics_s']:.3f} s), "
              f"reference {run['reference_s']:.2f} s ({run['reference_s'] / run['ours_s']:.0f}x), "
              f"end-to-end {t_e2e:.2f} s, forward {t_fwd:.2f} s (load average {run['load_average_after']:.1f})",
              flush=True)

    def rel(a, b) -> float:
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))

    err = max(rel(o64[k][1], ref[k][1]) for k in layers)
    err_e2e = max(rel(e2e[k], ref[k][1]) for k in layers)
    med = {key: statistics.median(r[key] for r in runs)
           for key in ("ours_s", "ours_statistics_s", "reference_s", "end_to_end_s", "forward_s")}
    per_layer = {
        k: {
            "channels": shapes[k][0], "positions": shapes[k][1],
            **{key: statistics.median(r["per_layer"][k][key] for r in runs)
               for key in ("ours_s", "reference_s")},
        }
        for k in layers
    }
    result = {
        "benchmark": "scoring every prunable layer of VGG-16 with eq3 (GA_Func2)",
        "machine": {
            **machine(), "numpy": np.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "device": str(device), "statistics_backend": backend, "load_average_1min_at_start": LOAD_AT_START,
        },
        "config": {"model": "vgg", "depth": 16, "width": args.width, "samples": args.samples,
                   "classes": args.classes, "image": [3, 32, 32], "batch_size": args.batch_size,
                   "repeats": args.repeats, "seed": args.seed, "data": "synthetic uniform [0,1), balanced labels",
                   "layers": len(layers), "activation_MiB": sum(f.numel() for f in feats.values()) * 4 / 2**20},
        "median_s": med,
        # each repeat times both sides back to back, so the ratio within a repeat is the fair comparison on a
        # machine whose load changes; the headline is the median of those ratios
        "speedup_scoring": statistics.median(r["reference_s"] / r["ours_s"] for r in runs),
        "speedup_scoring_per_repeat": [r["reference_s"] / r["ours_s"] for r in runs],
        "speedup_end_to_end_vs_forward_plus_reference": (med["forward_s"] + med["reference_s"]) / med["end_to_end_s"],
        "max_relative_difference": {"scoring": err, "end_to_end": err_e2e},
        "per_layer_median": per_layer,
        "runs": runs,
    }
    write_results(args.name, result, _markdown(result), Path(args.out))
    return 0


def _markdown(r: dict) -> str:
    m, c, med = r["machine"], r["config"], r["median_s"]
    lines = [
        f"Scoring all {c['layers']} prunable layers of VGG-16 (width {c['width']}, CIFAR-style, untrained, seed "
        f"{c['seed']}) with eq3 on {c['samples']} synthetic 3x32x32 samples, {c['classes']} classes; "
        f"median of {c['repeats']} alternating runs (the speed-up is the median of the per-repeat ratios).",
        f"Machine: {m['cpu']}, nproc {m['nproc']}, {m['threads']} thread(s) for torch and numpy, "
        f"torch {m['torch']}, numpy {m['numpy']}, Python {m['python']}, device {m['device']}, statistics backend: "
        f"{m['statistics_backend']}; 1-min load average {m['load_average_1min_at_start']:.1f} at start, "
        f"{min(run['load_average_after'] for run in r['runs']):.1f}-{max(run['load_average_after'] for run in r['runs']):.1f} "
        "after the repeats (the machine is shared).",
        "",
        "| stage | evoprune | numpy reference (per channel, per class) | speed-up |",
        "| --- | ---: | ---: | ---: |",
        f"| scoring from the activations | {med['ours_s']:.3f} s | {med['reference_s']:.2f} s "
        f"| {r['speedup_scoring']:.0f}x (per repeat {min(r['speedup_scoring_per_repeat']):.0f}-"
        f"{max(r['speedup_scoring_per_repeat']):.0f}x) |",
        f"| end to end (`score_layers`, forwards included) vs forward + reference | {med['end_to_end_s']:.2f} s "
        f"| {med['forward_s'] + med['reference_s']:.2f} s | "
        f"{r['speedup_end_to_end_vs_forward_plus_reference']:.1f}x |",
        "",
        f"Of our scoring stage, the statistics take {med['ours_statistics_s']:.3f} s and the tree evaluation the "
        f"rest. One plain forward pass over the data takes {med['forward_s']:.2f} s. Largest relative difference from "
        f"the reference: {r['max_relative_difference']['scoring']:.1e} (scoring stage), "
        f"{r['max_relative_difference']['end_to_end']:.1e} (end to end).",
        "",
        "| layer | channels | D | evoprune | reference | speed-up |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for k, v in r["per_layer_median"].items():
        lines.append(f"| {k} | {v['channels']} | {v['positions']} | {v['ours_s'] * 1e3:.1f} ms "
                     f"| {v['reference_s'] * 1e3:.0f} ms | {v['reference_s'] / v['ours_s']:.0f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(ARGS))
