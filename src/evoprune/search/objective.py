"""The cost both searches minimise (spec §3.1) and the constraint that caps each layer's loss or accuracy.

``cost = (L_base − L)² + 1 / (s + ε)``, where the squared term becomes ``penalty`` when the constraint is violated.
The squared term is symmetric on purpose (the seed charges a *lower* loss too). Sparsity ``s`` is either the seed's
unweighted mean of per-layer zero fractions or the global share of zero weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from evoprune.errors import ConfigError

SparsityMode = Literal["mean_layer", "global"]
ConstraintMetric = Literal["loss", "accuracy"]
SPARSITY_MODES: tuple[str, ...] = ("mean_layer", "global")


def sparsity_from_counts(zeros: Sequence[float], sizes: Sequence[int], mode: SparsityMode) -> float:
    """Sparsity of masks with ``zeros[i]`` pruned weights out of ``sizes[i]`` per layer."""
    if mode == "mean_layer":
        return sum(z / n for z, n in zip(zeros, sizes)) / len(sizes)
    if mode == "global":
        return sum(zeros) / sum(sizes)
    raise ConfigError(f"sparsity must be one of {SPARSITY_MODES}, got {mode!r}")


def mask_sparsity(masks: Mapping[str, torch.Tensor], mode: SparsityMode) -> float:
    """Sparsity of boolean masks (True = weight kept)."""
    zeros = [int((~m).sum()) for m in masks.values()]
    return sparsity_from_counts(zeros, [m.numel() for m in masks.values()], mode)


@dataclass(frozen=True)
class Constraint:
    """The cap a candidate must respect: ``loss < limit`` (seed: a loss reaching the cap is a violation) or
    ``accuracy ≥ limit``. Non-finite losses always violate."""

    metric: ConstraintMetric
    limit: float

    def __post_init__(self) -> None:
        if self.metric not in ("loss", "accuracy"):
            raise ConfigError(f"constraint metric must be 'loss' or 'accuracy', got {self.metric!r}")

    def violated(self, loss: float, accuracy: float) -> bool:
        if not math.isfinite(loss):
            return True
        if self.metric == "loss":
            return loss >= self.limit
        return accuracy < self.limit

    def describe(self) -> str:
        return f"loss < {self.limit:.4f}" if self.metric == "loss" else f"accuracy ≥ {self.limit:.4f}"


@dataclass(frozen=True)
class Objective:
    """Cost of a candidate from its loss, sparsity and whether it breaks the constraint (lower is better)."""

    baseline_loss: float
    eps: float = 1e-8
    penalty: float = 1e8

    def cost(self, loss: float, sparsity: float, violated: bool) -> float:
        diff = self.penalty if violated else (self.baseline_loss - loss) ** 2
        return diff + 1.0 / (sparsity + self.eps)


@dataclass(frozen=True)
class Score:
    """One evaluated candidate: what the history logs for it. ``complete=False`` marks a violating candidate whose
    evaluation stopped early (its loss is then a lower bound, its accuracy an upper bound)."""

    cost: float
    loss: float
    accuracy: float
    sparsity: float
    violated: bool
    complete: bool = True

    def as_dict(self) -> dict[str, float | bool]:
        return {"cost": self.cost, "loss": self.loss, "accuracy": self.accuracy, "sparsity": self.sparsity,
                "violated": self.violated, "complete": self.complete}
