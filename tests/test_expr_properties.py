"""Property-based tests of the formula language (issue 10): whatever the input, ``parse`` answers with a tree or a
:class:`FormulaError`; every well-typed tree prints to a formula that parses back to it; and evaluating any
well-typed tree on a small layer gives finite or −inf scores, or a :class:`FormulaError`, never another exception.
"""

from __future__ import annotations

from functools import cache

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evoprune.expr import (
    OPERANDS,
    PRIMITIVES,
    SCALAR,
    Const,
    FormulaError,
    Node,
    Shape,
    canonical,
    evaluate,
    parse,
    sanitize_scores,
    signatures,
    to_infix,
    to_latex,
    to_prefix,
)
from evoprune.expr.nodes import Call, Var
from evoprune.expr.parser import MAX_DEPTH
from evoprune.expr.shapes import matrix, vector

PROPERTY = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# The operands' shapes and the square and transposed matrices primitives build from them.
UNIVERSE: tuple[Shape, ...] = tuple(dict.fromkeys(
    [o.shape for o in OPERANDS.values()]
    + [matrix("D", "D"), matrix("n", "n"), matrix("K", "K"), matrix("F", "F"), matrix("D", "n"), matrix("K", "F"),
       vector("F"), vector("n")]))
SIGNATURES = signatures(UNIVERSE)
TERMINALS: dict[Shape, list[str]] = {}
for _op in OPERANDS.values():
    TERMINALS.setdefault(_op.shape, []).append(_op.name)


@cache
def min_height() -> dict[Shape, int]:
    """The lowest tree of each universe shape (0 for shapes with an operand or, for scalars, a constant)."""
    best = {s: 0 for s in [*TERMINALS, SCALAR]}
    changed = True
    while changed:
        changed = False
        for _name, args, res in SIGNATURES:
            if all(a in best for a in args):
                h = 1 + max(best[a] for a in args)
                if h < best.get(res, h + 1):
                    best[res] = h
                    changed = True
    return best


FINITE = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def trees(draw: st.DrawFn, shape: Shape | None = None, height: int = 5) -> Node:
    """A random well-typed tree of ``shape`` (any reachable shape if None) at most ``height`` high."""
    heights = min_height()
    if shape is None:
        shape = draw(st.sampled_from([s for s in UNIVERSE if s in heights]))
    options: list[tuple[str, ...] | tuple[str, tuple[Shape, ...]]] = []
    options += [("var", name) for name in TERMINALS.get(shape, [])]
    if shape == SCALAR:
        options.append(("const",))
    if height > 0:
        options += [("call", name, args) for name, args, res in SIGNATURES
                    if res == shape and 1 + max(heights.get(a, height) for a in args) <= height]
    choice = draw(st.sampled_from(options))
    if choice[0] == "var":
        return Var(choice[1])
    if choice[0] == "const":
        return Const(draw(FINITE))
    return Call(choice[1], tuple(draw(trees(a, height - 1)) for a in choice[2]))


TOKENS = [*OPERANDS, *PRIMITIVES, "(", ")", ",", " ", "\n", "0", "-2.5", ".5", "5.", "1e-400", "1e999", "1e300",
          "-0", "\u0663", "\uff10", "é", "$", ";", "'", "__import__", "mx", "ad", "\x00"]


def parses_or_formula_error(text: str) -> None:
    try:
        tree = parse(text)
    except FormulaError as err:
        assert err.pos is None or 0 <= err.pos <= len(text)
        assert len(str(err)) < 1000  # the echo is a window, names are cut
        return
    assert parse(to_prefix(tree)) == tree


@PROPERTY
@given(st.text(max_size=120))
def test_any_text_parses_or_raises_formula_error(text: str) -> None:
    parses_or_formula_error(text)


@PROPERTY
@given(st.lists(st.sampled_from(TOKENS), max_size=40))
def test_any_token_sequence_parses_or_raises_formula_error(tokens: list[str]) -> None:
    parses_or_formula_error("".join(tokens))


@PROPERTY
@given(st.integers(min_value=1, max_value=3 * MAX_DEPTH), st.sampled_from(["abs(", "sum(", "add(N, "]))
def test_any_nesting_depth_parses_or_raises_formula_error(depth: int, opener: str) -> None:
    parses_or_formula_error(opener * depth + "N" + ")" * depth)


@PROPERTY
@given(trees())
def test_every_well_typed_tree_round_trips_through_the_prefix_form(tree: Node) -> None:
    text = to_prefix(tree)
    assert parse(text) == tree
    assert parse(to_prefix(canonical(tree))) == canonical(tree)
    assert to_infix(tree) and to_latex(tree)  # the other printers accept every tree too


def small_layer(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"features": torch.randn(12, 3, 2, 2, generator=g, dtype=torch.float64),
            "labels": torch.arange(12) % 3,
            "weight": torch.randn(3, 2, 2, 2, generator=g, dtype=torch.float64)}


@PROPERTY
@given(trees(height=4), st.integers(min_value=0, max_value=3))
def test_every_well_typed_tree_evaluates_to_finite_or_minus_inf_scores(tree: Node, seed: int) -> None:
    try:
        raw = evaluate(tree, **small_layer(seed))
    except FormulaError:
        return
    assert raw.shape == (3,)
    scores = sanitize_scores(raw)
    assert bool((torch.isfinite(scores) | (scores == float("-inf"))).all())
