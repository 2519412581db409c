"""Individuals, the fitness cache keyed by canonical form, ranking, selection and the hall of fame.

A candidate's fitness lives in the cache, not on the individual: every tree with the same canonical form (the same
function up to reordering of sums and products) shares one :class:`CacheEntry`, evaluated once per seed. Its
fitness is the weighted geometric mean over tasks of its mean validation accuracy over the evaluations it has had
(one, or more when elites are re-evaluated with new seeds).

Ranking is total and deterministic: higher fitness first, then the smaller tree (parsimony on ties), then the
canonical string.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, field
from typing import Any

from deap import gp

from evoprune.evolve.fitness import WORST_FITNESS, weighted_geometric_mean


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
    """One evaluation of a candidate (all tasks, one seed): per-task results and their combined fitness."""

    index: int
    tasks: dict[str, dict[str, Any]]
    fitness: float

    @property
    def failed(self) -> bool:
        return any(r.get("status") != "ok" for r in self.tasks.values())

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "tasks": self.tasks, "fitness": self.fitness}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Evaluation:
        return Evaluation(int(data["index"]), dict(data["tasks"]), float(data["fitness"]))


@dataclass
class CacheEntry:
    """Everything known about one function (canonical form)."""

    key: str
    size: int
    height: int
    first_generation: int
    origin: str
    evaluations: list[Evaluation] = field(default_factory=list)
    fitness: float = WORST_FITNESS
    accuracies: dict[str, float] = field(default_factory=dict)

    def add(self, evaluation: Evaluation, weights: dict[str, float]) -> None:
        """Record an evaluation and update the mean accuracies and the fitness."""
        self.evaluations.append(evaluation)
        self.refresh(weights)

    def refresh(self, weights: dict[str, float]) -> None:
        if not self.evaluations:
            self.fitness, self.accuracies = WORST_FITNESS, {}
            return
        names = list(self.evaluations[0].tasks)
        self.accuracies = {t: statistics.fmean(e.tasks[t]["accuracy"] for e in self.evaluations) for t in names}
        self.fitness = weighted_geometric_mean(self.accuracies, weights)

    @property
    def evaluated(self) -> bool:
        return bool(self.evaluations)

    @property
    def failures(self) -> int:
        return sum(e.failed for e in self.evaluations)

    def rank_key(self) -> tuple[float, int, str]:
        return (-self.fitness, self.size, self.key)

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

    def fitness(self, key: str) -> float:
        entry = self.get(key)
        return entry.fitness if entry is not None else WORST_FITNESS

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


def population_stats(population: list[Individual], cache: FitnessCache) -> dict[str, float]:
    values = [cache.fitness(ind.key) for ind in population]
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
