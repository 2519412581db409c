"""How much memory a tree's evaluation holds on a real layer, worked out from symbolic shapes before any tensor exists.

A well-typed tree can still be too large to evaluate: ``sum(mmul(X, tran(X)))`` holds an N×N matrix per channel
(4 GB in float64 for a 500-channel layer scored on 1,000 samples). The interpreter therefore evaluates channels in
blocks whose values stay within :func:`memory_limit`, and refuses (:class:`FormulaError`, before allocating) a
formula whose values for a *single* channel exceed it. The estimate is the sum of the values the interpreter holds
(every distinct subtree's result, the operands it materialises, the working copies of ``m_inv`` and
``geo_median``): an upper bound of the peak, since the moment strategy frees values after their last use.

Evolution has its own, stricter cost model in :mod:`evoprune.evolve.cost` (symbolic sizes of the task layers,
operation counts too); this one takes the sizes of the layer actually being scored.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from evoprune.errors import ConfigError
from evoprune.expr.nodes import Call, Node, Var
from evoprune.expr.operands import CLASS_OPERANDS
from evoprune.expr.shapes import Shape

LIMIT_ENV = "EVOPRUNE_EVAL_MEMORY_GB"
DEFAULT_LIMIT_GB = 1.0
#: Operands whose value differs per channel (W is the whole kernel, the same for every channel).
PER_CHANNEL = frozenset({"P", "Q", "X", "mX", "mP", "mQ", "WI"})


def memory_limit() -> int:
    """Bytes one block of channels may hold while a formula is evaluated (``EVOPRUNE_EVAL_MEMORY_GB``, default 1)."""
    raw = os.environ.get(LIMIT_ENV)
    if raw is None or not raw.strip():
        return int(DEFAULT_LIMIT_GB * 1e9)
    try:
        gb = float(raw)
    except ValueError:
        gb = math.nan
    if not (math.isfinite(gb) and gb > 0):
        raise ConfigError(f"environment variable {LIMIT_ENV}={raw!r} is not a positive number of gigabytes; "
                          f"set it to e.g. 4, or unset it for the default {DEFAULT_LIMIT_GB:g}")
    return int(gb * 1e9)


@dataclass(frozen=True)
class Footprint:
    """Elements held while evaluating a tree on one layer: ``per_channel`` for each channel of a block, plus
    ``shared`` once (values that are the same for every channel, such as anything built from ``W`` alone)."""

    per_channel: int
    shared: int

    def bytes(self, channels: int, itemsize: int) -> int:
        """Bytes held while ``channels`` channels are evaluated together."""
        return (self.per_channel * channels + self.shared) * itemsize

    def block(self, channels: int, limit: int, itemsize: int) -> int:
        """How many of ``channels`` to evaluate together within ``limit`` bytes (all if they fit; 0 when not
        even one channel fits)."""
        room = limit // itemsize - self.shared
        if room < self.per_channel:
            return 0
        return channels if self.per_channel == 0 else min(channels, room // self.per_channel)


def footprint(shapes: Mapping[Node, Shape], sizes: Mapping[str, int], *, classes: int, materialised: bool,
              label_aware: bool) -> Footprint:
    """Elements the interpreter holds for a tree (``shapes``: every distinct subtree's symbolic shape).

    ``sizes``: the layer's ``n`` (samples), ``D``, ``K`` and ``F``; ``n_P`` and ``n_Q`` are bounded by ``n``.
    ``classes``: classes evaluated together (the moment strategy vectorises over them; the materialised one
    loops). ``materialised``: raw feature maps are copied in (``X``, and ``P``/``Q`` per class when label-aware).
    """
    dim = {**sizes, "n_P": sizes["n"], "n_Q": sizes["n"]}
    names: dict[Node, frozenset[str]] = {}

    def operands_of(node: Node) -> frozenset[str]:
        hit = names.get(node)
        if hit is None:
            if isinstance(node, Var):
                hit = frozenset({node.name})
            elif isinstance(node, Call):
                hit = frozenset().union(*(operands_of(a) for a in node.args))
            else:
                hit = frozenset()
            names[node] = hit
        return hit

    per_channel = shared = 0
    n, d = dim["n"], dim["D"]
    if materialised:  # the float64 copy of X and its mean map, and per class P, Q and their means
        per_channel += n * d + d + (n * d + 2 * d if label_aware else 0)
    for node in shapes:
        used = operands_of(node)
        if isinstance(node, Var):
            if materialised or node.name not in ("mX", "mP", "mQ"):
                continue  # a view of the layer's weight or statistics, or counted above
        elif not isinstance(node, Call):
            continue  # a constant: one element
        value = math.prod(dim[s] for s in shapes[node].dims)
        if isinstance(node, Call) and node.op == "m_inv" and shapes[node].rank == 2:
            value *= 4  # the ridged copy, U and Vh of its SVD, and the result
        if isinstance(node, Call) and node.op == "geo_median":
            value += dim["F"] * dim["F"]  # the filters' distance matrix
        if not materialised and used & CLASS_OPERANDS:
            value *= classes
        if used & PER_CHANNEL:
            per_channel += value
        else:
            shared += value
    return Footprint(per_channel, shared)
