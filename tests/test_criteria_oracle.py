"""The oracle equals the direct definition: prune the one channel with Torch-Pruning, measure with evaluate."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from evoprune.criteria import cached_oracle, oracle_importance
from evoprune.errors import ConfigError
from evoprune.models import build_model
from evoprune.prune import ModelGraph
from evoprune.train import evaluate


def _randomise_batchnorm(model: nn.Module) -> nn.Module:
    """Trained-looking BatchNorms (non-trivial statistics and affine), so that zeroing after them matters."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.3)
    return model.eval()


def _plain_net() -> nn.Module:
    torch.manual_seed(0)
    return _randomise_batchnorm(nn.Sequential(
        nn.Conv2d(1, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(),
        nn.Conv2d(5, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(6 * 4 * 4, 7), nn.ReLU(), nn.Linear(7, 3),
    ))


def _residual_net() -> nn.Module:
    torch.manual_seed(0)
    return _randomise_batchnorm(build_model("resnet_cifar", in_channels=1, num_classes=3, image_size=(8, 8),
                                            depth=8, width=0.25))


def _data(n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return torch.randn(n, 1, 8, 8, generator=g), torch.arange(n) % 3


def _direct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each channel of each group removed by Torch-Pruning on a copy, the loss measured by train.evaluate."""
    base = evaluate(model, x, y).loss
    out = {}
    for group in ModelGraph(model, x[:1]).prunable_groups():
        losses = []
        for i in range(group.width):
            pruned = copy.deepcopy(model)
            graph = ModelGraph(pruned, x[:1])
            graph.tp_group(next(g for g in graph.prunable_groups() if g.name == group.name), [i]).prune()
            losses.append(evaluate(pruned, x, y).loss - base)
        out[group.name] = torch.tensor(losses)
    return out


@pytest.mark.parametrize("make", [_plain_net, _residual_net], ids=["conv-bn-relu", "residual"])
def test_oracle_equals_pruning_each_channel_with_torch_pruning(make) -> None:
    model = make()
    x, y = _data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = oracle_importance(model, x, y, samples=len(y), batch_size=40, ablations=3, device="cpu")
    expected = _direct(model, x, y)
    assert set(result.increase) == set(expected)
    for name, increase in expected.items():
        torch.testing.assert_close(result.increase[name], increase, rtol=1e-4, atol=2e-5, msg=name)
    assert result.baseline_loss == pytest.approx(evaluate(model, x, y).loss, rel=1e-5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is not touched
    assert not model.training


def test_residual_groups_zero_every_member() -> None:
    model = _residual_net()
    x, y = _data()
    result = oracle_importance(model, x, y, samples=len(y), device="cpu")
    residual = [g for g in result.groups.values() if len(g.members) > 1]
    assert residual and all(result.increase[g.name].shape == (g.width,) for g in residual)
    assert {"conv1", "layer1.0.conv2"} <= set(result.groups["conv1"].members)


def test_chunking_does_not_change_the_result() -> None:
    model = _residual_net()
    x, y = _data()
    a = oracle_importance(model, x, y, samples=30, batch_size=7, ablations=5, device="cpu")
    b = oracle_importance(model, x, y, samples=30, batch_size=512, ablations=1, device="cpu")
    for name in a.increase:
        torch.testing.assert_close(a.increase[name], b.increase[name], rtol=1e-4, atol=1e-6)
    assert a.samples == 30


def test_bad_settings_raise() -> None:
    x, y = _data()
    with pytest.raises(ConfigError):
        oracle_importance(_plain_net(), x, y, ablations=0)
    with pytest.raises(ConfigError):
        oracle_importance(_plain_net(), x, y[:3])


def test_the_cached_oracle_is_computed_once_and_only_for_its_own_model(tmp_path) -> None:
    model = _plain_net()
    x, y = _data()
    path = tmp_path / "oracle" / "net.pt"
    first = cached_oracle(model, x, y, path, samples=30, seed=1, device="cpu")
    again = cached_oracle(model, x, y, path, samples=30, seed=1, device="cpu")
    assert not first.reused and again.reused and again.samples == 30
    assert again.baseline_loss == first.baseline_loss and again.seconds == first.seconds
    direct = oracle_importance(model, x, y, samples=30, seed=1, device="cpu")
    for name, increase in direct.increase.items():
        torch.testing.assert_close(again.increase[name], increase)
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed[0].weight[0] += 1.0  # other weights: another oracle, recomputed and saved over the old one
    assert not cached_oracle(changed, x, y, path, samples=30, seed=1, device="cpu").reused
    assert not cached_oracle(changed, x, y, path, samples=30, seed=2, device="cpu").reused  # other settings
    path.write_bytes(b"not a torch file")  # damaged: recomputed, not an error
    assert not cached_oracle(changed, x, y, path, samples=30, seed=2, device="cpu").reused
    assert cached_oracle(changed, x, y, path, samples=30, seed=2, device="cpu").reused
