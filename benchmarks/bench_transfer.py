"""Transfer table: every metric prunes ResNet-20 and VGG on Fashion-MNIST to ≈50% of their MACs.

Protocol (the same for every metric, so only the channel choice differs):

* per seed, one baseline per model is trained from scratch on the training split (seeded; best validation
  epoch kept) and cached, so every metric starts from the same weights;
* one-shot pruning with per-layer ranking; the MACs target solves for one uniform ratio (every prunable layer
  loses the same fraction, the classifier none), so every metric yields the *same architecture*;
* scoring on a class-balanced set drawn from the training split; then the same fine-tuning budget for all
  (``--finetune-epochs``), keeping the best validation epoch;
* test accuracy measured once per pruned model, reported as mean ± sample std over seeds; selection never
  looks at test. "val pruned" is the validation accuracy right after pruning, before fine-tuning: the purest
  measure of the metric itself.

Results go to ``benchmarks/results/transfer.json`` and ``transfer.md``; finished runs are kept in the JSON and
skipped when the script is rerun with the same settings (``--fresh`` starts over). Cost of the full protocol: 6
baselines (15 epochs on 48,000 images) and 66 pruned models (3 fine-tuning epochs each): minutes on a GPU
(``--device cuda``), many hours on 2 CPU cores.

    .venv/bin/python benchmarks/bench_transfer.py            # full protocol (see cost below)
    .venv/bin/python benchmarks/bench_transfer.py --toy      # a few minutes: checks the pipeline end to end
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from evoprune.checkpoint import load_checkpoint, save_checkpoint
from evoprune.data import DatasetSplits, Split, load_dataset
from evoprune.models import build_model
from evoprune.prune import ChannelPruner, PruneSchedule
from evoprune.train import TrainConfig, evaluate, train

RESULTS = Path(__file__).resolve().parent / "results"
METRICS = ("random", "WL1", "WL2", "FPGM", "BNScale", "Taylor", "DI", "SymDiv", "AbsSNR", "eq3", "GA_Func1", "EP_Func1")
LABELS = {"WL1": "L1", "WL2": "L2", "BNScale": "BN scale", "eq3": "eq3 (GA_Func2)"}
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "resnet20": ("resnet_cifar", {"depth": 20}),
    "vgg16": ("vgg", {"depth": 16}),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="fashion", help="dataset (default fashion)")
    p.add_argument("--models", default="resnet20,vgg16", help=f"comma list of {', '.join(MODELS)}")
    p.add_argument("--vgg-width", type=float, default=0.5, help="VGG width multiplier (default 0.5)")
    p.add_argument("--metrics", default=",".join(METRICS), help="comma list of metric names or formulas")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--macs-target", type=float, default=0.5, help="fraction of MACs kept (default 0.5)")
    p.add_argument("--train-epochs", type=int, default=15, help="baseline training epochs")
    p.add_argument("--finetune-epochs", type=int, default=3, help="fine-tuning epochs after pruning, for every metric")
    p.add_argument("--finetune-lr", type=float, default=0.01)
    p.add_argument("--scoring-samples", type=int, default=1000)
    p.add_argument("--train-samples", type=int, default=None, help="use only this many training images (smoke runs)")
    p.add_argument("--eval-samples", type=int, default=None, help="use only this many val and test images (smoke runs)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cache", type=Path, default=Path("runs/transfer"), help="baseline checkpoints (default runs/transfer)")
    p.add_argument("--out", default="transfer", help="results name under benchmarks/results (default transfer)")
    p.add_argument("--fresh", action="store_true", help="ignore finished runs in the results JSON")
    p.add_argument("--toy", action="store_true", help="tiny settings to check the pipeline (results named transfer_toy)")
    args = p.parse_args(argv)
    if args.toy:
        args.models, args.vgg_width, args.seeds = "resnet20,vgg16", 0.125, "0,1"
        args.metrics = "random,WL1,BNScale,Taylor,eq3"
        args.train_epochs, args.finetune_epochs, args.scoring_samples, args.train_samples = 1, 1, 200, 1000
        args.eval_samples = 1000
        args.out = "transfer_toy" if args.out == "transfer" else args.out
        args.cache = args.cache / "toy"
    return args


def baseline_config(args: argparse.Namespace, seed: int) -> TrainConfig:
    """SGD + Nesterov, cosine decay, ±2 px shifts (no flips: Fashion items have a handedness)."""
    return TrainConfig(epochs=args.train_epochs, batch_size=128, optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True,
                       weight_decay=5e-4, schedule="cosine", augment="shift", seed=seed)


def finetune_config(args: argparse.Namespace, seed: int) -> TrainConfig:
    return TrainConfig(epochs=args.finetune_epochs, batch_size=128, optimizer="sgd", lr=args.finetune_lr, momentum=0.9,
                       nesterov=True, weight_decay=5e-4, schedule="cosine", augment="shift", seed=seed)


def load(args: argparse.Namespace, seed: int) -> DatasetSplits:
    data = load_dataset(args.data, seed=seed)
    def head(split: Split, n: int | None) -> Split:
        if n is None or n >= len(split):
            return split
        idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n]
        return Split(split.x[idx], split.y[idx])

    return DatasetSplits(data.name, head(data.train, args.train_samples), head(data.val, args.eval_samples),
                         head(data.test, args.eval_samples), data.num_classes, data.class_names, data.source, data.mean,
                         data.std, data.notes)


def baseline(args: argparse.Namespace, key: str, seed: int, data: DatasetSplits) -> tuple[torch.nn.Module, dict[str, Any]]:
    arch, extra = MODELS[key]
    extra = {**extra, "width": args.vgg_width} if arch == "vgg" else dict(extra)
    kwargs = {"in_channels": data.in_channels, "num_classes": data.num_classes, "image_size": data.image_size, **extra}
    path = args.cache / f"{key}-{data.name}-s{seed}-{settings_hash(args, 'base')}.pt"
    if path.is_file():
        model, payload = load_checkpoint(path)
        return model, payload["meta"]
    torch.manual_seed(seed)
    model = build_model(arch, **kwargs)
    print(f"[{key} seed {seed}] training the baseline ({args.train_epochs} epochs)", flush=True)
    result = train(model, data, baseline_config(args, seed), device=args.device, progress=sys.stderr.isatty(),
                   description=f"{key} s{seed}")
    meta = {"val_accuracy": result.best_val_accuracy, "test_accuracy": evaluate(model, data.test.x, data.test.y).accuracy,
            "seconds": result.seconds, "best_epoch": result.best_epoch}
    save_checkpoint(path, model.cpu(), arch=arch, arch_kwargs=kwargs, meta=meta)
    return model, meta


def settings_hash(args: argparse.Namespace, part: str) -> str:
    """Runs are reused only when the settings that shaped them are the same."""
    keys = ["data", "vgg_width", "train_epochs", "train_samples", "eval_samples"]
    if part == "run":
        keys += ["macs_target", "finetune_epochs", "finetune_lr", "scoring_samples"]
    blob = json.dumps({k: getattr(args, k) for k in keys}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(runs: list[dict[str, Any]], bases: dict[str, dict[str, Any]], models: list[str], metrics: list[str],
              seeds: list[int]) -> dict[str, Any]:
    """Mean ± std per model and metric over the requested seeds only (a resumed JSON may hold others)."""
    runs = [r for r in runs if r["seed"] in seeds]
    table: dict[str, Any] = {}
    for key in models:
        base = [bases[f"{key}/{seed}"]["test_accuracy"] for seed in seeds if f"{key}/{seed}" in bases]
        table[key] = {"baseline": mean_std(base) if base else None, "metrics": {}}
        for metric in metrics:
            rows = [r for r in runs if r["model"] == key and r["metric"] == metric]
            if rows:
                table[key]["metrics"][metric] = {
                    "test": mean_std([r["test_accuracy"] for r in rows]),
                    "val_pruned": mean_std([r["val_accuracy_pruned"] for r in rows]),
                    "macs_kept": statistics.fmean(r["macs_kept"] for r in rows),
                    "params_kept": statistics.fmean(r["params_kept"] for r in rows),
                    "seeds": sorted(r["seed"] for r in rows),
                }
    return table


def markdown(args: argparse.Namespace, table: dict[str, Any], models: list[str], metrics: list[str], info: dict[str, Any]) -> str:
    pct = lambda ms: f"{100 * ms[0]:.2f} ± {100 * ms[1]:.2f}"  # noqa: E731
    lines = [
        f"# Transfer table: every metric at ≈{args.macs_target:.0%} of MACs on {args.data}",
        "",
        f"Command: `{info['command']}`. Machine: {info['machine']['cpu']} ({info['machine']['nproc']} cores), "
        f"torch {info['machine']['torch']}, CUDA: {info['machine']['cuda'] or 'none'}. Wall time {info['seconds']:.0f} s.",
        "",
        f"Protocol: baselines trained {args.train_epochs} epochs from scratch per seed (seeds {args.seeds}); one-shot "
        f"per-layer pruning to {args.macs_target:.0%} of MACs (one uniform ratio solved by bisection, so every metric gives "
        f"the same architecture); scoring on {args.scoring_samples} class-balanced training images; "
        f"{args.finetune_epochs} fine-tuning epochs for every metric (SGD lr {args.finetune_lr}, cosine), best "
        "validation epoch kept; test accuracy (%) measured once, mean ± sample std over seeds. *val pruned* is "
        "validation accuracy right after pruning, before fine-tuning."
        + (f" Training used {args.train_samples} images only (smoke run)." if args.train_samples else ""),
        "",
    ]
    header = "| metric | " + " | ".join(f"{m} test | {m} val pruned" for m in models) + " |"
    lines += [header, "|" + "---|" * (1 + 2 * len(models))]
    base_cells = []
    for m in models:
        base = table[m]["baseline"]
        base_cells += [pct(base) if base else "–", "–"]
    lines.append("| unpruned baseline | " + " | ".join(base_cells) + " |")
    for metric in metrics:
        cells = []
        for m in models:
            entry = table[m]["metrics"].get(metric)
            cells += [pct(entry["test"]), pct(entry["val_pruned"])] if entry else ["–", "–"]
        lines.append(f"| {LABELS.get(metric, metric)} | " + " | ".join(cells) + " |")
    lines.append("")
    for m in models:
        some = next(iter(table[m]["metrics"].values()), None)
        if some:
            lines.append(f"{m}: MACs kept {some['macs_kept']:.1%}, parameters kept {some['params_kept']:.1%}.")
    ranked = sorted(metrics, key=lambda k: -statistics.fmean(
        table[m]["metrics"][k]["test"][0] for m in models if k in table[m]["metrics"]) if any(
        k in table[m]["metrics"] for m in models) else 0.0)
    if ranked:
        lines += ["", "Mean test accuracy over models, best first: " + ", ".join(LABELS.get(k, k) for k in ranked) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS / f"{args.out}.json"
    run_hash = settings_hash(args, "run")
    previous = {} if args.fresh or not json_path.is_file() else json.loads(json_path.read_text())
    runs = [r for r in previous.get("runs", []) if r.get("settings") == run_hash]
    bases: dict[str, dict[str, Any]] = {k: v for k, v in previous.get("baselines", {}).items()}
    start = time.perf_counter()
    print(f"{len(models) * len(seeds) * len(metrics)} pruning runs ({len(runs)} already done)", flush=True)
    for seed in seeds:
        data = load(args, seed)
        for key in models:
            model, meta = baseline(args, key, seed, data)
            bases[f"{key}/{seed}"] = meta
            # Per-layer ranking: the ratio that meets the MACs target is the same for every metric; solve it once.
            schedule = PruneSchedule(macs_target=args.macs_target)
            for metric in metrics:
                if any(r["model"] == key and r["seed"] == seed and r["metric"] == metric for r in runs):
                    continue
                t0 = time.perf_counter()
                pruner = ChannelPruner(metric, schedule=schedule, scoring_samples=args.scoring_samples,
                                       finetune=finetune_config(args, seed), seed=seed, device=args.device,
                                       latency_batch_sizes=(), evaluate_before=False).prune(model, data)
                res = pruner.result_
                schedule = pruner.schedule_.replace(macs_target=None)  # the solved ratio, for the next metrics
                runs.append({
                    "model": key, "seed": seed, "metric": metric, "settings": run_hash,
                    "test_accuracy": res.after.test_accuracy, "val_accuracy": res.after.val_accuracy,
                    "val_accuracy_pruned": res.steps[0].val_accuracy_pruned,
                    "macs_kept": res.macs_kept, "params_kept": res.params_kept, "ratio": pruner.schedule_.ratio,
                    "widths": res.after.widths, "seconds": time.perf_counter() - t0,
                })
                print(f"[{key} seed {seed}] {metric:>10}: val pruned {res.steps[0].val_accuracy_pruned:.4f} → test "
                      f"{res.after.test_accuracy:.4f} (MACs kept {res.macs_kept:.1%}, {time.perf_counter() - t0:.0f} s)",
                      flush=True)
                json_path.write_text(json.dumps({"runs": runs, "baselines": bases}, indent=2) + "\n")  # resumable
    info = {"command": "python benchmarks/bench_transfer.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "machine": machine(), "seconds": time.perf_counter() - start}
    table = summarise(runs, bases, models, metrics, seeds)
    payload = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, **info,
               "table": table, "runs": runs, "baselines": bases}
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    text = markdown(args, table, models, metrics, info)
    (RESULTS / f"{args.out}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
