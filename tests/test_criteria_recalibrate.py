"""BN recalibration against a hand computation of torch's cumulative average."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from evoprune.criteria import recalibrate_batchnorm
from evoprune.errors import ConfigError


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, momentum=0.3), nn.ReLU(), nn.Dropout(0.5),
                        nn.Flatten(), nn.LazyLinear(3))
    net(torch.randn(2, 1, 6, 6))
    net[1].running_mean.fill_(5.0)  # stale statistics the recalibration must forget
    net[1].running_var.fill_(9.0)
    return net.eval()


def test_running_stats_are_the_average_of_exactly_those_batches() -> None:
    net = _net()
    x = torch.randn(50, 1, 6, 6)
    n = recalibrate_batchnorm(net, x, batches=3, batch_size=8)  # 24 images: 3 full batches, the rest unused
    assert n == 1
    with torch.no_grad():
        feats = [net[0](x[i:i + 8]).transpose(0, 1).flatten(1) for i in range(0, 24, 8)]  # [C, 8·H·W] per batch
    mean = torch.stack([f.mean(1) for f in feats]).mean(0)
    var = torch.stack([f.var(1, unbiased=True) for f in feats]).mean(0)
    torch.testing.assert_close(net[1].running_mean, mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net[1].running_var, var, rtol=1e-5, atol=1e-6)
    assert int(net[1].num_batches_tracked) == 3
    assert net[1].momentum == 0.3 and not net.training and not net[1].training


def test_last_partial_batch_counts_like_the_others_and_train_mode_is_restored() -> None:
    net = _net().train()
    x = torch.randn(10, 1, 6, 6)
    recalibrate_batchnorm(net, x, batches=5, batch_size=4)  # batches of 4, 4, 2
    with torch.no_grad():
        feats = [net[0](x[i:i + 4]).transpose(0, 1).flatten(1) for i in (0, 4, 8)]
    torch.testing.assert_close(net[1].running_mean, torch.stack([f.mean(1) for f in feats]).mean(0))
    assert net.training and net[3].training


def test_no_batchnorm_is_a_no_op() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert recalibrate_batchnorm(net, torch.randn(8, 4)) == 0
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_bad_settings_raise() -> None:
    with pytest.raises(ConfigError):
        recalibrate_batchnorm(_net(), torch.randn(4, 1, 6, 6), batches=0)
