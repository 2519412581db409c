"""The 21 primitives of the design space (spec §2.2): typing rule and vectorised torch semantics.

Every runtime value is a tensor with two leading *batch* dimensions ``[Bc, Bl, *dims]``: channels (C or 1
when the value is the same for every channel) and classes (L or 1), followed by the value's own symbolic
shape (scalar, vector or matrix; see :mod:`evoprune.expr.shapes`). A primitive therefore computes its
result for every channel (and, where possible, every class) at once.

Semantics follow the official numpy code for every well-typed input, with three deliberate protections
(spec §9.5): ``div`` and the scalar ``m_inv`` return 0 where the divisor is exactly 0 (numpy: inf/NaN), and
``sqrt`` takes the root of ``|x|`` (numpy: NaN for x < 0). Any remaining non-finite score is mapped to −inf
at ranking time (:func:`evoprune.expr.interpreter.sanitize_scores`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from evoprune.expr.shapes import SCALAR, Shape, ShapeError, broadcast, matrix, vector

RIDGE_SMALL = 1e-4  # rho1, and the ridge of the matrix m_inv
RIDGE_LARGE = 5e-2  # rho5
GEO_MEDIAN_TIE = 1e-9  # summed distances this close (relative) to the smallest count as a tie

Infer = Callable[[Sequence[Shape]], Shape]
Apply = Callable[[Sequence[Tensor], Sequence[Shape], Shape], Tensor]


@dataclass(frozen=True)
class PrimitiveSpec:
    name: str
    arity: int
    infer: Infer
    apply: Apply
    doc: str
    commutative: bool = False


# ---------------------------------------------------------------- helpers on batched values


def _lift(t: Tensor, rank: int, target: int) -> Tensor:
    """Insert singleton value dims after the two batch dims so that numpy-style broadcasting lines up."""
    if rank == target:
        return t
    return t.reshape(tuple(t.shape[:2]) + (1,) * (target - rank) + tuple(t.shape[2:]))


def _aligned(args: Sequence[Tensor], shapes: Sequence[Shape]) -> tuple[Tensor, Tensor]:
    r = max(s.rank for s in shapes)
    return _lift(args[0], shapes[0].rank, r), _lift(args[1], shapes[1].rank, r)


def _flat(t: Tensor, shape: Shape) -> Tensor:
    """[Bc, Bl, *dims] -> [Bc, Bl, prod(dims)] (a trailing 1 for scalars)."""
    return t.reshape(tuple(t.shape[:2]) + (-1,)) if shape.rank else t.unsqueeze(-1)


def _safe_div(a: Tensor, b: Tensor) -> Tensor:
    q = a / b
    return q.masked_fill_(b == 0, 0.0)  # in place: no second result-sized tensor


# ---------------------------------------------------------------- typing rules


def _same(shapes: Sequence[Shape]) -> Shape:
    return shapes[0]


def _to_scalar(shapes: Sequence[Shape]) -> Shape:
    return SCALAR


def _bcast(shapes: Sequence[Shape]) -> Shape:
    return broadcast(shapes[0], shapes[1])


def _infer_mmul(shapes: Sequence[Shape]) -> Shape:
    a, b = shapes
    if a.rank == 0 or b.rank == 0:
        return broadcast(a, b)
    inner_a = a.dims[-1]
    inner_b = b.dims[0]
    if inner_a != inner_b:
        raise ShapeError(f"matrix product needs matching inner dimensions, got {a} and {b}")
    return Shape(a.dims[:-1] + b.dims[1:])


def _infer_outer(shapes: Sequence[Shape]) -> Shape:
    a, b = shapes
    if a.rank != 1 or b.rank != 1:
        raise ShapeError(f"outer product needs two vectors, got {a} and {b}")
    return matrix(a.dims[0], b.dims[0])


def _infer_tran(shapes: Sequence[Shape]) -> Shape:
    s = shapes[0]
    return Shape(tuple(reversed(s.dims)))


def _infer_mean(shapes: Sequence[Shape]) -> Shape:
    s = shapes[0]
    if s.rank != 2:
        raise ShapeError(f"mean (column mean) needs a matrix, got {s}")
    return vector(s.dims[1])


def _infer_num(shapes: Sequence[Shape]) -> Shape:
    if shapes[0].rank == 0:
        raise ShapeError("num (number of rows) needs a vector or matrix, got scalar")
    return SCALAR


def _infer_inv(shapes: Sequence[Shape]) -> Shape:
    s = shapes[0]
    if s.rank < 2:
        return SCALAR
    if s.dims[0] != s.dims[1]:
        raise ShapeError(f"m_inv needs a square matrix, got {s}")
    return s


def _infer_geo_median(shapes: Sequence[Shape]) -> Shape:
    if shapes[0] != matrix("F", "K"):
        raise ShapeError(f"geo_median needs a kernel matrix[F×K] (e.g. W), got {shapes[0]}")
    return vector("K")


# ---------------------------------------------------------------- implementations


def _add(a: Sequence[Tensor], s: Sequence[Shape], out: Shape) -> Tensor:
    x, y = _aligned(a, s)
    return x + y


def _sub(a: Sequence[Tensor], s: Sequence[Shape], out: Shape) -> Tensor:
    x, y = _aligned(a, s)
    return x - y


def _mul(a: Sequence[Tensor], s: Sequence[Shape], out: Shape) -> Tensor:
    x, y = _aligned(a, s)
    return x * y


def _div(a: Sequence[Tensor], s: Sequence[Shape], out: Shape) -> Tensor:
    x, y = _aligned(a, s)
    return _safe_div(x, y)


def _mmul(a: Sequence[Tensor], s: Sequence[Shape], out: Shape) -> Tensor:
    x, y = a
    rx, ry = s[0].rank, s[1].rank
    if rx == 0 or ry == 0:
        return _mul(a, s, out)
    if rx == 1 and ry == 1:
        return (x * y).sum(-1)
    if rx == 1:
        return torch.matmul(x.unsqueeze(-2), y).squeeze(-2)
    if ry == 1:
        return torch.matmul(x, y.unsqueeze(-1)).squeeze(-1)
    return torch.matmul(x, y)


def _outer(a: Sequence[Tensor], s: Sequence[Shape], out: Shape) -> Tensor:
    return a[0].unsqueeze(-1) * a[1].unsqueeze(-2)


def _tran(a: Sequence[Tensor], s: Sequence[Shape], out: Shape) -> Tensor:
    return a[0].transpose(-1, -2) if s[0].rank == 2 else a[0]


def _g_mean(a: Sequence[Tensor], s: Sequence[Shape], out: Shape) -> Tensor:
    return _flat(a[0], s[0]).mean(-1)


def _sum(a: Sequence[Tensor], s: Sequence[Shape], out: Shape) -> Tensor:
    return _flat(a[0], s[0]).sum(-1)


def _var(a: Sequence[Tensor], s: Sequence[Shape], out: Shape) -> Tensor:
    return _flat(a[0], s[0]).var(-1, correction=0)


def _std(a: Sequence[Tensor], s: Sequence[Shape], out: Shape) -> Tensor:
    return _flat(a[0], s[0]).std(-1, correction=0)


def _mean(a: Sequence[Tensor], s: Sequence[Shape], out: Shape) -> Tensor:
    return a[0].mean(-2)


def _num(a: Sequence[Tensor], s: Sequence[Shape], out: Shape) -> Tensor:
    t = a[0]
    return torch.full((1, 1), float(t.shape[2]), dtype=t.dtype, device=t.device)


def _abs(a: Sequence[Tensor], s: Sequence[Shape], out: Shape) -> Tensor:
    return a[0].abs()


def _pow2(a: Sequence[Tensor], s: Sequence[Shape], out: Shape) -> Tensor:
    return a[0] * a[0]


def _sqrt(a: Sequence[Tensor], s: Sequence[Shape], out: Shape) -> Tensor:
    return a[0].abs().sqrt()


def _rho1(a: Sequence[Tensor], s: Sequence[Shape], out: Shape) -> Tensor:
    return a[0] + RIDGE_SMALL


def _rho5(a: Sequence[Tensor], s: Sequence[Shape], out: Shape) -> Tensor:
    return a[0] + RIDGE_LARGE


def _m_trace(a: Sequence[Tensor], s: Sequence[Shape], out: Shape) -> Tensor:
    t, r = a[0], s[0].rank
    if r == 0:
        return t
    if r == 1:
        return t[..., 0]
    return torch.diagonal(t, dim1=-2, dim2=-1).sum(-1)


def _m_inv(a: Sequence[Tensor], s: Sequence[Shape], out: Shape) -> Tensor:
    t, r = a[0], s[0].rank
    if r < 2:
        x = t if r == 0 else t[..., 0]
        return _safe_div(torch.ones((), dtype=x.dtype, device=x.device), x)
    eye = torch.eye(t.shape[-1], dtype=t.dtype, device=t.device)
    ridged = t + RIDGE_SMALL * eye
    # LAPACK refuses (LinAlgError, and MKL prints to stderr) a batch holding one non-finite matrix: invert the
    # finite ones and give the others NaN, so only their channels score as non-finite.
    finite = torch.isfinite(ridged).flatten(-2).all(-1)[..., None, None]
    clean = bool(finite.all())
    if not clean:
        ridged = torch.where(finite, ridged, eye)
    symmetric = torch.allclose(ridged, ridged.transpose(-1, -2), rtol=1e-10, atol=0.0)
    inverse = torch.linalg.pinv(ridged, hermitian=symmetric)
    return inverse if clean else inverse.masked_fill_(~finite, float("nan"))


def _geo_median(a: Sequence[Tensor], s: Sequence[Shape], out: Shape) -> Tensor:
    t = a[0]
    lead, f, k = tuple(t.shape[:2]), t.shape[2], t.shape[3]
    flat = t.reshape(-1, f, k)
    total = torch.cdist(flat, flat, compute_mode="donot_use_mm_for_euclid_dist").sum(-1)
    # Ties are common (the two middle values of an even count of scalars), and rounding would break them one way
    # for W and another for s·W or W + s: the first row within rounding of the minimum wins, as argmin picks the
    # first of exact ties. NaN sums keep argmin's answer (the first NaN).
    low = total.min(-1, keepdim=True).values
    best = (total <= low + GEO_MEDIAN_TIE * low.abs()).to(torch.uint8).argmax(-1)
    nan = low.squeeze(-1).isnan()
    if bool(nan.any()):
        best = torch.where(nan, total.argmin(-1), best)
    picked = flat[torch.arange(flat.shape[0], device=t.device), best]
    return picked.reshape(lead + (k,))


PRIMITIVES: dict[str, PrimitiveSpec] = {
    p.name: p
    for p in (
        PrimitiveSpec("m_trace", 1, _to_scalar, _m_trace,
                      "trace: scalar → itself, vector → first entry, matrix → trace of its top-left square"),
        PrimitiveSpec("mmul", 2, _infer_mmul, _mmul,
                      "matrix product (elementwise product when one side is a scalar)"),
        PrimitiveSpec("m_inv", 1, _infer_inv, _m_inv,
                      "inverse: scalar → 1/x, vector → 1/x[0] (0 where x = 0), square matrix → pinv(A + 1e-4·I)"),
        PrimitiveSpec("add", 2, _bcast, _add, "elementwise sum (numpy broadcasting)", commutative=True),
        PrimitiveSpec("sub", 2, _bcast, _sub, "elementwise difference (numpy broadcasting)"),
        PrimitiveSpec("mul", 2, _bcast, _mul, "elementwise product (numpy broadcasting)", commutative=True),
        PrimitiveSpec("out_dot", 2, _infer_outer, _outer, "outer product of two vectors"),
        PrimitiveSpec("tran", 1, _infer_tran, _tran, "transpose (identity on scalars and vectors)"),
        PrimitiveSpec("g_mean", 1, _to_scalar, _g_mean, "mean over all entries"),
        PrimitiveSpec("mean", 1, _infer_mean, _mean, "column mean of a matrix (mean over rows)"),
        PrimitiveSpec("sum", 1, _to_scalar, _sum, "sum over all entries"),
        PrimitiveSpec("std", 1, _to_scalar, _std, "population standard deviation over all entries"),
        PrimitiveSpec("var", 1, _to_scalar, _var, "population variance over all entries"),
        PrimitiveSpec("div", 2, _bcast, _div, "elementwise quotient; 0 where the divisor is exactly 0"),
        PrimitiveSpec("abs", 1, _same, _abs, "absolute value"),
        PrimitiveSpec("pow2", 1, _same, _pow2, "square"),
        PrimitiveSpec("num", 1, _infer_num, _num, "number of rows (length of a vector)"),
        PrimitiveSpec("sqrt", 1, _same, _sqrt, "square root of |x|"),
        PrimitiveSpec("rho1", 1, _same, _rho1, "x + 1e-4 (small ridge)"),
        PrimitiveSpec("rho5", 1, _same, _rho5, "x + 5e-2 (large ridge)"),
        PrimitiveSpec("geo_median", 1, _infer_geo_median, _geo_median,
                      "the filter (row of W) with the smallest summed distance to all others (FPGM's median; ties, to 1e-9 relative, go to the first)"),
    )
}

#: Reducers that a tree may apply directly to P, Q or X and still be evaluated from streaming statistics.
MOMENT_REDUCERS = frozenset({"g_mean", "sum", "var", "std", "num", "mean"})
