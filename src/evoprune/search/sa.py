"""Simulated annealing over the masks of one phase (spec §4; improved mode §8.9).

Seed behaviour: start from the committed masks, propose by dropping each kept weight with probability
``r = 0.15·(1 − t/T)``, cool as ``T0 / (1 + ln(1 + t))`` from T0 = 1, accept by Metropolis, keep the best state.
A candidate that violates the phase's cap is never accepted. Improved mode calibrates T0 from sampled relative cost
changes (keeping the temperature proportional to the current cost), cools geometrically, adapts the move size to
the acceptance rate (1/5 success rule), and can restore pruned weights.
"""

from __future__ import annotations

import math

from evoprune.search.config import SAConfig, SearchConfig
from evoprune.search.moves import prune_only, prune_restore
from evoprune.search.objective import Score
from evoprune.search.schedules import calibrated_temperature, geometric_temperature, linear_rate, log_temperature
from evoprune.search.state import Genome, Phase, SearchState

# 1/5 success rule: with these factors the move size is stable when one proposal in five is accepted.
_GROW = 1.25
_SHRINK = _GROW ** -0.25
_MAX_RATE = 0.5


def propose(state: SearchState, genome: Genome, rate: float, search: SearchConfig) -> Genome:
    """A neighbour of ``genome``: every layer of it (or one, with ``joint_moves='one_layer'``) perturbed with drop
    probability ``rate``."""
    restore_ratio = search.restore_ratio
    changed = [state.pick_layer(genome)] if search.joint_moves == "one_layer" and len(genome) > 1 else list(genome)
    out: Genome = dict(genome)
    for name in changed:
        mask = genome[name]
        quantiles = state.quantiles(name)
        if restore_ratio > 0:
            out[name] = prune_restore(mask, rate, restore_ratio, state.generator, quantiles=quantiles,
                                      bias=state.magnitude_bias)
        else:
            out[name] = prune_only(mask, rate, state.generator, quantiles=quantiles, bias=state.magnitude_bias)
    return out


def _record(phase: Phase, step: int, kind: str, score: Score, temperature: float | None, rate: float,
            accepted: bool) -> dict[str, object]:
    return {"algorithm": "sa", "phase": phase.label, "step": step, "kind": kind, "temperature": temperature,
            "mutation_rate": rate, **score.as_dict(), "accepted": accepted}


def run_sa_phase(state: SearchState, phase: Phase, search: SearchConfig) -> Score:
    """Anneal the masks of ``phase.layers`` for ``phase.steps`` proposals; commit and return the best state."""
    iterations = phase.steps
    cfg: SAConfig = search.sa
    evaluator = state.evaluator
    evaluator.focus(phase.layers)
    current: Genome = {n: evaluator.masks[n] for n in phase.layers}
    current_score = state.score(current, phase.constraint)
    state.log(_record(phase, -1, "start", current_score, None, 0.0, True))
    best, best_score = current, current_score
    rate0 = search.mutation_rate
    rate = rate0
    start = 0
    t0 = cfg.t0
    relative_t0 = 0.0
    if t0 is None:
        # Calibration: sample moves from the start, set T0 from the worse valid ones, keep the best valid one.
        start = min(cfg.calibration_samples, iterations)
        deltas: list[float] = []
        for step in range(start):
            candidate = propose(state, current, rate0, search)
            score = state.score(candidate, phase.constraint)
            if not score.violated:
                deltas.append(score.cost - current_score.cost)
                if score.cost < best_score.cost:
                    best, best_score = candidate, score
            state.log(_record(phase, step, "calibrate", score, None, rate0, False))
        # Calibrated on changes relative to the cost: 1/s dominates the cost and its slope changes by orders of
        # magnitude as sparsity grows, so a temperature fixed in absolute units would be far too hot later on.
        start_cost = current_score.cost
        relative = [d / start_cost for d in deltas]
        calibrated = calibrated_temperature(relative, cfg.initial_acceptance)
        if calibrated is None:  # no worse valid move seen: scale on the size of the changes that were seen
            moves = [abs(d) for d in relative if d != 0]
            calibrated = (sum(moves) / len(moves)) if moves else 1e-3
        relative_t0 = max(calibrated, 1e-12)
        if best is not current:
            current, current_score = best, best_score
    for step in range(start, iterations):
        if cfg.rate_schedule == "linear":
            rate = linear_rate(rate0, step, iterations)
        if t0 is not None:
            temperature = log_temperature(t0, step) if cfg.cooling == "log" else geometric_temperature(
                t0, step, iterations, cfg.final_temperature_ratio)
        else:
            schedule = log_temperature(relative_t0, step - start) if cfg.cooling == "log" else geometric_temperature(
                relative_t0, step - start, iterations - start, cfg.final_temperature_ratio)
            temperature = schedule * current_score.cost
        candidate = propose(state, current, rate, search)
        score = state.score(candidate, phase.constraint)
        delta = score.cost - current_score.cost
        accepted = not score.violated and (delta < 0 or state.random() < math.exp(-delta / temperature))
        state.log(_record(phase, step, "propose", score, temperature, rate, accepted))
        if accepted:
            current, current_score = candidate, score
            if score.cost < best_score.cost:
                best, best_score = candidate, score
        if cfg.rate_schedule == "adaptive":
            floor = 1.0 / max(sum(int(m.sum()) for m in current.values()), 1)  # about one weight per move
            rate = min(_MAX_RATE, rate * _GROW) if accepted else max(floor, rate * _SHRINK)
    state.commit(best)
    return best_score
