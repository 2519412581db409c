"""MobileNetV2-style net for small images: inverted residual blocks with linear bottlenecks."""

from __future__ import annotations

import torch
from torch import nn

from evoprune.errors import ConfigError
from evoprune.models.registry import register_model
from evoprune.models.utils import check_positive_int

# Stages as (expansion factor, output channels, stride) of the paper's Table 2 (ImageNet: a stride-2 stem, then
# these strides: 5 downsamplings). An expansion of 6 here is the model's ``expansion`` argument.
STAGES: tuple[tuple[int, int, int], ...] = ((1, 16, 1), (6, 24, 2), (6, 32, 2), (6, 64, 2), (6, 96, 1),
                                            (6, 160, 2), (6, 320, 1))
# Which strides of 2 become 1 for fewer downsamplings: the stem's first, then the 24-channel stage's (index 1).
DOWNSAMPLINGS = (3, 4, 5)
# Blocks per stage for each ``depth`` (the number of inverted residual blocks). 17 is the paper's (1, 2, 3, 4, 3, 3, 1).
DEPTHS: dict[int, tuple[int, ...]] = {
    17: (1, 2, 3, 4, 3, 3, 1),
    10: (1, 2, 2, 2, 1, 1, 1),
    7: (1, 1, 1, 1, 1, 1, 1),
}
STEM_CHANNELS = 32
FEATURES = 1280
DIVISOR = 8


def round_channels(channels: float, divisor: int = DIVISOR) -> int:
    """Channels rounded to the nearest multiple of ``divisor`` (at least ``divisor``), never more than 10% below."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


def conv_bn(in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1, groups: int = 1,
            activation: bool = True) -> nn.Sequential:
    """Conv (no bias) → BatchNorm → ReLU6; without the ReLU6 for a linear bottleneck."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if activation:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """1x1 expand conv + BN + ReLU6, 3x3 depthwise conv + BN + ReLU6, 1x1 linear projection conv + BN.

    The expansion is skipped when ``expansion`` is 1 (the depthwise conv then filters the input itself). The input
    is added to the output when the stride is 1 and the widths match; there is no activation after the sum.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = int(round(in_channels * expansion))
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expand = conv_bn(in_channels, hidden) if expansion != 1 else nn.Identity()
        self.depthwise = conv_bn(hidden, hidden, kernel=3, stride=stride, groups=hidden)
        self.project = conv_bn(hidden, out_channels, activation=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """MobileNetV2 of Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks" (CVPR 2018), sized
    for 8x8 to 32x32 images: a 3x3 stem conv (32 maps), seven stages of inverted residual blocks with 16, 24, 32,
    64, 96, 160, 320 output channels, a 1x1 conv to 1280 features, global average pool, one linear layer.

    Differences from the paper's ImageNet net (Table 2):
    - ``downsamplings`` (default 4) instead of 5: the stem has stride 1, so 28x28 and 32x32 inputs end in 2x2 maps
      (8x8 in 1x1). ``downsamplings=3`` also gives the 24-channel stage stride 1, the common CIFAR form (4x4 maps),
      at 3.3x the MACs and 4 to 5x the CPU training time; 5 is the paper's.
    - ``depth`` picks the number of blocks: 17 is the paper's (1, 2, 3, 4, 3, 3, 1) per stage, 10 (the default)
      (1, 2, 2, 2, 1, 1, 1), which keeps a residual block in the 24-, 32- and 64-channel stages, 7 one per stage.
    - no dropout before the classifier.

    ``width`` multiplies every width, rounded to a multiple of 8 (never below 8, nor 10% below the scaled value);
    the 1280 features change only above width 1 (scaled, as in the paper) or when ``features`` is given.
    ``expansion`` replaces the paper's factor 6 of every stage but the first (which keeps 1).
    Init: Kaiming-normal (fan-out) convs, BN weight 1 / bias 0, PyTorch-default linear layer.

    Size and speed (1x28x28, 10 classes, default depth 10 and 4 downsamplings): width 1: 1,236,170 parameters,
    14.2 M MACs; width 0.5: 436,778 parameters, 5.1 M MACs (the 1280-wide head conv holds 204,800 of them).
    On this project's 2-core CPU (one thread, other jobs running): width 0.5 forward ≈ 2 ms for one image
    (per-layer overhead), 0.4 ms per image in batches of 128; training forward + backward ≈ 3 ms per image
    (ResNet-20 there: 2.7 ms). Width 1: 3.4 ms, 1.5 ms, 5.8 ms.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: tuple[int, int] = (28, 28),
        depth: int = 10,
        width: float = 1.0,
        expansion: int = 6,
        features: int | None = None,
        downsamplings: int = 4,
    ) -> None:
        super().__init__()
        if isinstance(depth, bool) or depth not in DEPTHS:
            raise ConfigError(f"mobilenetv2 depth (inverted residual blocks) must be one of {sorted(DEPTHS)}, "
                              f"got {depth!r}")
        if isinstance(downsamplings, bool) or downsamplings not in DOWNSAMPLINGS:
            raise ConfigError(f"mobilenetv2 downsamplings must be one of {list(DOWNSAMPLINGS)}, got {downsamplings!r}")
        if not width > 0:
            raise ConfigError(f"width multiplier must be > 0, got {width!r}")
        expansion = check_positive_int(expansion, "expansion")
        del image_size  # any size works thanks to the global average pool
        strides = [stride for _, _, stride in STAGES]
        if downsamplings < 4:
            strides[1] = 1
        channels = round_channels(STEM_CHANNELS * width)
        self.stem = conv_bn(in_channels, channels, kernel=3, stride=2 if downsamplings == 5 else 1)
        blocks: list[nn.Module] = []
        for (factor, base, _), stride, count in zip(STAGES, strides, DEPTHS[depth], strict=True):
            out = round_channels(base * width)
            for i in range(count):
                blocks.append(InvertedResidual(channels, out, stride if i == 0 else 1,
                                               expansion if factor != 1 else 1))
                channels = out
        self.blocks = nn.Sequential(*blocks)
        width_features = round_channels(FEATURES * width) if width > 1 else FEATURES
        n_features = width_features if features is None else check_positive_int(features, "features")
        self.head = conv_bn(channels, n_features)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(n_features, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(self.flatten(self.pool(x)))


@register_model
def mobilenetv2(
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: tuple[int, int] = (28, 28),
    depth: int = 10,
    width: float = 1.0,
    expansion: int = 6,
    features: int | None = None,
    downsamplings: int = 4,
) -> MobileNetV2:
    """MobileNetV2 for small images with ``depth`` (17, 10, 7) inverted residual blocks, a ``width`` multiplier,
    the blocks' ``expansion`` factor, the final conv's ``features`` and 3, 4 (default) or 5 ``downsamplings``."""
    return MobileNetV2(in_channels, num_classes, image_size, depth=depth, width=width, expansion=expansion,
                       features=features, downsamplings=downsamplings)
