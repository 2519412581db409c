"""He et al. (2016) CIFAR ResNets (6n+2 layers, basic blocks) with projection shortcuts."""

from __future__ import annotations

import torch
from torch import nn

from evoprune.errors import ConfigError
from evoprune.models.registry import register_model
from evoprune.models.utils import scale_width

STAGE_WIDTHS = (16, 32, 64)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut; ReLU after the sum.

    When the stride or width changes, the shortcut is a 1x1 conv + BN projection
    (He et al.'s option B); otherwise it is the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """CIFAR ResNet of He et al., "Deep Residual Learning for Image Recognition"
    (CVPR 2016, §4.2): a 3x3 conv with 16 maps, then three stages of n basic blocks with
    16, 32, 64 maps (strides 1, 2, 2), global average pool and one linear layer;
    depth = 6n + 2 (20, 32, 44, 56, 110, ...).

    Difference from the paper: the paper's CIFAR models use option-A shortcuts
    (identity with zero-padded extra channels, parameter-free); here a shape change
    uses an option-B 1x1 conv + BN projection. Torch-Pruning tracks the projection's
    channel coupling with the residual sum, whereas a zero-padding shortcut hides it,
    so structured pruning of the stage widths stays valid. This adds 2,752 parameters
    to ResNet-20 (272,474 instead of 269,722 for 3x32x32 / 10 classes).

    ``width`` scales all stage widths (rounded, at least 1). Works for any input size:
    8x8 inputs end in 2x2 maps before pooling. Init: Kaiming-normal (fan-out) convs,
    BN weight 1 / bias 0, PyTorch-default linear layer.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: tuple[int, int] = (28, 28),
        depth: int = 20,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ConfigError(f"resnet_cifar depth must be 6n+2 with n >= 1 (20, 32, 56, 110, ...), got {depth!r}")
        del image_size  # any size works thanks to the global average pool
        blocks_per_stage = (depth - 2) // 6
        widths = [scale_width(c, width) for c in STAGE_WIDTHS]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages: list[nn.Module] = []
        channels = widths[0]
        for i, out in enumerate(widths):
            blocks = []
            for j in range(blocks_per_stage):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(channels, out, stride))
                channels = out
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.pool(x)))


@register_model
def resnet_cifar(
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: tuple[int, int] = (28, 28),
    depth: int = 20,
    width: float = 1.0,
) -> ResNetCifar:
    """He et al. 2016 CIFAR ResNet-``depth`` (6n+2) with 1x1 projection shortcuts."""
    return ResNetCifar(in_channels, num_classes, image_size, depth=depth, width=width)
