"""Streaming statistics from both backends: the fused C extension (``evoprune.expr._moments``) and torch.

The C backend is what CPU scoring uses where the extension was built at install time; the torch backend is
what CUDA tensors and installs without a C compiler get. Each test that takes ``backend`` runs on both
(the C one is skipped where the extension is missing), against float64 numpy sums and the per-channel
reference metrics, to float64 precision.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import evoprune.expr.stats as stats_mod
from evoprune.expr import ClassStats
from evoprune.metrics import LayerData, get_metric, score_layers
from evoprune.models import build_model
from test_metrics_reference import FEATURE_REFS, _random_layer

NATIVE = stats_mod._native
needs_native = pytest.mark.skipif(NATIVE is None, reason="the C extension was not built (no compiler at install)")


@pytest.fixture(params=["native", "torch"])
def backend(request, monkeypatch):
    if request.param == "native" and NATIVE is None:
        pytest.skip("the C extension was not built (no compiler at install)")
    if request.param == "torch":
        monkeypatch.setattr(stats_mod, "_native", None)
    return request.param


def _layer(d: int, dtype, seed: int = 0, n: int = 53, c: int = 7):
    """Maps with a large common offset (cancellation would show) and labels 0, 1, 3, 5 (slots 2, 4 unused)."""
    g = np.random.default_rng(seed)
    x = (g.normal(0, 1, (n, c, d)) + 20.0).astype(dtype)
    y = np.array([0, 1, 3, 5])[g.integers(0, 4, n)]
    return x, y


def _assert_exact(st: ClassStats, x: np.ndarray, y: np.ndarray) -> None:
    x64 = x.astype(np.float64)
    for cls in range(st.count.shape[0]):
        xc = x64[y == cls]
        assert st.count[cls].item() == len(xc)
        np.testing.assert_allclose(st.pos_sum[cls].numpy(), xc.sum(0), rtol=1e-13, atol=0)
        np.testing.assert_allclose(st.sq_sum[cls].numpy(), (xc**2).sum((0, 2)), rtol=1e-13, atol=0)


@pytest.mark.parametrize("d", [1, 3, 4, 15, 16, 17, 64, 100])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_statistics_are_float64_sums(backend, d, dtype):
    x, y = _layer(d, dtype, seed=d)
    st = ClassStats.from_features(torch.from_numpy(x), torch.from_numpy(y), batch_size=16)
    _assert_exact(st, x, y)


def test_backends_agree_batch_by_batch_and_unlabelled(monkeypatch):
    if NATIVE is None:
        pytest.skip("the C extension was not built (no compiler at install)")
    x, y = _layer(36, np.float32, seed=1, n=70)
    f, lab = torch.from_numpy(x), torch.from_numpy(y)
    native = [ClassStats.from_features(f, lab, batch_size=9), ClassStats.from_features(f, batch_size=9)]
    monkeypatch.setattr(stats_mod, "_native", None)
    plain = [ClassStats.from_features(f, lab, batch_size=9), ClassStats.from_features(f, batch_size=9)]
    for a, b in zip(native, plain):
        torch.testing.assert_close(a.count, b.count, rtol=0, atol=0)
        torch.testing.assert_close(a.pos_sum, b.pos_sum, rtol=1e-14, atol=0)
        torch.testing.assert_close(a.sq_sum, b.sq_sum, rtol=1e-14, atol=0)


@needs_native
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_simd_and_portable_rows_agree(dtype):
    x, y = _layer(45, dtype, seed=2)  # 45 = 5 vector steps of 8 and a tail of 5
    f, lab = torch.from_numpy(x), torch.from_numpy(y)
    try:
        assert NATIVE.set_simd(False) == "plain"
        plain = ClassStats.from_features(f, lab)
    finally:
        mode = NATIVE.set_simd(True)
    assert mode in ("avx2", "plain")
    fast = ClassStats.from_features(f, lab)
    _assert_exact(plain, x, y)
    torch.testing.assert_close(fast.pos_sum, plain.pos_sum, rtol=1e-14, atol=0)
    torch.testing.assert_close(fast.sq_sum, plain.sq_sum, rtol=1e-14, atol=0)


def test_non_contiguous_maps(backend):
    x, y = _layer(20, np.float32, seed=3)
    strided = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 1))).transpose(1, 2)  # [N, C, D] view
    assert not strided.is_contiguous()
    _assert_exact(ClassStats.from_features(strided, torch.from_numpy(y), batch_size=11), x, y)


@needs_native
def test_native_kernel_rejects_bad_buffers():
    f = np.ones((4, 3, 5), np.float32)
    lab = np.array([0, 1, 1, 0], np.int64)
    pos, sq = np.zeros((2, 3, 5)), np.zeros((2, 3, 1))
    with pytest.raises(TypeError, match="float32/float64"):
        NATIVE.accumulate(f.astype(np.int32), lab, pos, sq, 0, 3)
    with pytest.raises(TypeError, match="float32/float64"):
        NATIVE.accumulate(f, lab.astype(np.int32), pos, sq, 0, 3)
    with pytest.raises(ValueError, match="do not agree"):
        NATIVE.accumulate(f, lab, pos, np.zeros((2, 3, 2)), 0, 3)
    with pytest.raises(ValueError, match="do not agree"):
        NATIVE.accumulate(f, lab, pos, sq, 1, 4)
    with pytest.raises(ValueError, match="label 2 at row 3"):
        NATIVE.accumulate(f, np.array([0, 1, 1, 2], np.int64), pos, sq, 0, 3)
    with pytest.raises(TypeError, match="C-contiguous"):
        NATIVE.accumulate(f[:, :, ::2], lab, pos[:, :, :3], sq, 0, 3)
    assert not pos.any() and not sq.any()  # checks come before any write
    NATIVE.accumulate(f, lab, pos, sq, 1, 3)  # a channel range leaves the other channels alone
    assert pos[:, 0].sum() == 0 and pos[0, 1:].sum() == 2 * 2 * 5 and sq[1, 2, 0] == 2 * 5


@pytest.mark.parametrize("name", sorted(n for n in FEATURE_REFS if not get_metric(n).needs.features))
def test_moment_metrics_match_the_reference(backend, name):
    feats, y, _ = _random_layer(7)
    stats = ClassStats.from_features(torch.from_numpy(feats), torch.from_numpy(y), batch_size=37)
    got = get_metric(name).score(LayerData("layer", stats=stats))
    np.testing.assert_allclose(got.numpy(), FEATURE_REFS[name](feats, y), rtol=1e-9, atol=1e-12)


@needs_native
def test_score_layers_is_the_same_on_both_backends(monkeypatch):
    torch.manual_seed(0)
    model = build_model("vgg", depth=16, width=0.125, in_channels=3, num_classes=4, image_size=(32, 32)).eval()
    x, y = torch.rand(40, 3, 32, 32), torch.arange(40) % 4
    first = score_layers(model, "eq3", x, y, batch_size=16)
    monkeypatch.setattr(stats_mod, "_native", None)
    second = score_layers(model, "eq3", x, y, batch_size=16)
    for k in first:
        torch.testing.assert_close(first[k], second[k], rtol=1e-12, atol=0)


def test_repeated_subtrees_survive_the_release_of_temporaries():
    """The moment evaluator drops a value after its last use; shared subtrees must still be there."""
    from evoprune.expr import evaluate, parse

    feats, y, _ = _random_layer(8, d=12)
    f, lab = torch.from_numpy(feats), torch.from_numpy(y)
    stats = ClassStats.from_features(f, lab)
    for formula in ("add(mul(mX, var(P)), mul(mX, var(P)))",
                    "div(pow2(sub(mX, var(Q))), rho5(add(pow2(sub(mX, var(Q))), var(P))))",
                    "add(sum(mul(mP, mP)), mul(sum(mul(mP, mP)), g_mean(mQ)))"):
        tree = parse(formula)
        torch.testing.assert_close(evaluate(tree, stats=stats),
                                   evaluate(tree, features=f, labels=lab, strategy="materialised"),
                                   rtol=1e-9, atol=1e-12)


def test_channel_blocks_of_the_moment_evaluator_change_nothing(monkeypatch):
    """Random typed trees (weights included, W spans all channels) per channel block vs all at once."""
    import random

    from deap import gp

    import evoprune.expr.interpreter as interpreter
    from evoprune.expr import analyse, build_primitive_set, evaluate, from_deap

    random.seed(3)
    pset = build_primitive_set()
    feats, y, w = _random_layer(9, c=5, d=6)
    stats = ClassStats.from_features(torch.from_numpy(feats), torch.from_numpy(y))
    wt = torch.from_numpy(w)
    trees = [t for t in (from_deap(gp.genHalfAndHalf(pset, min_=1, max_=5)) for _ in range(200))
             if analyse(t).uses_maps and not analyse(t).needs_features]
    assert len(trees) > 30
    whole = [evaluate(t, stats=stats, weight=wt) for t in trees]
    monkeypatch.setattr(interpreter, "BLOCK_ELEMENTS", 1)  # one channel per block
    for t, expected in zip(trees, whole):
        torch.testing.assert_close(evaluate(t, stats=stats, weight=wt), expected, rtol=1e-12, atol=0,
                                   equal_nan=True)
