"""What SA and GA share while they run: the evaluator, the cost, sparsity bookkeeping, randomness and the log.

A search is a list of *phases*; each phase searches the masks of some layers (one layer, or all of them in a
joint pass) under one constraint, and ends by committing its best masks to the evaluator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from evoprune.search.evaluator import MaskEvaluator, Metrics
from evoprune.search.moves import magnitude_quantiles
from evoprune.search.objective import Constraint, Objective, Score, SparsityMode, sparsity_from_counts

Genome = dict[str, torch.Tensor]
"""Masks of a phase's layers, by layer name (True = weight kept)."""


@dataclass(frozen=True)
class Phase:
    """One stage of the search: the layers it changes, the cap it must respect, and its length (SA proposals or
    GA generations)."""

    label: str
    layers: tuple[str, ...]
    constraint: Constraint
    steps: int


class SearchState:
    """Scores genomes (one evaluation each), logs records, and reports progress through ``on_record``.

    With ``early_stop`` an evaluation ends once the candidate certainly breaks the phase's constraint; its cost
    (penalty + 1/sparsity) is the same as after a full evaluation, so runs are unchanged, only faster.
    """

    def __init__(self, evaluator: MaskEvaluator, objective: Objective, sparsity_mode: SparsityMode,
                 generator: torch.Generator, *, magnitude_bias: float = 0.0, early_stop: bool = True,
                 on_record: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.evaluator = evaluator
        self.early_stop = early_stop
        self.objective = objective
        self.sparsity_mode = sparsity_mode
        self.generator = generator
        self.magnitude_bias = magnitude_bias
        self.on_record = on_record
        self.history: list[dict[str, Any]] = []
        self._names = list(evaluator.masks)
        self._sizes = [evaluator.masks[n].numel() for n in self._names]
        # Magnitude ranks are needed only when proposals are biased by them.
        self._quantiles = {n: magnitude_quantiles(w) for n, w in evaluator.weights0.items()} if magnitude_bias > 0 else {}

    def replace_evaluator(self, evaluator: MaskEvaluator) -> None:
        """Carry on with ``evaluator`` (the same layers of a fine-tuned copy of the network): it takes over the
        committed masks and the evaluation counts, and magnitude ranks are taken afresh from its weights."""
        old = self.evaluator
        for name, mask in old.masks.items():
            evaluator.set_mask(name, mask)
        evaluator.evaluations, evaluator.images, evaluator.head_forwards = old.evaluations, old.images, old.head_forwards
        self.evaluator = evaluator
        if self._quantiles:
            self._quantiles = {n: magnitude_quantiles(w) for n, w in evaluator.weights0.items()}

    def quantiles(self, name: str) -> torch.Tensor | None:
        """Magnitude ranks of layer ``name``'s weights in [0, 1], or None when proposals are not biased."""
        return self._quantiles.get(name)

    def pick_layer(self, genome: Mapping[str, torch.Tensor]) -> str:
        """One layer of ``genome``, drawn in proportion to its kept weights (any layer if none are kept)."""
        names = list(genome)
        kept = torch.tensor([float(genome[n].sum()) for n in names])
        if float(kept.sum()) <= 0:
            kept = torch.ones(len(names))
        return names[int(torch.multinomial(kept, 1, generator=self.generator))]

    def random(self) -> float:
        """One uniform draw in [0, 1) from the run's generator."""
        return float(torch.rand((), generator=self.generator))

    def sparsity(self, genome: Mapping[str, torch.Tensor]) -> float:
        zeros = [int((~genome[n]).sum()) if n in genome else int((~self.evaluator.masks[n]).sum()) for n in self._names]
        return sparsity_from_counts(zeros, self._sizes, self.sparsity_mode)

    def _score(self, genome: Mapping[str, torch.Tensor], metrics: Metrics, constraint: Constraint) -> Score:
        sparsity = self.sparsity(genome)
        violated = constraint.violated(metrics.loss, metrics.accuracy)
        cost = self.objective.cost(metrics.loss, sparsity, violated)
        return Score(cost, metrics.loss, metrics.accuracy, sparsity, violated, metrics.complete)

    def score(self, genome: Mapping[str, torch.Tensor], constraint: Constraint) -> Score:
        metrics = self.evaluator.evaluate(genome, stop_if_violating=constraint if self.early_stop else None)
        return self._score(genome, metrics, constraint)

    def score_many(self, genomes: Sequence[Mapping[str, torch.Tensor]], constraint: Constraint) -> list[Score]:
        names = list(genomes[0])
        stacks = {n: torch.stack([g[n] for g in genomes]) for n in names}
        results = self.evaluator.evaluate_many(stacks, stop_if_violating=constraint if self.early_stop else None)
        return [self._score(g, m, constraint) for g, m in zip(genomes, results)]

    def commit(self, genome: Mapping[str, torch.Tensor]) -> None:
        for name, mask in genome.items():
            self.evaluator.set_mask(name, mask)

    def log(self, record: dict[str, Any]) -> None:
        record["evaluations"] = self.evaluator.evaluations
        self.history.append(record)
        if self.on_record is not None:
            self.on_record(record)
