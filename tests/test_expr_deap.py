"""The DEAP bridge: a strongly-typed primitive set that only generates valid trees, and the converters."""

from __future__ import annotations

import pickle
import random
import subprocess
import sys

import pytest
import torch
from deap import base, creator, gp

from evoprune.expr import (
    DEFAULT_UNIVERSE,
    FormulaError,
    build_primitive_set,
    deap_type,
    evaluate,
    from_deap,
    infer,
    is_valid,
    parse,
    signatures,
    to_deap,
    to_prefix,
)
from evoprune.expr.shapes import SCALAR, matrix, vector
from evoprune.metrics import list_metrics

if not hasattr(creator, "EvopruneTestInd"):
    creator.create("EvopruneTestFit", base.Fitness, weights=(1.0,))
    creator.create("EvopruneTestInd", gp.PrimitiveTree, fitness=creator.EvopruneTestFit)


@pytest.fixture(scope="module")
def pset():
    return build_primitive_set(constants=(0.2,))


def test_default_universe_is_the_operand_shapes():
    assert set(DEFAULT_UNIVERSE) == {SCALAR, vector("D"), vector("K"), matrix("n_P", "D"), matrix("n_Q", "D"),
                                     matrix("n", "D"), matrix("F", "K")}


def test_signatures_are_exactly_the_well_typed_ones():
    sigs = signatures()
    assert ("add", (matrix("n_P", "D"), vector("D")), matrix("n_P", "D")) in sigs
    assert ("geo_median", (matrix("F", "K"),), vector("K")) in sigs
    assert not any(op == "add" and args == (matrix("n_P", "D"), matrix("n_Q", "D")) for op, args, _ in sigs)
    assert not any(op == "out_dot" for op, _, _ in sigs)  # its results leave the universe
    for _, args, res in sigs:
        assert res in DEFAULT_UNIVERSE and all(a in DEFAULT_UNIVERSE for a in args)


@pytest.mark.parametrize("gen", ["genFull", "genGrow", "genHalfAndHalf"])
def test_generated_trees_are_valid_and_print_as_our_prefix(pset, gen):
    random.seed(1)
    for _ in range(150):
        ind = gp.PrimitiveTree(getattr(gp, gen)(pset, min_=1, max_=5))
        tree = from_deap(ind)
        assert is_valid(tree), str(ind)
        assert str(ind) == to_prefix(tree)
        assert to_prefix(from_deap(to_deap(tree, pset))) == str(ind)


def test_named_formulas_convert_when_inside_the_universe(pset):
    outside = {"DI", "FPGM"}  # use D×D / F-vectors, shapes without terminals
    for m in list_metrics():
        if m.tree is None:
            continue
        if m.name in outside:
            with pytest.raises(FormulaError, match="not in this DEAP primitive set"):
                to_deap(m.tree, pset)
            continue
        ind = to_deap(m.tree, pset)
        assert from_deap(ind) == m.tree
        assert str(ind) == m.formula


def test_crossover_and_mutation_keep_trees_valid(pset):
    random.seed(7)
    seeds = [m.tree for m in list_metrics() if m.kind in ("seed", "evolved")]
    pop = [creator.EvopruneTestInd(to_deap(t, pset)) for t in seeds]
    for step in range(300):
        a, b = random.sample(pop, 2)
        c1, c2 = gp.cxOnePoint(creator.EvopruneTestInd(a), creator.EvopruneTestInd(b))
        (m1,) = gp.mutUniform(c1, expr=lambda pset, type_: gp.genFull(pset, 0, 3, type_), pset=pset)
        for child in (m1, c2):
            assert is_valid(from_deap(child)), str(child)
        pop[step % len(pop)] = m1


def test_generated_trees_evaluate_without_errors(pset):
    random.seed(3)
    g = torch.Generator().manual_seed(0)
    feats = torch.rand(60, 4, 3, 3, generator=g)
    labels = torch.arange(60) % 3
    weight = torch.randn(4, 2, 2, 2, generator=g)
    for _ in range(120):
        tree = from_deap(gp.genHalfAndHalf(pset, min_=1, max_=4))
        out = evaluate(tree, features=feats, labels=labels, weight=weight)
        assert out.shape == (4,)


def test_individuals_pickle_across_processes(pset):
    tree = gp.PrimitiveTree(to_deap(parse("div(var(P), rho5(var(Q)))"), pset))
    blob = pickle.dumps(tree)
    back = pickle.loads(blob)
    assert str(back) == str(tree) and back[0].ret is deap_type(SCALAR)
    # a fresh interpreter (a worker process) can load it: the shape types are importable by name
    code = "import pickle, sys; t = pickle.loads(sys.stdin.buffer.read()); print(str(t), t[0].ret.__name__)"
    out = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, check=True)
    assert out.stdout.decode().split() == ["div(var(P),", "rho5(var(Q)))", "T_S"]


def test_exclude_and_constants():
    ps = build_primitive_set(exclude=("geo_median", "W"))
    assert "geo_median" not in {p.name for prims in ps.primitives.values() for p in prims}
    assert "W" not in ps.mapping
    with pytest.raises(FormulaError):
        to_deap(parse("sub(WI, geo_median(W))"), ps)
    # constants convert to plain DEAP terminals whether or not the set offers them for generation
    assert from_deap(to_deap(parse("add(std(P), 0.2)"), ps)) == parse("add(std(P), 0.2)")
    with_const = build_primitive_set(constants=(0.2,))
    assert 0.2 in [t.value for t in with_const.terminals[deap_type(SCALAR)]]
    with pytest.raises(ValueError, match="unknown"):
        build_primitive_set(exclude=("nope",))


def test_universe_shapes_need_terminals():
    with pytest.raises(ValueError, match="no terminal"):
        build_primitive_set(universe=list(DEFAULT_UNIVERSE) + [matrix("D", "D")])


def test_root_type_accepts_any_shape(pset):
    random.seed(0)
    shapes = {infer(from_deap(gp.genGrow(pset, 0, 3))) for _ in range(200)}
    assert len(shapes) >= 4
