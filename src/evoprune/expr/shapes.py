"""Symbolic shapes: the type system of the pruning-function design space.

The paper's primitive set is untyped and silently crops mismatched operands (spec §2.2). We give every
value a *symbolic* shape instead, so that only trees whose operands line up are accepted (by the parser)
or generated (by GP). A shape is a tuple of at most two dimension symbols:

====== =====================================================================
symbol meaning
====== =====================================================================
``n_P`` rows of ``P`` (samples of class c)
``n_Q`` rows of ``Q`` (samples not of class c)
``n``   rows of ``X`` (all samples of the scoring set)
``D``   spatial positions of a feature map (H·W; 1 for fully-connected layers)
``K``   fan-in of one filter (C_in/groups · kh · kw; N_in for linear layers)
``F``   number of filters of the layer (its output channels)
====== =====================================================================

Two symbols never unify, even if the sizes happen to be equal at run time, so a well-typed tree never
depends on the paper's cropping rules and computes exactly the paper's numpy semantics.
"""

from __future__ import annotations

from dataclasses import dataclass

DIMENSIONS: tuple[str, ...] = ("n_P", "n_Q", "n", "D", "K", "F")


class ShapeError(TypeError):
    """A primitive was applied to operands whose symbolic shapes do not fit."""


@dataclass(frozen=True, order=True)
class Shape:
    """A symbolic shape: ``()`` scalar, ``(d,)`` vector, ``(r, c)`` matrix."""

    dims: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.dims) > 2:
            raise ValueError(f"shapes have rank at most 2, got {self.dims}")
        for d in self.dims:
            if d not in DIMENSIONS:
                raise ValueError(f"unknown dimension symbol {d!r}; known: {', '.join(DIMENSIONS)}")

    @property
    def rank(self) -> int:
        return len(self.dims)

    @property
    def is_scalar(self) -> bool:
        return not self.dims

    def __str__(self) -> str:
        if self.rank == 0:
            return "scalar"
        if self.rank == 1:
            return f"vector[{self.dims[0]}]"
        return f"matrix[{self.dims[0]}×{self.dims[1]}]"

    @property
    def slug(self) -> str:
        """An identifier-safe name (used for DEAP type classes)."""
        return "S" if self.rank == 0 else "x".join(self.dims)


SCALAR = Shape(())


def vector(d: str) -> Shape:
    return Shape((d,))


def matrix(r: str, c: str) -> Shape:
    return Shape((r, c))


def broadcast(a: Shape, b: Shape) -> Shape:
    """Numpy broadcasting on symbols: trailing dimensions must be equal symbols (or one side scalar)."""
    if a.rank == 0:
        return b
    if b.rank == 0:
        return a
    for x, y in zip(reversed(a.dims), reversed(b.dims)):
        if x != y:
            raise ShapeError(f"cannot broadcast {a} with {b}")
    return a if a.rank >= b.rank else b
