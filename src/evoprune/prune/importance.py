"""A Torch-Pruning importance that ranks channels with any evoprune metric.

Torch-Pruning asks an importance for one score per channel of a group's root layer (``__call__(group) ->
Tensor``). Evoprune metrics score the output channels of each conv/linear layer from that layer's feature maps
(split by class), its weights, BatchNorm or gradients. :class:`MetricImportance` bridges the two: on its first
call after :meth:`MetricImportance.reset` it scores every prunable layer once on a fixed, class-balanced scoring
set and caches the result; each group then gets its members' cached scores mapped onto the root's channels
through Torch-Pruning's index mapping (``root_idxs``), so residual sums and concatenations work.

How the members of a coupled group are combined (``coupling=``). A group's *members* are the conv/linear layers
whose output channels one pruning decision removes: the convs writing into one residual sum, or an expand conv and
the depthwise conv after it (whose channels are tied to its input's). Each member's scores are mapped onto the
group's channels; then

- ``"mean"`` (the default): each member's scores divided by the mean absolute value of that member's finite
  scores, averaged over the members. The per-member scaling stops the member with the largest activations from
  deciding alone, and puts every layer on a comparable scale for global ranking (like Torch-Pruning's default
  ``normalizer="mean"``).
- ``"max"``: per channel, the largest of the members' scaled scores (a channel is kept if any member needs it).
- ``"params"``: the mean of the scaled scores weighted by each member's parameters per output channel (weight and
  bias), so a 1×1 expand conv over 96 inputs outvotes a 9-weight depthwise filter; this is the weighting
  Torch-Pruning's unnormalised group norms imply.
- ``"root"``: the unscaled scores of the group's first member in forward order (the layer that names the group).
- ``"last"``: the unscaled scores of the member the forward pass calls last, whose output is the group's last
  feature map (the one every later layer sees): the depthwise conv of an expand→depthwise pair, the last conv
  writing into a residual stream.

For the usual one-member group every rule ranks channels exactly as the metric does, as in the paper.
A non-finite score becomes ``-inf`` and stays ``-inf`` through every combination (a channel with ``-inf`` in any
member that the rule reads is ``-inf``): such a channel is removed first and never kept ahead of a finite one.
Measured (``benchmarks/bench_coupling.py``, ``docs/benchmarks.md``): MobileNetV2 and ResNet-20 on Fashion-MNIST,
10-30% of every group's channels removed, no fine-tuning, WL1/WL2/eq3, mean accuracy after BN recalibration:
root 56.1%, params 54.5%, max 53.7%, mean 51.9%, last 51.6%; with shorter training all five lie within 1.2 points
(params 48.6%, mean 47.9%), and the rules applied to random scores spread as widely. That evidence is mixed, so
``mean`` stays the default (it also keeps global ranking on one scale); the oracle comparison of
``evoprune bench criteria`` is the finer test.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, Literal, Protocol, get_args

import torch
import torch_pruning as tp
from torch import nn

from evoprune.metrics.base import UnscorableLayerError
from evoprune.prune.errors import PruningError
from evoprune.prune.graph import OUT_CHANNEL_FNS, ROOT_TYPES, _called_layers

Coupling = Literal["mean", "max", "params", "root", "last"]
COUPLINGS: tuple[str, ...] = get_args(Coupling)


class LayerScorer(Protocol):
    """Scores the output channels of named layers: ``(model, x, y, layers) -> {layer name: Tensor[C]}``."""

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]: ...


def balanced_scoring_set(
    x: torch.Tensor, y: torch.Tensor, samples: int, *, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``samples`` examples with the same count per class (as far as the data allows), seeded.

    Class-aware metrics compare a class's feature maps with the rest, so an unbalanced scoring set would tilt every
    score towards the frequent classes. The draw is the metric library's :func:`evoprune.metrics.scoring_set`.
    """
    from evoprune.metrics import scoring_set

    if samples < 1:
        raise PruningError(f"the scoring set needs at least one sample, got {samples}")
    return scoring_set(x, y, size=samples, seed=seed)


def resolve_scorer(metric: Any) -> tuple[str, LayerScorer]:
    """Turn a metric name or formula, a metric object, or a layer-scoring callable into ``(label, scorer)``.

    Names and formulas go through ``evoprune.metrics.get_metric`` (which suggests close names for typos); metric
    objects (anything with ``score``) are run by ``evoprune.metrics.scoring.score_layers``.
    """
    if isinstance(metric, str):
        from evoprune.metrics import get_metric

        try:
            label, metric = metric, get_metric(metric)
        except ValueError as exc:  # unknown name (with close names) or a formula that does not parse
            raise PruningError(str(exc)) from exc
    else:
        label = str(getattr(metric, "name", None) or getattr(metric, "__name__", None) or type(metric).__name__)
    if hasattr(metric, "score"):
        from evoprune.metrics.scoring import score_layers

        chosen = metric

        def scorer(model: nn.Module, x: torch.Tensor, y: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
            return score_layers(model, chosen, x, y, layers=layers)

        return label, scorer
    if callable(metric):
        return label, metric
    raise PruningError(f"cannot prune with {metric!r}: give a metric name, a formula, a metric object or a layer scorer")


def out_width(layer: nn.Module) -> int:
    """Output channels of a conv or linear layer."""
    return int(layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels)


def _sanitise(scores: torch.Tensor) -> torch.Tensor:
    scores = scores.detach().float().flatten().cpu()
    return torch.where(torch.isfinite(scores), scores, torch.full_like(scores, -math.inf))


def _params_per_channel(layer: nn.Module) -> float:
    """Weight and bias entries per output channel of a conv/linear layer (the ``params`` coupling's weight)."""
    return sum(p.numel() for p in layer.parameters(recurse=False)) / out_width(layer)


def _scaled(scores: torch.Tensor) -> torch.Tensor:
    """Scores divided by their mean absolute finite value (unchanged when that is 0 or there is none)."""
    finite = scores[torch.isfinite(scores)]
    scale = finite.abs().mean() if len(finite) else torch.tensor(0.0)
    return scores / scale if scale > 0 else scores


class MetricImportance(tp.importance.Importance):
    """Torch-Pruning importance backed by an evoprune metric, scored once per pruning step and cached.

    Args:
        metric: metric name or formula (``"eq3"``, ``"l1"``, ``"div(abs(...), ...)"``), a metric object, a
            callable ``(model, x, y, layers) -> {layer: scores}``, or a ``(label, scorer)`` pair from
            :func:`resolve_scorer`.
        model: the model being pruned (layer names are resolved against it).
        x, y: data to draw the scoring set from (usually the training split).
        samples: size of the class-balanced scoring set.
        seed: seed of the scoring-set draw.
        layers: conv/linear layers to score (default: all of the model's); the pruner passes the prunable ones.
            With the default, a layer the metric cannot score (``BNScale`` without a BatchNorm after it, such as
            an ignored output layer) is left unscored: a group made only of such layers gets no importance, so
            Torch-Pruning leaves it unpruned (with a warning when it asks), like its own ``BNScaleImportance``.
            Layers named here must all be scorable.
        coupling: how the members of a coupled group are combined (module docstring).

    Call :meth:`reset` after the model changes (fine-tuning, pruning) so the next call rescores; scores whose
    length no longer matches a layer's width are also recomputed automatically.
    """

    def __init__(
        self,
        metric: Any,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        samples: int = 1000,
        seed: int = 0,
        layers: Sequence[str] | None = None,
        coupling: Coupling = "mean",
    ) -> None:
        if coupling not in COUPLINGS:
            raise PruningError(f"coupling must be one of {', '.join(COUPLINGS)}, got {coupling!r}")
        self.label, self.scorer = metric if isinstance(metric, tuple) else resolve_scorer(metric)
        self.model = model
        self.x, self.y = balanced_scoring_set(x, y, samples, seed=seed)
        self.layers = list(layers) if layers is not None else None
        self.coupling = coupling
        self.scores: dict[str, torch.Tensor] | None = None
        self.call_order: dict[str, int] = {}  # layer name -> forward position (root and last rules)
        self.unscorable: dict[str, str] = {}  # layer name -> why the metric cannot score it (left unpruned)
        self._warned: set[str] = set()
        self.evaluations = 0  # how many times the metric was run (tests check the cache)

    def reset(self) -> None:
        """Forget the cached scores; the next call scores the model again."""
        self.scores = None

    def _layer_names(self) -> list[str]:
        if self.layers is not None:
            return list(self.layers)
        return [n for n, m in self.model.named_modules() if isinstance(m, ROOT_TYPES)]

    def layer_scores(self) -> dict[str, torch.Tensor]:
        """Cached ``{layer name: sanitised scores}`` for the layers to score, computing them if needed."""
        if self.scores is None or any(len(v) != out_width(self.model.get_submodule(n)) for n, v in self.scores.items()):
            self.scores = self._compute()
        return self.scores

    def _compute(self) -> dict[str, torch.Tensor]:
        names = self._layer_names()
        param = next(self.model.parameters())
        self.unscorable = {}
        was_training = self.model.training
        self.model.eval()
        try:
            # Forward order (for root and last; one example, never changes with pruning). Kept for every rule, so
            # that a caller may switch ``coupling`` on cached scores.
            if not self.call_order:
                modules = {m: n for n, m in self.model.named_modules()}
                called = _called_layers(self.model, self.x[:1].to(param.device))
                self.call_order = {modules[m]: i for i, m in enumerate(called)}
            while True:
                try:
                    with torch.enable_grad():  # Torch-Pruning calls importances under no_grad; gradient metrics need it
                        raw = self.scorer(self.model, self.x.to(param.device), self.y.to(param.device), names)
                    break
                except UnscorableLayerError as exc:
                    # Every conv/linear layer is a candidate, ignored ones included: leave out a layer the metric
                    # cannot score and score the rest again (only structural checks such as BNScale's raise this,
                    # before any pass over the data). Layers named by the caller must all be scored.
                    if self.layers is not None or exc.layer not in names:
                        raise
                    names.remove(exc.layer)
                    self.unscorable[exc.layer] = str(exc)
        finally:
            self.model.train(was_training)
        self.evaluations += 1
        out: dict[str, torch.Tensor] = {}
        for name in names:
            if name not in raw:
                raise PruningError(f"metric {self.label!r} returned no scores for layer {name!r}")
            scores = _sanitise(torch.as_tensor(raw[name]))
            width = out_width(self.model.get_submodule(name))
            if len(scores) != width:
                raise PruningError(
                    f"metric {self.label!r} gave {len(scores)} scores for layer {name!r}, which has {width} output channels"
                )
            out[name] = scores
        return out

    @torch.no_grad()
    def __call__(self, group: tp.dependency.Group) -> torch.Tensor | None:
        """One score per channel of the group's root (higher = keep); None when no member was scored."""
        scores = self.layer_scores()
        names = {m: n for n, m in self.model.named_modules()}
        n_root = len(group[0].idxs)
        members: dict[str, tuple[torch.Tensor, float]] = {}  # name -> (scores on the root's channels, NaN where unmapped; weight)
        for item in group:
            dep, idxs = item.dep, item.idxs
            layer = dep.target.module
            if dep.handler not in OUT_CHANNEL_FNS or not isinstance(layer, ROOT_TYPES):
                continue
            name = names.get(layer)
            if name in self.unscorable:
                if name not in self._warned:
                    self._warned.add(name)
                    warnings.warn(f"{self.unscorable[name]} (so its channels are left unpruned)", stacklevel=2)
                continue
            root_idxs = item.root_idxs
            if name not in scores or name in members or root_idxs is None or any(r is None for r in root_idxs):
                continue
            member = scores[name] if self.coupling in ("root", "last") else _scaled(scores[name])
            mapped = torch.full((n_root,), math.nan)
            mapped[torch.as_tensor(list(root_idxs), dtype=torch.long)] = member[torch.as_tensor(list(idxs), dtype=torch.long)]
            members[name] = mapped, _params_per_channel(layer) if self.coupling == "params" else 1.0
        if not members:
            return None
        if self.coupling in ("root", "last"):
            pick = min if self.coupling == "root" else max
            members = {n: members[n] for n in [pick(members, key=self.call_order.__getitem__)]}
        stacked = torch.stack([m for m, _ in members.values()])
        present = ~torch.isnan(stacked)
        if self.coupling == "max":
            best = torch.where(present, stacked, torch.full_like(stacked, -math.inf)).amax(0)
            return torch.where((stacked == -math.inf).any(0), torch.full_like(best, -math.inf), best)
        # (Weighted) mean over the members that map onto each root channel (all of them, except in odd index
        # mappings); -inf in one member makes the mean -inf, and a channel no member maps onto is -inf.
        weights = torch.tensor([w for _, w in members.values()]).unsqueeze(1) * present
        total = (torch.where(present, stacked, torch.zeros_like(stacked)) * weights).sum(0)
        count = weights.sum(0)
        return torch.where(count > 0, total / count.clamp(min=1e-12), torch.full_like(total, -math.inf))
