"""Caffe-style LeNet-5 used by the GECCO-2022 evolved-pruning-function paper."""

from __future__ import annotations

import torch
from torch import nn

from evoprune.errors import ConfigError
from evoprune.models.registry import register_model

_INITS = ("default", "paper")


def _valid_then_pool(size: int) -> int:
    """Spatial size after a 5x5 VALID conv followed by a 2x2/2 max-pool (floor)."""
    return (size - 4) // 2


class LeNet5(nn.Module):
    """LeNet-5 as in the evolved-pruning-functions paper (GECCO 2022; spec §4.1 of
    ``gp-pruning-functions.md``), itself the Caffe ``lenet`` example (20-50-500):

    conv1 5x5, 20 maps, VALID, ReLU, maxpool 2 → conv2 5x5, 50 maps, VALID, ReLU,
    maxpool 2 → flatten (channel-major, NCHW) → fc1 500, ReLU → fc2 → logits.

    On 1x28x28 with 10 classes the flatten has 800 features and the model has
    431,080 parameters. Other image sizes are supported down to 16x16.

    ``init="default"`` keeps PyTorch's default initialisation; ``init="paper"`` uses the
    paper's truncated normal (std 0.1, cut at ±2 std, as TensorFlow's
    ``truncated_normal``) for weights and zero biases.
    """

    MIN_IMAGE_SIZE = 16

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: tuple[int, int] = (28, 28),
        init: str = "default",
    ) -> None:
        super().__init__()
        if init not in _INITS:
            raise ConfigError(f"lenet5 init must be one of {_INITS}, got {init!r}")
        h, w = image_size
        if min(h, w) < self.MIN_IMAGE_SIZE:
            raise ConfigError(
                f"lenet5 needs images of at least {self.MIN_IMAGE_SIZE}x{self.MIN_IMAGE_SIZE} "
                f"(two VALID 5x5 convs and two 2x2 pools), got {h}x{w}; "
                "for small images such as 8x8 digits use 'mlp', 'vgg' or 'resnet_cifar'"
            )
        out_h, out_w = _valid_then_pool(_valid_then_pool(h)), _valid_then_pool(_valid_then_pool(w))
        self.conv1 = nn.Conv2d(in_channels, 20, kernel_size=5)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)
        self.fc1 = nn.Linear(50 * out_h * out_w, 500)
        self.fc2 = nn.Linear(500, num_classes)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        if init == "paper":
            for layer in (self.conv1, self.conv2, self.fc1, self.fc2):
                nn.init.trunc_normal_(layer.weight, std=0.1, a=-0.2, b=0.2)
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = self.relu(self.fc1(self.flatten(x)))
        return self.fc2(x)


@register_model
def lenet5(
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: tuple[int, int] = (28, 28),
    init: str = "default",
) -> LeNet5:
    """The GECCO-2022 paper's Caffe-style LeNet-5 (20-50-500, ReLU, max-pool)."""
    return LeNet5(in_channels, num_classes, image_size, init=init)
