"""DEAP bridge: a strongly-typed primitive set built from our primitive table, and tree converters.

GP can only generate well-typed trees when every primitive signature is registered with its symbolic
shapes. :func:`build_primitive_set` enumerates, for each primitive, every combination of argument shapes
from a *universe* of shapes and keeps those our typing rule accepts and whose result stays in the
universe. The default universe is the operands' own shapes (scalar, vector[D], vector[K], matrix[n_P×D],
matrix[n_Q×D], matrix[n×D], matrix[F×K]): DEAP's generators need a terminal for every type they may have
to stop at, and these are exactly the shapes that have one. The root type is :class:`ValueType`, the
common base of all shape types, so a tree of any shape can be an individual (its score is its sum).

Primitives keep their plain names (``add``, not ``add_S_D``): ``str(individual)`` is our prefix language.
Compile individuals with :func:`from_deap` + :func:`evoprune.expr.evaluate`, never with ``gp.compile``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

from deap import gp

from evoprune.expr.errors import FormulaError
from evoprune.expr.nodes import Call, Const, Node, Var
from evoprune.expr.operands import OPERANDS
from evoprune.expr.primitives import PRIMITIVES
from evoprune.expr.shapes import DIMENSIONS, SCALAR, Shape, ShapeError
from evoprune.expr.typecheck import infer_all


class ValueType:
    """Base class of all DEAP shape types; the root type of an individual."""

    shape: Shape | None = None


_TYPES: dict[Shape, type] = {}


def _make_types() -> None:
    all_shapes = [SCALAR] + [Shape((d,)) for d in DIMENSIONS] + [Shape((a, b)) for a in DIMENSIONS for b in DIMENSIONS]
    for s in all_shapes:
        name = "T_" + s.slug
        cls = type(name, (ValueType,), {"shape": s, "__module__": __name__, "__doc__": f"DEAP type for {s}"})
        cls.__qualname__ = name
        globals()[name] = cls  # importable by name, so individuals pickle across processes
        _TYPES[s] = cls


_make_types()


def deap_type(shape: Shape) -> type:
    """The DEAP type class of a symbolic shape."""
    return _TYPES[shape]


DEFAULT_UNIVERSE: tuple[Shape, ...] = tuple(dict.fromkeys(o.shape for o in OPERANDS.values()))


def signatures(universe: Iterable[Shape] = DEFAULT_UNIVERSE) -> list[tuple[str, tuple[Shape, ...], Shape]]:
    """Every well-typed ``(primitive, argument shapes, result shape)`` within the universe."""
    uni = list(dict.fromkeys(universe))
    out = []
    for name, spec in PRIMITIVES.items():
        for args in itertools.product(uni, repeat=spec.arity):
            try:
                res = spec.infer(list(args))
            except ShapeError:
                continue
            if res in uni:
                out.append((name, tuple(args), res))
    return out


def build_primitive_set(
    universe: Sequence[Shape] = DEFAULT_UNIVERSE,
    *,
    constants: Sequence[float] = (),
    exclude: Iterable[str] = (),
    name: str = "evoprune",
) -> gp.PrimitiveSetTyped:
    """A ``deap.gp.PrimitiveSetTyped`` over our operands and primitives.

    ``constants``: scalar constant terminals to add (the paper has none); ``exclude``: primitive or
    operand names to leave out (shapes left without a terminal by that leave the universe). Every
    universe shape must have a terminal, or DEAP's generators could not finish a tree of that type.
    """
    excluded = set(exclude)
    unknown = excluded - set(PRIMITIVES) - set(OPERANDS)
    if unknown:
        raise ValueError(f"cannot exclude unknown names: {sorted(unknown)}")
    uni = list(dict.fromkeys(universe))
    pset = gp.PrimitiveSetTyped(name, [], ValueType)
    pset.primitives[ValueType] = []
    pset.terminals[ValueType] = []
    have_terminal = set()
    for op in OPERANDS.values():
        if op.name not in excluded and op.shape in uni:
            pset.addTerminal(op.name, deap_type(op.shape), name=op.name)
            have_terminal.add(op.shape)
    for value in constants:
        pset.addTerminal(float(value), deap_type(SCALAR))
        have_terminal.add(SCALAR)
    operand_shapes = {o.shape for o in OPERANDS.values()}
    uni = [s for s in uni if s in have_terminal or s not in operand_shapes]  # shapes of excluded operands
    missing = [str(s) for s in uni if s not in have_terminal]
    if missing:
        raise ValueError(f"no terminal for universe shapes {missing}: DEAP could not finish trees of those types")
    for prim, args, res in signatures(uni):
        if prim not in excluded:
            pset.addPrimitive(PRIMITIVES[prim].apply, [deap_type(a) for a in args], deap_type(res), name=prim)
    return pset


def to_deap(tree: Node, pset: gp.PrimitiveSetTyped) -> gp.PrimitiveTree:
    """Our tree as a DEAP ``PrimitiveTree`` of the typed set (raises :class:`FormulaError` if not representable)."""
    shapes = infer_all(tree)
    by_sig = {}
    for prims in pset.primitives.values():
        for p in prims:
            by_sig[(p.name, tuple(p.args))] = p
    out: list = []

    def visit(node: Node) -> None:
        if isinstance(node, Call):
            key = (node.op, tuple(deap_type(shapes[a]) for a in node.args))
            prim = by_sig.get(key)
            if prim is None:
                sig = ", ".join(str(shapes[a]) for a in node.args)
                raise FormulaError(f"{node.op}({sig}) is not in this DEAP primitive set (shape outside its "
                                   f"universe or primitive excluded)", pos=node.pos)
            out.append(prim)
            for a in node.args:
                visit(a)
        elif isinstance(node, Var):
            term = pset.mapping.get(node.name)
            if not isinstance(term, gp.Terminal):
                raise FormulaError(f"operand {node.name} is not in this DEAP primitive set", pos=node.pos)
            out.append(term)
        else:
            out.append(gp.Terminal(float(node.value), False, deap_type(SCALAR)))

    visit(tree)
    return gp.PrimitiveTree(out)


def from_deap(individual: Sequence) -> Node:
    """Our tree from a DEAP ``PrimitiveTree`` (or any pre-order list of DEAP primitives/terminals)."""
    nodes = list(individual)
    pos = 0

    def build() -> Node:
        nonlocal pos
        item = nodes[pos]
        pos += 1
        if isinstance(item, gp.Primitive):
            return Call(item.name, tuple(build() for _ in range(item.arity)))
        value = item.value
        if isinstance(value, str):
            if value not in OPERANDS:
                raise FormulaError(f"unknown DEAP terminal {value!r}")
            return Var(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FormulaError(f"unsupported DEAP terminal value {value!r}")
        return Const(float(value))

    tree = build()
    if pos != len(nodes):
        raise FormulaError("malformed DEAP tree: trailing nodes")
    return tree
