"""A metric's accuracy-vs-MACs curve: uniform per-layer ratios, right after pruning and after BN recalibration.

ShrinkBench (Blalock et al., MLSys 2020) compares criteria at several compression ratios instead of one cut; at
uniform per-layer ratios every metric gets the same architecture per ratio (each group loses
``floor(ratio · width)`` channels, :func:`evoprune.prune.resolve`'s rule), so only *which* channels go differs,
never how many (a global ranking would let the metric's scale decide the allocation too). No fine-tuning: each
point is measured right after pruning and again after re-estimating the BatchNorm statistics
(:func:`recalibrate_batchnorm`), which EagleEye found predicts the fine-tuned accuracy well.

The metric scores the channels **once**, on the unpruned network; the point at ratio ``r`` removes each group's
lowest-scoring ``floor(r · width)`` channels of that one ranking, so the pruned sets are nested across ratios.
Rescoring per ratio would not change a one-shot cut (each ratio starts from the unpruned net), and scoring once
costs one scoring pass per metric instead of one per ratio.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from evoprune.criteria.recalibrate import recalibrate_batchnorm
from evoprune.data import DatasetSplits
from evoprune.device import resolve_device
from evoprune.errors import ConfigError
from evoprune.prune import ModelGraph, PruneSchedule, PruningError, count_macs_params, resolve
from evoprune.prune.importance import Coupling, MetricImportance
from evoprune.prune.selection import lowest
from evoprune.train import evaluate

DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5)


@dataclass(frozen=True)
class CurvePoint:
    """One uniform ratio: the pruned size, and test loss/accuracy right after pruning and after BN recalibration."""

    ratio: float
    macs: int
    params: int
    loss_pruned: float
    accuracy_pruned: float
    loss_recalibrated: float
    accuracy_recalibrated: float


def group_scores(model: nn.Module, metric: Any, data: DatasetSplits, *, samples: int = 1000, seed: int = 0,
                 coupling: Coupling = "mean") -> dict[str, torch.Tensor]:
    """Per prunable group (by name), the metric's score of each channel (higher = keep), scored once on ``model``.

    These are the scores pruning uses (:class:`MetricImportance`: the members' scores combined by ``coupling``),
    on a class-balanced scoring set of ``samples`` training images drawn with ``seed``.
    """
    graph = ModelGraph(model, data.train.x[:1].to(next(model.parameters()).device))
    groups = graph.prunable_groups()
    importance = MetricImportance(metric, model, data.train.x, data.train.y, samples=samples, seed=seed,
                                  layers=[m for g in groups for m in g.members], coupling=coupling)
    out = {}
    for group in groups:
        scores = importance(graph.tp_group(group))
        if scores is None or len(scores) != group.width:
            raise PruningError(f"metric {importance.label!r} gave no usable scores for {group.label}")
        out[group.name] = scores.float()
    return out


def prune_lowest(model: nn.Module, scores: Mapping[str, torch.Tensor], removals: Mapping[str, int],
                 example: torch.Tensor) -> nn.Module:
    """A copy of ``model`` with ``removals[name]`` lowest-scoring channels of each named prunable group removed
    (ties by index, as :mod:`evoprune.prune.selection` breaks them; a count of 0 or a group left out loses nothing).

    Scores index the unpruned channels: every group is pruned from the one cached ranking, so pruning a group
    never shifts another group's channel indices.
    """
    pruned = copy.deepcopy(model)
    graph = ModelGraph(pruned, example.to(next(pruned.parameters()).device))
    groups = {g.name: g for g in graph.prunable_groups()}
    unknown = sorted(set(removals) - set(groups))
    if unknown:
        raise PruningError(f"no prunable group named {', '.join(map(repr, unknown))} in {type(model).__name__}; "
                           f"groups: {', '.join(groups)}")
    for name, group in groups.items():
        count = int(removals.get(name, 0))
        if count:
            graph.prune(group, lowest(scores[name], count))
    graph.check_runs()
    return pruned


def prune_uniform(model: nn.Module, scores: Mapping[str, torch.Tensor], ratio: float,
                  example: torch.Tensor) -> nn.Module:
    """A copy of ``model`` with each prunable group's ``floor(ratio · width)`` lowest-scoring channels removed
    (ties by index, as :mod:`evoprune.prune.selection` breaks them): the architecture depends only on the ratio."""
    graph = ModelGraph(model, example.to(next(model.parameters()).device))
    removals = resolve(PruneSchedule(ratio=ratio), graph.prunable_groups(), graph.all_groups()).removals
    # a group whose floor(ratio · width) is 0 loses nothing (resolve leaves it out)
    return prune_lowest(model, scores, {name: counts[0] for name, counts in removals.items()}, example)


def metric_curve(
    model: nn.Module,
    metric: Any,
    data: DatasetSplits,
    *,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    scoring_samples: int = 1000,
    coupling: Coupling = "mean",
    recalibration_batches: int = 20,
    recalibration_batch_size: int = 64,
    seed: int = 0,
    scores: Mapping[str, torch.Tensor] | None = None,
    device: str | torch.device = "auto",
) -> list[CurvePoint]:
    """One :class:`CurvePoint` per ratio for ``metric`` on a trained ``model`` (not modified).

    The scoring set (``scoring_samples``, class-balanced) and the recalibration images (``recalibration_batches``
    batches of ``recalibration_batch_size`` from the training split) are drawn with ``seed``, so every metric sees
    the same ones; loss and accuracy are measured on ``data.test`` with :func:`evoprune.train.evaluate`.
    ``scores`` (from :func:`group_scores`) skips the scoring when the caller already has them.
    """
    if not ratios:
        raise ConfigError("the curve needs at least one ratio")
    dev = resolve_device(device)
    base = copy.deepcopy(model).to(dev).eval()
    if scores is None:
        scores = group_scores(base, metric, data, samples=scoring_samples, seed=seed, coupling=coupling)
    order = torch.randperm(len(data.train.y), generator=torch.Generator().manual_seed(seed))
    recal_x = data.train.x[order[:recalibration_batches * recalibration_batch_size]]
    example = data.train.x[:1].to(dev)
    points = []
    for ratio in ratios:
        pruned = prune_uniform(base, scores, ratio, example)
        macs, params = count_macs_params(pruned, example)
        pruned.to(memory_format=torch.channels_last)  # same numbers, faster CPU convolutions
        before = evaluate(pruned, data.test.x, data.test.y)
        recalibrate_batchnorm(pruned, recal_x, batches=recalibration_batches, batch_size=recalibration_batch_size)
        after = evaluate(pruned, data.test.x, data.test.y)
        points.append(CurvePoint(float(ratio), macs, params, before.loss, before.accuracy, after.loss, after.accuracy))
    return points
