"""Each of the 21 primitives: typing rule, and the vectorised torch semantics against numpy (spec §2.2)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from evoprune.expr import PRIMITIVES, SCALAR, Shape, ShapeError
from evoprune.expr.shapes import matrix, vector

SIZES = {"n_P": 6, "n_Q": 7, "n": 13, "D": 4, "K": 5, "F": 3}
S, VD, VK = SCALAR, vector("D"), vector("K")
MP, MQ, MX, MW = matrix("n_P", "D"), matrix("n_Q", "D"), matrix("n", "D"), matrix("F", "K")
MDD = matrix("D", "D")


def _np_m_trace(x):
    x = np.asarray(x)
    if x.ndim == 0:
        return x
    if x.ndim == 1:
        return x[0]
    m = min(x.shape)
    return np.trace(x[:m, :m])


def _np_m_inv(x):
    x = np.asarray(x)
    if x.ndim == 0:
        return 0.0 if x == 0 else 1.0 / x
    if x.ndim == 1:
        return 0.0 if x[0] == 0 else 1.0 / x[0]
    return np.linalg.pinv(x + 1e-4 * np.eye(x.shape[0]))


def _np_geo_median(w):
    totals = [sum(np.linalg.norm(w[j] - w[i]) for i in range(len(w))) for j in range(len(w))]
    return w[int(np.argmin(totals))]


def _np_div(a, b):
    a, b = np.broadcast_arrays(np.asarray(a, float), np.asarray(b, float))
    out = np.zeros(a.shape)
    nz = b != 0
    out[nz] = a[nz] / b[nz]
    return out


#: numpy semantics of every primitive, as in the official code (protections noted in the library docs)
NP_OPS = {
    "m_trace": _np_m_trace,
    "mmul": lambda a, b: np.multiply(a, b) if np.ndim(a) == 0 or np.ndim(b) == 0 else np.matmul(a, b),
    "m_inv": _np_m_inv,
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "out_dot": np.outer,
    "tran": np.transpose,
    "g_mean": np.mean,
    "mean": lambda x: np.mean(x, axis=0),
    "sum": np.sum,
    "std": np.std,
    "var": np.var,
    "div": _np_div,
    "abs": np.absolute,
    "pow2": np.square,
    "num": len,
    "sqrt": lambda x: np.sqrt(np.abs(x)),
    "rho1": lambda x: np.asarray(x) + 1e-4,
    "rho5": lambda x: np.asarray(x) + 5e-2,
    "geo_median": _np_geo_median,
}

#: (primitive, argument shapes, result shape) cases: every primitive, several signatures
CASES = [
    ("m_trace", [S], S), ("m_trace", [VD], S), ("m_trace", [MP], S), ("m_trace", [MDD], S),
    ("mmul", [S, MP], MP), ("mmul", [VD, VD], S), ("mmul", [MP, VD], vector("n_P")),
    ("mmul", [VD, matrix("D", "n_P")], vector("n_P")), ("mmul", [matrix("D", "n_P"), MP], MDD),
    ("m_inv", [S], S), ("m_inv", [VD], S), ("m_inv", [MDD], MDD),
    ("add", [S, S], S), ("add", [MP, VD], MP), ("add", [VD, MP], MP), ("add", [MW, S], MW),
    ("sub", [MQ, VD], MQ), ("sub", [VK, MW], MW), ("sub", [S, VD], VD),
    ("mul", [VD, VD], VD), ("mul", [S, MX], MX), ("mul", [MX, VD], MX),
    ("out_dot", [VD, VK], matrix("D", "K")),
    ("tran", [S], S), ("tran", [VD], VD), ("tran", [MP], matrix("D", "n_P")),
    ("g_mean", [S], S), ("g_mean", [VK], S), ("g_mean", [MP], S),
    ("mean", [MP], VD), ("mean", [MW], VK),
    ("sum", [S], S), ("sum", [VD], S), ("sum", [MQ], S),
    ("std", [S], S), ("std", [VD], S), ("std", [MX], S),
    ("var", [S], S), ("var", [VK], S), ("var", [MP], S),
    ("div", [VD, S], VD), ("div", [MP, VD], MP), ("div", [S, S], S),
    ("abs", [MP], MP), ("pow2", [VK], VK), ("num", [MP], S), ("num", [VD], S), ("num", [MX], S),
    ("sqrt", [VD], VD), ("rho1", [S], S), ("rho5", [MQ], MQ),
    ("geo_median", [MW], VK),
]

BAD = [
    ("add", [MP, MQ]), ("add", [VD, VK]), ("sub", [matrix("D", "n_P"), VD]), ("mul", [VD, MW]),
    ("div", [VK, MP]), ("mmul", [MP, VK]), ("mmul", [VD, MP]), ("out_dot", [MP, VD]), ("out_dot", [S, VD]),
    ("mean", [VD]), ("mean", [S]), ("num", [S]), ("m_inv", [MP]), ("geo_median", [MP]), ("geo_median", [VK]),
]


def test_there_are_exactly_the_papers_21_primitives():
    assert set(PRIMITIVES) == {
        "m_trace", "mmul", "m_inv", "add", "sub", "mul", "out_dot", "tran", "g_mean", "mean", "sum", "std",
        "var", "div", "abs", "pow2", "num", "sqrt", "rho1", "rho5", "geo_median"}
    assert {p.name: p.arity for p in PRIMITIVES.values()} == {
        "m_trace": 1, "mmul": 2, "m_inv": 1, "add": 2, "sub": 2, "mul": 2, "out_dot": 2, "tran": 1, "g_mean": 1,
        "mean": 1, "sum": 1, "std": 1, "var": 1, "div": 2, "abs": 1, "pow2": 1, "num": 1, "sqrt": 1, "rho1": 1,
        "rho5": 1, "geo_median": 1}


def test_cases_cover_every_primitive():
    assert {c[0] for c in CASES} == set(PRIMITIVES)


def _random_arg(shape: Shape, batch: tuple[int, int], g: torch.Generator, op: str) -> torch.Tensor:
    dims = tuple(SIZES[d] for d in shape.dims)
    t = torch.randn(batch + dims, generator=g, dtype=torch.float64)
    if op == "m_inv" and shape.rank == 2:  # symmetric positive semi-definite, as a scatter matrix
        t = t @ t.transpose(-1, -2)
    return t


@pytest.mark.parametrize("op,args,result", CASES, ids=lambda v: str(v) if isinstance(v, str) else None)
def test_primitive_type_and_value(op, args, result):
    spec = PRIMITIVES[op]
    assert spec.infer(args) == result
    g = torch.Generator().manual_seed(hash((op, tuple(args))) % 2**31)
    # first argument batched over channels and classes, second broadcast along channels only
    batches = [(2, 3), (1, 3)][: len(args)]
    tensors = [_random_arg(s, b, g, op) for s, b in zip(args, batches)]
    out = spec.apply(tensors, args, result)
    if op == "num":
        assert out.shape == (1, 1)
    for i, j in itertools.product(range(2), range(3)):
        np_args = [t[min(i, t.shape[0] - 1), min(j, t.shape[1] - 1)].numpy() for t in tensors]
        expected = NP_OPS[op](*np_args)
        got = out[min(i, out.shape[0] - 1), min(j, out.shape[1] - 1)].numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
        assert got.shape == tuple(SIZES[d] for d in result.dims)


@pytest.mark.parametrize("op,args", BAD, ids=lambda v: str(v) if isinstance(v, str) else None)
def test_ill_typed_signatures_are_rejected(op, args):
    with pytest.raises(ShapeError):
        PRIMITIVES[op].infer(args)


def _one(x: float) -> torch.Tensor:
    return torch.tensor([[x]], dtype=torch.float64)


def test_protected_division_and_inverse_and_sqrt():
    div = PRIMITIVES["div"].apply
    assert div([_one(3.0), _one(0.0)], [S, S], S).item() == 0.0
    assert div([_one(3.0), _one(2.0)], [S, S], S).item() == 1.5
    assert PRIMITIVES["m_inv"].apply([_one(0.0)], [S], S).item() == 0.0
    assert PRIMITIVES["m_inv"].apply([_one(4.0)], [S], S).item() == 0.25
    assert PRIMITIVES["sqrt"].apply([_one(-9.0)], [S], S).item() == 3.0


def test_ridge_constants():
    assert PRIMITIVES["rho1"].apply([_one(1.0)], [S], S).item() == pytest.approx(1.0001, abs=1e-15)
    assert PRIMITIVES["rho5"].apply([_one(1.0)], [S], S).item() == pytest.approx(1.05, abs=1e-15)


def test_matrix_inverse_of_a_non_symmetric_matrix_uses_general_pinv():
    a = torch.tensor([[[[2.0, 1.0], [0.0, 3.0]]]], dtype=torch.float64)
    out = PRIMITIVES["m_inv"].apply([a], [MDD], MDD)[0, 0].numpy()
    np.testing.assert_allclose(out, np.linalg.pinv(a[0, 0].numpy() + 1e-4 * np.eye(2)), rtol=1e-12, atol=1e-15)
