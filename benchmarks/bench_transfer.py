"""Transfer table: every metric prunes ResNet-20 and VGG on Fashion-MNIST to ≈50% of their MACs.

A thin wrapper over ``evoprune.bench.metrics`` (the protocol is described there), kept for its flags; the same
table comes from ``evoprune bench metrics --preset reduced|full``. Results go to
``benchmarks/results/<--out>.json`` and ``.md``; finished runs are kept in the JSON and skipped when the script is
rerun with the same settings (``--fresh`` starts over). The defaults are the ``full`` preset (6 baselines of 15
epochs on 48,000 images, 72 pruned models with 3 fine-tuning epochs each: sized for a GPU, ``--device cuda``);
the table in docs/benchmarks.md is the ``reduced`` preset:

    .venv/bin/python benchmarks/bench_transfer.py --train-samples 10000 --train-epochs 6 --finetune-epochs 1 \\
        --eval-samples 5000 --seeds 0,1,2 --threads 1
    .venv/bin/python benchmarks/bench_transfer.py --toy      # a few minutes: checks the pipeline end to end
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

from evoprune.bench import RunOptions, parse_seeds, split_list
from evoprune.bench.metrics import run
from evoprune.bench.metrics_settings import METRICS, MODELS, PRESETS, MetricsBenchSettings

RESULTS = Path(__file__).resolve().parent / "results"


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


def settings_from(args: argparse.Namespace) -> MetricsBenchSettings:
    """The script's flags as bench settings, named after the preset they equal (else ``custom``)."""
    settings = MetricsBenchSettings(
        name="custom", description="benchmarks/bench_transfer.py", data=args.data, models=split_list(args.models),
        vgg_width=args.vgg_width, metrics=split_list(args.metrics), seeds=parse_seeds(args.seeds),
        macs_target=args.macs_target, train_epochs=args.train_epochs, finetune_epochs=args.finetune_epochs,
        finetune_lr=args.finetune_lr, scoring_samples=args.scoring_samples, train_samples=args.train_samples,
        eval_samples=args.eval_samples, device=args.device)
    for name, preset in PRESETS.items():
        if replace(preset, description=settings.description, name="custom") == settings:
            return replace(settings, name=name)
    return settings


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    options = RunOptions(
        out=RESULTS, name=args.out, existing="fresh" if args.fresh else "resume", cache=args.cache,
        progress=sys.stderr.isatty(), log=lambda text: print(text, flush=True),
        command="python benchmarks/bench_transfer.py " + " ".join(sys.argv[1:] if argv is None else argv),
    )
    print(run(settings_from(args), options).markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
