"""MACs targets land within tolerance; accounting and latency are consistent; untraceable models fail clearly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from evoprune.data import load_dataset
from evoprune.models import build_model
from evoprune.prune import ChannelPruner, ModelGraph, PruneSchedule, PruningError, count_macs_params, measure_latency


def weight_l1(model: nn.Module, x: torch.Tensor, y: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
    return {n: model.get_submodule(n).weight.detach().flatten(1).abs().sum(1) for n in layers}


@pytest.fixture(scope="module")
def data12():
    return load_dataset("synthetic", num_samples=120, num_classes=4, image_size=12)


@pytest.mark.parametrize("global_ranking", [False, True])
@pytest.mark.parametrize("target", [0.5, 0.3])
def test_macs_target_lands_within_tolerance(data12, target: float, global_ranking: bool) -> None:
    model = build_model("resnet_cifar", num_classes=4, depth=8)
    schedule = PruneSchedule(macs_target=target, global_ranking=global_ranking)
    pruner = ChannelPruner(weight_l1, schedule=schedule, finetune=None, latency_batch_sizes=()).prune(model, data12)
    assert pruner.result_.macs_kept == pytest.approx(target, abs=0.03)
    assert 0 < pruner.result_.solved_ratio < 1 and pruner.schedule_.ratio == pruner.result_.solved_ratio
    assert pruner.importance_.evaluations == 1  # the solver's scores (global) are the step's; local needs none


def test_macs_target_with_steps_is_exact_for_per_layer_ranking(data12) -> None:
    model = build_model("vgg", num_classes=4, image_size=(12, 12), depth=11, width=0.25)
    one = ChannelPruner(weight_l1, schedule=PruneSchedule(macs_target=0.5), finetune=None,
                        latency_batch_sizes=()).prune(model, data12)
    two = ChannelPruner(weight_l1, schedule=PruneSchedule(macs_target=0.5, steps=2), finetune=None,
                        latency_batch_sizes=()).prune(model, data12)
    assert two.result_.after.widths == one.result_.after.widths
    assert two.result_.macs_kept == pytest.approx(0.5, abs=0.03)


def test_unreachable_macs_target_says_what_is_reachable(data12) -> None:
    model = build_model("resnet_cifar", num_classes=4, depth=8, width=0.5)
    with pytest.raises(PruningError, match="cannot be reached: pruning every prunable layer to 1 channel"):
        ChannelPruner(weight_l1, schedule=PruneSchedule(macs_target=0.001), finetune=None,
                      latency_batch_sizes=()).prune(model, data12)


def test_counts_match_a_hand_count_and_latency_is_positive() -> None:
    model = build_model("lenet5")
    macs, params = count_macs_params(model, torch.zeros(1, 1, 28, 28))
    assert params == 431_080
    conv_fc = 20 * 25 * 24 * 24 + 50 * 20 * 25 * 8 * 8 + 800 * 500 + 500 * 10
    assert conv_fc <= macs < conv_fc * 1.05  # plus bias adds, ReLU and pooling
    latency = measure_latency(model, (1, 28, 28), batch_sizes=(1, 8), repeats=3, warmup=1)
    assert set(latency) == {1, 8} and all(v > 0 for v in latency.values())


def test_finetuning_after_each_step_selects_on_validation() -> None:
    data = load_dataset("synthetic", num_samples=240, num_classes=4, image_size=16)
    torch.manual_seed(0)
    model = build_model("lenet5", num_classes=4, image_size=(16, 16))
    from evoprune.train import TrainConfig, train

    train(model, data, TrainConfig(epochs=3, optimizer="adam", lr=2e-3, batch_size=32), progress=False)
    config = TrainConfig(epochs=2, optimizer="adam", lr=1e-3, batch_size=32)
    pruner = ChannelPruner(weight_l1, schedule=PruneSchedule(ratio=0.8, steps=2), finetune=config,
                           latency_batch_sizes=(1,), latency_repeats=2).prune(model, data)
    result = pruner.result_
    assert [s.finetune_epochs for s in result.steps] == [2, 2]
    assert all(s.val_accuracy >= 0.0 and 1 <= s.best_epoch <= 2 for s in result.steps)
    assert result.after.val_accuracy == pytest.approx(result.steps[-1].val_accuracy)
    assert result.before.test_accuracy is not None and result.after.test_accuracy is not None
    assert result.to_dict()["after"]["latency_ms"]["1"] > 0


class Detached(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).detach().mean((2, 3)))


class HardCodedReshape(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x).mean((2, 3))
        return self.fc(h.view(-1, 2, 2).sum(1).repeat(1, 2))


def test_untraceable_model_is_explained(data12) -> None:
    with pytest.raises(PruningError, match=r"cannot trace layer\(s\) conv of Detached.*\.detach\(\)"):
        ModelGraph(Detached(), data12.train.x[:1])


def test_model_broken_by_pruning_is_explained(data12) -> None:
    with pytest.raises(PruningError, match="no longer runs.*missed a coupling"):
        ChannelPruner(weight_l1, schedule=PruneSchedule(ratio=0.5), finetune=None, latency_batch_sizes=()).prune(
            HardCodedReshape(), data12)


def test_model_with_the_wrong_class_count_is_explained(data12) -> None:
    with pytest.raises(PruningError, match="gives 10 outputs but synthetic has 4 classes"):
        ChannelPruner(weight_l1, finetune=None, latency_batch_sizes=()).prune(
            build_model("resnet_cifar", depth=8, width=0.25), data12)


def test_wrong_input_shape_is_explained() -> None:
    with pytest.raises(PruningError, match=r"does not run on an example input of shape \(1, 3, 28, 28\)"):
        ModelGraph(build_model("lenet5"), torch.zeros(1, 3, 28, 28))


def test_unknown_metric_suggests_close_names(data12) -> None:
    pytest.importorskip("evoprune.metrics")
    with pytest.raises(Exception, match="did you mean.*SymDiv") as info:
        ChannelPruner("symdivv", finetune=None, latency_batch_sizes=()).prune(build_model("lenet5", num_classes=4), data12)
    assert isinstance(info.value, PruningError)


def test_skipping_the_before_evaluation(data12) -> None:
    pruner = ChannelPruner(weight_l1, schedule=PruneSchedule(ratio=0.5), finetune=None, latency_batch_sizes=(1,),
                           latency_repeats=1, evaluate_before=False).prune(
        build_model("resnet_cifar", num_classes=4, depth=8, width=0.5), data12)
    before, after = pruner.result_.before, pruner.result_.after
    assert before.val_accuracy is None and before.test_accuracy is None and before.latency_ms == {}
    assert before.macs > after.macs and after.val_accuracy is not None and after.latency_ms[1] > 0
