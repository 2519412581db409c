"""Tree operators: children stay typed, finite and within limits; retries are bounded; randomness is isolated."""

from __future__ import annotations

import random

import pytest
import torch

from evoprune.evolve.config import PAPER_SEEDS, OperatorConfig
from evoprune.evolve.cost import LayerDims, affordable, estimate_cost
from evoprune.evolve.operators import Variation, VariationStats, default_test_layers, rng_scope, scores_are_finite
from evoprune.expr import evaluate, from_deap, infer, is_valid, parse
from evoprune.metrics import get_metric

SEED_FORMULAS = [get_metric(name).formula for name in PAPER_SEEDS]


def _variation(**settings: object) -> Variation:
    return Variation(OperatorConfig(**settings))


def test_seed_functions_are_valid_trees_of_the_primitive_set() -> None:
    var = _variation()
    for formula in SEED_FORMULAS:
        tree = var.from_formula(formula)
        assert var.formula(tree) == formula
        assert var.is_valid(tree), formula


def test_crossover_and_mutation_children_are_typed_finite_and_within_limits() -> None:
    var = _variation(max_height=7, max_size=30)
    rng = random.Random(0)
    stats = VariationStats()
    parents = [var.from_formula(f) for f in SEED_FORMULAS]
    changed = 0
    for _ in range(60):
        a, b = rng.sample(parents, 2)
        c1, c2, did_cx = var.crossover(a, b, rng, stats)
        m1, did_mut = var.mutate(c1, rng, stats)
        changed += did_cx + did_mut
        for child in (c1, c2, m1):
            node = from_deap(child)
            assert is_valid(node)
            assert child.height <= 7 and len(child) <= 30
            assert scores_are_finite(node, default_test_layers())
    assert changed > 60  # most operations produced a new tree
    assert stats.crossovers == 60 and stats.mutations == 60


def test_mutation_subtrees_respect_the_generator_heights() -> None:
    var = _variation(mutation_min_height=0, mutation_max_height=1, max_height=10, max_size=200)
    rng = random.Random(1)
    stats = VariationStats()
    leaf = var.from_formula("WI")
    for _ in range(30):
        child, _ = var.mutate(leaf, rng, stats)
        assert child.height <= 1  # the whole tree is the new subtree


def test_retries_are_bounded_and_parents_are_kept_when_every_attempt_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    var = _variation(max_retries=4)
    attempts = []
    monkeypatch.setattr(var, "is_valid", lambda tree: attempts.append(tree) or False)
    rng, stats = random.Random(2), VariationStats()
    parent = var.from_formula(SEED_FORMULAS[0])
    child, changed = var.mutate(parent, rng, stats)
    assert not changed and str(child) == str(parent) and child is not parent
    assert len(attempts) == 4 and stats.invalid == 4 and stats.gave_up == 1
    attempts.clear()
    c1, c2, changed = var.crossover(parent, var.from_formula(SEED_FORMULAS[1]), rng, stats)
    assert not changed and str(c1) == str(parent)
    assert 1 <= len(attempts) <= 8 and stats.gave_up == 2  # at most 4 attempts of one or two children
    assert var.random_tree(rng, stats) is None


def test_acceptance_test_makes_mutation_retry_for_a_new_function() -> None:
    var = _variation()
    rng, stats = random.Random(3), VariationStats()
    parent = var.from_formula(SEED_FORMULAS[4])
    seen = {var.key(parent)}
    for _ in range(10):
        child, changed = var.mutate(parent, rng, stats, accept=lambda t: var.key(t) not in seen)
        if changed:
            assert var.key(child) not in seen
            seen.add(var.key(child))


def test_limits_reject_trees_that_are_too_tall_or_too_big() -> None:
    var = _variation(max_height=4, max_size=10, mutation_max_height=2, init_max_height=2)
    assert not var.is_valid(var.from_formula(SEED_FORMULAS[2]))  # SymDiv: height 5, 27 nodes
    assert var.is_valid(var.from_formula("sum(abs(WI))"))


def test_trees_that_give_non_finite_scores_are_invalid() -> None:
    var = _variation(max_height=20, max_size=100)
    overflow = "pow2(" * 12 + "sum(X)" + ")" * 12
    assert not var.is_valid(var.from_formula(overflow))


def test_same_seed_same_children_and_the_global_random_state_is_untouched() -> None:
    var = _variation()
    parents = [var.from_formula(f) for f in SEED_FORMULAS]

    def children(seed: int) -> list[str]:
        rng, stats = random.Random(seed), VariationStats()
        out = []
        for i in range(10):
            a, b, _ = var.crossover(parents[i % 7], parents[(i + 3) % 7], rng, stats)
            m, _ = var.mutate(a, rng, stats)
            out += [str(m), str(b)]
        return out

    random.seed(123)
    before = random.getstate()
    first = children(5)
    assert random.getstate() == before
    random.random()  # disturbing the global stream between runs changes nothing
    assert children(5) == first
    assert children(6) != first
    rng = random.Random(9)
    with rng_scope(rng):
        x = random.random()
    assert x == random.Random(9).random()


def test_random_trees_are_valid_and_of_any_shape() -> None:
    var = _variation()
    rng, stats = random.Random(4), VariationStats()
    trees = [var.random_tree(rng, stats) for _ in range(20)]
    assert all(t is not None and var.is_valid(t) for t in trees)
    assert len({str(infer(from_deap(t))) for t in trees}) > 1


def test_cost_model_rejects_trees_too_big_for_a_real_layer() -> None:
    fc1 = LayerDims("fc1", channels=500, fan_in=800, positions=1, samples=500, classes=10)
    pairwise = parse("sqrt(sum(pow2(sub(W, WI))))")  # a [C, F, K] intermediate: 500*500*800 values
    elements, _ = estimate_cost(pairwise, fc1)
    assert elements >= 500 * 500 * 800
    assert affordable(pairwise, [fc1], 3e7, 1e10) is not None
    assert affordable(parse(get_metric("GeoMedian").formula), [fc1], 3e7, 1e10) is None
    var = _variation()
    var.set_real_layers([fc1])
    assert not var.is_valid(var.from_formula("sqrt(sum(pow2(sub(W, WI))))"))
    assert var.is_valid(var.from_formula("sqrt(sum(pow2(WI)))"))


def test_cost_model_counts_what_the_interpreter_allocates() -> None:
    layer = LayerDims("conv", channels=6, fan_in=18, positions=9, samples=60, classes=3)
    tree = parse("sum(mul(sub(X, mX), sub(X, mX)))")
    elements, operations = estimate_cost(tree, layer)
    assert elements >= 2 * 6 * 60 * 9  # X and X - mX, each [C, n, D]
    assert operations >= elements
    feats = torch.rand(60, 6, 9, dtype=torch.float64)
    assert torch.isfinite(evaluate(tree, features=feats, labels=torch.arange(60) % 3)).all()
