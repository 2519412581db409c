"""Schedules: the paper's presets give the paper's widths, ratios count from the original width, min width holds,
global ranking spends the same budget, and bad tables or ratios fail with a helpful message."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from evoprune.data import load_dataset
from evoprune.models import build_model
from evoprune.prune import ChannelPruner, ModelGraph, PruneSchedule, PruningError, get_preset, resolve


def weight_l1(model: nn.Module, x: torch.Tensor, y: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
    return {n: model.get_submodule(n).weight.detach().flatten(1).abs().sum(1) for n in layers}


@pytest.fixture(scope="module")
def data28():
    return load_dataset("synthetic", num_samples=160, num_classes=4, image_size=28)


def _pruner(schedule, **kw) -> ChannelPruner:
    return ChannelPruner(weight_l1, schedule=schedule, finetune=None, latency_batch_sizes=(), scoring_samples=32, **kw)


def test_lenet5_paper_schedule_gives_5_11_40_in_three_steps(data28) -> None:
    pruner = _pruner("lenet5_paper").prune(build_model("lenet5", num_classes=4), data28)
    steps = pruner.result_.steps
    assert [s.removed for s in steps] == [
        {"conv1": 10, "conv2": 30, "fc1": 400}, {"conv1": 5, "conv2": 8, "fc1": 55}, {"conv2": 1, "fc1": 5}]
    assert [s.widths for s in steps][-1] == {"conv1": 5, "conv2": 11, "fc1": 40}
    m = pruner.model_
    assert (m.conv1.out_channels, m.conv2.out_channels, m.fc1.out_features, m.fc1.in_features) == (5, 11, 40, 11 * 16)
    assert pruner.result_.params_kept == pytest.approx(0.0209, abs=5e-4)  # the paper's 2.08 % of params kept
    assert len(pruner.pruning_history_) == 8  # 3 + 3 + 2 removals


def test_lenet5_paper_schedule_refuses_another_model(data28) -> None:
    with pytest.raises(PruningError, match="paper's LeNet-5"):
        _pruner("lenet5_paper").prune(build_model("vgg", num_classes=4, depth=11, width=0.25), data28)


def test_vgg16_paper_preset_removes_floor_20_percent_twice() -> None:
    model = build_model("vgg", in_channels=3, num_classes=10, image_size=(32, 32), depth=16, classifier_hidden=512)
    graph = ModelGraph(model, torch.zeros(1, 3, 32, 32))
    groups = graph.prunable_groups()
    schedule = get_preset("vgg16_paper").build(groups)
    final = resolve(schedule, groups, graph.all_groups()).final_widths()
    # The paper's final widths (spec §4.2): 40, 40, 78, 78, 154 x3, 308 x6, fc1 308.
    assert list(final.values()) == [40, 40, 78, 78, 154, 154, 154] + [308] * 6 + [308]


def test_resnet56_paper_preset_prunes_only_block_inner_channels() -> None:
    model = build_model("resnet_cifar", in_channels=3, num_classes=100, image_size=(32, 32), depth=56)
    graph = ModelGraph(model, torch.zeros(1, 3, 32, 32))
    groups = graph.prunable_groups()
    resolved = resolve(get_preset("resnet56_paper").build(groups), groups, graph.all_groups())
    assert len(resolved.removals) == 27
    assert all(name.endswith(".conv1") and name.startswith("layer") for name in resolved.removals)
    assert sorted({(resolved.original[n], r[0]) for n, r in resolved.removals.items()}) == [(16, 6), (32, 12), (64, 25)]


def test_ratio_over_steps_counts_from_the_original_width() -> None:
    model = build_model("lenet5")
    graph = ModelGraph(model, torch.zeros(1, 1, 28, 28))
    groups = graph.prunable_groups()
    resolved = resolve(PruneSchedule(ratio=0.6, steps=3), groups, graph.all_groups())
    assert resolved.removals["conv2"] == (10, 10, 10)  # 0.6 * 50 = 30, not 29
    assert resolved.removals["conv1"] == (4, 4, 4)
    assert resolved.final_widths() == {"conv1": 8, "conv2": 20, "fc1": 200}


def test_ratio_table_globs_and_unlisted_layers(data28) -> None:
    model = build_model("resnet_cifar", num_classes=4, depth=20, width=0.5)
    data = load_dataset("synthetic", num_samples=120, num_classes=4, image_size=12)
    pruner = _pruner(PruneSchedule(ratios={"layer3.*.conv1": 0.5, "conv1": 0.25})).prune(model, data)
    m = pruner.model_
    assert [b.conv1.out_channels for b in m.layer3] == [16] * 3
    assert [b.conv1.out_channels for b in m.layer2] == [16] * 3  # unlisted: untouched
    assert m.conv1.out_channels == m.layer1[0].conv2.out_channels == 6  # residual stream of stage 1: 8 → 6


def test_min_width_clamps_and_is_reported(data28) -> None:
    pruner = _pruner(PruneSchedule(ratio=0.9, min_channels=4)).prune(build_model("lenet5", num_classes=4), data28)
    m = pruner.model_
    assert (m.conv1.out_channels, m.conv2.out_channels, m.fc1.out_features) == (4, 5, 50)
    assert pruner.result_.clamped == ["conv1"]


def test_global_ranking_spends_the_same_budget_and_respects_min_width(data28) -> None:
    local = _pruner(PruneSchedule(ratio=0.5)).prune(build_model("lenet5", num_classes=4), data28)
    torch.manual_seed(0)
    model = build_model("lenet5", num_classes=4)
    with torch.no_grad():
        model.conv1.weight.mul_(100.0)  # make conv1 channels look important, fc1 ones cheap
    pruner = _pruner(PruneSchedule(ratio=0.5, global_ranking=True, min_channels=3), coupling="root").prune(model, data28)
    widths = pruner.result_.after.widths
    assert sum(widths.values()) == sum(local.result_.after.widths.values())
    assert widths["conv1"] == 20 and min(widths.values()) >= 3


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        (dict(ratio=1.0), r"\[0, 1\) \(1 would remove every channel\)"),
        (dict(ratios={"conv1": 1.5}), "ratio of 'conv1' must be in"),
        (dict(counts={"conv1": (10, 10)}, steps=2), "would remove every channel of conv1 \\(20 channels\\)"),
        (dict(counts={"conv1": (3,)}, steps=2), "one per step"),
        (dict(min_channels=0), "min_channels must be"),
        (dict(macs_target=1.5), "fraction of MACs to keep"),
    ],
)
def test_bad_ratios_fail_clearly(schedule, message, data28) -> None:
    with pytest.raises(PruningError, match=message):
        _pruner(PruneSchedule(**schedule)).prune(build_model("lenet5", num_classes=4), data28)


def test_a_ratio_just_below_one_still_leaves_a_channel(data28) -> None:
    pruner = _pruner(PruneSchedule(ratios={"conv1": 0.99})).prune(build_model("lenet5", num_classes=4), data28)
    assert pruner.model_.conv1.out_channels == 1 and pruner.model_.conv2.out_channels == 50


def test_unknown_layer_lists_the_valid_ones(data28) -> None:
    with pytest.raises(PruningError) as info:
        _pruner(PruneSchedule(ratios={"conv3": 0.5})).prune(build_model("lenet5", num_classes=4), data28)
    text = str(info.value)
    assert "unknown layer 'conv3'" in text and "conv1, conv2, fc1" in text and "Did you mean" in text
    with pytest.raises(PruningError, match="is ignored"):
        _pruner(PruneSchedule(ratios={"fc2": 0.5})).prune(build_model("lenet5", num_classes=4), data28)
    with pytest.raises(PruningError, match="unknown layer 'conv9' in the ignore list"):
        _pruner(PruneSchedule(ratio=0.5, ignore=("conv9",))).prune(build_model("lenet5", num_classes=4), data28)


def test_coupled_layers_with_different_ratios_are_rejected() -> None:
    data = load_dataset("synthetic", num_samples=120, num_classes=4, image_size=12)
    schedule = PruneSchedule(ratios={"conv1": 0.5, "layer1.0.conv2": 0.25})
    with pytest.raises(PruningError, match="coupled layers conv1, layer1.0.conv2"):
        _pruner(schedule).prune(build_model("resnet_cifar", num_classes=4, width=0.5), data)


def test_ignored_layers_keep_their_width(data28) -> None:
    pruner = _pruner(PruneSchedule(ratio=0.5, ignore=("conv*",))).prune(build_model("lenet5", num_classes=4), data28)
    assert pruner.result_.after.widths == {"fc1": 250}
    assert pruner.model_.conv2.out_channels == 50


def test_unknown_preset_suggests() -> None:
    with pytest.raises(PruningError, match="Did you mean 'lenet5_paper'"):
        get_preset("lenet_paper")


def test_preset_with_ignored_layer_and_global_ranking(data28) -> None:
    from evoprune.prune import PresetSchedule

    model = build_model("vgg", num_classes=4, depth=11, width=0.25)
    schedule = PresetSchedule("vgg16_paper", ignore=("features.0",), global_ranking=True)
    pruner = _pruner(schedule).prune(model, data28)
    assert pruner.model_.features[0].out_channels == 16
    assert pruner.schedule_.global_ranking and pruner.schedule_.steps == 2
    before = sum(pruner.result_.before.widths.values())
    after = sum(pruner.result_.after.widths.values())
    assert before - after == 2 * sum(int(0.2 * w) for w in pruner.result_.before.widths.values())
