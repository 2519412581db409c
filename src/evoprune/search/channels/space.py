"""The space of a channel search: how many channels each prunable group keeps, its exact cost, and the budget.

An *allocation* is a tuple of kept channel counts, one per prunable Torch-Pruning group (named as in
:class:`~evoprune.prune.ModelGraph`, in forward order). Its MACs and parameters are those the project's counter
(:func:`~evoprune.prune.count_macs_params`) gives for the pruned network, and they depend on the counts only
(which channels go does not change a layer's shape). Counting a pruned copy takes tens of milliseconds, too slow
for the thousands of budget checks a search makes, so :class:`CostModel` learns the counter's numbers once:

every layer's cost is a product of at most two of its dimensions (a conv's input and output channels, a BatchNorm's
channels), and a layer's dimensions belong to the groups that touch it in Torch-Pruning's dependency graph, so the
cost of an allocation is a polynomial of degree 2 whose only cross terms pair two groups that share a layer.
Probing the counter at the full widths, at one and two channels fewer per group and one fewer in each such pair
determines every coefficient; the model is then checked against the counter on random allocations, and the
evaluator counts every network it prunes and refuses any mismatch, so a budget is met as the counter reports it.

Budget (``macs_target`` / ``params_target``): an allocation *meets* it when its cost is at most
``floor(target · unpruned cost)``. :meth:`ChannelSpace.repair` moves any allocation onto that boundary: channels
come off randomly drawn groups (in proportion to what they keep) until it fits, then go back onto randomly drawn
groups while one more still fits, so every candidate a search compares spends the budget and none exceeds it.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from evoprune.criteria import prune_lowest
from evoprune.prune import ChannelGroup, ModelGraph, PruningError, count_macs_params
from evoprune.prune.selection import select_global

Allocation = tuple[int, ...]
_KINDS = ("macs", "params")


@dataclass(frozen=True)
class Budget:
    """Keep at most ``fraction`` of the unpruned network's ``kind`` (``macs`` or ``params``): ``limit`` = floor."""

    kind: str
    fraction: float
    limit: int


class CostModel:
    """Exact MACs and parameters of any allocation, learnt from the counter (see the module docstring)."""

    def __init__(self, model: nn.Module, groups: Sequence[ChannelGroup], scores: Mapping[str, torch.Tensor],
                 example: torch.Tensor, pairs: Sequence[tuple[int, int]]) -> None:
        self._model, self._scores, self._example = model, scores, example
        self.widths: Allocation = tuple(g.width for g in groups)
        self._names = [g.name for g in groups]
        self.base = self.count(self.widths)
        n = len(groups)
        # Coordinates relative to the full widths: x_i = width_i - kept_i (channels removed).
        self._linear = [[0.0, 0.0] for _ in range(n)]
        self._square = [[0.0, 0.0] for _ in range(n)]
        self._cross: dict[tuple[int, int], list[float]] = {}
        for i, width in enumerate(self.widths):
            if width >= 3:  # f(1), f(2) fix a quadratic in x_i
                one, two = self._probe({i: 1}), self._probe({i: 2})
                for k in range(2):
                    self._square[i][k] = (two[k] - 2 * one[k] + self.base[k]) / 2
                    self._linear[i][k] = one[k] - self.base[k] - self._square[i][k]
            elif width == 2:  # x_i is 0 or 1: a line is exact there
                one = self._probe({i: 1})
                self._linear[i] = [float(one[k] - self.base[k]) for k in range(2)]
        for i, j in pairs:
            if min(self.widths[i], self.widths[j]) >= 2:
                both = self._probe({i: 1, j: 1})
                self._cross[(i, j)] = [both[k] - self.base[k] - self._single(i, 1, k) - self._single(j, 1, k)
                                       for k in range(2)]

    def _single(self, i: int, x: int, k: int) -> float:
        return self._linear[i][k] * x + self._square[i][k] * x * x

    def _probe(self, removed: Mapping[int, int]) -> tuple[int, int]:
        return self.count(tuple(w - removed.get(i, 0) for i, w in enumerate(self.widths)))

    def count(self, allocation: Allocation) -> tuple[int, int]:
        """The counter's ``(MACs, parameters)`` of the network pruned to ``allocation`` (slow: prunes a copy)."""
        return count_macs_params(self.prune(allocation), self._example)

    def prune(self, allocation: Allocation) -> nn.Module:
        """A copy of the network keeping each group's ``allocation`` highest-scoring channels."""
        removals = {name: w - a for name, w, a in zip(self._names, self.widths, allocation) if a < w}
        return prune_lowest(self._model, self._scores, removals, self._example)

    def cost(self, allocation: Allocation) -> tuple[int, int]:
        """``(MACs, parameters)`` of ``allocation`` from the learnt polynomial (exact; microseconds)."""
        x = [w - a for w, a in zip(self.widths, allocation)]
        out = []
        for k in range(2):
            value = self.base[k] + sum(self._single(i, xi, k) for i, xi in enumerate(x) if xi)
            value += sum(c[k] * x[i] * x[j] for (i, j), c in self._cross.items() if x[i] and x[j])
            out.append(int(round(value)))
        return out[0], out[1]


class BoundedAllocations:
    """What a search needs of any space of allocations (one count per group, between ``lower`` and ``widths``,
    priced by ``fits``): clipping, repair onto a budget's boundary, and the uniform allocation at a budget."""

    lower: Allocation
    widths: Allocation

    def fits(self, allocation: Allocation, budget: Budget) -> bool:
        raise NotImplementedError

    def uniform(self, ratio: float) -> Allocation:
        raise NotImplementedError

    def clip(self, allocation: Sequence[int]) -> Allocation:
        return tuple(min(w, max(lo, int(a))) for a, lo, w in zip(allocation, self.lower, self.widths))

    def repair(self, allocation: Sequence[int], budget: Budget, rng: random.Random,
               protect: Sequence[int] = ()) -> Allocation:
        """``allocation`` moved onto the budget's boundary (see the module docstring); groups in ``protect``
        (the ones a move just changed) give channels back last and take none."""
        current = list(self.clip(allocation))
        protected = set(protect)
        while not self.fits(tuple(current), budget):
            free = [i for i, a in enumerate(current) if a > self.lower[i] and i not in protected]
            free = free or [i for i, a in enumerate(current) if a > self.lower[i]]
            i = rng.choices(free, weights=[current[j] for j in free])[0]
            current[i] -= 1
        while True:
            room = [i for i, a in enumerate(current) if a < self.widths[i] and i not in protected
                    and self.fits(tuple(current[:i]) + (a + 1,) + tuple(current[i + 1:]), budget)]
            if not room:
                return tuple(current)
            i = rng.choices(room, weights=[current[j] for j in room])[0]
            current[i] += 1

    def uniform_at(self, budget: Budget) -> Allocation:
        """The uniform allocation with the smallest ratio that meets ``budget`` (ratios tried at every width's
        steps, so no smaller one gives another architecture)."""
        ratios = sorted({k / w for w in self.widths for k in range(w)})
        for ratio in ratios:
            allocation = self.uniform(ratio)
            if self.fits(allocation, budget):
                return allocation
        raise PruningError(f"no uniform ratio meets the {budget.kind} target of {budget.fraction:.1%}")


class ChannelSpace(BoundedAllocations):
    """The prunable groups of one trained network, their cached channel scores, the cost model and the bounds.

    ``min_keep`` is the smallest share of a group's channels an allocation keeps (at least one channel).
    """

    def __init__(self, model: nn.Module, scores: Mapping[str, torch.Tensor], example: torch.Tensor, *,
                 min_keep: float = 0.1, check_samples: int = 3, seed: int = 0) -> None:
        graph = ModelGraph(model, example)
        self.groups = graph.prunable_groups()
        if not self.groups:
            raise PruningError(f"{type(model).__name__} has no prunable channel group (only its output layer)")
        missing = [g.name for g in self.groups if g.name not in scores or len(scores[g.name]) != g.width]
        if missing:
            raise PruningError(f"no channel scores of the right length for group(s) {', '.join(missing)}")
        self.names = [g.name for g in self.groups]
        self.scores = {g.name: scores[g.name].detach().float().cpu() for g in self.groups}
        self.widths: Allocation = tuple(g.width for g in self.groups)
        self.lower: Allocation = tuple(max(1, math.ceil(min_keep * w - 1e-9)) for w in self.widths)
        self.costs = CostModel(model, self.groups, self.scores, example, _shared_layer_pairs(graph, self.groups))
        rng = random.Random(seed)
        for _ in range(check_samples):  # the polynomial must give the counter's numbers, or nothing is exact
            self.check_cost(tuple(rng.randint(lo, w) for lo, w in zip(self.lower, self.widths)))

    def check_cost(self, allocation: Allocation, counted: tuple[int, int] | None = None) -> tuple[int, int]:
        """The counter's ``(MACs, params)`` of ``allocation`` (counted here unless given), checked against the
        cost model; a mismatch is an error, since budgets rely on the model."""
        counted = self.costs.count(allocation) if counted is None else counted
        if counted != self.costs.cost(allocation):
            raise PruningError(
                f"MACs/parameters of this network are not a degree-2 polynomial of its group widths (counter "
                f"{counted}, model {self.costs.cost(allocation)} at {list(allocation)}); the channel search cannot "
                "enforce a budget exactly on it. Report the model; the weight-mask search (--space weights) still works")
        return counted

    def budget(self, kind: str, fraction: float) -> Budget:
        """The budget keeping ``fraction`` of the unpruned ``kind``; an error when even ``min_keep`` exceeds it."""
        if kind not in _KINDS or not 0.0 < fraction < 1.0:
            raise PruningError(f"a {kind} target is the fraction to keep, in (0, 1); got {fraction!r}")
        base = self.costs.base[_KINDS.index(kind)]
        budget = Budget(kind, fraction, math.floor(fraction * base + 1e-9))
        if self.value(self.lower, budget) > budget.limit:
            raise PruningError(
                f"a {kind} target of {fraction:.1%} cannot be met: keeping min_keep of every group still costs "
                f"{self.value(self.lower, budget) / base:.1%}; raise the target or lower min_keep")
        return budget

    def value(self, allocation: Allocation, budget: Budget) -> int:
        return self.costs.cost(allocation)[_KINDS.index(budget.kind)]

    def fits(self, allocation: Allocation, budget: Budget) -> bool:
        return self.value(allocation, budget) <= budget.limit

    def uniform(self, ratio: float) -> Allocation:
        """The allocation of a uniform ratio: each group loses ``floor(ratio · width)`` channels (the rule of
        :func:`evoprune.prune.resolve`), keeping at least one."""
        return tuple(max(1, w - math.floor(ratio * w + 1e-9)) for w in self.widths)

    def global_at(self, budget: Budget) -> Allocation:
        """Global ranking (:func:`~evoprune.prune.selection.select_global`, the pruner's ``--global``): the fewest
        lowest-scoring channels across groups, each group keeping one at least, whose removal meets ``budget``."""
        limits = {n: w - 1 for n, w in zip(self.names, self.widths)}

        def allocation(removed: int) -> Allocation:
            plan = select_global(self.scores, removed, limits)
            return tuple(w - len(plan.get(n, ())) for n, w in zip(self.names, self.widths))

        lo, hi = 0, sum(limits.values())
        if not self.fits(allocation(hi), budget):
            raise PruningError(f"global ranking cannot meet the {budget.kind} target of {budget.fraction:.1%}")
        while lo < hi:  # removing more channels never costs more: bisect on how many go
            mid = (lo + hi) // 2
            lo, hi = (mid + 1, hi) if not self.fits(allocation(mid), budget) else (lo, mid)
        return allocation(lo)

    def allocation(self, kept: Mapping[str, int], *, where: str) -> Allocation:
        """The allocation keeping ``kept[group]`` channels of every group (all of a group left out)."""
        unknown = sorted(set(kept) - set(self.names))
        bad = [n for n, w in zip(self.names, self.widths) if not 1 <= kept.get(n, w) <= w]
        if unknown or bad:
            raise PruningError(f"{where}: {'unknown group(s) ' + ', '.join(unknown) if unknown else ''}"
                               f"{'; ' if unknown and bad else ''}"
                               f"{'kept channels out of range for ' + ', '.join(bad) if bad else ''}; "
                               f"groups and widths: {dict(zip(self.names, self.widths))}")
        return tuple(int(kept.get(n, w)) for n, w in zip(self.names, self.widths))


def _shared_layer_pairs(graph: ModelGraph, groups: Sequence[ChannelGroup]) -> list[tuple[int, int]]:
    """Pairs of groups (indices) that touch one module in Torch-Pruning's graph: only they have a cross term."""
    touched: dict[nn.Module, set[int]] = {}
    for i, group in enumerate(groups):
        for dep, _ in graph.tp_group(group):
            touched.setdefault(dep.target.module, set()).add(i)
    pairs = {pair for owners in touched.values() for pair in itertools.combinations(sorted(owners), 2)}
    return sorted(pairs)
