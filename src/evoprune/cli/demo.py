"""``evoprune demo``: the whole story on embedded data, in minutes.

Today it trains the paper's LeNet-5 on MNIST-5k and reports its accuracy; each capability adds its step here
(pruning with evolved and human metrics, mask search, a short evolution) as it lands.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from evoprune.cli.common import add_runtime_args, apply_threads


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="the whole story in minutes on embedded data")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run directory (default runs/demo)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs for the LeNet-5 (default: preset)")
    add_runtime_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from evoprune.cli import train as train_command

    apply_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    train_args = argparse.Namespace(
        model="lenet5", model_arg=None, data="mnist5k", data_dir=None, val_fraction=0.2, normalize=False,
        preset="lenet5", epochs=args.epochs, batch_size=None, lr=None, optimizer=None, momentum=None,
        weight_decay=None, schedule=None, augment=None, out=args.out / "lenet5-mnist5k.pt",
        seed=args.seed, device=args.device, threads=args.threads, quiet=args.quiet,
    )
    return train_command.run(train_args)
