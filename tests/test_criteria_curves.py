"""Accuracy-vs-MACs curves: one architecture per ratio for every metric, the lowest-scoring channels removed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from evoprune.criteria import group_scores, metric_curve
from evoprune.data import load_dataset
from evoprune.errors import ConfigError
from evoprune.models import build_model
from evoprune.prune import ChannelPruner, PruneSchedule
from evoprune.train import evaluate


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", num_samples=240, num_classes=4, image_size=12)


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = build_model("resnet_cifar", in_channels=1, num_classes=4, image_size=(12, 12), depth=8, width=0.5)
    g = torch.Generator().manual_seed(1)
    for m in model.modules():  # non-trivial BatchNorm statistics, so that recalibration changes something
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def test_points_match_channel_pruner_and_share_architectures(data, resnet) -> None:
    ratios = (0.2, 0.5)
    l1 = metric_curve(resnet, "l1", data, ratios=ratios, scoring_samples=80, recalibration_batches=2,
                      recalibration_batch_size=16, device="cpu")
    rnd = metric_curve(resnet, "random", data, ratios=ratios, scoring_samples=80, recalibration_batches=2,
                       recalibration_batch_size=16, device="cpu")
    assert [p.ratio for p in l1] == list(ratios)
    assert [(p.macs, p.params) for p in l1] == [(p.macs, p.params) for p in rnd]  # only which channels differs
    assert l1[0].macs > l1[1].macs
    for point in l1:  # the same channels as the pruner's one-shot cut with the same scores
        pruner = ChannelPruner("l1", schedule=PruneSchedule(ratio=point.ratio), finetune=None, scoring_samples=80,
                               latency_batch_sizes=(), evaluate_test=False, evaluate_before=False, device="cpu")
        pruned = pruner.prune(resnet, data).model_
        reference = evaluate(pruned, data.test.x, data.test.y)
        assert point.loss_pruned == pytest.approx(reference.loss, rel=1e-5)
        assert point.accuracy_pruned == pytest.approx(reference.accuracy)
        assert point.macs == pruner.result_.after.macs
        assert point.loss_recalibrated != pytest.approx(point.loss_pruned)


def test_given_scores_pick_the_lowest_channels(data, resnet) -> None:
    scores = group_scores(resnet, "l1", data, samples=80)
    flipped = {name: -s for name, s in scores.items()}
    a = metric_curve(resnet, "l1", data, ratios=(0.5,), scores=scores, recalibration_batches=1, device="cpu")
    b = metric_curve(resnet, "l1", data, ratios=(0.5,), scores=flipped, recalibration_batches=1, device="cpu")
    assert a[0].macs == b[0].macs and a[0].loss_pruned != pytest.approx(b[0].loss_pruned)


def test_without_batchnorm_recalibration_changes_nothing(data) -> None:
    torch.manual_seed(0)
    model = build_model("mlp", in_channels=1, num_classes=4, image_size=(12, 12)).eval()
    (point,) = metric_curve(model, "l1", data, ratios=(0.3,), scoring_samples=40, device="cpu")
    assert (point.loss_recalibrated, point.accuracy_recalibrated) == (point.loss_pruned, point.accuracy_pruned)


def test_no_ratio_raises(data, resnet) -> None:
    with pytest.raises(ConfigError):
        metric_curve(resnet, "l1", data, ratios=())


def test_a_group_too_narrow_for_the_ratio_keeps_every_channel() -> None:
    """floor(0.1 · 8) = 0: the MobileNetV2-style net's 8-channel group loses nothing, the others lose 10%."""
    from evoprune.criteria.curves import prune_uniform
    from evoprune.prune import ModelGraph

    model = build_model("mobilenetv2", width=0.5).eval()
    example = torch.zeros(1, 1, 28, 28)
    groups = ModelGraph(model, example).prunable_groups()
    scores = {g.name: torch.arange(g.width, dtype=torch.float32) for g in groups}
    pruned = prune_uniform(model, scores, 0.1, example)
    after = {g.name: g.width for g in ModelGraph(pruned, example).prunable_groups()}
    for group in groups:
        assert after[group.name] == group.width - int(0.1 * group.width)
    assert any(g.width < 10 for g in groups)
