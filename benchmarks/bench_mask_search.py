"""Mask-search benchmarks (issue 3): speed of the cached/batched evaluation and the seed's experiment reproduced.

    .venv/bin/python benchmarks/bench_mask_search.py --speed            # Fashion-MNIST, 10k test images per evaluation
    .venv/bin/python benchmarks/bench_mask_search.py --reproduce [--mnist-dir DIR]
    .venv/bin/python benchmarks/bench_mask_search.py --tiny             # smoke test of both (runs/bench_mask_search/tiny)

Each part merges its section into benchmarks/results/mask_search.json and rewrites mask_search.md. Baseline models
are trained once and cached under runs/bench_mask_search/ (git-ignored). The quality tables (improved vs seed mode,
baselines at matched sparsity) are `evoprune bench search --preset mnist5k` and `--preset fashion`; the quality
section already in mask_search.json (written by this script's former --quality part, the same code) is still
rendered.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, gemm_gmacs, median_seconds
from evoprune.atomic import write_json, write_text
from evoprune.baseline import Baseline, BaselineSpec, DataSpec, get_baseline
from evoprune.bench.search import FASHION_RECIPE, MNIST5K_RECIPE
from evoprune.bench.search_report import render_comparison, summarise_run
from evoprune.device import machine
from evoprune.search import LayerGraph, MaskEvaluator, evaluate_masked, preset, search_masks, write_run
from evoprune.search.plots import plot_history, plot_layers
from evoprune.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "runs" / "bench_mask_search"
NAME = "mask_search"

# The seed's published figures (README of 18520339/unstructured-local-search-pruning; spec mask-search.md §6):
# MNIST 60k/10k, Keras on a Colab T4, one unseeded run each; GA ran against a different baseline (97.41%).
PUBLISHED = {
    "sa": {"accuracy": 0.8744, "loss": 0.9923, "sparsity_mean_layer": 0.4384, "sparsity_global": 0.4834,
           "evaluations": 1005, "wall_time_s": 11 * 60 + 43, "baseline_accuracy": 0.9723, "baseline_loss": 0.0895},
    "ga": {"accuracy": 0.8902, "loss": 0.9442, "sparsity_mean_layer": 0.4133, "sparsity_global": 0.5145,
           "evaluations": 1060, "wall_time_s": 27 * 60 + 46, "baseline_accuracy": 0.9741, "baseline_loss": 0.0867},
}
SEED_BASELINE_LOSS = 0.0895

# How each baseline is trained. MNIST-5k has 3,200 training images, 19x fewer than the seed's 60k, and the seed's
# plain SGD(0.1) on the sigmoid LeNet stays at chance level for 100 epochs on so few steps (measured: 26% test).
# Adam with cosine decay and ±2 px shifts for 150 epochs reaches the seed's regime (seed 0: 97.0% test accuracy,
# test loss 0.094, against the seed's 97.2% / 0.0895), which is what the absolute loss caps assume.
RECIPES: dict[str, TrainConfig] = {
    "mnist5k": MNIST5K_RECIPE,
    "mnist": TrainConfig(epochs=50, optimizer="sgd", lr=0.1, batch_size=128, keep_best=False),  # the seed's recipe
    "fashion": FASHION_RECIPE,
}


def baseline(dataset: str, *, epochs: int | None = None, data_dir: str | None = None) -> Baseline:
    """A trained lenet5_d2l for ``dataset`` (split and training seed 0; cached): the model, its data and meta."""
    spec = BaselineSpec("lenet5_d2l", DataSpec(dataset, data_dir=data_dir), RECIPES[dataset].with_overrides(epochs=epochs))
    return get_baseline(spec, cache_dir=CACHE, device="cpu")


def tail_macs(model: nn.Module, graph: LayerGraph, image: torch.Tensor) -> dict[str, int]:
    """Multiply-accumulates per image of the conv/linear layers from each searched layer to the output."""
    per_layer: dict[str, int] = {}
    hooks = []
    for layer in graph.all_layers:
        module = model.get_submodule(layer.name)

        def hook(mod: nn.Module, _inp: Any, out: torch.Tensor, name: str = layer.name) -> None:
            per_out = mod.weight[0].numel() if isinstance(mod, nn.modules.conv._ConvNd) else mod.in_features
            per_layer[name] = out[0].numel() * per_out

        hooks.append(module.register_forward_hook(hook))
    with torch.no_grad():
        model(image[:1])
    for h in hooks:
        h.remove()
    names = [layer.name for layer in graph.all_layers]
    return {name: sum(per_layer[n] for n in names[i:]) for i, name in enumerate(names)}


# ---------------------------------------------------------------------------------------------------- speed
def speed(args: argparse.Namespace) -> dict[str, Any]:
    dataset = "mnist5k" if args.tiny else args.speed_data
    base = baseline(dataset, epochs=2 if args.tiny else None)
    model, data, meta = base.model, base.data, base.meta
    x, y = data.test.x, data.test.y
    if args.tiny:
        x, y = x[:300], y[:300]
    config = preset("seed", cap_reference_loss=SEED_BASELINE_LOSS, baselines=False,
                    **({"sa": {"iterations": 10}, "ga": {"generations": 2}} if args.tiny else {}))
    batch = args.batch_size or 512
    graph = LayerGraph(model.eval())
    macs = tail_macs(model, graph, x)
    gmacs = gemm_gmacs()
    gen = torch.Generator().manual_seed(0)
    per_layer = []
    repeats = 3 if args.tiny else 5
    population = 10
    for layer in graph.layers:
        mask = torch.rand(layer.shape, generator=gen) < 0.7
        stack = torch.rand((population,) + layer.shape, generator=gen) < 0.7
        evaluators = {mode: MaskEvaluator(graph, x, y, batch_size=batch, population_mode=mode) for mode in ("loop", "vmap")}
        for ev in evaluators.values():
            ev.focus([layer.name])
        cached, full, loop, vmap = [], [], [], []
        for _ in range(repeats):  # alternate, so that load changes hit every variant alike
            cached.append(median_seconds(lambda: evaluators["loop"].evaluate({layer.name: mask}), 1, warmup=0))
            full.append(median_seconds(lambda: evaluate_masked(model, {layer.name: mask}, x, y, batch_size=batch), 1, warmup=0))
            loop.append(median_seconds(lambda: evaluators["loop"].evaluate_many({layer.name: stack}), 1, warmup=0) / population)
            vmap.append(median_seconds(lambda: evaluators["vmap"].evaluate_many({layer.name: stack}), 1, warmup=0) / population)
        c, f = statistics.median(cached), statistics.median(full)
        floor = macs[layer.name] * len(y) / (gmacs * 1e9)
        per_layer.append({
            "layer": layer.name, "tail_macs_per_image": macs[layer.name], "cached_ms": 1000 * c, "full_ms": 1000 * f,
            "speedup": f / c, "population_loop_ms_per_member": 1000 * statistics.median(loop),
            "population_vmap_ms_per_member": 1000 * statistics.median(vmap), "gemm_floor_ms": 1000 * floor,
            "x_floor": c / floor,
        })
    runs = {}
    for algorithm in ("sa", "ga"):
        result = search_masks(model, _Splits(data, x, y), algorithm=algorithm, config=config, device="cpu", seed=0)
        runs[algorithm] = summarise_run(result, result.config.preset)
    return {"dataset": dataset, "images_per_evaluation": len(y), "batch_size": batch, "baseline": meta,
            "gemm_gmacs": gmacs, "layers": per_layer, "runs": runs, "machine": machine()}


class _Splits:
    """``data`` with its test split replaced (the speed benchmark's --tiny mode evaluates on fewer images)."""

    def __init__(self, data: Any, x: torch.Tensor, y: torch.Tensor) -> None:
        from evoprune.data import Split

        self.train, self.val, self.test = data.train, data.val, Split(x, y)


# ---------------------------------------------------------------------------------------------------- reproduce
def reproduce(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    datasets = ["mnist5k"] + (["mnist"] if args.mnist_dir else [])
    for dataset in datasets:
        base = baseline(dataset, epochs=2 if args.tiny else None, data_dir=args.mnist_dir if dataset == "mnist" else None)
        model, data, meta = base.model, base.data, base.meta
        overrides = {"sa": {"iterations": 10}, "ga": {"generations": 2}} if args.tiny else {}
        config = preset("seed", **overrides)
        runs, histories, layers = {}, {}, {}
        for algorithm in ("sa", "ga"):
            result = search_masks(model, data, algorithm=algorithm, config=config, device="cpu", seed=0)
            write_run(result, CACHE / f"reproduce-{dataset}-{algorithm}")
            runs[algorithm] = summarise_run(result, result.config.preset)
            histories[algorithm], layers[algorithm] = result.history, result.layers
        args.out.mkdir(parents=True, exist_ok=True)
        plot_history(histories, args.out / f"{NAME}_{dataset}_history.png")
        plot_layers(layers, args.out / f"{NAME}_{dataset}_layers.png")
        out[dataset] = {"baseline": meta, "runs": runs}
    return {"datasets": out}


# ---------------------------------------------------------------------------------------------------- report
def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def markdown(payload: dict[str, Any]) -> str:
    lines = ["# Mask search benchmarks", "",
             "Written by `benchmarks/bench_mask_search.py`; lenet5_d2l (sigmoid, average pooling, 61,470 weights).", ""]
    sp = payload.get("speed")
    if sp:
        m = sp["machine"]
        lines += [f"## Speed ({sp['dataset']}, {sp['images_per_evaluation']:,} test images per evaluation, seed preset)", "",
                  f"Machine: {m['nproc']} cores, {m['cpu']}, torch {m['torch']}, {m['threads']} threads; chunk "
                  f"{sp['batch_size']} images; fp32 GEMM {sp['gemm_gmacs']:.1f} GMAC/s. Medians of alternated repeats.", "",
                  "| layer | tail MACs/image | full forward ms | cached ms | speed-up | GA loop ms/member | GA vmap ms/member | GEMM floor ms | × floor |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in sp["layers"]:
            lines.append(f"| {r['layer']} | {r['tail_macs_per_image']:,} | {r['full_ms']:.1f} | {r['cached_ms']:.1f} | "
                         f"{r['speedup']:.1f}× | {r['population_loop_ms_per_member']:.1f} | "
                         f"{r['population_vmap_ms_per_member']:.1f} | {r['gemm_floor_ms']:.1f} | {r['x_floor']:.1f} |")
        lines += ["", "| run | evaluations | search wall s | ms per evaluation by layer | test acc % | loss | sparsity mean-layer / global |",
                  "|---|---|---|---|---|---|---|"]
        for alg, r in sp["runs"].items():
            per = ", ".join(f"{p['phase']} {p['ms_per_evaluation']:.0f}" for p in r["phases"])
            lines.append(f"| {alg.upper()} | {r['evaluations']} | {r['search_seconds']:.1f} | {per} | {_pct(r['accuracy'])} | "
                         f"{r['loss']:.4f} | {r['sparsity']['mean_layer']:.4f} / {r['sparsity']['global']:.4f} |")
        lines.append("")
    rp = payload.get("reproduce")
    if rp:
        for dataset, block in rp["datasets"].items():
            b = block["baseline"]
            lines += [f"## Seed experiment reproduced ({dataset}, seed preset, test split as the reference)", "",
                      f"Baseline: test accuracy {_pct(b['test_accuracy'])}%, loss {b['test_loss']:.4f} "
                      f"(recipe {b['train_config']['optimizer']} lr {b['train_config']['lr']}, {b['train_config']['epochs']} epochs, "
                      f"{b['train_config']['schedule']}; seed {b['seed']}).", "",
                      "| run | acc % | loss | sparsity mean-layer | sparsity global | per-layer sparsity | evaluations | wall s | trade-off (mean-layer) |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for alg, r in block["runs"].items():
                per = ", ".join(f"{row['layer']} {row['sparsity']:.2f}" for row in r["layers"])
                lines.append(f"| ours {alg.upper()} | {_pct(r['accuracy'])} | {r['loss']:.4f} | {r['sparsity']['mean_layer']:.4f} | "
                             f"{r['sparsity']['global']:.4f} | {per} | {r['evaluations']} | {r['search_seconds']:.1f} | "
                             f"{r['trade_off_mean_layer']:.4f} |")
            for alg, p in PUBLISHED.items():
                lines.append(f"| seed {alg.upper()} (published, T4 GPU, MNIST 60k) | {_pct(p['accuracy'])} | {p['loss']:.4f} | "
                             f"{p['sparsity_mean_layer']:.4f} | {p['sparsity_global']:.4f} (derived) | see spec §7.2 | "
                             f"{p['evaluations']} | {p['wall_time_s']} | – |")
            lines.append("")
    q = payload.get("quality")  # the former --quality part's results; now evoprune bench search --preset mnist5k
    if q:
        lines += render_comparison(q["rows"], "MNIST-5k")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--reproduce", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="seconds-long smoke run of the selected parts (all if none)")
    parser.add_argument("--speed-data", default="fashion")
    parser.add_argument("--mnist-dir", default=None, help="folder of the full MNIST IDX files (adds the full-MNIST run)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    all_parts = ("speed", "reproduce")
    parts = [p for p in all_parts if getattr(args, p)] or (list(all_parts) if args.tiny else [])
    if not parts:
        parser.error("choose --speed and/or --reproduce (or --tiny); the quality tables are evoprune bench search")
    args.out = CACHE / "tiny" if args.tiny else RESULTS  # smoke runs never overwrite the real results
    path = args.out / f"{NAME}.json"
    payload = json.loads(path.read_text()) if path.exists() else {}
    for part in parts:
        start = time.perf_counter()
        payload[part] = {"bench_seconds": None, **globals()[part](args)}
        payload[part]["bench_seconds"] = time.perf_counter() - start
        write_json(path, payload)
        write_text(args.out / f"{NAME}.md", markdown(payload).rstrip() + "\n")
    print(markdown(payload))


if __name__ == "__main__":
    main()
