"""Algebraic simplification: the same scores from a smaller tree, and often from a cheaper evaluation path.

Evolution leaves dead weight in its trees, and dead weight can be expensive: ``EP_Func1`` adds a term that is
identically zero (it is multiplied by ``var(N)``, the variance of a scalar), yet because that term divides by the
raw maps ``P`` the whole tree would need the layer's raw feature maps instead of its streamed class statistics.
Scoring, the fitness cache's canonical key and the printers therefore use the simplified tree.

The rules are applied bottom-up to a fixed point. Each is exact in the interpreter's semantics
(:mod:`evoprune.expr.primitives`: protected ``div`` and ``m_inv``, ``sqrt`` of ``|x|``, numpy broadcasting of
symbolic shapes; the scalar rules at the end of the list up to rounding), and each rewritten subtree keeps its symbolic shape, so every parent computes what it computed
before; only the root may become the scalar ``0`` when its value is all zeros (it is summed to 0 either way).

* constants are folded (in float64, the scoring dtype, with the primitive's own code; never to inf/NaN);
* ``num(x)`` depends only on the length of x's first axis: ``num(P)``, ``num(Q)``, ``num(X)``, ``num(mX)``,
  ``num(WI)`` or ``num(W)`` for rows ``n_P``, ``n_Q``, ``n``, ``D``, ``K`` or ``F``;
* zeros: ``var``/``std`` of a scalar, ``x − x``, a product (``mul``, ``mmul``, ``out_dot``) with a zero factor,
  ``0 / x`` and ``x / 0`` (protected: 0), and ``abs``, ``pow2``, ``sqrt``, ``tran``, the means, sums, traces and
  the geometric median of zeros are zero; a scalar zero becomes ``0``, a zero of any shape is dropped from a
  sum (``x + 0``, ``0 + x``, ``x − 0``) whose result has the shape of ``x``;
* ones: ``x · 1``, ``1 · x``, ``x / 1`` are ``x`` (same shape condition); ``x / x`` is 1 for a scalar ``x``
  that is provably positive (``N``, a count, a positive constant, a ridge of something non-negative, …);
* ``tran`` of a scalar or vector and ``tran(tran(x))`` are ``x``; ``g_mean``, ``sum`` and ``m_trace`` of a
  scalar are the scalar; ``mmul`` with a scalar is ``mul`` (the interpreter computes exactly that);
* ``abs`` of something non-negative is dropped; ``pow2(|x|) = pow2(x)``, ``sqrt(|x|) = sqrt(x)``,
  ``sqrt(pow2(x)) = |x|``;
* a scalar ``s`` (one value per channel and class: constant over what a reducer reduces) leaves a reduction:
  ``var``/``std`` of ``x ± s`` or ``s − x`` are those of ``x``, ``var(s·x) = pow2(s)·var(x)``,
  ``std(s·x) = |s|·std(x)``, and ``g_mean``, ``mean``, ``sum`` and ``geo_median`` of ``s·x`` are ``s`` times
  those of ``x`` (of ``x / s``: those of ``x`` divided by ``s``, by ``s`` twice for ``var``, by ``|s|`` for
  ``std``; protected, all 0 where ``s`` is 0); ``g_mean``, ``mean`` and ``geo_median`` of ``x ± s`` (or
  ``s − x``) are those of ``x`` shifted by ``s``, and a ridge (``rho1``, ``rho5``: a constant shift) leaves them the same way. These hold in real arithmetic and differ from the tree as written by rounding only (the
  rewritten form is the more accurate: ``s`` no longer cancels against itself); they are applied, unlike the
  rejected identities below, because they decide the cost: ``std(num(mQ)·(WI − …))`` as written broadcasts a
  per-class scalar over every weight of every channel (a ``[C, L, K]`` tensor), and GP children full of such
  terms scored 4× slower. Two things make them safe to the property test's 1e-12: the moment path gives a
  constant channel a variance of exactly 0 (as a two-pass variance does; see the interpreter), and
  ``geo_median`` breaks near-ties towards the first row (see the primitive), so a medoid does not move when its
  filters are scaled.
  Three more, exact in real arithmetic too, carry a scalar further: ``var``/``std`` drop the scalar terms of a sum
  at any depth (``var(a − (N + WI)) = var(a − WI)``; a sum left with only negated terms loses its sign); a
  product ``(s·a)·y`` (or ``y·(s·a)``, ``(s·a)/y``) of non-scalar ``a``, ``y`` becomes ``s·(a·y)``, so the often
  class-independent ``a·y`` is not broadcast over the classes and a reduction above takes ``s`` out whole; and
  ``sum`` of a sum or difference of same-shape terms is the sum or difference of their sums. The interpreter also
  writes the score's final sum over the root's entries as ``sum(root)`` before simplifying, so these rules reach it.

**Convention.** Rules that remove a subtree (a zero factor, ``x − x``, ``var`` of a scalar, ``x / x``) assume
that subtree's values are finite: in the interpreter ``0 · inf`` is NaN, and a NaN score ranks as −inf. A
channel whose score was non-finite only because a removed subtree was (it overflowed, a linear-algebra routine
failed, or the scoring set had a single class, so that ``Q`` is empty and its mean NaN), or whose ``x²`` under- or
overflowed inside ``sqrt(pow2(x))``, gets the formula's finite value instead of −inf; every other channel scores
exactly as before. (With float32 feature maps scored in float64 ``EP_Func1``'s removed term cannot overflow.)

**Rejected as inexact** in floating point, and kept as written: cancelling sums and products such as
``(a + b) − b``, ``(a · b) / b`` or ``(a / b) · b`` (rounding, and protected division by 0), merging constants
across an operand (``(a + 1) + 2``), ``pow2(sqrt(x))``, ``m_inv(m_inv(x))`` and stacked ridges
``rho1(rho1(x))`` (each rounds differently), and ``x / x`` where ``x`` may be 0 (protected: it is 0 there).

A tree that loses its last per-class operand would lose the interpreter's sum over the classes (its score would
shrink by the factor L); :func:`simplify` then keeps ``· N/N``, exactly 1 for every class, so the sum remains.
"""

from __future__ import annotations

import math

import torch

from evoprune.expr.nodes import Call, Const, Node, Var, walk
from evoprune.expr.operands import CLASS_OPERANDS, OPERANDS
from evoprune.expr.primitives import PRIMITIVES
from evoprune.expr.shapes import SCALAR, Shape
from evoprune.expr.typecheck import infer_all

ZERO = Const(0.0)
ONE = Const(1.0)
#: Exactly 1 for every class (each scored class has at least one sample): keeps a tree's sum over the classes.
PER_CLASS_ONE = Call("div", (Var("N"), Var("N")))

#: The operand whose first axis has each length: ``num`` of anything with that many rows equals its ``num``.
_ROWS_OF = {"n_P": "P", "n_Q": "Q", "n": "X", "D": "mX", "K": "WI", "F": "W"}
#: Unary primitives that map an all-zero value to an all-zero value.
_KEEPS_ZERO = frozenset({"abs", "pow2", "sqrt", "tran", "mean", "g_mean", "sum", "m_trace", "geo_median", "var",
                         "std"})
_MAX_PASSES = 16
#: Reducers out of which a scalar shift or factor of their argument moves (see ``_Rules._scalar_out_of``).
_SCALAR_OUT_OF = frozenset({"var", "std", "g_mean", "mean", "sum", "geo_median"})

# Signs: what is provably true of every entry of a value.
_ANY, _NON_NEGATIVE, _POSITIVE = 0, 1, 2


class _Rules:
    """One bottom-up pass; remembers the shape, zero-ness and sign of every node it builds."""

    def __init__(self) -> None:
        self.done: dict[Node, Node] = {}
        self.shape: dict[Node, Shape] = {}
        self._zero: dict[Node, bool] = {}
        self._sign: dict[Node, int] = {}

    def node(self, n: Node) -> Node:
        out = self.done.get(n)
        if out is None:
            out = self.done[n] = self._node(n)
        return out

    def _node(self, n: Node) -> Node:
        if isinstance(n, Var):
            return self._built(Var(n.name), OPERANDS[n.name].shape)
        if isinstance(n, Const):
            return self._built(Const(float(n.value) + 0.0), SCALAR)  # + 0.0: no -0.0 in printed formulas
        return self.call(n.op, tuple(self.node(a) for a in n.args))

    def _built(self, node: Node, shape: Shape) -> Node:
        self.shape[node] = shape
        return node

    def call(self, op: str, args: tuple[Node, ...]) -> Node:
        """``op(args)`` simplified, for already simplified ``args``."""
        shapes = [self.shape[a] for a in args]
        out = PRIMITIVES[op].infer(shapes)
        new = self._rewrite(op, args, shapes, out)
        if new is not None:
            return new
        node = self._built(Call(op, args), out)
        return self._built(ZERO, SCALAR) if out.rank == 0 and self.is_zero(node) else node

    def _rewrite(self, op: str, args: tuple[Node, ...], shapes: list[Shape], out: Shape) -> Node | None:
        """A simpler node with the value and shape of ``op(args)``, or None."""
        a = args[0]
        if all(isinstance(x, Const) for x in args):
            folded = _fold(op, args)
            if folded is not None:
                return self._built(folded, SCALAR)
        if op == "mmul" and (shapes[0].rank == 0 or shapes[1].rank == 0):
            return self.call("mul", args)
        if op == "tran":
            if shapes[0].rank < 2:
                return a
            if isinstance(a, Call) and a.op == "tran":
                return a.args[0]
        if op in ("g_mean", "sum", "m_trace") and shapes[0].rank == 0:
            return a
        if op == "num" and not isinstance(a, Var):
            return self.call("num", (self.node(Var(_ROWS_OF[shapes[0].dims[0]])),))
        if op == "abs" and self.sign(a) >= _NON_NEGATIVE:
            return a
        if op in ("pow2", "sqrt") and isinstance(a, Call) and a.op == "abs":
            return self.call(op, a.args)
        if op == "sqrt" and isinstance(a, Call) and a.op == "pow2":
            return self.call("abs", a.args)
        if op in ("add", "sub") and self.is_zero(args[1]) and shapes[0] == out:
            return a
        if op == "add" and self.is_zero(a) and shapes[1] == out:
            return args[1]
        if op in ("mul", "div") and args[1] == ONE and shapes[0] == out:
            return a
        if op == "mul" and a == ONE and shapes[1] == out:
            return args[1]
        if op == "div" and a == args[1] and out.rank == 0 and self.sign(a) == _POSITIVE:
            return self._built(ONE, SCALAR)
        if op in ("mul", "div") and out.rank > 0:
            hoisted = self._hoist_scalar(op, args)
            if hoisted is not None:
                return hoisted
        if op == "sum" and isinstance(a, Call) and a.op in ("add", "sub") and all(
                self.shape[x] == shapes[0] for x in a.args):  # sum(x ± y) = sum(x) ± sum(y), no broadcasting
            return self.call(a.op, tuple(self.call("sum", (x,)) for x in a.args))
        if op in ("var", "std") and isinstance(a, Call) and a.op in ("add", "sub") and shapes[0].rank > 0:
            spread = self._without_scalar_terms(a)
            if spread is not None:
                return self.call(op, (spread,))
        if op in _SCALAR_OUT_OF and isinstance(a, Call) and shapes[0].rank > 0:
            if a.op in ("add", "sub", "mul"):
                return self._scalar_out_of(op, a)
            if a.op == "div" and self.shape[a.args[1]].rank == 0:
                return self._divisor_out_of(op, *a.args)
            if a.op in ("rho1", "rho5"):  # a ridge is a constant shift
                return self._shift_out_of(op, a.op, a.args[0])
        return None

    def _terms(self, n: Node, sign: int, out: list[tuple[int, Node]]) -> None:
        """The signed terms of a nest of ``add``/``sub`` (a spread's argument, read as a flat sum)."""
        if isinstance(n, Call) and n.op in ("add", "sub"):
            self._terms(n.args[0], sign, out)
            self._terms(n.args[1], sign if n.op == "add" else -sign, out)
        else:
            out.append((sign, n))

    def _without_scalar_terms(self, total: Call) -> Node | None:
        """``total`` (a sum of terms at any depth) without its scalar terms, which shift every entry alike, so its
        ``var``/``std`` is unchanged (and its sign, which they ignore, may flip); None if there is none to drop
        or nothing else would remain."""
        terms: list[tuple[int, Node]] = []
        self._terms(total, 1, terms)
        kept = [(sign, t) for sign, t in terms if self.shape[t].rank > 0]
        if len(kept) == len(terms) or not kept:
            return None
        if all(sign < 0 for sign, _ in kept):
            kept = [(1, t) for _, t in kept]
        kept.sort(key=lambda st: -st[0])  # a positive term first
        out = kept[0][1]
        for sign, t in kept[1:]:
            out = self.call("add" if sign > 0 else "sub", (out, t))
        return out

    def _hoist_scalar(self, op: str, args: tuple[Node, ...]) -> Node | None:
        """``(s·a)·y``, ``y·(s·a)`` and ``(s·a)/y`` as ``s·(a·y)``, ``s·(y·a)``, ``s·(a/y)``, for a scalar ``s`` and
        non-scalar ``a``, ``y``: the scalar (often per class) multiplies the product last, so ``a·y`` (often the
        same for every class) is not broadcast over the classes, and a reduction above takes ``s`` out whole."""
        for i, x in enumerate(args):
            if i == 1 and op == "div":
                break
            other = args[1 - i]
            if not (isinstance(x, Call) and x.op == "mul" and self.shape[other].rank > 0):
                continue
            scalar = [self.shape[f].rank == 0 for f in x.args]
            if scalar[0] == scalar[1]:
                continue
            s, a = x.args if scalar[0] else x.args[::-1]
            rest = self.call(op, (a, other) if i == 0 else (other, a))
            return self.call("mul", (s, rest))
        return None

    def _divisor_out_of(self, op: str, x: Node, s: Node) -> Node:
        """``op(x / s)`` for a scalar divisor ``s``: a factor ``1/s`` that comes out as a division (``std`` by
        ``|s|``, ``var`` by ``s`` twice: ``pow2(s)`` could underflow to 0 where ``s`` does not); where ``s`` is 0
        both forms are 0 (protected division)."""
        if op == "var":
            return self.call("div", (self.call("div", (self.call(op, (x,)), s)), s))
        return self.call("div", (self.call(op, (x,)), self.call("abs", (s,)) if op == "std" else s))

    def _shift_out_of(self, op: str, ridge: str, x: Node) -> Node | None:
        """``op(rho(x))``: a spread ignores the ridge, a location carries it (``sum`` would add it K times)."""
        if op in ("var", "std"):
            return self.call(op, (x,))
        if op == "sum":
            return None
        return self.call(ridge, (self.call(op, (x,)),))

    def _scalar_out_of(self, op: str, inner: Call) -> Node | None:
        """``op(x ∘ s)`` for a reducer ``op`` and a scalar ``s`` (one value per channel and class, constant over
        the entries ``op`` reduces): a shift drops out of a spread and passes through a location (the means and
        the medoid: distances between rows ignore shifts and negation), a factor comes out of both. Evaluated on
        ``x`` alone, the reduction no longer broadcasts ``s`` over ``x``'s entries for every channel and class."""
        left, right = (self.shape[x].rank == 0 for x in inner.args)
        if left == right:
            return None
        s, x = inner.args if left else inner.args[::-1]
        reduced = self.call(op, (x,))
        if inner.op == "mul":
            factor = {"var": "pow2", "std": "abs"}.get(op)
            return self.call("mul", (self.call(factor, (s,)) if factor else s, reduced))
        if op in ("var", "std"):  # var(x + s) = var(x − s) = var(s − x) = var(x)
            return reduced
        if op == "sum":
            return None  # sum(x + s) = sum(x) + num(x)·s: no saving
        return self.call(inner.op, (s, reduced) if left else (reduced, s))

    def is_zero(self, n: Node) -> bool:
        """Every entry is 0 (for finite operands: see the convention in the module docstring)."""
        hit = self._zero.get(n)
        if hit is None:
            hit = self._zero[n] = self._is_zero(n)
        return hit

    def _is_zero(self, n: Node) -> bool:
        if isinstance(n, Const):
            return n.value == 0.0
        if isinstance(n, Var):
            return False
        op, args = n.op, n.args
        if op in ("mul", "mmul", "out_dot"):
            return any(self.is_zero(a) for a in args)
        if op == "div":  # 0 / x = 0, and x / 0 is 0 by protection
            return self.is_zero(args[0]) or self.is_zero(args[1])
        if op == "sub" and args[0] == args[1]:
            return True
        if op in ("add", "sub"):
            return self.is_zero(args[0]) and self.is_zero(args[1])
        if op in ("var", "std") and self.shape[args[0]].rank == 0:
            return True
        if op in _KEEPS_ZERO:
            return self.is_zero(args[0])
        if op == "m_inv":  # 1/x of a scalar or a vector's first entry: protected to 0
            return self.shape[args[0]].rank < 2 and self.is_zero(args[0])
        return False  # num, rho1, rho5, m_inv of a matrix

    def sign(self, n: Node) -> int:
        hit = self._sign.get(n)
        if hit is None:
            hit = self._sign[n] = self._sign_of(n)
        return hit

    def _sign_of(self, n: Node) -> int:
        if isinstance(n, Const):
            return _POSITIVE if n.value > 0 else _NON_NEGATIVE if n.value == 0 else _ANY
        if isinstance(n, Var):
            return _POSITIVE if n.name == "N" else _ANY  # a scored class has at least one sample
        op, args = n.op, n.args
        first = self.sign(args[0])
        if op == "num":  # every count is at least 1, except the rows of Q when there is a single class
            return _NON_NEGATIVE if self.shape[args[0]].dims[0] == "n_Q" else _POSITIVE
        if op in ("abs", "sqrt"):
            return _POSITIVE if first == _POSITIVE else _NON_NEGATIVE
        if op in ("pow2", "var", "std"):
            return _NON_NEGATIVE
        if op in ("rho1", "rho5"):
            return _POSITIVE if first >= _NON_NEGATIVE else _ANY
        if op == "tran":
            return first
        if op in ("g_mean", "sum", "mean", "m_trace", "geo_median"):
            return min(first, _NON_NEGATIVE)
        if op == "m_inv" and self.shape[args[0]].rank >= 2:
            return _ANY
        if op == "m_inv":
            return min(first, _NON_NEGATIVE)
        if op == "sub":
            return _ANY
        second = self.sign(args[1])
        if op == "add":
            return min(first, second) if min(first, second) == _ANY else max(first, second)
        return min(first, second, _NON_NEGATIVE)  # mul, div, mmul, out_dot: may underflow to 0


def _fold(op: str, args: tuple[Node, ...]) -> Const | None:
    """``op`` of constants, computed as the interpreter computes it; None if not finite."""
    values = [torch.full((1, 1), float(a.value), dtype=torch.float64) for a in args if isinstance(a, Const)]
    value = float(PRIMITIVES[op].apply(values, [SCALAR] * len(values), SCALAR).reshape(-1)[0])
    return Const(value + 0.0) if math.isfinite(value) else None


def apply_rules(tree: Node) -> Node:
    """The rules of this module to a fixed point (positions dropped); may lose the tree's sum over classes."""
    infer_all(tree)  # a positioned FormulaError for an ill-typed tree
    current = tree
    for _ in range(_MAX_PASSES):
        rules = _Rules()
        nxt = rules.node(current)
        if not isinstance(nxt, Const) and rules.is_zero(nxt):
            nxt = ZERO  # the root's entries are summed: all zeros sum to 0 whatever the shape
        if nxt == current:
            return nxt
        current = nxt
    return current


def label_aware(tree: Node) -> bool:
    """Uses a per-class operand, so the interpreter sums its value over the classes."""
    return any(isinstance(n, Var) and n.name in CLASS_OPERANDS for n in walk(tree))


def keep_class_sum(original: Node, simplified: Node) -> Node:
    """``simplified``, times ``N/N`` (= 1) when it lost the per-class operands that made ``original`` summed over
    the classes: that sum multiplies a class-independent score by the number of classes."""
    if simplified != ZERO and label_aware(original) and not label_aware(simplified):
        return PER_CLASS_ONE if simplified == ONE else Call("mul", (simplified, PER_CLASS_ONE))
    return simplified


def simplify(tree: Node) -> Node:
    """An equivalent, usually smaller tree that scores every channel as ``tree`` does (idempotent).

    Raises :class:`~evoprune.expr.errors.FormulaError` for an ill-typed tree.
    """
    return keep_class_sum(tree, apply_rules(tree))
