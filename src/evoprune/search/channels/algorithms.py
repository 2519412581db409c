"""SA, GA and NSGA-II over allocations (kept channels per group), as in the mask search but in this smaller space.

A *move* changes ``move_groups`` randomly drawn groups by up to ``move_size`` of their width each, up or down;
under a budget the result is repaired onto the budget's boundary with the moved groups protected, so a move
shifts channels between groups at equal cost. SA accepts by Metropolis on the objective (validation accuracy,
or minus the loss) with a geometric cooling over the evaluations; the GA keeps elites and breeds by tournament,
uniform crossover over groups and one move; NSGA-II (DEAP's ``selNSGA2``) keeps a population of allocations
spread along the objective-vs-cost front, with no budget. Every algorithm stops once it has measured
``evaluations`` distinct allocations (revisits are free: the evaluator caches by allocation).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

from deap import base, tools

from evoprune.search.channels.config import ChannelSearchConfig
from evoprune.search.channels.evaluate import AllocationEvaluator, Record
from evoprune.search.channels.space import Allocation, Budget, ChannelSpace

# Proposals per requested evaluation before a search gives up finding new allocations (a tiny space).
_MAX_PROPOSALS = 20


def fitness(record: Record, objective: str) -> tuple[float, float]:
    """Higher is better: (accuracy, −loss) or (−loss, accuracy)."""
    return (record["accuracy"], -record["loss"]) if objective == "accuracy" else (-record["loss"], record["accuracy"])


class Search:
    """What every algorithm shares: the space, the budget (None for NSGA-II), the evaluator, the seeded RNG,
    the evaluation limit and the history (one line per step)."""

    def __init__(self, space: ChannelSpace, budget: Budget | None, evaluator: AllocationEvaluator,
                 config: ChannelSearchConfig, rng: random.Random) -> None:
        self.space, self.budget, self.evaluator, self.config, self.rng = space, budget, evaluator, config, rng
        self.stop_at = len(evaluator.records) + config.evaluations
        self.proposals_left = _MAX_PROPOSALS * config.evaluations
        self.history: list[dict[str, Any]] = []

    def done(self) -> bool:
        return len(self.evaluator.records) >= self.stop_at or self.proposals_left <= 0

    def fit(self, allocation: Sequence[int], protect: Sequence[int] = ()) -> Allocation:
        if self.budget is None:
            return self.space.clip(allocation)
        return self.space.repair(allocation, self.budget, self.rng, protect)

    def move(self, allocation: Allocation) -> Allocation:
        n = len(allocation)
        changed = sorted(self.rng.sample(range(n), min(self.config.move_groups, n)))
        out = list(allocation)
        for i in changed:
            step = self.rng.randint(1, max(1, round(self.config.move_size * self.space.widths[i])))
            out[i] += step if self.rng.random() < 0.5 else -step
        return self.fit(out, protect=changed)

    def score(self, allocation: Allocation) -> tuple[float, float]:
        self.proposals_left -= 1
        return fitness(self.evaluator(allocation), self.config.objective)

    def log(self, step: int, **values: Any) -> None:
        self.history.append({"step": step, "evaluations": len(self.evaluator.records), **values})


def run_sa(search: Search, start: Allocation) -> None:
    """Simulated annealing from ``start``; temperature ``t0`` (objective units) cooled geometrically to
    ``t0 · final_temperature_ratio`` over the evaluations."""
    cfg = search.config.sa
    current, current_fit = start, search.score(start)
    best_fit = current_fit
    step = 0
    while not search.done():
        used = len(search.evaluator.records) - (search.stop_at - search.config.evaluations)
        temperature = cfg.t0 * cfg.final_temperature_ratio ** (used / max(1, search.config.evaluations - 1))
        candidate = search.move(current)
        if candidate == current:
            search.proposals_left -= 1
            continue
        candidate_fit = search.score(candidate)
        delta = candidate_fit[0] - current_fit[0]
        accepted = candidate_fit >= current_fit or search.rng.random() < math.exp(delta / temperature)
        if accepted:
            current, current_fit = candidate, candidate_fit
        best_fit = max(best_fit, candidate_fit)
        search.log(step, temperature=temperature, candidate=candidate_fit[0], current=current_fit[0],
                   best=best_fit[0], accepted=accepted)
        step += 1


def run_ga(search: Search, start: Allocation) -> None:
    """Elitist GA seeded with ``start`` and moves away from it."""
    cfg = search.config.ga
    population = [start]
    size = max(1, min(cfg.population, search.stop_at - len(search.evaluator.records)))
    tries = 0
    while len(population) < size and tries < _MAX_PROPOSALS * cfg.population:
        tries += 1
        member = start
        for _ in range(search.rng.randint(1, 3)):
            member = search.move(member)
        if member not in population:
            population.append(member)
    generation = 0
    while True:
        scored = sorted(((search.score(m), i, m) for i, m in enumerate(population)), reverse=True)
        search.log(generation, best=scored[0][0][0], mean=sum(s[0][0] for s in scored) / len(scored))
        if search.done():
            return
        children = [m for _, _, m in scored[:cfg.elite]]
        while len(children) < cfg.population and not search.done():
            a, b = _tournament(search.rng, scored, cfg.tournament), _tournament(search.rng, scored, cfg.tournament)
            child = ([x if search.rng.random() < 0.5 else y for x, y in zip(a, b)]
                     if search.rng.random() < cfg.crossover_rate else list(a))
            child = search.move(search.fit(child))
            if child not in children:
                children.append(child)
                search.score(child)
            else:
                search.proposals_left -= 1
        population = children
        generation += 1


def _tournament(rng: random.Random, scored: list[tuple[Any, int, Allocation]], size: int) -> Allocation:
    return max(rng.sample(scored, min(size, len(scored))))[2]


class _Fitness(base.Fitness):
    weights = (1.0, -1.0)  # objective up, cost down


class _Individual(list):
    """An allocation as DEAP's selection sees it (a list with a ``fitness``)."""

    def __init__(self, allocation: Allocation, values: tuple[float, float]) -> None:
        super().__init__(allocation)
        self.fitness = _Fitness(values)


def run_nsga2(search: Search, cost: Callable[[Record], float]) -> None:
    """NSGA-II: uniform allocations at spread ratios and random ones to start; binary tournaments on (front
    rank, crowding distance), uniform crossover and one move; ``selNSGA2`` keeps the next population."""
    cfg, space, rng = search.config.nsga2, search.space, search.rng

    def individual(allocation: Allocation) -> _Individual:
        record = search.evaluator(allocation)
        search.proposals_left -= 1
        return _Individual(allocation, (fitness(record, search.config.objective)[0], cost(record)))

    starts: list[Allocation] = []
    uniform = max(1, cfg.population // 2)
    for k in range(uniform):
        starts.append(space.clip(space.uniform(0.9 * k / max(1, uniform - 1))))
    while len(starts) < cfg.population:
        starts.append(tuple(rng.randint(lo, w) for lo, w in zip(space.lower, space.widths)))
    starts = list(dict.fromkeys(starts))[:max(2, search.stop_at - len(search.evaluator.records))]
    population = tools.selNSGA2([individual(a) for a in starts], cfg.population)
    generation = 0
    while not search.done():
        ranks = {id(ind): r for r, front in enumerate(tools.sortNondominated(population, len(population)))
                 for ind in front}
        offspring = []
        while len(offspring) < cfg.population and not search.done():
            a, b = _crowded_pick(rng, population, ranks), _crowded_pick(rng, population, ranks)
            child = ([x if rng.random() < 0.5 else y for x, y in zip(a, b)]
                     if rng.random() < cfg.crossover_rate else list(a))
            offspring.append(individual(search.move(space.clip(child))))
        population = tools.selNSGA2(population + offspring, cfg.population)
        front = tools.sortNondominated(population, len(population), first_front_only=True)[0]
        search.log(generation, front=len(front), best=max(ind.fitness.values[0] for ind in population))
        generation += 1


def _crowded_pick(rng: random.Random, population: list[_Individual], ranks: dict[int, int]) -> _Individual:
    """NSGA-II's binary tournament: the lower front rank wins, then the larger crowding distance."""
    a, b = rng.sample(population, 2) if len(population) > 1 else (population[0], population[0])
    key_a = (-ranks[id(a)], a.fitness.crowding_dist)
    key_b = (-ranks[id(b)], b.fitness.crowding_dist)
    return a if key_a >= key_b else b


def pareto_front(records: list[Record], objective: str, cost: Callable[[Record], float]) -> list[Record]:
    """The records no other record dominates (objective higher and cost lower), by increasing cost."""
    points = [(fitness(r, objective)[0], cost(r)) for r in records]
    front = [r for r, (f, c) in zip(records, points)
             if not any(f2 >= f and c2 <= c and (f2 > f or c2 < c) for f2, c2 in points)]
    return sorted(front, key=lambda r: (cost(r), r["index"]))
