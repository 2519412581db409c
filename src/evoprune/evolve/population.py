"""Individuals, the fitness cache keyed by canonical form, ranking, selection and the hall of fame.

A candidate's fitness lives in the cache, not on the individual: every tree with the same canonical form (the same
function up to reordering of sums and products) shares one :class:`CacheEntry`, evaluated once per fidelity and
seed. At each fidelity its fitness combines the tasks' mean scores over the evaluations it has had there (one, or
more when elites are re-evaluated with new seeds): a weighted geometric mean of validation accuracies at
``recal`` and ``finetune``, a weighted arithmetic mean of Spearman correlations at ``oracle``.

Ranking is total and deterministic and lexicographic: the candidate that reached the more expensive fidelity first,
then higher fitness at that fidelity, then the smaller tree (parsimony on ties), then the canonical string.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass, field
from typing import Any

from deap import gp

from evoprune.evolve.config import FIDELITIES
from evoprune.evolve.fitness import WORST_FITNESS, combine_fitness, worst_fitness


@dataclass
class Individual:
    """A member of the population: a DEAP tree, its formula, its canonical key, and how it was made."""

    tree: gp.PrimitiveTree
    formula: str
    key: str
    origin: str

    def to_dict(self) -> dict[str, str]:
        return {"formula": self.formula, "key": self.key, "origin": self.origin}


@dataclass
class Evaluation:
    """One evaluation of a candidate at one fidelity (all tasks, one seed): per-task results and their fitness.

    Each task's result holds its ``score`` (a validation accuracy at ``recal`` and ``finetune``, a Spearman
    correlation at ``oracle``; the fidelity's worst value when it failed), ``status``, ``error`` and ``seconds``.
    """

    index: int
    tasks: dict[str, dict[str, Any]]
    fitness: float
    fidelity: str = "finetune"

    @property
    def failed(self) -> bool:
        return any(r.get("status") != "ok" for r in self.tasks.values())

    def to_dict(self) -> dict[str, Any]:
        return {"fidelity": self.fidelity, "index": self.index, "tasks": self.tasks, "fitness": self.fitness}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Evaluation:
        return Evaluation(int(data["index"]), dict(data["tasks"]), float(data["fitness"]), str(data["fidelity"]))


@dataclass
class CacheEntry:
    """Everything known about one function (canonical form), at every fidelity it was evaluated at.

    The cache is keyed by (canonical form, fidelity): :meth:`at` gives one fidelity's evaluations. The entry's
    *reached* fidelity is the most expensive one with an evaluation that did not fail (None when every one failed);
    ``fitness`` and ``accuracies`` (per-task mean scores, accuracies except at ``oracle``) are taken there.
    """

    key: str
    size: int
    height: int
    first_generation: int
    origin: str
    evaluations: list[Evaluation] = field(default_factory=list)
    fitness: float = WORST_FITNESS
    accuracies: dict[str, float] = field(default_factory=dict)
    reached: str | None = None
    _by_fidelity: dict[str, tuple[float, dict[str, float]]] = field(default_factory=dict, repr=False)

    def add(self, evaluation: Evaluation, weights: dict[str, float]) -> None:
        """Record an evaluation and update the per-fidelity fitness and the reached fidelity."""
        self.evaluations.append(evaluation)
        self.refresh(weights)

    def refresh(self, weights: dict[str, float]) -> None:
        self._by_fidelity = {}
        self.reached = None
        for fidelity in FIDELITIES:
            done = self.at(fidelity)
            if not done:
                continue
            names = list(done[0].tasks)
            scores = {t: statistics.fmean(e.tasks[t]["score"] for e in done) for t in names}
            self._by_fidelity[fidelity] = (combine_fitness(fidelity, scores, weights), scores)
            if not all(e.failed for e in done):
                self.reached = fidelity
        # Where every evaluation failed, the fitness shown is the (worst-valued) one of the last fidelity tried.
        shown = self.reached or next(reversed(self._by_fidelity), None)
        self.fitness, self.accuracies = self._by_fidelity[shown] if shown is not None else (WORST_FITNESS, {})

    def at(self, fidelity: str) -> list[Evaluation]:
        """The evaluations at one fidelity, in order."""
        return [e for e in self.evaluations if e.fidelity == fidelity]

    def has(self, fidelity: str) -> bool:
        return any(e.fidelity == fidelity for e in self.evaluations)

    def fitness_at(self, fidelity: str) -> float:
        """Fitness at ``fidelity`` (its worst value if not evaluated there)."""
        return self._by_fidelity.get(fidelity, (worst_fitness(fidelity), {}))[0]

    def failed_at(self, fidelity: str) -> bool:
        """Every evaluation at ``fidelity`` failed (or there is none)."""
        return all(e.failed for e in self.at(fidelity))

    @property
    def evaluated(self) -> bool:
        return bool(self.evaluations)

    @property
    def failures(self) -> int:
        return sum(e.failed for e in self.evaluations)

    def rank_key(self) -> tuple[int, float, int, str]:
        """Lexicographic: the more expensive fidelity reached first, then higher fitness there, smaller, key."""
        level = FIDELITIES.index(self.reached) if self.reached is not None else -1
        return (-level, -self.fitness, self.size, self.key)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "size": self.size, "height": self.height, "first_generation": self.first_generation,
                "origin": self.origin, "evaluations": [e.to_dict() for e in self.evaluations]}

    @staticmethod
    def from_dict(data: dict[str, Any], weights: dict[str, float]) -> CacheEntry:
        entry = CacheEntry(data["key"], int(data["size"]), int(data["height"]), int(data["first_generation"]),
                           data["origin"], [Evaluation.from_dict(e) for e in data["evaluations"]])
        entry.refresh(weights)
        return entry


class FitnessCache(dict[str, CacheEntry]):
    """Canonical key → :class:`CacheEntry`."""

    def ranked(self) -> list[CacheEntry]:
        return sorted((e for e in self.values() if e.evaluated), key=CacheEntry.rank_key)

    def hall_of_fame(self, size: int) -> list[CacheEntry]:
        """The best ``size`` functions ever evaluated."""
        return self.ranked()[:size]


def rank_population(population: list[Individual], cache: FitnessCache) -> list[Individual]:
    """Population sorted best first (deterministic, see module docstring)."""
    return sorted(population, key=lambda ind: cache[ind.key].rank_key())


def select_elites(population: list[Individual], cache: FitnessCache, count: int) -> list[Individual]:
    """The best ``count`` *distinct* functions (duplicates only if there are too few distinct ones)."""
    ranked = rank_population(population, cache)
    seen: set[str] = set()
    distinct, repeats = [], []
    for ind in ranked:
        (repeats if ind.key in seen else distinct).append(ind)
        seen.add(ind.key)
    return (distinct + repeats)[:count]


def tournament(population: list[Individual], cache: FitnessCache, size: int, rng: random.Random) -> Individual:
    """The best of ``size`` individuals drawn at random with replacement (DEAP's ``selTournament``)."""
    aspirants = [rng.choice(population) for _ in range(size)]
    return min(aspirants, key=lambda ind: cache[ind.key].rank_key())


def promoted(pool: list[str], cache: FitnessCache, fidelity: str, fraction: float) -> list[str]:
    """Successive halving: the best ``ceil(fraction · len(pool))`` of ``pool`` (keys) at ``fidelity``, best first.

    Ranked by fitness there, then size, then key; a candidate whose evaluations there all failed is never promoted
    (so fewer may go on when many failed).
    """
    count = math.ceil(fraction * len(pool) - 1e-9)  # 0.1 · 30 is 3.0000000000000004 in floating point
    ranked = sorted((k for k in pool if not cache[k].failed_at(fidelity)),
                    key=lambda k: (-cache[k].fitness_at(fidelity), cache[k].size, k))
    return ranked[:count]


def population_stats(population: list[Individual], cache: FitnessCache, fidelity: str) -> dict[str, float]:
    """Fitness statistics at ``fidelity`` (the cheapest of the run: every member has it) and tree sizes."""
    values = [cache[ind.key].fitness_at(fidelity) for ind in population]
    return {
        "best": max(values),
        "mean": statistics.fmean(values),
        "median": statistics.median(values),
        "std": statistics.pstdev(values),
        "worst": min(values),
        "unique": len({ind.key for ind in population}),
        "mean_size": statistics.fmean(len(ind.tree) for ind in population),
        "mean_height": statistics.fmean(ind.tree.height for ind in population),
    }
