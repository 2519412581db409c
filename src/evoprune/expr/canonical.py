"""Canonical form of a tree, for duplicate detection (e.g. a GP fitness cache keyed by formula).

The tree is first simplified (:mod:`evoprune.expr.simplify`), so two trees that simplify to the same tree share a
key: an evolved tree and its dead-weight-free form are one candidate. Then only rewrites that keep the value and
the shape are applied (up to floating-point reassociation):

* ``add``/``mul`` chains are flattened and their operands sorted (both are commutative and associative
  elementwise operations under numpy broadcasting);
* ``mmul`` with a scalar operand is ``mul``;
* ``tran`` of a scalar or vector is dropped, ``tran(tran(x))`` is ``x``;
* ``abs`` of something already non-negative (``abs``, ``pow2``, ``sqrt``, ``std``, ``var``, ``num``,
  a non-negative constant) is dropped;
* ``g_mean``, ``sum`` and ``m_trace`` of a scalar are the scalar itself.
"""

from __future__ import annotations

from evoprune.expr.nodes import Call, Const, Node, Var
from evoprune.expr.printer import to_prefix
from evoprune.expr.shapes import Shape
from evoprune.expr.simplify import apply_rules, keep_class_sum
from evoprune.expr.typecheck import infer_all

_NON_NEGATIVE = {"abs", "pow2", "sqrt", "std", "var", "num"}


def _chain(node: Node, op: str) -> list[Node]:
    if isinstance(node, Call) and node.op == op:
        return _chain(node.args[0], op) + _chain(node.args[1], op)
    return [node]


def _rewrite(node: Node, shapes: dict[Node, Shape]) -> Node:
    if not isinstance(node, Call):
        return Var(node.name) if isinstance(node, Var) else Const(float(node.value))
    args = tuple(_rewrite(a, shapes) for a in node.args)
    orig_shapes = [shapes[a] for a in node.args]
    op = node.op
    if op == "mmul" and any(s.rank == 0 for s in orig_shapes):
        op = "mul"
    if op == "tran":
        if orig_shapes[0].rank < 2:
            return args[0]
        if isinstance(args[0], Call) and args[0].op == "tran":
            return args[0].args[0]
    if op in ("g_mean", "sum", "m_trace") and orig_shapes[0].rank == 0:
        return args[0]
    if op == "abs":
        a = args[0]
        if (isinstance(a, Call) and a.op in _NON_NEGATIVE) or (isinstance(a, Const) and a.value >= 0):
            return a
        if isinstance(a, Const):
            return Const(abs(a.value))
    if op in ("add", "mul"):
        items = sorted(_chain(args[0], op) + _chain(args[1], op), key=to_prefix)
        out = items[0]
        for it in items[1:]:
            out = Call(op, (out, it))
        return out
    return Call(op, args)


def canonical(tree: Node) -> Node:
    """An equivalent tree in canonical form (idempotent; the same for ``tree`` and its simplified form)."""
    current = apply_rules(tree)
    for _ in range(8):
        nxt = apply_rules(_rewrite(current, infer_all(current)))
        if nxt == current:
            break
        current = nxt
    return keep_class_sum(tree, current)


def canonical_key(tree: Node) -> str:
    """The prefix string of the canonical form: equal keys mean equivalent trees."""
    return to_prefix(canonical(tree))
