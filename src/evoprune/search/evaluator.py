"""Loss and accuracy of candidate masks, fast: cached upstream activations and whole populations per forward.

``evaluate_masked`` is the plain reference (the whole model, every time); ``MaskEvaluator`` gives the same numbers
by running only the part of the model from the searched layer on (see ``graph.py``), on inputs to that layer that
are computed once per layer, and scores a GA population in one batched forward with ``torch.func.vmap``.
Weights are always the pristine ``W0 ⊙ mask`` (spec §5.7), never a mask on top of an earlier mask.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from evoprune.errors import ConfigError
from evoprune.search.graph import LayerGraph, check_frontier
from evoprune.search.objective import Constraint
from evoprune.train import evaluate

PopulationMode = Literal["vmap", "loop"]


@dataclass(frozen=True)
class Metrics:
    """Mean cross-entropy and accuracy. ``complete=False``: the evaluation stopped as soon as the candidate was
    certain to break its constraint, so ``loss`` is a lower bound and ``accuracy`` an upper bound of the true values
    (enough to decide the violation, which is all the cost uses of a violating candidate)."""

    loss: float
    accuracy: float
    complete: bool = True

    def as_dict(self) -> dict[str, float | bool]:
        return {"loss": self.loss, "accuracy": self.accuracy, "complete": self.complete}


def _weight_key(name: str) -> str:
    return f"{name}.weight" if name else "weight"


def evaluate_masked(model: nn.Module, masks: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, *,
                    batch_size: int = 1024) -> Metrics:
    """Reference evaluation: the project's one :func:`evoprune.train.evaluate` of the whole model, each masked
    layer's weight replaced by ``W ⊙ mask`` for the call (the model itself is not modified)."""
    weights = {_weight_key(name): model.get_submodule(name).weight * mask.to(model.get_submodule(name).weight.device)
               for name, mask in masks.items()}
    result = evaluate(model, x, y, batch_size=batch_size, device=x.device, weights=weights)
    return Metrics(result.loss, result.accuracy)


class MaskEvaluator:
    """Scores candidate masks of a few *focus* layers while the other layers keep their committed masks.

    ``focus(names)`` caches the activations entering the earliest focus layer (recomputed only when a committed
    mask upstream of it changed); ``evaluate`` and ``evaluate_many`` then run only the tail. Every candidate scored
    counts as one evaluation in ``evaluations``.
    """

    def __init__(self, graph: LayerGraph, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1024,
                 population_batch_size: int | None = None, population_mode: PopulationMode = "vmap") -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be ≥ 1, got {batch_size}")
        if population_mode not in ("vmap", "loop"):
            raise ConfigError(f"population_mode must be 'vmap' or 'loop', got {population_mode!r}")
        if len(x) != len(y) or len(y) == 0:
            raise ConfigError(f"evaluation data needs as many labels as inputs, and at least one; got {len(x)} and {len(y)}")
        self.graph = graph
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.population_batch_size = population_batch_size or batch_size
        self.population_mode = population_mode
        self.weights0 = {layer.name: graph.traced.get_submodule(layer.name).weight.detach().clone()
                         for layer in graph.layers}
        self.masks = {name: torch.ones_like(w, dtype=torch.bool) for name, w in self.weights0.items()}
        self.evaluations = 0
        self.images = 0
        self.head_forwards = 0
        self._version = {name: 0 for name in self.masks}
        self._cache_key: tuple[object, ...] | None = None
        self._frontier: list[torch.Tensor] = []
        self._focus: tuple[str, ...] = ()
        self._tail: nn.Module | None = None
        self._fixed: dict[str, torch.Tensor] = {}

    # committed state ---------------------------------------------------------------------------------------
    def set_mask(self, name: str, mask: torch.Tensor) -> None:
        """Commit ``mask`` for layer ``name`` (invalidates cached activations downstream of it)."""
        self._check(name, mask, batched=False)
        self.masks[name] = mask.to(self.weights0[name].device).clone()
        self._version[name] += 1

    def masked(self, name: str, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``W0 ⊙ mask`` for layer ``name`` (its committed mask by default)."""
        return self.weights0[name] * (self.masks[name] if mask is None else mask)

    def _check(self, name: str, mask: torch.Tensor, *, batched: bool) -> None:
        if name not in self.weights0:
            raise ConfigError(f"unknown layer {name!r}; searched layers: {', '.join(self.weights0)}")
        shape = tuple(mask.shape[1:] if batched else mask.shape)
        if shape != tuple(self.weights0[name].shape) or mask.dtype != torch.bool:
            raise ConfigError(
                f"mask for layer {name!r} must be a bool tensor of shape {tuple(self.weights0[name].shape)}, got "
                f"{mask.dtype} {tuple(mask.shape)}"
            )

    # focus -------------------------------------------------------------------------------------------------
    def focus(self, names: Sequence[str]) -> None:
        """Prepare to score candidates that change only the layers ``names``."""
        for name in names:
            if name not in self.weights0:
                raise ConfigError(f"unknown layer {name!r}; searched layers: {', '.join(self.weights0)}")
        cut = min(names, key=self.graph.position)
        cut_pos = self.graph.position(cut)
        head, tail = self.graph.split(cut)
        upstream = tuple(sorted((n, v) for n, v in self._version.items() if self.graph.position(n) < cut_pos))
        key = (cut, upstream)
        if key != self._cache_key:
            self._frontier = self._run_head(head, cut, [n for n, _ in upstream])
            self._cache_key = key
        self._focus = tuple(names)
        self._tail = tail
        self._fixed = {_weight_key(layer.name): self.masked(layer.name) for layer in self.graph.layers_from(cut)
                       if layer.name in self.weights0 and layer.name not in self._focus}

    @torch.no_grad()
    def _run_head(self, head: nn.Module, cut: str, upstream: Sequence[str]) -> list[torch.Tensor]:
        params = {_weight_key(name): self.masked(name) for name in upstream}
        parts: list[list[torch.Tensor]] = []
        for start in range(0, len(self.y), self.batch_size):
            values = functional_call(head, params, (self.x[start:start + self.batch_size],))
            check_frontier(values, len(self.x[start:start + self.batch_size]), cut)
            parts.append(list(values))
        self.head_forwards += 1
        return [torch.cat([p[i] for p in parts]) if len(parts) > 1 else parts[0][i] for i in range(len(parts[0]))]

    def _candidate_params(self, candidates: Mapping[str, torch.Tensor], *, batched: bool) -> dict[str, torch.Tensor]:
        unknown = set(candidates) - set(self._focus)
        if unknown:
            raise ConfigError(f"candidate masks for {sorted(unknown)} outside the focus layers {list(self._focus)}")
        params = {}
        for name in self._focus:
            if name in candidates:
                self._check(name, candidates[name], batched=batched)
                params[_weight_key(name)] = self.masked(name, candidates[name])
        return params

    # scoring -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, candidates: Mapping[str, torch.Tensor], *, stop_if_violating: Constraint | None = None) -> Metrics:
        """Loss and accuracy with the focus layers' masks replaced by ``candidates`` (one evaluation).

        With ``stop_if_violating``, chunks stop as soon as the candidate is certain to break that constraint: the
        loss summed so far already reaches ``limit · N`` (a mean of non-negative terms can only grow), or the errors
        so far already push the accuracy below the limit. The cost of a violating candidate does not depend on its
        exact loss, so the search's decisions are unchanged; only the logged loss/accuracy are bounds.
        """
        if self._tail is None:
            raise ConfigError("call focus(layers) before evaluate()")
        params = {**self._fixed, **self._candidate_params(candidates, batched=False)}
        for name in self._focus:
            params.setdefault(_weight_key(name), self.masked(name))
        n = len(self.y)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.y.device)
        correct = torch.zeros((), dtype=torch.long, device=self.y.device)
        bs = self.batch_size
        seen, complete = 0, True
        for start in range(0, n, bs):
            logits = functional_call(self._tail, params, tuple(f[start:start + bs] for f in self._frontier))
            yb = self.y[start:start + bs]
            loss_sum += F.cross_entropy(logits, yb, reduction="sum").double()
            correct += (logits.argmax(1) == yb).sum()
            seen += len(yb)
            if stop_if_violating is not None and seen < n and stop_if_violating.violated(
                    float(loss_sum) / n, (int(correct) + n - seen) / n):
                complete = False
                break
        self.evaluations += 1
        self.images += seen
        return Metrics(float(loss_sum) / n, (int(correct) + n - seen) / n, complete)

    @torch.no_grad()
    def evaluate_many(self, candidates: Mapping[str, torch.Tensor], *,
                      stop_if_violating: Constraint | None = None) -> list[Metrics]:
        """Score a population: each value is a stack ``P × weight shape``; one batched forward per data chunk
        (``vmap``), or member by member (``loop``, where ``stop_if_violating`` applies to each member)."""
        if self._tail is None:
            raise ConfigError("call focus(layers) before evaluate_many()")
        sizes = {len(m) for m in candidates.values()}
        if len(sizes) != 1 or 0 in sizes:
            raise ConfigError(f"population stacks must share one non-zero size, got sizes {sorted(sizes)}")
        pop = sizes.pop()
        if self.population_mode == "loop":
            return [self.evaluate({n: m[i] for n, m in candidates.items()}, stop_if_violating=stop_if_violating)
                    for i in range(pop)]
        stacked = self._candidate_params(candidates, batched=True)
        fixed = {k: v for k, v in self._fixed.items()}
        for name in self._focus:
            if _weight_key(name) not in stacked:
                fixed[_weight_key(name)] = self.masked(name)
        tail = self._tail

        def forward(weights: dict[str, torch.Tensor], *frontier: torch.Tensor) -> torch.Tensor:
            return functional_call(tail, {**fixed, **weights}, frontier)

        batched = vmap(forward, in_dims=(0,) + (None,) * len(self._frontier))
        loss_sum = torch.zeros(pop, dtype=torch.float64, device=self.y.device)
        correct = torch.zeros(pop, dtype=torch.long, device=self.y.device)
        bs = max(1, self.population_batch_size // pop)
        for start in range(0, len(self.y), bs):
            logits = batched(stacked, *(f[start:start + bs] for f in self._frontier))  # P × b × classes
            yb = self.y[start:start + bs]
            b = len(yb)
            losses = F.cross_entropy(logits.reshape(pop * b, -1), yb.repeat(pop), reduction="none")
            loss_sum += losses.view(pop, b).sum(1).double()
            correct += (logits.argmax(-1) == yb).sum(1)
        self.evaluations += pop
        n = len(self.y)
        self.images += pop * n
        return [Metrics(float(l) / n, int(c) / n) for l, c in zip(loss_sum.tolist(), correct.tolist())]
