"""The scoring engine: feature points, scoring sets, passes, memory bound, model state, errors."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch
from torch import nn

import evoprune.metrics.scoring as scoring
from evoprune.metrics import (
    Needs,
    collect_layer_data,
    feature_points,
    get_metric,
    iter_layer_data,
    prunable_layers,
    score_layers,
    scoring_set,
)
from evoprune.models import build_model


@pytest.fixture(scope="module")
def lenet():
    torch.manual_seed(0)
    return build_model("lenet5", in_channels=1, num_classes=10, image_size=(28, 28)).eval()


@pytest.fixture(scope="module")
def small_vgg():
    torch.manual_seed(0)
    return build_model("vgg", depth=16, width=0.125, in_channels=3, num_classes=10, image_size=(32, 32)).eval()


def test_lenet5_feature_points_match_the_paper(lenet):
    """Spec §4.1: conv1/conv2 post-ReLU post-pool (D = 144, 16), fc1 post-ReLU (D = 1); fc2 not prunable."""
    assert prunable_layers(lenet) == ["conv1", "conv2", "fc1"]
    pts = feature_points(lenet, ["conv1", "conv2", "fc1"])
    assert pts["conv1"].chain == ("relu (ReLU)", "pool (MaxPool2d)")
    assert pts["fc1"].chain == ("relu (ReLU)",)
    x, y = torch.rand(20, 1, 28, 28), torch.arange(20) % 10
    data = collect_layer_data(lenet, None, x, y, needs=Needs(stats=True, labels=True))
    assert {k: d.stats.positions for k, d in data.items()} == {"conv1": 144, "conv2": 16, "fc1": 1}
    assert {k: d.stats.num_channels for k, d in data.items()} == {"conv1": 20, "conv2": 50, "fc1": 500}


def test_vgg16_feature_points_and_bn(small_vgg):
    layers = prunable_layers(small_vgg)
    assert len(layers) == 13 and all(n.startswith("features.") for n in layers)
    pts = feature_points(small_vgg, layers)
    for name in layers:
        idx = int(name.split(".")[1])
        assert pts[name].bn == f"features.{idx + 1}"
    x, y = torch.rand(8, 3, 32, 32), torch.arange(8) % 10
    data = collect_layer_data(small_vgg, layers, x, y, needs=Needs(stats=True))
    # the paper's D per VGG-16 layer (spec §4.2), post-pool where a pool follows
    assert [data[n].stats.positions for n in layers] == [1024, 256, 256, 64, 64, 64, 16, 16, 16, 4, 4, 4, 1]


def test_d2l_lenet_and_mlp_feature_points():
    torch.manual_seed(0)
    d2l = build_model("lenet5_d2l", in_channels=1, num_classes=10, image_size=(28, 28))
    layers = prunable_layers(d2l)
    pts = feature_points(d2l, layers)
    first = pts[layers[0]].chain
    assert any("Sigmoid" in c or "sigmoid" in c for c in first) and any("AvgPool" in c for c in first)
    mlp = build_model("mlp", in_channels=1, num_classes=10, image_size=(8, 8))
    layers = prunable_layers(mlp)
    assert layers and all(feature_points(mlp, layers)[n].method == "fx" for n in layers)
    x, y = torch.rand(12, 1, 8, 8), torch.arange(12) % 10
    assert all(torch.isfinite(s).all() for s in score_layers(mlp, "eq3", x, y).values())


def test_vgg_with_hidden_classifier_prunes_the_hidden_layer():
    m = build_model("vgg", depth=11, width=0.125, in_channels=3, num_classes=10, image_size=(32, 32),
                    classifier_hidden=16)
    assert prunable_layers(m)[-1] == "classifier.0"


def test_resnet_feature_points_stop_at_residual_adds():
    torch.manual_seed(0)
    m = build_model("resnet_cifar", depth=20, width=0.25, in_channels=3, num_classes=10, image_size=(16, 16)).eval()
    layers = prunable_layers(m)
    assert "fc" not in layers and len(layers) == 19 + 2  # 19 convs + 2 projection shortcuts
    pts = feature_points(m, layers)
    assert pts["layer1.0.conv2"].chain == ("layer1.0.bn2 (BatchNorm2d)",)  # the add ends the chain
    assert pts["layer1.0.conv1"].chain == ("layer1.0.bn1 (BatchNorm2d)", "layer1.0.relu (ReLU)")
    x, y = torch.rand(30, 3, 16, 16), torch.arange(30) % 10
    for metric in ("eq3", "Taylor", "BNScale"):
        scores = score_layers(m, metric, x, y, batch_size=16)
        assert list(scores) == layers
        assert all(torch.isfinite(s).all() for s in scores.values())


def test_scoring_set_is_balanced_and_seeded():
    y = torch.cat([torch.full((n,), c) for c, n in enumerate([50, 40, 3, 60])])
    x = torch.arange(len(y)).float()[:, None]
    xs, ys = scoring_set(x, y, size=40, seed=1)
    counts = torch.bincount(ys, minlength=4).tolist()
    assert sum(counts) == 40 and counts[2] == 3 and min(counts[0], counts[1], counts[3]) >= 10
    assert torch.equal(y[xs[:, 0].long()], ys)  # pairs stay aligned
    assert len(set(xs[:, 0].tolist())) == 40  # no repeats
    xs2, _ = scoring_set(x, y, size=40, seed=1)
    xs3, _ = scoring_set(x, y, size=40, seed=2)
    assert torch.equal(xs, xs2) and not torch.equal(xs, xs3)
    xa, ya = scoring_set(x, y, size=10_000)
    assert len(ya) == len(y)


def test_iter_layer_data_keeps_one_layer_of_activations_alive(small_vgg):
    x, y = torch.rand(24, 3, 32, 32), torch.arange(24) % 10
    refs = []
    for data in iter_layer_data(small_vgg, None, x, y, needs=Needs(features=True, labels=True), batch_size=10):
        assert data.features.shape[0] == 24
        gc.collect()
        assert all(r() is None for r in refs), "a previous layer's feature maps are still alive"
        refs.append(weakref.ref(data.features))
        del data
    assert len(refs) == 13


def test_score_layers_never_holds_two_layers_of_maps(small_vgg, monkeypatch):
    refs: list[weakref.ref] = []
    peak = [0]
    original = scoring._LayerBuffer.sink

    def tracking_sink(self, key, t):
        try:
            original(self, key, t)  # stores the batch, then ends the forward pass
        finally:
            if self.features is not None and not any(r() is self.features for r in refs):
                refs.append(weakref.ref(self.features))
            peak[0] = max(peak[0], sum(r() is not None for r in refs))

    monkeypatch.setattr(scoring._LayerBuffer, "sink", tracking_sink)
    x, y = torch.rand(20, 3, 32, 32), torch.arange(20) % 10
    scores = score_layers(small_vgg, "MMD", x, y, batch_size=8)
    assert len(scores) == 13 and len(refs) == 13 and peak[0] == 1


def test_streaming_pass_stops_after_the_last_scored_layer(lenet):
    calls = []
    h = lenet.fc2.register_forward_hook(lambda *a: calls.append(1))
    try:
        x, y = torch.rand(30, 1, 28, 28), torch.arange(30) % 10
        score_layers(lenet, "eq3", x, y, batch_size=10)
        assert calls == []  # fc2 never ran: each forward ended after fc1's feature point
        score_layers(lenet, "Taylor", x, y, batch_size=10)
        assert len(calls) == 3  # gradients need the loss
    finally:
        h.remove()


def test_model_state_is_left_untouched(lenet):
    lenet.train()
    before = {k: v.clone() for k, v in lenet.state_dict().items()}
    x, y = torch.rand(16, 1, 28, 28), torch.arange(16) % 10
    for metric in ("eq3", "Taylor", "DI"):
        score_layers(lenet, metric, x, y, batch_size=8)
    assert lenet.training
    assert all(torch.equal(before[k], v) for k, v in lenet.state_dict().items())
    assert all(p.grad is None for p in lenet.parameters())
    lenet.eval()


def test_scores_do_not_depend_on_batch_size(lenet):
    x, y = torch.rand(45, 1, 28, 28), torch.arange(45) % 10
    for metric in ("eq3", "DI", "Taylor"):
        a = score_layers(lenet, metric, x, y, batch_size=45)
        b = score_layers(lenet, metric, x, y, batch_size=7)
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-7)  # float32 convs differ by batch


def test_point_output_reads_the_raw_layer_output(lenet):
    x, y = torch.rand(10, 1, 28, 28), torch.arange(10) % 10
    data = collect_layer_data(lenet, ["conv1"], x, y, needs=Needs(features=True), point="output")
    with torch.no_grad():
        raw = lenet.conv1(x)
    torch.testing.assert_close(data["conv1"].features, raw.reshape(10, 20, -1))


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        h = self.conv(x)
        if h.sum() > 0:  # data-dependent control flow: torch.fx cannot trace this
            h = torch.relu(h)
        return self.fc(h.flatten(1))


def test_untraceable_models_fall_back_to_layer_outputs():
    torch.manual_seed(0)
    m = _Untraceable().eval()
    x, y = torch.rand(12, 1, 8, 8), torch.arange(12) % 3
    with pytest.warns(UserWarning, match="could not trace"):
        assert prunable_layers(m) == ["conv"]
    with pytest.warns(UserWarning, match="could not trace"):
        data = collect_layer_data(m, ["conv"], x, y, needs=Needs(features=True))
    with torch.no_grad():
        torch.testing.assert_close(data["conv"].features, m.conv(x).reshape(12, 4, -1))


def test_errors_are_clear(lenet):
    x = torch.rand(8, 1, 28, 28)
    with pytest.raises(ValueError, match="needs labels"):
        score_layers(lenet, "eq3", x)
    with pytest.raises(ValueError, match="scoring set"):
        score_layers(lenet, "AbsSNR")
    with pytest.raises(KeyError, match="no module named 'conv9'"):
        score_layers(lenet, "WL1", layers=["conv9"])
    with pytest.raises(TypeError, match="not a Conv1d/2d/3d or Linear"):
        score_layers(lenet, "WL1", layers=["pool"])


def test_data_free_metrics_need_no_data(lenet):
    scores = score_layers(lenet, "WL1")
    np.testing.assert_allclose(scores["conv2"].numpy(), lenet.conv2.weight.detach().abs().sum((1, 2, 3)).numpy(),
                               rtol=1e-6)


def test_formula_strings_score_like_named_metrics(lenet):
    x, y = torch.rand(20, 1, 28, 28), torch.arange(20) % 10
    a = score_layers(lenet, "AbsSNR", x, y)
    b = score_layers(lenet, get_metric("AbsSNR").formula, x, y)
    for k in a:
        assert torch.equal(a[k], b[k])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_scoring_on_gpu_matches_cpu(small_vgg):
    import copy

    x, y = torch.rand(40, 3, 32, 32), torch.arange(40) % 10
    cpu = score_layers(small_vgg, "eq3", x, y)
    gpu = score_layers(copy.deepcopy(small_vgg).cuda(), "eq3", x, y)
    for k in cpu:
        assert gpu[k].is_cuda
        torch.testing.assert_close(gpu[k].cpu(), cpu[k], rtol=1e-4, atol=1e-6)

