"""Structural pruning really shrinks lenet5, vgg, a residual resnet and a concatenation model, which still run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from evoprune.data import load_dataset
from evoprune.models import build_model
from evoprune.prune import ChannelPruner, ModelGraph, PruneSchedule


def weight_l1(model: nn.Module, x: torch.Tensor, y: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
    """Data-free test scorer: L1 norm of each output channel's weights."""
    return {n: model.get_submodule(n).weight.detach().flatten(1).abs().sum(1) for n in layers}


class ConcatNet(nn.Module):
    """Two branches concatenated along channels, then a conv reading the concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 6, 3, padding=1)
        self.b = nn.Conv2d(1, 10, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.c = nn.Conv2d(16, 12, 3, padding=1)
        self.head = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(torch.cat([self.a(x), self.b(x)], dim=1)))
        return self.head(torch.relu(self.c(h)).mean((2, 3)))


@pytest.fixture(scope="module")
def data28():
    return load_dataset("synthetic", num_samples=240, num_classes=4, image_size=28)


@pytest.fixture(scope="module")
def data12():
    return load_dataset("synthetic", num_samples=240, num_classes=4, image_size=12)


def _prune(model: nn.Module, data, schedule: PruneSchedule) -> ChannelPruner:
    return ChannelPruner(weight_l1, schedule=schedule, finetune=None, latency_batch_sizes=(), scoring_samples=64).prune(model, data)


def _check_smaller_and_runs(pruner: ChannelPruner, original: nn.Module, data) -> None:
    result = pruner.result_
    assert result.after.params < result.before.params
    assert result.after.macs < result.before.macs
    assert sum(p.numel() for p in pruner.model_.parameters()) == result.after.params
    assert sum(p.numel() for p in original.parameters()) == result.before.params  # copy=True left it alone
    out = pruner.model_(data.test.x[:5])
    assert out.shape == (5, data.num_classes) and torch.isfinite(out).all()


def test_lenet5_uniform_ratio_shrinks_every_hidden_layer(data28) -> None:
    model = build_model("lenet5", num_classes=4)
    pruner = _prune(model, data28, PruneSchedule(ratio=0.5))
    m = pruner.model_
    assert (m.conv1.out_channels, m.conv2.in_channels, m.conv2.out_channels) == (10, 10, 25)
    assert (m.fc1.in_features, m.fc1.out_features, m.fc2.in_features, m.fc2.out_features) == (25 * 16, 250, 250, 4)
    _check_smaller_and_runs(pruner, model, data28)


def test_lenet5_keeps_the_highest_scoring_channels(data28) -> None:
    model = build_model("lenet5", num_classes=4)
    norms = model.conv1.weight.detach().flatten(1).abs().sum(1)
    keep = torch.sort(torch.argsort(norms, descending=True)[:10]).values
    pruned = _prune(model, data28, PruneSchedule(ratio=0.5)).model_
    assert torch.equal(pruned.conv1.weight, model.conv1.weight[keep])
    assert torch.equal(pruned.conv2.weight, model.conv2.weight[:, keep][torch.sort(torch.argsort(
        model.conv2.weight.detach().flatten(1).abs().sum(1), descending=True)[:25]).values])


def test_vgg_small_width_convs_and_batchnorms_shrink_together(data28) -> None:
    model = build_model("vgg", num_classes=4, depth=11, width=0.25)
    pruner = _prune(model, data28, PruneSchedule(ratio=0.25))
    convs = [m for m in pruner.model_.features if isinstance(m, nn.Conv2d)]
    bns = [m for m in pruner.model_.features if isinstance(m, nn.BatchNorm2d)]
    originals = [m.out_channels for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [w - int(0.25 * w) for w in originals]
    assert [b.num_features for b in bns] == [c.out_channels for c in convs]
    assert [c.in_channels for c in convs[1:]] == [c.out_channels for c in convs[:-1]]
    assert pruner.model_.classifier[0].in_features == convs[-1].out_channels
    _check_smaller_and_runs(pruner, model, data28)


def test_resnet20_residual_groups_stay_consistent(data12) -> None:
    model = build_model("resnet_cifar", num_classes=4, depth=20, width=0.5)
    graph = ModelGraph(model, data12.train.x[:1])
    residual = [g for g in graph.prunable_groups() if len(g.members) > 1]
    assert len(residual) == 3  # one residual stream per stage
    assert residual[0].members == ("conv1", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2")
    pruner = _prune(model, data12, PruneSchedule(ratio=0.5))
    m = pruner.model_
    for stage, width in zip((m.layer1, m.layer2, m.layer3), (4, 8, 16)):
        for block in stage:
            assert block.conv1.out_channels == block.bn1.num_features == block.conv2.in_channels == width
            assert block.conv2.out_channels == block.bn2.num_features == width
    assert m.layer2[0].shortcut[0].out_channels == 8 and m.layer2[0].shortcut[0].in_channels == 4
    assert m.fc.in_features == 16
    _check_smaller_and_runs(pruner, model, data12)


def test_concatenation_model_prunes_both_branches_and_the_consumer(data12) -> None:
    torch.manual_seed(0)
    model = ConcatNet()
    graph = ModelGraph(model, data12.train.x[:1])
    assert [g.name for g in graph.prunable_groups()] == ["a", "b", "c"]
    pruner = _prune(model, data12, PruneSchedule(ratio=0.5))
    m = pruner.model_
    assert (m.a.out_channels, m.b.out_channels, m.bn.num_features, m.c.in_channels, m.c.out_channels) == (3, 5, 8, 8, 6)
    # The consumer keeps exactly the input columns of the surviving channels of each branch.
    keep_a = torch.sort(torch.argsort(model.a.weight.detach().flatten(1).abs().sum(1), descending=True)[:3]).values
    keep_b = torch.sort(torch.argsort(model.b.weight.detach().flatten(1).abs().sum(1), descending=True)[:5]).values
    keep_c = torch.sort(torch.argsort(model.c.weight.detach().flatten(1).abs().sum(1), descending=True)[:6]).values
    columns = torch.cat([keep_a, keep_b + 6])
    assert torch.equal(m.c.weight, model.c.weight[keep_c][:, columns])
    assert torch.equal(m.bn.running_mean, model.bn.running_mean[columns])
    _check_smaller_and_runs(pruner, model, data12)


def test_in_place_pruning_changes_the_given_model(data12) -> None:
    model = build_model("lenet5", num_classes=4, image_size=(16, 16))
    data = load_dataset("synthetic", num_samples=120, num_classes=4, image_size=16)
    pruner = ChannelPruner(weight_l1, schedule=PruneSchedule(ratio=0.5), finetune=None, latency_batch_sizes=(),
                           copy=False).prune(model, data)
    assert pruner.model_ is model and model.conv1.out_channels == 10


class SeparableNet(nn.Module):
    """A depthwise-separable block: 1x1 expand conv, 3x3 depthwise conv (groups = channels), 1x1 projection."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.expand = nn.Conv2d(8, 24, 1)
        self.bn1 = nn.BatchNorm2d(24)
        self.dw = nn.Conv2d(24, 24, 3, padding=1, groups=24)
        self.bn2 = nn.BatchNorm2d(24)
        self.project = nn.Conv2d(24, 8, 1)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = self.project(torch.relu(self.bn2(self.dw(torch.relu(self.bn1(self.expand(h)))))))
        return self.head(h.mean((2, 3)))


def test_depthwise_conv_is_a_member_of_its_expand_convs_group(data12) -> None:
    """The depthwise conv's output channels are its input's: removing an expand channel removes both, so the
    expand conv and the depthwise conv form one group (named by the expand conv, the first in forward order)."""
    model = SeparableNet()
    groups = {g.name: g for g in ModelGraph(model, data12.train.x[:1]).prunable_groups()}
    assert groups.keys() == {"stem", "expand", "project"}
    assert groups["expand"].members == ("expand", "dw") and groups["expand"].width == 24
    pruner = _prune(model, data12, PruneSchedule(ratio=0.25))
    m = pruner.model_
    assert (m.expand.out_channels, m.dw.in_channels, m.dw.out_channels, m.dw.groups, m.project.in_channels) == (18,) * 5
    _check_smaller_and_runs(pruner, model, data12)
