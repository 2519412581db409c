"""Arguments and helpers several subcommands share."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from evoprune.errors import ConfigError


def add_data_args(parser: argparse.ArgumentParser, *, default: str = "mnist5k") -> None:
    parser.add_argument("--data", default=default, help=f"dataset name (default {default}); see `evoprune train --help`")
    parser.add_argument("--data-dir", default=None, help="folder of the dataset's files (mnist, fashion, cifar10/100)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of the training set held out for validation")


def add_runtime_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="random seed (data split, init, shuffling)")
    parser.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def apply_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be ≥ 1, got {threads}")
        torch.set_num_threads(threads)


def parse_key_values(items: list[str] | None, *, option: str) -> dict[str, Any]:
    """``["depth=16", "width=0.5", "hidden=256,128"]`` → ``{"depth": 16, "width": 0.5, "hidden": (256, 128)}``."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{option} {item!r}: expected KEY=VALUE, e.g. {option} depth=16")
        out[key.strip().replace("-", "_")] = _parse_value(raw.strip())
    return out


def _parse_value(raw: str) -> Any:
    if "," in raw:
        return tuple(_parse_value(part) for part in raw.split(",") if part)
    lowered = raw.lower()
    if lowered in {"true", "false"}:
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def check_fits_data(arch_kwargs: dict[str, Any], data: Any, *, source: str) -> None:
    """Refuse, before any work, a model built for another input shape or class count than ``data`` has."""
    from evoprune.models.utils import as_image_size

    built = (arch_kwargs.get("in_channels"), as_image_size(arch_kwargs["image_size"]) if "image_size" in arch_kwargs
             else None, arch_kwargs.get("num_classes"))
    have = (data.in_channels, tuple(data.image_size), data.num_classes)
    if any(b is not None and b != h for b, h in zip(built, have)):
        def shape(c: Any, size: Any, k: Any) -> str:
            return f"{c}×{size[0]}×{size[1]} images, {k} classes" if size else f"{c} channels, {k} classes"

        raise ConfigError(f"{source} was built for {shape(*built)}, but {data.name} has {shape(*have)}; "
                          "give the --data it was trained on, or a checkpoint trained for this dataset")
