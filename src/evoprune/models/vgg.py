"""CIFAR-style VGG with BatchNorm (VGG-11/13/16/19) and a width multiplier."""

from __future__ import annotations

import torch
from torch import nn

from evoprune.errors import ConfigError
from evoprune.models.registry import register_model
from evoprune.models.utils import check_positive_int, scale_width

# Conv widths per stage; each stage ends in a 2x2 max-pool ("M" in the usual notation).
# Configurations A, B, D, E of Simonyan & Zisserman (2015), Table 1.
VGG_STAGES: dict[int, tuple[tuple[int, ...], ...]] = {
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    13: ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    19: ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}


class VGG(nn.Module):
    """VGG (Simonyan & Zisserman, ICLR 2015) in the CIFAR form common in pruning work
    (e.g. Liu et al., Network Slimming, ICCV 2017): 3x3 convs, each conv → BatchNorm →
    ReLU, 2x2 max-pool after each stage, no 4096-wide fully connected layers.

    Adaptations so one class serves MNIST/Fashion (28x28), CIFAR (32x32) and 8x8 digits:
    - a stage's max-pool is skipped once the feature map is already 1 pixel high or wide
      (28x28 gets 4 pools, 32x32 all 5, 8x8 the first 3);
    - a global average pool then flattens whatever spatial size is left, so larger
      inputs work too;
    - ``width`` scales every conv's channel count (rounded, at least 1).

    Classifier choice: by default a single linear layer on the pooled features (the
    common CIFAR VGG; VGG-16 on 3x32x32 / 10 classes has 14,728,266 parameters). The
    GECCO-2022 paper's VGG-16 used a 512-unit hidden layer; pass ``classifier_hidden=512``
    for Linear → ReLU → Linear (the paper also put BN and dropout there, and ReLU before
    BN in the convs; those details are not reproduced).

    Conv layers keep their biases (as in the standard CIFAR VGG parameter counts) even
    though BatchNorm makes them redundant. Init: Kaiming-normal (fan-out) convs, BN
    weight 1 / bias 0, PyTorch-default linear layers.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: tuple[int, int] = (28, 28),
        depth: int = 16,
        width: float = 1.0,
        classifier_hidden: int | None = None,
    ) -> None:
        super().__init__()
        if depth not in VGG_STAGES:
            raise ConfigError(f"vgg depth must be one of {sorted(VGG_STAGES)}, got {depth!r}")
        layers: list[nn.Module] = []
        channels = in_channels
        h, w = image_size
        for stage in VGG_STAGES[depth]:
            for base in stage:
                out = scale_width(base, width)
                layers += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                channels = out
            if h >= 2 and w >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        if classifier_hidden is None:
            self.classifier = nn.Sequential(nn.Linear(channels, num_classes))
        else:
            hidden = check_positive_int(classifier_hidden, "classifier_hidden")
            self.classifier = nn.Sequential(
                nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes)
            )
        for m in self.features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


@register_model
def vgg(
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: tuple[int, int] = (28, 28),
    depth: int = 16,
    width: float = 1.0,
    classifier_hidden: int | None = None,
) -> VGG:
    """CIFAR-style VGG-``depth`` (11/13/16/19) with BatchNorm and a ``width`` multiplier."""
    return VGG(in_channels, num_classes, image_size, depth=depth, width=width, classifier_hidden=classifier_hidden)
