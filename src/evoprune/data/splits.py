"""In-memory dataset splits: every loader returns the same small, tensor-only structure.

Data lives in tensors (not a ``Dataset``/``DataLoader`` pipeline) because every search in this project runs
the same train and evaluation loops thousands of times, and indexing a tensor costs nothing per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from evoprune.errors import ConfigError


@dataclass(frozen=True)
class Split:
    """One split: images ``x`` (float32, N×C×H×W) and integer labels ``y`` (int64, N)."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.ndim != 4 or self.y.ndim != 1 or len(self.x) != len(self.y):
            raise ValueError(f"a split needs x of shape N×C×H×W and y of shape N; got {tuple(self.x.shape)} and {tuple(self.y.shape)}")

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))

    def subset(self, indices: torch.Tensor | np.ndarray) -> Split:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return Split(self.x[idx], self.y[idx])


@dataclass(frozen=True)
class DatasetSplits:
    """Train / validation / test splits of one dataset, with what a model needs to know about it.

    Select on ``val``, report on ``test`` once.
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    class_names: tuple[str, ...]
    source: str = ""
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train.x.shape[2]), int(self.train.x.shape[3])

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}

    def describe(self) -> str:
        s = self.sizes()
        c, (h, w) = self.in_channels, self.image_size
        return f"{self.name}: {s['train']} train / {s['val']} val / {s['test']} test, {c}×{h}×{w}, {self.num_classes} classes"


def check_fraction(name: str, value: float) -> float:
    if not 0.0 < value < 1.0:
        raise ConfigError(f"{name} must be strictly between 0 and 1, got {value}")
    return value


def stratified_split(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split off ``fraction`` of the samples, stratified by class, deterministically for ``seed``.

    Returns ``(x_keep, y_keep, x_out, y_out)``.
    """
    x_keep, x_out, y_keep, y_out = train_test_split(x, y, test_size=fraction, random_state=seed, stratify=y)
    return x_keep, y_keep, x_out, y_out


def to_split(x: np.ndarray, y: np.ndarray) -> Split:
    """uint8 or float images (N×C×H×W) → float32 in [0, 1]; labels → int64."""
    xt = torch.from_numpy(np.ascontiguousarray(x))
    xt = xt.float().div_(255.0) if xt.dtype == torch.uint8 else xt.float()
    return Split(xt, torch.from_numpy(np.ascontiguousarray(y)).long())


def standardize(splits: DatasetSplits) -> DatasetSplits:
    """Per-channel standardisation with statistics of the training split only (no leakage from val/test)."""
    mean = splits.train.x.mean(dim=(0, 2, 3))
    std = splits.train.x.std(dim=(0, 2, 3)).clamp_min(1e-6)

    def apply(split: Split) -> Split:
        return Split((split.x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1), split.y)

    return DatasetSplits(
        name=splits.name,
        train=apply(splits.train),
        val=apply(splits.val),
        test=apply(splits.test),
        num_classes=splits.num_classes,
        class_names=splits.class_names,
        source=splits.source,
        mean=tuple(mean.tolist()),
        std=tuple(std.tolist()),
        notes=splits.notes,
    )
