"""The vectorised interpreter against an independent per-channel, per-class numpy interpreter."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from deap import gp

from evoprune.expr import (
    ClassStats,
    analyse,
    build_primitive_set,
    evaluate,
    from_deap,
    parse,
    sanitize_scores,
    to_prefix,
)
from evoprune.expr.nodes import Call, Const, Var
from evoprune.metrics import LayerData, Metric
from test_expr_primitives import NP_OPS


def np_eval(node, env):
    if isinstance(node, Var):
        return env[node.name]
    if isinstance(node, Const):
        return np.float64(node.value)
    return NP_OPS[node.op](*[np_eval(a, env) for a in node.args])


def np_scores(tree, feats, labels, weight):
    """score(k) = Σ_c sum(f(...)) by plain loops (no class sum for trees without per-class operands)."""
    label_aware = analyse(tree).label_aware
    c = feats.shape[1] if feats is not None else weight.shape[0]
    w = None if weight is None else weight.reshape(weight.shape[0], -1).astype(np.float64)
    out = np.zeros(c)
    with np.errstate(all="ignore"):
        for k in range(c):
            env = {}
            if w is not None:
                env.update(WI=w[k], W=w)
            if feats is not None:
                x = feats[:, k, :].astype(np.float64)
                env.update(X=x, mX=x.mean(0))
            if not label_aware:
                out[k] = np.sum(np_eval(tree, env))
                continue
            for cls in np.unique(labels):
                p, q = x[labels == cls], x[labels != cls]
                env.update(P=p, Q=q, N=np.float64(len(p)), mP=p.mean(0), mQ=q.mean(0))
                out[k] += np.sum(np_eval(tree, env))
    return out


def _data(seed=0, n=90, c=5, d=6, classes=3):
    g = np.random.default_rng(seed)
    y = g.integers(0, classes, n)
    feats = (g.normal(0, 1, (n, c, d)) * g.uniform(0.5, 2, (classes, c, 1))[y] + g.normal(0, 1, (classes, c, 1))[y])
    weight = g.normal(0, 1, (c, 2, 2, 2))
    return feats.astype(np.float32), y, weight.astype(np.float32)


def _finite_close(got, expected, rtol=1e-6):
    got = sanitize_scores(torch.as_tensor(got, dtype=torch.float64)).numpy()
    expected = sanitize_scores(torch.as_tensor(expected, dtype=torch.float64)).numpy()
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(expected))
    fin = np.isfinite(expected)
    np.testing.assert_allclose(got[fin], expected[fin], rtol=rtol, atol=1e-9)


MATRIX_TREES = [
    "m_trace(mmul(tran(P), P))",
    "sum(mmul(P, mX))",
    "m_trace(out_dot(mP, mQ))",
    "sum(m_inv(mmul(tran(sub(X, mX)), sub(X, mX))))",
    "m_trace(mmul(m_inv(mmul(tran(sub(X, mX)), sub(X, mX))), mul(N, out_dot(sub(mP, mX), sub(mP, mX)))))",
    "div(sum(abs(sub(P, mQ))), num(Q))",
    "g_mean(geo_median(W))",
    "mmul(mean(W), WI)",
    "sum(mmul(W, WI))",
    "var(pow2(X))",
    "std(add(P, mP))",
    "m_trace(tran(Q))",
    "P",
]


@pytest.mark.parametrize("formula", MATRIX_TREES)
def test_matrix_trees_match_numpy_interpreter(formula):
    feats, y, w = _data(1)
    tree = parse(formula)
    got = evaluate(tree, features=torch.from_numpy(feats), labels=torch.from_numpy(y), weight=torch.from_numpy(w))
    _finite_close(got, np_scores(tree, feats, y, w))


def test_random_generated_trees_match_numpy_interpreter_on_both_strategies():
    random.seed(11)
    pset = build_primitive_set()
    feats, y, w = _data(2)
    f, lab, wt = torch.from_numpy(feats), torch.from_numpy(y), torch.from_numpy(w)
    stats = ClassStats.from_features(f, lab, batch_size=16)
    moment_trees = 0
    for _ in range(150):
        tree = from_deap(gp.genHalfAndHalf(pset, min_=1, max_=5))
        expected = np_scores(tree, feats, y, w)
        _finite_close(evaluate(tree, features=f, labels=lab, weight=wt, strategy="materialised"), expected)
        if not analyse(tree).needs_features:
            moment_trees += 1
            _finite_close(evaluate(tree, stats=stats, weight=wt), expected, rtol=1e-5)
    assert moment_trees > 30


def test_moment_strategy_never_touches_raw_maps():
    feats, y, _ = _data(3)
    stats = ClassStats.from_features(torch.from_numpy(feats), torch.from_numpy(y))
    tree = parse("div(var(P), rho5(add(var(Q), g_mean(mX))))")
    assert not analyse(tree).needs_features
    out = evaluate(tree, stats=stats)  # no features given at all
    _finite_close(out, np_scores(tree, feats, y, None))
    with pytest.raises(ValueError, match="raw feature maps"):
        evaluate(parse("m_trace(mmul(tran(P), P))"), stats=stats)
    with pytest.raises(ValueError, match="moments only"):
        evaluate(parse("sum(mmul(P, mX))"), features=torch.from_numpy(feats), labels=torch.from_numpy(y),
                 strategy="moments")


def test_label_free_trees_skip_the_class_sum():
    feats, y, w = _data(4)
    out = evaluate(parse("sum(abs(WI))"), weight=torch.from_numpy(w))
    np.testing.assert_allclose(out.numpy(), np.abs(w.reshape(w.shape[0], -1)).sum(1), rtol=1e-6)
    out = evaluate(parse("var(X)"), features=torch.from_numpy(feats))
    np.testing.assert_allclose(out.numpy(), feats.transpose(1, 0, 2).reshape(feats.shape[1], -1).var(1), rtol=1e-5)


def test_channel_independent_trees_broadcast_to_all_channels():
    feats, y, _ = _data(5)
    out = evaluate(parse("N"), features=torch.from_numpy(feats), labels=torch.from_numpy(y))
    assert out.tolist() == [float(len(y))] * feats.shape[1]  # Σ_c n_c


def test_missing_inputs_are_reported():
    feats, y, w = _data(6)
    f = torch.from_numpy(feats)
    with pytest.raises(ValueError, match="labels are required"):
        evaluate(parse("var(P)"), features=f)
    with pytest.raises(ValueError, match="weight is required"):
        evaluate(parse("add(var(X), sum(WI))"), features=f)
    with pytest.raises(ValueError, match="nothing to score"):
        evaluate(parse("var(X)"))


def test_unlabelled_stats_refuse_label_aware_trees():
    feats, y, _ = _data(7)
    unlabelled = ClassStats.from_features(torch.from_numpy(feats))
    assert not unlabelled.labelled
    with pytest.raises(ValueError, match="labels are required"):
        evaluate(parse("var(P)"), stats=unlabelled)
    evaluate(parse("var(X)"), stats=unlabelled)


# ----------------------------------------------------------------------------- NaN / inf


def test_non_finite_scores_become_minus_inf_and_rank_last():
    feats, y, _ = _data(8)
    feats[:, 2, 0] = np.nan  # a broken channel
    m = Metric.from_formula("var(P)")
    scores = m.score(LayerData("l", features=torch.from_numpy(feats), labels=torch.from_numpy(y)))
    assert scores[2].item() == float("-inf")
    assert torch.isfinite(scores[[0, 1, 3, 4]]).all()
    assert torch.argsort(scores)[0].item() == 2  # pruned first


def test_overflow_and_inf_minus_inf_become_minus_inf():
    feats, y, _ = _data(9)
    big = "pow2(" * 12 + "add(sum(X), 10.0)" + ")" * 12  # overflows to +inf
    scores = Metric.from_formula(big).score(LayerData("l", features=torch.from_numpy(feats)))
    assert (scores == float("-inf")).all()
    same = f"sub({big}, {big})"  # inf - inf = NaN as written; simplified (x - x = 0, the documented convention) 0
    raw = evaluate(parse(same), features=torch.from_numpy(feats), simplify=False)
    assert (sanitize_scores(raw) == float("-inf")).all()
    assert (Metric.from_formula(same).score(LayerData("l", features=torch.from_numpy(feats))) == 0.0).all()


def test_protected_division_keeps_dead_channels_finite():
    feats, y, _ = _data(10)
    feats[:, 1] = 0.0  # a dead (all-zero) channel: var = 0
    scores = Metric.from_formula("div(g_mean(P), var(P))").score(
        LayerData("l", features=torch.from_numpy(feats), labels=torch.from_numpy(y)))
    assert scores[1].item() == 0.0 and torch.isfinite(scores).all()


def test_sanitize_scores():
    s = torch.tensor([1.0, float("nan"), float("inf"), -float("inf"), -2.0])
    assert sanitize_scores(s).tolist() == [1.0, -float("inf"), -float("inf"), -float("inf"), -2.0]


# ----------------------------------------------------------------------------- streaming statistics


def test_streaming_stats_equal_one_shot_and_merge():
    feats, y, _ = _data(11)
    feats = feats + 20.0  # a large mean: the variance must not be lost to cancellation
    f, lab = torch.from_numpy(feats), torch.from_numpy(y)
    one = ClassStats.from_features(f, lab, batch_size=1000)
    many = ClassStats.from_features(f, lab, batch_size=7)
    merged = ClassStats.from_features(f[:40], lab[:40]).merge(ClassStats.from_features(f[40:], lab[40:]))
    x = feats.astype(np.float64)
    for st in (one, many, merged):
        assert st.count.tolist() == [float((y == c).sum()) for c in range(3)]
        for cls in range(3):
            xc = x[y == cls]
            np.testing.assert_allclose(st.pos_sum[cls].numpy(), xc.sum(0), rtol=1e-12)
            np.testing.assert_allclose(st.sq_sum[cls].numpy(), (xc**2).sum((0, 2)), rtol=1e-12)
    tree = parse("add(div(var(P), rho5(var(Q))), std(X))")
    expected = np_scores(tree, feats, y, None)
    for st in (one, many, merged):
        np.testing.assert_allclose(evaluate(tree, stats=st).numpy(), expected, rtol=1e-9)


def test_cache_blocks_cover_every_row(monkeypatch):
    import evoprune.expr.stats as stats_mod

    feats, y, _ = _data(13, n=50)
    f, lab = torch.from_numpy(feats), torch.from_numpy(y)
    ref = ClassStats.from_features(f, lab)
    monkeypatch.setattr(stats_mod, "_native", None)  # the blocks are the torch path's
    monkeypatch.setattr(stats_mod, "BLOCK_BYTES", 8 * 5 * 6 * 3)  # blocks of 3 rows, last one partial
    small = ClassStats.from_features(f, lab, batch_size=20)
    torch.testing.assert_close(small.pos_sum, ref.pos_sum)
    torch.testing.assert_close(small.sq_sum, ref.sq_sum)


def test_float64_stats_resolve_nearly_equal_class_means():
    g = np.random.default_rng(0)
    y = np.arange(200) % 4
    feats = (g.normal(0, 1, (200, 3, 1)) + 1e-3 * y[:, None, None] + 5.0).astype(np.float32)
    tree = parse("div(abs(sub(g_mean(P), g_mean(Q))), rho1(add(std(P), std(Q))))")
    stats = ClassStats.from_features(torch.from_numpy(feats), torch.from_numpy(y), batch_size=64)
    np.testing.assert_allclose(evaluate(tree, stats=stats).numpy(), np_scores(tree, feats, y, None), rtol=1e-9)


def test_absent_labels_are_dropped_from_the_class_sum():
    feats, y, _ = _data(12)
    y2 = np.where(y == 1, 7, y)  # labels 0, 2, 7: slots 1, 3-6 never used
    tree = parse("div(var(P), rho5(var(Q)))")
    f = torch.from_numpy(feats)
    a = evaluate(tree, features=f, labels=torch.from_numpy(y))
    b = evaluate(tree, stats=ClassStats.from_features(f, torch.from_numpy(y2)))
    torch.testing.assert_close(a, b)


def test_present_drops_unused_slots_and_copies_nothing_when_all_are_used():
    feats, y, _ = _data(14)
    f = torch.from_numpy(feats)
    full = ClassStats.from_features(f, torch.from_numpy(y))
    assert full.present() is full
    sparse = ClassStats.from_features(f, torch.from_numpy(np.where(y == 1, 4, y)))  # slots 1 and 3 unused
    kept = sparse.present()
    assert kept.classes.tolist() == [0, 2, 4] and kept.count.tolist() == sparse.count[[0, 2, 4]].tolist()
    torch.testing.assert_close(kept.pos_sum, sparse.pos_sum[[0, 2, 4]], rtol=0, atol=0)
    torch.testing.assert_close(kept.sq_sum, sparse.sq_sum[[0, 2, 4]], rtol=0, atol=0)


def test_mean_map_operands_match_numpy_whether_used_or_not():
    """The moment evaluator builds P/Q/X mean maps lazily: trees that read them, and trees that don't."""
    feats, y, _ = _data(15)
    stats = ClassStats.from_features(torch.from_numpy(feats), torch.from_numpy(y))
    for formula in ("sum(sub(mQ, mP))", "add(var(Q), g_mean(mX))", "div(var(P), rho5(var(Q)))",
                    "sum(mul(mean(X), mP))"):
        tree = parse(formula)
        _finite_close(evaluate(tree, stats=stats), np_scores(tree, feats, y, None), rtol=1e-9)


def test_prefix_of_generated_trees_reparses():
    random.seed(5)
    pset = build_primitive_set(constants=(0.5,))
    for _ in range(50):
        tree = from_deap(gp.genGrow(pset, 1, 5))
        assert parse(to_prefix(tree)) == tree


def test_kernel_only_values_are_reused_for_the_same_weight_and_never_read_stale() -> None:
    """geo_median(W) is kept per weight tensor: a second candidate on the same layer reads it back; a weight changed
    in place (fine-tuning) or a new tensor with the same values gets a fresh one."""
    from evoprune.expr.interpreter import _KernelValues

    g = torch.Generator().manual_seed(0)
    feats, labels = torch.randn(12, 5, 4, generator=g), torch.arange(12) % 3
    weight = torch.randn(5, 6, generator=g, dtype=torch.float64)
    tree = parse("mul(g_mean(P), sum(sub(WI, geo_median(W))))")
    first = evaluate(tree, features=feats, labels=labels, weight=weight)
    store = _KernelValues.of(weight, torch.float64, weight.device)
    assert any(isinstance(n, Call) and n.op == "geo_median" for n in store)
    for node in store:
        store[node] = torch.zeros_like(store[node])  # what the cache holds is what is used
    assert not torch.equal(evaluate(tree, features=feats, labels=labels, weight=weight), first)
    fresh = weight.clone()
    assert torch.equal(evaluate(tree, features=feats, labels=labels, weight=fresh), first)
    weight.mul_(1.0)  # an in-place change (here of nothing) moves the version: the kept value is dropped
    assert torch.equal(evaluate(tree, features=feats, labels=labels, weight=weight), first)
    with torch.no_grad():
        weight.add_(0.5 * torch.randn(5, 6, generator=g, dtype=torch.float64))
    assert torch.equal(evaluate(tree, features=feats, labels=labels, weight=weight),
                       evaluate(tree, features=feats, labels=labels, weight=weight.clone()))
