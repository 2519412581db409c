"""The one way to get a trained baseline: train a zoo model on a dataset with a recipe, or reuse the checkpoint a
previous call wrote for the same specification.

A :class:`BaselineSpec` says everything that determines the weights: the model and its arguments, the data
(:class:`DataSpec`: dataset, split seed, validation fraction, normalisation, subsets), the training recipe
(:class:`~evoprune.train.TrainConfig`) and the training seed. Its content key is a sha256 of its canonical plain
data, this module's format version, the device type and the torch thread count (floating-point sums on a CPU
depend on the thread count), so a cached checkpoint is reused only where it would be trained again bit for bit.

Every checkpoint written here carries the same metadata (:data:`META_KEYS`): what it was trained on, how, and what
it scored (validation accuracy of the selected epoch; test measured once, after selection). A command given a
checkpoint reads its data back with :func:`checkpoint_data`, so it prunes and fine-tunes on the same split.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evoprune.checkpoint import load_checkpoint, save_checkpoint
from evoprune.config import from_data, to_data
from evoprune.data import DatasetSplits, Split, load_dataset
from evoprune.device import resolve_device
from evoprune.errors import ConfigError
from evoprune.models import build_model
from evoprune.train import TrainConfig, evaluate_split, train

#: Bumped whenever what a key covers, or how a baseline is trained from its spec, changes.
FORMAT = "evoprune.baseline/1"

#: The metadata every baseline checkpoint names (tested).
META_KEYS = ("model", "model_args", "dataset", "data_dir", "split_seed", "val_fraction", "normalize", "mean", "std",
             "train_samples", "eval_samples", "train_config", "seed", "device", "threads", "best_epoch",
             "val_accuracy", "val_loss", "test_accuracy", "test_loss", "train_seconds", "baseline_key")


@dataclass(frozen=True)
class DataSpec:
    """Which data, split how: what a checkpoint must name so that later commands see the same split.

    ``split_seed`` draws the train/validation boundary; ``train_samples`` / ``eval_samples`` keep a random subset
    (drawn with ``split_seed``) of the training split / of the validation and test splits (None: all).
    """

    dataset: str
    split_seed: int = 0
    val_fraction: float = 0.2
    normalize: bool = False
    data_dir: str | None = None
    train_samples: int | None = None
    eval_samples: int | None = None

    def __post_init__(self) -> None:
        for name in ("train_samples", "eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be ≥ 1 or None (all), got {value}")

    def load(self) -> DatasetSplits:
        data = load_dataset(self.dataset, root=self.data_dir, seed=self.split_seed, val_fraction=self.val_fraction,
                            normalize=self.normalize)

        def head(split: Split, n: int | None) -> Split:
            if n is None or n >= len(split):
                return split
            order = torch.randperm(len(split), generator=torch.Generator().manual_seed(self.split_seed))
            return split.subset(order[:n])

        return replace(data, train=head(data.train, self.train_samples), val=head(data.val, self.eval_samples),
                       test=head(data.test, self.eval_samples))


@dataclass(frozen=True)
class BaselineSpec:
    """Everything that determines a trained baseline's weights (the content-addressed cache key covers it all)."""

    model: str
    data: DataSpec
    recipe: TrainConfig
    seed: int = 0
    model_args: dict[str, Any] = field(default_factory=dict)

    def key(self, *, device: str | torch.device = "auto", threads: int | None = None) -> str:
        """sha256 of the canonical spec, the format, the device type and the thread count it is trained with."""
        blob = json.dumps({"format": FORMAT, "spec": to_data(self), "device": resolve_device(device).type,
                           "threads": threads}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def cache_path(self, cache_dir: Path, key: str) -> Path:
        return Path(cache_dir) / f"{self.model}-{self.data.dataset}-s{self.seed}-{key[:16]}.pt"


@dataclass
class Baseline:
    """A trained baseline, its data (as loaded from the spec), its checkpoint and that checkpoint's metadata."""

    spec: BaselineSpec
    model: nn.Module
    arch_kwargs: dict[str, Any]
    data: DatasetSplits
    checkpoint: Path
    meta: dict[str, Any]
    reused: bool


def get_baseline(
    spec: BaselineSpec,
    *,
    cache_dir: Path | None = None,
    out: Path | None = None,
    reuse: bool = True,
    data: DatasetSplits | None = None,
    device: str | torch.device = "auto",
    threads: int | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> Baseline:
    """The trained baseline of ``spec``: read from its checkpoint when one with the same key exists, else trained.

    Give ``cache_dir`` (the file is named by the key) or ``out`` (a fixed path, reused only while the file there
    has this spec's key; ``reuse=False`` always trains, as ``evoprune train`` does). Training seeds the model's
    initialisation and the batch order with ``spec.seed`` and runs with ``threads`` torch threads when given.
    ``data`` is ``spec.data.load()`` where the caller has loaded it already (it is not loaded again).
    """
    if (cache_dir is None) == (out is None):
        raise ConfigError("get_baseline needs exactly one of cache_dir= (content-addressed) or out= (a fixed path)")
    key = spec.key(device=device, threads=threads)
    path = spec.cache_path(cache_dir, key) if cache_dir is not None else Path(str(out))
    data = data if data is not None else spec.data.load()
    if reuse and path.is_file():
        model, payload = load_checkpoint(path)
        if payload["meta"].get("baseline_key") == key:
            if log is not None:
                log(f"baseline {spec.model} on {spec.data.dataset}: reused {path}")
            return Baseline(spec, model.eval(), payload["arch_kwargs"], data, path, payload["meta"], reused=True)
    arch_kwargs = {"in_channels": data.in_channels, "num_classes": data.num_classes,
                   "image_size": tuple(data.image_size), **spec.model_args}
    if log is not None:
        log(f"baseline {spec.model} on {data.describe()}: training {spec.recipe.epochs} epochs (seed {spec.seed})")
    start = time.perf_counter()
    with _threads(threads):
        torch.manual_seed(spec.seed)
        model = build_model(spec.model, **arch_kwargs)
        result = train(model, data, spec.recipe, seed=spec.seed, device=device, progress=progress,
                       description=f"train {spec.model}")
        test = evaluate_split(model, data.test)  # once, after selection on validation
    seconds = time.perf_counter() - start
    best = result.history[result.best_epoch - 1] if result.history else {}
    meta = {
        "model": spec.model, "model_args": to_data(spec.model_args), **to_data(spec.data), "dataset": data.name,
        "mean": list(data.mean) if data.mean is not None else None,
        "std": list(data.std) if data.std is not None else None,
        "train_config": spec.recipe.to_dict(), "seed": spec.seed, "device": resolve_device(device).type,
        "threads": threads, "best_epoch": result.best_epoch, "val_accuracy": result.best_val_accuracy,
        "val_loss": best.get("val_loss"), "test_accuracy": test.accuracy, "test_loss": test.loss,
        "train_seconds": seconds, "baseline_key": key,
    }
    model = model.cpu().eval()
    save_checkpoint(path, model, arch=spec.model, arch_kwargs=arch_kwargs, meta=meta)
    if log is not None:
        log(f"baseline {spec.model}: val accuracy {result.best_val_accuracy:.4f} (epoch {result.best_epoch}), "
            f"test {test.accuracy:.4f}; saved {path}")
    return Baseline(spec, model, arch_kwargs, data, path, meta, reused=False)


@contextmanager
def _threads(threads: int | None) -> Iterator[None]:
    from evoprune.parallel import torch_threads

    with torch_threads(threads) if threads is not None else nullcontext():
        yield


def checkpoint_data(
    meta: Mapping[str, Any],
    *,
    source: str,
    dataset: str | None = None,
    data_dir: str | None = None,
    split_seed: int | None = None,
    val_fraction: float | None = None,
    normalize: bool | None = None,
    fallback_seed: int = 0,
) -> tuple[DataSpec, str]:
    """The data a command given a checkpoint works on, and the one line that says where each setting came from.

    The checkpoint's own dataset, split seed, validation fraction and normalisation, unless given (not None). A
    ``dataset`` other than the checkpoint's is an error (same-shaped datasets would otherwise be mixed up without a
    word); a checkpoint that names none needs ``dataset``. Checkpoints that predate ``split_seed`` used their
    ``seed`` for the split; one that names neither gets ``fallback_seed``.
    """
    trained_on = meta.get("dataset")
    if trained_on is None and dataset is None:
        raise ConfigError(f"{source} does not name the dataset it was trained on; give --data NAME (with --seed, "
                          "--val-fraction and --normalize as it was trained)")
    if trained_on is not None and dataset is not None and dataset.lower() != str(trained_on).lower():
        raise ConfigError(f"{source} was trained on {trained_on!r}, not on --data {dataset!r}; leave out --data to "
                          f"use {trained_on}, or give a checkpoint trained on {dataset}")
    stored = {"dataset": trained_on, "data_dir": meta.get("data_dir"),
              "split_seed": meta.get("split_seed", meta.get("seed")), "val_fraction": meta.get("val_fraction"),
              "normalize": meta.get("normalize")}
    given = {"dataset": dataset, "data_dir": data_dir, "split_seed": split_seed, "val_fraction": val_fraction,
             "normalize": normalize}
    defaults = {"split_seed": fallback_seed, "val_fraction": 0.2, "normalize": False}
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name in given:
        for where, table in (("given", given), ("checkpoint", stored), ("default", defaults)):
            if table.get(name) is not None:
                values[name], origin[name] = table[name], where
                break
    spec = from_data(DataSpec, values, source)
    parts = [f"{spec.dataset} ({origin['dataset']})", f"split seed {spec.split_seed} ({origin['split_seed']})",
             f"val_fraction {spec.val_fraction:g} ({origin['val_fraction']})",
             f"{'normalised' if spec.normalize else 'not normalised'} ({origin['normalize']})"]
    if spec.data_dir is not None:
        parts.append(f"files in {spec.data_dir} ({origin['data_dir']})")
    return spec, f"data for {source}: {', '.join(parts)}"
