"""Every named metric (except random) against a plain per-channel, per-class numpy reference.

The references below are the correctness reference of the metric library: written straight from the
closed forms of the spec (gp-pruning-functions.md §2.3, §5, §8), looping over channels and classes in
float64, with no code shared with the library. They are also imported by benchmarks/bench_scoring.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from evoprune.expr import ClassStats
from evoprune.metrics import LayerData, get_metric, score_layers
from evoprune.metrics.library import builtin_metrics

RTOL = 1e-5


# ----------------------------------------------------------------------------- references (numpy, loops)


def _split(x: np.ndarray, y: np.ndarray, c) -> tuple[np.ndarray, np.ndarray]:
    return x[y == c], x[y != c]


def ref_abs_snr(feats, y):
    out = np.zeros(feats.shape[1])
    for k in range(feats.shape[1]):
        x = feats[:, k, :].astype(np.float64)
        for c in np.unique(y):
            p, q = _split(x, y, c)
            out[k] += abs(p.mean() - q.mean()) / (p.std() + q.std() + 1e-4)
    return out


def ref_fdr(feats, y):
    out = np.zeros(feats.shape[1])
    for k in range(feats.shape[1]):
        x = feats[:, k, :].astype(np.float64)
        for c in np.unique(y):
            p, q = _split(x, y, c)
            out[k] += (p.mean() - q.mean()) ** 2 / (p.var() + q.var() + 1e-4)
    return out


def ref_sym_div(feats, y):
    out = np.zeros(feats.shape[1])
    for k in range(feats.shape[1]):
        x = feats[:, k, :].astype(np.float64)
        for c in np.unique(y):
            p, q = _split(x, y, c)
            vp, vq = p.var(), q.var()
            out[k] += vp / (vq + 0.05) + vq / (vp + 0.05) + (p.mean() - q.mean()) ** 2 / (vp + vq + 0.05)
    return out


def ref_tstats(feats, y):
    out = np.zeros(feats.shape[1])
    for k in range(feats.shape[1]):
        x = feats[:, k, :].astype(np.float64)
        for c in np.unique(y):
            p, q = _split(x, y, c)
            out[k] += abs(p.mean() - q.mean()) / np.sqrt(p.var() / len(p) + q.var() / len(q) + 1e-4)
    return out


def ref_wl1(weight):
    w = weight.reshape(weight.shape[0], -1).astype(np.float64)
    return np.array([np.abs(w[k]).sum() for k in range(w.shape[0])])


def ref_wl2(weight):
    w = weight.reshape(weight.shape[0], -1).astype(np.float64)
    return np.array([np.sqrt((w[k] ** 2).sum()) for k in range(w.shape[0])])


def _geo_median_filter(w):
    totals = [sum(np.linalg.norm(w[j] - w[i]) for i in range(w.shape[0])) for j in range(w.shape[0])]
    return w[int(np.argmin(totals))]


def ref_geo_median(weight):
    w = weight.reshape(weight.shape[0], -1).astype(np.float64)
    gm = _geo_median_filter(w)
    return np.array([np.linalg.norm(w[k] - gm) for k in range(w.shape[0])])


def ref_fpgm(weight):
    w = weight.reshape(weight.shape[0], -1).astype(np.float64)
    return np.array([sum(np.linalg.norm(w[k] - w[j]) for j in range(w.shape[0])) for k in range(w.shape[0])])


def ref_ga_func1(feats, y):
    out = np.zeros(feats.shape[1])
    for k in range(feats.shape[1]):
        x = feats[:, k, :].astype(np.float64)
        mx = x.mean(0)
        for c in np.unique(y):
            p, q = _split(x, y, c)
            vp, vq = p.var(), q.var()
            out[k] += np.sum(vp + (vq - mx) ** 2 / (vp + vq + 0.05))
    return out


def ref_ga_func2(feats, y):
    """Equation 3 (spec §5.1), straight from the formula: Σ_c Σ_d [...]."""
    out = np.zeros(feats.shape[1])
    for k in range(feats.shape[1]):
        x = feats[:, k, :].astype(np.float64)
        mx = x.mean(0)
        s = mx.std()
        for c in np.unique(y):
            p, q = _split(x, y, c)
            vp, vq = p.var(), q.var()
            term = vp / (vq + 0.05) + vq / (vp + 0.05) + (s * vq * mx + vp - q.mean()) ** 2 / (vp + vq + 0.05)
            out[k] += np.sum(term * np.ones_like(mx))
    return out


def ref_ga_func2_closed_form(feats, y):
    """The §5.1 reduction to per-class scalars: D·Σ_c[... + (a²(s²+μ_X²) + 2abμ_X + b²)/(...)]."""
    out = np.zeros(feats.shape[1])
    d = feats.shape[2]
    for k in range(feats.shape[1]):
        x = feats[:, k, :].astype(np.float64)
        mx = x.mean(0)
        s, mu_x = mx.std(), x.mean()
        for c in np.unique(y):
            p, q = _split(x, y, c)
            vp, vq = p.var(), q.var()
            a, b = s * vq, vp - q.mean()
            out[k] += d * (vp / (vq + .05) + vq / (vp + .05)
                           + (a * a * (s * s + mu_x * mu_x) + 2 * a * b * mu_x + b * b) / (vp + vq + .05))
    return out


def ref_ga_func3(feats, y):
    out = np.zeros(feats.shape[1])
    for k in range(feats.shape[1]):
        x = feats[:, k, :].astype(np.float64)
        mx = x.mean(0)
        for c in np.unique(y):
            p, q = _split(x, y, c)
            out[k] += np.sum((mx - q.var()) ** 2 / np.sqrt(p.var() / len(p) + q.var() / len(q) + 1e-4))
    return out


def ref_ga_func4(feats, y):
    out = np.zeros(feats.shape[1])
    for k in range(feats.shape[1]):
        x = feats[:, k, :].astype(np.float64)
        for c in np.unique(y):
            p, q = _split(x, y, c)
            mq = q.mean(0)
            out[k] += np.sum(p.var() / (q.var() / len(q) + 0.05) + abs(p.mean() - q.mean()) + 0.05 + mq)
    return out


def ref_ga_inspired_1(feats, y):
    out = np.zeros(feats.shape[1])
    for k in range(feats.shape[1]):
        x = feats[:, k, :].astype(np.float64)
        mx = x.mean(0)
        for c in np.unique(y):
            p, q = _split(x, y, c)
            sp, sq = p.std(), q.std()
            dist = np.sum((mx - p.mean(0)) ** 2) + np.sum((mx - q.mean(0)) ** 2)
            out[k] += sp / (sq + 0.2) + sq / (sp + 0.2) + dist / (sp + sq + 0.2)
    return out


def ref_ga_inspired_2(feats, y):
    """Intended form: class c's negative mean map (the official code's all-classes mean was a bug)."""
    out = np.zeros(feats.shape[1])
    for k in range(feats.shape[1]):
        x = feats[:, k, :].astype(np.float64)
        mx = x.mean(0)
        for c in np.unique(y):
            p, q = _split(x, y, c)
            out[k] += np.sum((mx - q.mean(0)) ** 2) / (p.var() + q.var() + 0.05)
    return out


def ref_di(feats, y):
    out = np.zeros(feats.shape[1])
    for k in range(feats.shape[1]):
        x = feats[:, k, :].astype(np.float64)
        d = x.shape[1]
        mx = x.mean(0)
        xc = x - mx
        s = xc.T @ xc
        sb = np.zeros((d, d))
        for c in np.unique(y):
            p = x[y == c]
            delta = p.mean(0) - mx
            sb += len(p) * np.outer(delta, delta)
        out[k] = np.trace(np.linalg.inv(s + 1e-4 * np.eye(d)) @ sb)
    return out


def ref_mmd(feats, y, batch=100):
    out = np.zeros(feats.shape[1])
    for k in range(feats.shape[1]):
        x = feats[:, k, :].astype(np.float64)
        scores = []
        for start in range(0, len(x), batch):
            xb, yb = x[start:start + batch], y[start:start + batch]
            per_class = []
            for c in np.unique(yb):
                p, q = xb[yb == c], xb[yb != c]
                if len(p) == 0 or len(q) == 0:
                    continue

                def kmean(a, b):
                    sq = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
                    return np.exp(-sq / 2).mean()

                per_class.append(kmean(p, p) + kmean(q, q) - 2 * kmean(p, q))
            if per_class:
                scores.append(np.mean(per_class))
        out[k] = np.mean(scores)
    return out


def ref_ep_func1(feats, y, weight):
    """EP_Func1 (evolved here) in its simplified closed form: Σ_c |μ_P − μ_Q| / sqrt(|Σ W_k / n_Q + 1e-4|)."""
    out = np.zeros(feats.shape[1])
    for k in range(feats.shape[1]):
        x = feats[:, k, :].astype(np.float64)
        w_sum = weight[k].astype(np.float64).sum()
        for c in np.unique(y):
            p, q = _split(x, y, c)
            out[k] += abs(p.mean() - q.mean()) / np.sqrt(abs(w_sum / len(q) + 1e-4))
    return out


def ref_ep_func2(feats, y, weight):
    """EP_Func2 (evolved here), per class: sqrt(|1/m_Q[0] + Σ_d (m_P⁴ + 0.05)·n_P·m_P·σ(W) + 1e-4|)/n_P
    + σ²_Q/(σ²_P + 0.05) + D·σ(W_k), summed over classes (σ: population std; D: positions per map)."""
    out = np.zeros(feats.shape[1])
    w_std = weight.astype(np.float64).std()
    for k in range(feats.shape[1]):
        x = feats[:, k, :].astype(np.float64)
        filter_std = weight[k].astype(np.float64).std()
        for c in np.unique(y):
            p, q = _split(x, y, c)
            m_p, m_q, n = p.mean(0), q.mean(0), len(p)
            inverse = 0.0 if m_q[0] == 0 else 1.0 / m_q[0]
            poly = np.dot(m_p ** 4 + 0.05, n * m_p * w_std)
            out[k] += (np.sqrt(abs(inverse + poly + 1e-4)) / n + q.var() / (p.var() + 0.05)
                       + x.shape[1] * filter_std)
    return out


FEATURE_REFS = {
    "AbsSNR": ref_abs_snr, "FDR": ref_fdr, "SymDiv": ref_sym_div, "Tstats": ref_tstats,
    "GA_Func1": ref_ga_func1, "GA_Func2": ref_ga_func2, "GA_Func3": ref_ga_func3, "GA_Func4": ref_ga_func4,
    "GA_inspired_1": ref_ga_inspired_1, "GA_inspired_2": ref_ga_inspired_2, "DI": ref_di, "MMD": ref_mmd,
}
WEIGHT_REFS = {"WL1": ref_wl1, "WL2": ref_wl2, "GeoMedian": ref_geo_median, "FPGM": ref_fpgm}
MIXED_REFS = {"EP_Func1": ref_ep_func1, "EP_Func2": ref_ep_func2}  # feature maps, labels and the layer's weight


def _random_layer(seed=0, n=240, c=6, d=9, classes=4):
    """Feature maps with class-dependent means and spreads, so every metric is non-degenerate."""
    g = np.random.default_rng(seed)
    y = g.integers(0, classes, n)
    shift = g.normal(0, 1, (classes, c, 1))
    scale = g.uniform(0.5, 2.0, (classes, c, 1))
    feats = np.maximum(g.normal(0, 1, (n, c, d)) * scale[y] + shift[y] + 0.3, 0).astype(np.float32)
    weight = g.normal(0, 1, (c, 3, 2, 2)).astype(np.float32)
    return feats, y, weight


def _close(actual, expected, rtol=RTOL):
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=rtol, atol=1e-10)


def test_every_named_metric_has_a_reference_or_is_special():
    covered = set(FEATURE_REFS) | set(WEIGHT_REFS) | set(MIXED_REFS) | {"BNScale", "Taylor", "random"}
    assert {m.name for m in builtin_metrics()} == covered


@pytest.mark.parametrize("name", sorted(FEATURE_REFS))
@pytest.mark.parametrize("seed", [0, 1])
def test_feature_metric_matches_reference_on_random_maps(name, seed):
    feats, y, weight = _random_layer(seed)
    expected = FEATURE_REFS[name](feats, y)
    m = get_metric(name)
    f, lab = torch.from_numpy(feats), torch.from_numpy(y)
    data = LayerData("layer", weight=torch.from_numpy(weight), features=f, labels=lab)
    _close(m.score(data), expected)
    if not m.needs.features:  # moment-only metrics: the streaming path gives the same numbers
        stats = ClassStats.from_features(f, lab, batch_size=37)
        _close(m.score(LayerData("layer", weight=torch.from_numpy(weight), stats=stats)), expected)


@pytest.mark.parametrize("name", sorted(WEIGHT_REFS))
@pytest.mark.parametrize("shape", [(6, 3, 2, 2), (9, 5), (4, 2, 3)])
def test_weight_metric_matches_reference(name, shape):
    w = np.random.default_rng(3).normal(0, 1, shape).astype(np.float32)
    _close(get_metric(name).score(LayerData("layer", weight=torch.from_numpy(w))), WEIGHT_REFS[name](w))


@pytest.mark.parametrize("name", sorted(MIXED_REFS))
@pytest.mark.parametrize("seed", [0, 1])
def test_mixed_metric_matches_reference_on_random_maps(name, seed):
    feats, y, weight = _random_layer(seed)
    data = LayerData("layer", features=torch.from_numpy(feats), labels=torch.from_numpy(y),
                     weight=torch.from_numpy(weight))
    _close(get_metric(name).score(data), MIXED_REFS[name](feats, y, weight))


def test_fpgm_tree_and_direct_implementation_agree():
    from evoprune.expr import evaluate

    w = torch.randn(7, 4, 3, 3)
    m = get_metric("FPGM")
    _close(evaluate(m.tree, weight=w), ref_fpgm(w.numpy()))
    _close(m.score(LayerData("l", weight=w)), ref_fpgm(w.numpy()))


def test_eq3_closed_form_reduction_agrees_with_tree():
    feats, y, _ = _random_layer(5, d=16)
    tree_scores = get_metric("eq3").score(LayerData("l", features=torch.from_numpy(feats), labels=torch.from_numpy(y)))
    _close(tree_scores, ref_ga_func2_closed_form(feats, y))
    _close(ref_ga_func2(feats, y), ref_ga_func2_closed_form(feats, y), rtol=1e-10)


def test_eq3_is_an_alias_of_ga_func2():
    assert get_metric("eq3") is get_metric("GA_Func2")
    assert get_metric("EQ3") is get_metric("ga_func2")


def test_mmd_averages_all_minibatches_not_the_last():
    feats, y, _ = _random_layer(2, n=250)  # 3 minibatches: 100, 100, 50
    full = ref_mmd(feats, y)
    last_only = ref_mmd(feats[200:], y[200:])
    got = get_metric("MMD").score(LayerData("l", features=torch.from_numpy(feats), labels=torch.from_numpy(y)))
    _close(got, full)
    assert not np.allclose(got.numpy(), last_only)


def test_ga_inspired_2_uses_class_c_negative_mean():
    feats, y, _ = _random_layer(4)
    got = get_metric("GA_inspired_2").score(LayerData("l", features=torch.from_numpy(feats), labels=torch.from_numpy(y)))
    # the official bug: one all-classes negative mean map (mean over classes of the negative means)
    buggy = np.zeros(feats.shape[1])
    for k in range(feats.shape[1]):
        x = feats[:, k, :].astype(np.float64)
        mq_all = np.mean([x[y != c].mean(0) for c in np.unique(y)], axis=0)
        for c in np.unique(y):
            p, q = x[y == c], x[y != c]
            buggy[k] += np.sum((x.mean(0) - mq_all) ** 2) / (p.var() + q.var() + 0.05)
    _close(got, ref_ga_inspired_2(feats, y))
    assert not np.allclose(got.numpy(), buggy)


def test_bn_scale_is_abs_gamma():
    gamma = torch.tensor([0.5, -2.0, 0.0, 1.5])
    got = get_metric("BNScale").score(LayerData("l", bn_weight=gamma))
    _close(got, np.abs(gamma.numpy()))
    with pytest.raises(ValueError, match="BatchNorm"):
        get_metric("BNScale").score(LayerData("l", weight=torch.ones(4, 2)))


def test_random_is_reproducible_per_layer_and_in_unit_interval():
    m = get_metric("random")
    a = m.score(LayerData("conv1", weight=torch.ones(50, 3)))
    b = m.score(LayerData("conv1", weight=torch.ones(50, 3)))
    c = m.score(LayerData("conv2", weight=torch.ones(50, 3)))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert bool(((a >= 0) & (a < 1)).all())


# ----------------------------------------------------------------------------- real activations


class _TinyNet(nn.Module):
    """conv → BN → ReLU → maxpool → conv → ReLU → flatten → fc → ReLU → fc."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 5, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(5)
        self.conv2 = nn.Conv2d(5, 6, 3)
        self.fc1 = nn.Linear(6 * 4 * 4, 12)
        self.fc2 = nn.Linear(12, 3)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = torch.relu(self.conv2(x))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))

    def manual_features(self, x):
        """The feature points, computed by hand (independent of the capture machinery)."""
        a1 = torch.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        a2 = torch.relu(self.conv2(a1))
        a3 = torch.relu(self.fc1(a2.flatten(1)))
        return {"conv1": a1, "conv2": a2, "fc1": a3}


def _tiny_setup(seed=0, n=150):
    torch.manual_seed(seed)
    net = _TinyNet()
    with torch.no_grad():  # non-trivial BN statistics
        net.bn1.running_mean.uniform_(-0.2, 0.2)
        net.bn1.running_var.uniform_(0.5, 1.5)
        net.bn1.weight.uniform_(-1.5, 1.5)
    net.eval()
    x = torch.rand(n, 1, 12, 12)
    y = torch.arange(n) % 3
    return net, x, y


def _as_np(t):
    return t.detach().reshape(t.shape[0], t.shape[1], -1).numpy()


@pytest.mark.parametrize("name", sorted(FEATURE_REFS))
def test_feature_metric_on_real_activations(name):
    net, x, y = _tiny_setup()
    with torch.no_grad():
        feats = {k: _as_np(v) for k, v in net.manual_features(x).items()}
    got = score_layers(net, name, x, y, batch_size=64)
    assert list(got) == ["conv1", "conv2", "fc1"]
    for layer, f in feats.items():
        _close(got[layer], FEATURE_REFS[name](f, y.numpy()))


@pytest.mark.parametrize("name", sorted(WEIGHT_REFS))
def test_weight_metric_on_real_layers(name):
    net, _, _ = _tiny_setup()
    got = score_layers(net, name)
    for layer in ("conv1", "conv2", "fc1"):
        _close(got[layer], WEIGHT_REFS[name](getattr(net, layer).weight.detach().numpy()))


def test_bn_scale_on_real_layers_finds_the_following_bn():
    net, _, _ = _tiny_setup()
    with pytest.raises(ValueError, match="BatchNorm"):
        score_layers(net, "BNScale")  # conv2 and fc1 have no BN
    got = score_layers(net, "BNScale", layers=["conv1"])
    _close(got["conv1"], np.abs(net.bn1.weight.detach().numpy()))


def test_taylor_on_real_activations():
    net, x, y = _tiny_setup(n=90)
    got = score_layers(net, "Taylor", x, y, batch_size=40)
    # reference: per-sample gradients of the summed loss w.r.t. hand-computed feature points
    a1 = torch.max_pool2d(torch.relu(net.bn1(net.conv1(x))), 2)
    a2 = torch.relu(net.conv2(a1))
    a3 = torch.relu(net.fc1(a2.flatten(1)))
    loss = nn.functional.cross_entropy(net.fc2(a3), y, reduction="sum")
    grads = torch.autograd.grad(loss, [a1, a2, a3])
    for layer, a, g in zip(("conv1", "conv2", "fc1"), (a1, a2, a3), grads):
        a_np, g_np = _as_np(a), _as_np(g)
        expected = np.zeros(a_np.shape[1])
        for k in range(a_np.shape[1]):
            for n in range(a_np.shape[0]):
                expected[k] += abs(np.mean(a_np[n, k].astype(np.float64) * g_np[n, k]))
        _close(got[layer], expected / a_np.shape[0], rtol=1e-4)
    assert all(p.grad is None for p in net.parameters())


@pytest.fixture(scope="module")
def zoo_lenet5():
    models = pytest.importorskip("evoprune.models")
    torch.manual_seed(0)
    net = models.build_model("lenet5", in_channels=1, num_classes=10, image_size=(28, 28)).eval()
    x = torch.rand(100, 1, 28, 28)
    y = torch.arange(100) % 10
    with torch.no_grad():  # the paper's feature points (spec §4.1), by hand
        a1 = net.pool(net.relu(net.conv1(x)))
        a2 = net.pool(net.relu(net.conv2(a1)))
        a3 = net.relu(net.fc1(a2.flatten(1)))
    return net, x, y, {"conv1": _as_np(a1), "conv2": _as_np(a2), "fc1": _as_np(a3)}


@pytest.mark.parametrize("name", sorted(FEATURE_REFS))
def test_lenet5_from_the_zoo_matches_reference(zoo_lenet5, name):
    net, x, y, feats = zoo_lenet5
    got = score_layers(net, name, x, y, batch_size=40)
    for layer, f in feats.items():
        _close(got[layer], FEATURE_REFS[name](f, y.numpy()))
