"""MetricImportance: a Torch-Pruning importance that scores once per step, maps coupled layers onto the root,
handles non-finite scores, and plugs into Torch-Pruning's own pruner."""

from __future__ import annotations

import math
import typing
import warnings

import pytest
import torch
import torch_pruning as tp
from torch import nn

from evoprune.cli import build_parser
from evoprune.data import load_dataset
from evoprune.errors import EvopruneError
from evoprune.evolve.config import TaskConfig
from evoprune.metrics import UnscorableLayerError
from evoprune.models import build_model
from evoprune.prune import (
    ChannelPruner,
    MetricImportance,
    ModelGraph,
    PruneSchedule,
    PruningError,
    balanced_scoring_set,
)
from evoprune.prune.importance import COUPLINGS


def fixed_scores(table: dict[str, torch.Tensor]):
    def scorer(model: nn.Module, x: torch.Tensor, y: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        return {n: table[n] for n in layers}

    return scorer


def weight_l1(model: nn.Module, x: torch.Tensor, y: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
    return {n: model.get_submodule(n).weight.detach().flatten(1).abs().sum(1) for n in layers}


def test_balanced_scoring_set_is_balanced_and_seeded() -> None:
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    x = torch.arange(100).float().view(100, 1, 1, 1)
    xs, ys = balanced_scoring_set(x, y, 30, seed=3)
    assert torch.bincount(ys).tolist() == [10, 10, 10]
    assert torch.equal(balanced_scoring_set(x, y, 30, seed=3)[0], xs)
    assert not torch.equal(balanced_scoring_set(x, y, 30, seed=4)[0], xs)


def test_residual_group_combines_member_scores_after_scaling() -> None:
    model = build_model("resnet_cifar", num_classes=4, depth=8, width=0.25)  # one block per stage, stem 4 channels
    graph = ModelGraph(model, torch.zeros(1, 1, 12, 12))
    group = next(g for g in graph.prunable_groups() if len(g.members) > 1)
    assert group.members == ("conv1", "layer1.0.conv2")
    table = {n: torch.rand(model.get_submodule(n).weight.shape[0]) for n, m in model.named_modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))}
    table["conv1"] = torch.tensor([1.0, 2.0, 3.0, 6.0])  # mean 3
    table["layer1.0.conv2"] = torch.tensor([40.0, 10.0, 20.0, 10.0])  # mean 20
    x, y = torch.zeros(8, 1, 12, 12), torch.arange(8) % 4
    mean = MetricImportance(fixed_scores(table), model, x, y, samples=8)(graph.tp_group(group))
    expected = (torch.tensor([1.0, 2.0, 3.0, 6.0]) / 3 + torch.tensor([40.0, 10.0, 20.0, 10.0]) / 20) / 2
    assert torch.allclose(mean, expected)
    root = MetricImportance(fixed_scores(table), model, x, y, samples=8, coupling="root")(graph.tp_group(group))
    assert torch.allclose(root, torch.tensor([1.0, 2.0, 3.0, 6.0]))


def _pair_scores(coupling: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The group (conv1, layer1.0.conv2) of a small ResNet, with ``a`` and ``b`` as its members' scores."""
    model = build_model("resnet_cifar", num_classes=4, depth=8, width=0.25)
    graph = ModelGraph(model, torch.zeros(1, 1, 12, 12))
    group = next(g for g in graph.prunable_groups() if len(g.members) > 1)
    assert group.members == ("conv1", "layer1.0.conv2") and model.conv1.bias is None
    table = {n: torch.ones(m.weight.shape[0]) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    table["conv1"], table["layer1.0.conv2"] = a, b
    x, y = torch.zeros(8, 1, 12, 12), torch.arange(8) % 4
    return MetricImportance(fixed_scores(table), model, x, y, samples=8, coupling=coupling)(graph.tp_group(group))


def test_each_coupling_rule_combines_known_member_scores() -> None:
    a, b = torch.tensor([1.0, 2.0, 3.0, 6.0]), torch.tensor([40.0, 10.0, 20.0, 10.0])
    sa, sb = a / 3, b / 20  # each member scaled by its mean |score|
    # conv1 is Conv2d(1, 4, 3) (9 weights per channel), layer1.0.conv2 Conv2d(4, 4, 3) (36); neither has a bias
    expected = {"mean": (sa + sb) / 2, "max": torch.maximum(sa, sb), "params": (9 * sa + 36 * sb) / 45,
                "root": a, "last": b}
    assert set(expected) == set(COUPLINGS)
    for coupling, want in expected.items():
        assert torch.allclose(_pair_scores(coupling, a, b), want), coupling


def test_non_finite_member_scores_stay_minus_inf_under_every_rule() -> None:
    a, b = torch.tensor([1.0, math.nan, 3.0, 6.0]), torch.tensor([40.0, 10.0, math.inf, 10.0])
    for coupling, dead in {"mean": [1, 2], "max": [1, 2], "params": [1, 2], "root": [1], "last": [2]}.items():
        scores = _pair_scores(coupling, a, b)
        assert [i for i in range(4) if scores[i] == -math.inf] == dead, coupling
        assert torch.isfinite(scores[[i for i in range(4) if i not in dead]]).all(), coupling


def test_root_and_last_follow_forward_order_on_an_expand_depthwise_pair() -> None:
    """Torch-Pruning roots this group at the depthwise conv; root still means the expand conv (first called)
    and last the depthwise conv, whose output the rest of the network sees."""
    model = nn.Sequential(nn.Conv2d(1, 6, 1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 6, 3, groups=6), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4))
    graph = ModelGraph(model, torch.zeros(1, 1, 8, 8))
    group = graph.prunable_groups()[0]
    assert group.members == ("0", "3") and group.root == "3"
    expand, depthwise = torch.tensor([6.0, 5, 4, 3, 2, 1]), torch.tensor([1.0, 2, 3, 4, 5, 6])
    table = {"0": expand, "3": depthwise, "7": torch.ones(4)}
    x, y = torch.zeros(8, 1, 8, 8), torch.arange(8) % 4

    def combined(coupling: str) -> torch.Tensor:
        return MetricImportance(fixed_scores(table), model, x, y, samples=8, coupling=coupling)(graph.tp_group(group))

    assert torch.equal(combined("root"), expand) and torch.equal(combined("last"), depthwise)
    # expand: 1 weight + 1 bias per channel; depthwise: 9 + 1; both scaled by their mean 3.5
    assert torch.allclose(combined("params"), (2 * expand + 10 * depthwise) / 12 / 3.5)


def test_coupling_rules_are_the_same_everywhere() -> None:
    with pytest.raises(PruningError, match="coupling must be one of mean, max, params, root, last, got 'sum'"):
        MetricImportance(fixed_scores({}), build_model("lenet5"), torch.zeros(4, 1, 28, 28), torch.arange(4),
                         samples=4, coupling="sum")  # type: ignore[arg-type]
    assert typing.get_args(typing.get_type_hints(TaskConfig)["coupling"]) == COUPLINGS
    parser = build_parser()
    assert [parser.parse_args(["prune", "--coupling", c]).coupling for c in COUPLINGS] == list(COUPLINGS)
    with pytest.raises(SystemExit):
        parser.parse_args(["prune", "--coupling", "sum"])


def test_non_finite_scores_rank_last() -> None:
    model = build_model("lenet5")
    graph = ModelGraph(model, torch.zeros(1, 1, 28, 28))
    conv1 = graph.prunable_groups()[0]
    table = {"conv1": torch.arange(20.0), "conv2": torch.ones(50), "fc1": torch.ones(500), "fc2": torch.ones(10)}
    table["conv1"][5], table["conv1"][7] = math.nan, math.inf
    scores = MetricImportance(fixed_scores(table), model, torch.zeros(4, 1, 28, 28), torch.arange(4), samples=4)(
        graph.tp_group(conv1))
    assert scores[5] == -math.inf and scores[7] == -math.inf
    assert torch.isfinite(scores[[i for i in range(20) if i not in (5, 7)]]).all()


def test_metric_runs_once_per_step_and_again_after_reset() -> None:
    data = load_dataset("synthetic", num_samples=160, num_classes=4, image_size=28)
    pruner = ChannelPruner(weight_l1, schedule="lenet5_paper", finetune=None, latency_batch_sizes=()).prune(
        build_model("lenet5", num_classes=4), data)
    assert pruner.importance_.evaluations == 3


def test_wrong_score_length_is_reported() -> None:
    model = build_model("lenet5")
    table = {"conv1": torch.ones(7)}
    imp = MetricImportance(fixed_scores(table), model, torch.zeros(4, 1, 28, 28), torch.arange(4), samples=4,
                           layers=["conv1"])
    with pytest.raises(ValueError, match="gave 7 scores for layer 'conv1', which has 20 output channels"):
        imp.layer_scores()


def test_works_inside_torch_prunings_own_pruner() -> None:
    torch.manual_seed(0)
    model = build_model("resnet_cifar", num_classes=4, depth=8, width=0.5)
    x, y = torch.rand(16, 1, 12, 12), torch.arange(16) % 4
    importance = MetricImportance(weight_l1, model, x, y, samples=16)
    pruner = tp.pruner.BasePruner(model, x[:1], importance=importance, pruning_ratio=0.5, ignored_layers=[model.fc])
    pruner.step()
    assert model.conv1.out_channels == 4 and model.layer3[0].conv1.out_channels == 16
    assert model(x).shape == (16, 4)
    assert importance.evaluations == 1


def test_real_metric_by_name_when_the_library_is_there() -> None:
    pytest.importorskip("evoprune.metrics")
    data = load_dataset("synthetic", num_samples=160, num_classes=4, image_size=28)
    for metric in ("eq3", "WL1", "Taylor", "BNScale"):
        model = build_model("lenet5", num_classes=4) if metric != "BNScale" else build_model(
            "vgg", num_classes=4, depth=11, width=0.25)
        pruner = ChannelPruner(metric, schedule=PruneSchedule(ratio=0.5), finetune=None, latency_batch_sizes=(),
                               scoring_samples=40).prune(model, data)
        assert pruner.result_.macs_kept < 0.5


def readme_model() -> nn.Sequential:
    """The README's example: one conv with a BatchNorm after it, one without, an output Linear."""
    return nn.Sequential(nn.Conv2d(1, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def test_bnscale_through_torch_prunings_pruner_on_the_readme_example() -> None:
    """Issue 10, item 9: every conv/linear layer was scored, the ignored Linear included, and BNScale raised for it.
    Layers without a BatchNorm are now left unscored; Torch-Pruning then leaves the conv without one unpruned."""
    torch.manual_seed(0)
    model = readme_model()
    with torch.no_grad():
        model[1].weight.copy_(torch.arange(1.0, 17.0))  # |γ| ranks the channels: 0..7 are the weakest
    x, y = torch.rand(100, 1, 28, 28), torch.randint(0, 10, (100,))
    kept = model[0].weight[8:].clone()
    importance = MetricImportance("BNScale", model, x, y)
    pruner = tp.pruner.BasePruner(model, example_inputs=x[:1], importance=importance, pruning_ratio=0.5,
                                  ignored_layers=[model[-1]])
    with pytest.warns(UserWarning) as caught:
        pruner.step()
    assert [str(w.message) for w in caught] == [
        ("layer '4': BNScale needs a BatchNorm directly after the layer (none was found on its feature path); "
         "use another metric for such layers (so its channels are left unpruned)")]
    assert (model[0].out_channels, model[4].in_channels, model[4].out_channels) == (8, 8, 32)
    assert torch.equal(model[0].weight, kept)  # the channels with the largest |γ| stayed
    assert model(x).shape == (100, 10)
    assert importance.evaluations == 1 and set(importance.unscorable) == {"4", "8"}


def test_bnscale_prunes_an_ordinary_conv_bn_network_with_the_output_layer_ignored() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.BatchNorm2d(16),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    x, y = torch.rand(40, 1, 12, 12), torch.arange(40) % 10
    importance = MetricImportance("BNScale", model, x, y, samples=40)
    pruner = tp.pruner.BasePruner(model, example_inputs=x[:1], importance=importance, pruning_ratio=0.5,
                                  ignored_layers=[model[-1]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the ignored Linear is never asked about: no warning
        pruner.step()
    assert (model[0].out_channels, model[3].out_channels) == (4, 8)
    assert importance.unscorable.keys() == {"8"}


def test_layers_named_explicitly_must_all_be_scorable() -> None:
    model = readme_model()
    x, y = torch.rand(20, 1, 28, 28), torch.arange(20) % 10
    importance = MetricImportance("BNScale", model, x, y, samples=20, layers=["0", "4"])
    with pytest.raises(UnscorableLayerError, match="layer '4': BNScale needs a BatchNorm directly after the layer"):
        importance.layer_scores()
    assert isinstance(UnscorableLayerError("4", "x"), EvopruneError)
