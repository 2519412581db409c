"""``evoprune train``: train a zoo model on a dataset and save a checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from evoprune.atomic import check_output, write_atomic
from evoprune.baseline import BaselineSpec, DataSpec, get_baseline
from evoprune.cli.common import add_data_args, add_runtime_args, parse_key_values
from evoprune.config import with_overrides
from evoprune.data import available_datasets
from evoprune.models import available_models
from evoprune.train import TRAIN_PRESETS, default_preset_for, fit_augment_to_images, get_train_preset


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a zoo model on a dataset and save a checkpoint",
        description=f"Train a zoo model. Models: {', '.join(available_models())}. "
        f"Datasets: {', '.join(available_datasets())}. Presets: {', '.join(TRAIN_PRESETS)}.",
    )
    p.add_argument("--model", default="lenet5", help="zoo model name (default lenet5)")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="model argument, e.g. depth=16 (repeatable)")
    add_data_args(p)
    p.add_argument("--normalize", action="store_true", help="standardise inputs per channel (train statistics)")
    p.add_argument("--preset", default=None, help="training preset (default: by model: lenet5_d2l→d2l_seed, vgg/resnet_cifar→cifar, else lenet5)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default=None)
    p.add_argument("--momentum", type=float, default=None)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--schedule", choices=["constant", "cosine", "step"], default=None)
    p.add_argument("--augment", choices=["none", "shift", "crop_flip"], default=None,
                   help="default: the preset's, but none for images under 16 px when no --preset is named")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field after the preset and the flags above, e.g. lr=0.01 or "
                   "milestones=[0.3,0.6] (repeatable; the fields of TrainConfig)")
    p.add_argument("--out", type=Path, default=None, help="checkpoint path (default runs/<model>-<data>-s<seed>.pt)")
    add_runtime_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    data_spec = DataSpec(args.data, split_seed=args.seed, val_fraction=args.val_fraction, normalize=args.normalize,
                         data_dir=args.data_dir)
    data = data_spec.load()
    out = args.out or Path("runs") / f"{args.model}-{data.name}-s{args.seed}.pt"
    check_output(out, option="--out")
    check_output(out.with_suffix(".json"), option="--out (its .json summary)")
    preset_name = args.preset or default_preset_for(args.model)
    recipe = get_train_preset(preset_name).with_overrides(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer, momentum=args.momentum,
        weight_decay=args.weight_decay, schedule=args.schedule, augment=args.augment,
    )
    if args.preset is None and args.augment is None:
        recipe = fit_augment_to_images(recipe, data.image_size)
    recipe = with_overrides(recipe, args.overrides)
    spec = BaselineSpec(args.model, data_spec, recipe, seed=args.seed,
                        model_args=parse_key_values(args.model_arg, option="--model-arg"))
    console = Console()
    console.print(f"[bold]{args.model}[/] on {data.describe()}; preset {preset_name}: "
                  f"{recipe.optimizer} lr {recipe.lr}, {recipe.epochs} epochs, batch {recipe.batch_size}, "
                  f"augment {recipe.augment}")
    baseline = get_baseline(spec, out=out, reuse=False, data=data, device=args.device, progress=not args.quiet)
    meta = baseline.meta
    table = Table(title=f"{args.model} on {data.name}")
    for column in ("split", "accuracy", "loss"):
        table.add_column(column, justify="right")
    val_loss = meta["val_loss"] if meta["val_loss"] is not None else float("nan")
    table.add_row("val", f"{meta['val_accuracy']:.4f}", f"{val_loss:.4f}")
    table.add_row("test", f"{meta['test_accuracy']:.4f}", f"{meta['test_loss']:.4f}")
    console.print(table)
    console.print(f"Selected on validation (epoch {meta['best_epoch']} of {recipe.epochs}); test reported once.")
    console.print(f"Trained in {meta['train_seconds']:.1f} s; checkpoint: {out}")
    summary = {"model": args.model, "data": data.name, "seed": args.seed, "val_accuracy": meta["val_accuracy"],
               "test_accuracy": meta["test_accuracy"], "test_loss": meta["test_loss"],
               "seconds": meta["train_seconds"], "checkpoint": str(out)}
    write_atomic(out.with_suffix(".json"), lambda handle: handle.write((json.dumps(summary, indent=2) + "\n").encode()))
    return 0
