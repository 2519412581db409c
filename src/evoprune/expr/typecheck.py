"""Shape inference: which symbolic shape each node has, or a positioned error if the tree is ill-typed."""

from __future__ import annotations

from evoprune.expr.errors import FormulaError, close_names
from evoprune.expr.nodes import Call, Const, Node, Var
from evoprune.expr.operands import OPERANDS
from evoprune.expr.primitives import PRIMITIVES
from evoprune.expr.shapes import SCALAR, Shape, ShapeError


def infer_all(tree: Node) -> dict[Node, Shape]:
    """Shape of every (structurally distinct) subtree; raises :class:`FormulaError` on a type error."""
    out: dict[Node, Shape] = {}

    def visit(node: Node) -> Shape:
        if node in out:
            return out[node]
        if isinstance(node, Const):
            shape = SCALAR
        elif isinstance(node, Var):
            if node.name not in OPERANDS:
                raise FormulaError(f"unknown operand {node.name!r}", pos=node.pos,
                                   suggestions=close_names(node.name, OPERANDS))
            shape = OPERANDS[node.name].shape
        elif isinstance(node, Call):
            spec = PRIMITIVES.get(node.op)
            if spec is None:
                raise FormulaError(f"unknown function {node.op!r}", pos=node.pos,
                                   suggestions=close_names(node.op, PRIMITIVES))
            if len(node.args) != spec.arity:
                raise FormulaError(f"{node.op} takes {spec.arity} arguments, got {len(node.args)}",
                                   pos=node.pos, length=len(node.op))
            arg_shapes = [visit(a) for a in node.args]
            try:
                shape = spec.infer(arg_shapes)
            except ShapeError as err:
                got = ", ".join(str(s) for s in arg_shapes)
                raise FormulaError(f"type error in {node.op}({got}): {err}", pos=node.pos,
                                   length=len(node.op)) from None
        else:
            raise TypeError(f"not an expression node: {node!r}")
        out[node] = shape
        return shape

    visit(tree)
    return out


def infer(tree: Node) -> Shape:
    """The symbolic shape of the tree's value (before the final ``sum``)."""
    return infer_all(tree)[tree]


def is_valid(tree: Node) -> bool:
    try:
        infer_all(tree)
    except FormulaError:
        return False
    return True
