"""``evoprune train``: train a zoo model on a dataset and save a checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from evoprune.atomic import check_output
from evoprune.cli.common import add_data_args, add_runtime_args, apply_threads, parse_key_values
from evoprune.data import available_datasets, load_dataset
from evoprune.models import available_models, build_model
from evoprune.train import (
    TRAIN_PRESETS,
    default_preset_for,
    evaluate_split,
    fit_augment_to_images,
    get_train_preset,
    train,
)


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
    p.add_argument("--out", type=Path, default=None, help="checkpoint path (default runs/<model>-<data>-s<seed>.pt)")
    add_runtime_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    apply_threads(args.threads)
    data = load_dataset(args.data, root=args.data_dir, seed=args.seed, val_fraction=args.val_fraction,
                        normalize=args.normalize)
    out = args.out or Path("runs") / f"{args.model}-{data.name}-s{args.seed}.pt"
    check_output(out, option="--out")
    check_output(out.with_suffix(".json"), option="--out (its .json summary)")
    arch_kwargs = {"in_channels": data.in_channels, "num_classes": data.num_classes, "image_size": data.image_size,
                   **parse_key_values(args.model_arg, option="--model-arg")}
    preset_name = args.preset or default_preset_for(args.model)
    config = get_train_preset(preset_name).with_overrides(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer, momentum=args.momentum,
        weight_decay=args.weight_decay, schedule=args.schedule, augment=args.augment, seed=args.seed,
    )
    if args.preset is None and args.augment is None:
        config = fit_augment_to_images(config, data.image_size)
    import torch

    torch.manual_seed(args.seed)
    model = build_model(args.model, **arch_kwargs)
    console = Console()
    console.print(f"[bold]{args.model}[/] on {data.describe()}; preset {preset_name}: "
                  f"{config.optimizer} lr {config.lr}, {config.epochs} epochs, batch {config.batch_size}, "
                  f"augment {config.augment}")
    result = train(model, data, config, device=args.device, progress=not args.quiet, description=f"train {args.model}")
    test = evaluate_split(model, data.test)
    from evoprune.checkpoint import save_checkpoint

    save_checkpoint(out, model.cpu(), arch=args.model, arch_kwargs=arch_kwargs, meta={
        "dataset": data.name, "seed": args.seed, "normalize": args.normalize, "train_config": config.to_dict(),
        "best_epoch": result.best_epoch, "val_accuracy": result.best_val_accuracy,
        "test_accuracy": test.accuracy, "test_loss": test.loss,
    })
    table = Table(title=f"{args.model} on {data.name}")
    for column in ("split", "accuracy", "loss"):
        table.add_column(column, justify="right")
    best = result.history[result.best_epoch - 1] if result.history else {}
    table.add_row("val", f"{result.best_val_accuracy:.4f}", f"{best.get('val_loss', float('nan')):.4f}")
    table.add_row("test", f"{test.accuracy:.4f}", f"{test.loss:.4f}")
    console.print(table)
    console.print(f"Selected on validation (epoch {result.best_epoch} of {config.epochs}); test reported once.")
    console.print(f"{result.samples_seen:,} training samples in {result.seconds:.1f} s; checkpoint: {out}")
    summary = {"model": args.model, "data": data.name, "seed": args.seed, "val_accuracy": result.best_val_accuracy,
               "test_accuracy": test.accuracy, "test_loss": test.loss, "seconds": result.seconds, "checkpoint": str(out)}
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0
