"""Genetic algorithm over the masks of one phase (spec §5; improved mode §8.10).

A chromosome is just the phase's masks (no model copy); each generation keeps ``elite`` best chromosomes, fills the
rest with children of tournament-selected parents (crossover with probability ``crossover_rate``, then mutation
at ``r = rate0·(1 − g/G)``), and scores all children in one batched forward. Every child is evaluated as
``W0 ⊙ mask`` (the reference evaluated children with their parent's zeros still applied, §5.7).
"""

from __future__ import annotations

import torch

from evoprune.search.config import GAConfig, SearchConfig
from evoprune.search.moves import (
    prune_only,
    prune_restore,
    resample_mutation,
    single_point_crossover,
    uniform_crossover,
)
from evoprune.search.objective import Score
from evoprune.search.schedules import linear_rate
from evoprune.search.state import Genome, Phase, SearchState


def tournament(scores: list[Score], size: int, generator: torch.Generator) -> int:
    """Index of the lowest cost among ``size`` distinct chromosomes drawn at random (without replacement)."""
    picks = torch.randperm(len(scores), generator=generator)[:min(size, len(scores))].tolist()
    return min(picks, key=lambda i: scores[i].cost)


def _crossover(a: Genome, b: Genome, cfg: GAConfig, generator: torch.Generator) -> tuple[Genome, Genome]:
    op = single_point_crossover if cfg.crossover == "single_point" else uniform_crossover
    c1: Genome = {}
    c2: Genome = {}
    for name in a:
        c1[name], c2[name] = op(a[name], b[name], generator)
    return c1, c2


def _mutate(state: SearchState, genome: Genome, rate: float, search: SearchConfig) -> Genome:
    changed = [state.pick_layer(genome)] if search.joint_moves == "one_layer" and len(genome) > 1 else list(genome)
    out: Genome = dict(genome)
    for name in changed:
        mask = genome[name]
        if search.ga.mutation == "resample":
            out[name] = resample_mutation(mask, rate, state.generator)
        else:
            quantiles = state.quantiles(name)
            out[name] = prune_restore(mask, rate, search.restore_ratio, state.generator, quantiles=quantiles,
                                      bias=state.magnitude_bias)
    return out


def _initial_population(state: SearchState, phase: Phase, search: SearchConfig, base: Genome) -> tuple[list[Genome], list[Score]]:
    """Seed: random masks with P(pruned) = rate0, retried at rate0², rate0³, … while all of them break the cap
    (falling back to the committed masks). Improved: the committed masks plus mutants of them."""
    cfg = search.ga
    rate0 = search.mutation_rate

    def pruned(rate: float) -> Genome:
        return {n: prune_only(m, rate, state.generator,
                              quantiles=state.quantiles(n),
                              bias=state.magnitude_bias) for n, m in base.items()}

    if cfg.init == "around_current":
        population = [base] + [_mutate(state, base, rate0, search) for _ in range(cfg.population - 1)]
        return population, state.score_many(population, phase.constraint)
    rate = 1.0
    for _ in range(cfg.init_retries):
        rate *= rate0
        population = [pruned(rate) for _ in range(cfg.population)]
        scores = state.score_many(population, phase.constraint)
        if not all(s.violated for s in scores):
            return population, scores
    population[-1] = base
    scores[-1] = state.score(base, phase.constraint)
    return population, scores


def _record(phase: Phase, generation: int, rate: float, score: Score, valid: int) -> dict[str, object]:
    return {"algorithm": "ga", "phase": phase.label, "generation": generation, "mutation_rate": rate,
            **score.as_dict(), "valid": valid}


def run_ga_phase(state: SearchState, phase: Phase, search: SearchConfig) -> Score:
    """Evolve the masks of ``phase.layers`` for ``phase.steps`` generations; commit the best chromosome if it
    respects the cap."""
    generations = phase.steps
    cfg: GAConfig = search.ga
    evaluator = state.evaluator
    evaluator.focus(phase.layers)
    base: Genome = {n: evaluator.masks[n] for n in phase.layers}
    population, scores = _initial_population(state, phase, search, base)
    best_index = min(range(len(scores)), key=lambda i: scores[i].cost)
    state.log(_record(phase, -1, search.mutation_rate, scores[best_index], sum(not s.violated for s in scores)))
    n_children = cfg.population - cfg.elite
    for generation in range(generations):
        rate = linear_rate(search.mutation_rate, generation, generations)
        order = sorted(range(len(scores)), key=lambda i: scores[i].cost)
        elites = [population[i] for i in order[:cfg.elite]]
        elite_scores = [scores[i] for i in order[:cfg.elite]]
        children: list[Genome] = []
        while len(children) < n_children:
            first = population[tournament(scores, cfg.tournament, state.generator)]
            second = population[tournament(scores, cfg.tournament, state.generator)]
            if state.random() < cfg.crossover_rate:
                first, second = _crossover(first, second, cfg, state.generator)
            children.append(_mutate(state, first, rate, search))
            children.append(_mutate(state, second, rate, search))
        children = children[:n_children]
        population = elites + children
        scores = elite_scores + state.score_many(children, phase.constraint)
        best_index = min(range(len(scores)), key=lambda i: scores[i].cost)
        state.log(_record(phase, generation, rate, scores[best_index], sum(not s.violated for s in scores)))
    best_index = min(range(len(scores)), key=lambda i: scores[i].cost)
    if scores[best_index].violated:  # nothing valid was found: keep the committed masks
        evaluator.focus(phase.layers)
        return state.score(base, phase.constraint)
    state.commit(population[best_index])
    return scores[best_index]
