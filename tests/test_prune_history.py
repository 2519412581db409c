"""Pruned checkpoints load without pickled code and give identical outputs; ONNX export works."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from evoprune.checkpoint import load_checkpoint, pruning_history_of, save_checkpoint
from evoprune.data import load_dataset
from evoprune.errors import CheckpointError
from evoprune.models import build_model
from evoprune.prune import ChannelPruner, PruneSchedule, export_onnx


def weight_l1(model: nn.Module, x: torch.Tensor, y: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
    return {n: model.get_submodule(n).weight.detach().flatten(1).abs().sum(1) for n in layers}


def _prune(arch: str, arch_kwargs: dict, data, schedule) -> ChannelPruner:
    torch.manual_seed(0)
    model = build_model(arch, **arch_kwargs)
    return ChannelPruner(weight_l1, schedule=schedule, finetune=None, latency_batch_sizes=()).prune(model, data)


@pytest.mark.parametrize(
    ("arch", "extra", "schedule"),
    [
        ("lenet5", {}, "lenet5_paper"),
        ("resnet_cifar", {"depth": 20, "width": 0.5}, PruneSchedule(ratio=0.4, steps=2)),
        ("vgg", {"depth": 11, "width": 0.25, "classifier_hidden": 32}, "vgg16_paper"),
    ],
)
def test_checkpoint_round_trip_gives_identical_outputs(tmp_path: Path, arch, extra, schedule) -> None:
    data = load_dataset("synthetic", num_samples=120, num_classes=4, image_size=28)
    kwargs = {"in_channels": 1, "num_classes": 4, "image_size": (28, 28), **extra}
    pruner = _prune(arch, kwargs, data, schedule)
    path = save_checkpoint(tmp_path / "p.pt", pruner.model_, arch=arch, arch_kwargs=kwargs, meta={"note": "test"},
                           pruning_history=pruner.pruning_history_)
    raw = torch.load(path, weights_only=True)  # no pickled code inside
    assert raw["meta"]["pruning"]["history"] == pruner.pruning_history_
    model, payload = load_checkpoint(path)
    assert payload["meta"]["note"] == "test"
    x = data.test.x[:7]
    pruner.model_.eval()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), pruner.model_(x))
    assert sum(p.numel() for p in model.parameters()) == pruner.result_.after.params


def test_pruning_a_pruned_checkpoint_accumulates_history(tmp_path: Path) -> None:
    data = load_dataset("synthetic", num_samples=120, num_classes=4, image_size=28)
    kwargs = {"num_classes": 4}
    first = _prune("lenet5", kwargs, data, PruneSchedule(ratio=0.5))
    save_checkpoint(tmp_path / "a.pt", first.model_, arch="lenet5", arch_kwargs=kwargs,
                    pruning_history=first.pruning_history_)
    model, payload = load_checkpoint(tmp_path / "a.pt")
    second = ChannelPruner(weight_l1, schedule=PruneSchedule(ratio=0.5), finetune=None, latency_batch_sizes=()).prune(
        model, data, prior_history=pruning_history_of(payload))
    save_checkpoint(tmp_path / "b.pt", second.model_, arch="lenet5", arch_kwargs=kwargs,
                    pruning_history=second.pruning_history_)
    again, _ = load_checkpoint(tmp_path / "b.pt")
    assert again.conv1.out_channels == 5 and again.fc1.out_features == 125
    with torch.no_grad():
        assert torch.equal(again.eval()(data.test.x[:3]), second.model_.eval()(data.test.x[:3]))


def test_plain_checkpoint_loads_and_a_tampered_history_fails_clearly(tmp_path: Path) -> None:
    model = build_model("lenet5")
    save_checkpoint(tmp_path / "plain.pt", model, arch="lenet5", arch_kwargs={})
    loaded, payload = load_checkpoint(tmp_path / "plain.pt")
    assert pruning_history_of(payload) == [] and loaded.conv1.out_channels == 20
    save_checkpoint(tmp_path / "bad.pt", model, arch="lenet5", arch_kwargs={}, meta={"pruning": {
        "format": "evoprune.pruning/1", "history": [["conv1", True, [0, 1]]], "input_shape": [1, 28, 28]}})
    with pytest.raises(CheckpointError, match="does not match architecture .lenet5."):
        load_checkpoint(tmp_path / "bad.pt")


def test_onnx_export_matches_the_pruned_model(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'evoprune[onnx]')")
    from onnx.reference import ReferenceEvaluator

    data = load_dataset("synthetic", num_samples=120, num_classes=4, image_size=12)
    pruner = _prune("resnet_cifar", {"num_classes": 4, "image_size": (12, 12), "depth": 8, "width": 0.5}, data,
                    PruneSchedule(ratio=0.5))
    path = export_onnx(pruner.model_, tmp_path / "m.onnx", data.test.x[:1])
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    x = data.test.x[:3]
    (got,) = ReferenceEvaluator(graph).run(None, {"input": x.numpy()})
    with torch.no_grad():
        want = pruner.model_.eval()(x).numpy()
    assert got.shape == (3, 4)
    assert abs(got - want).max() < 1e-4
