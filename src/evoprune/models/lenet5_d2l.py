"""d2l.ai-style LeNet-5 (sigmoid, average pooling) used by the mask-search seed."""

from __future__ import annotations

import torch
from torch import nn

from evoprune.errors import ConfigError
from evoprune.models.registry import register_model

_INITS = ("keras", "pytorch")


class LeNet5D2L(nn.Module):
    """LeNet-5 following d2l.ai ch. 7.6 (``Dive into Deep Learning``), as used by the
    local-search mask-pruning seed (spec §2.2 of ``mask-search.md``):

    conv1 5x5, 6 maps, padding 2 ('same'), sigmoid, avgpool 2 → conv2 5x5, 16 maps,
    VALID, sigmoid, avgpool 2 → flatten → fc1 120, sigmoid → fc2 84, sigmoid → fc3 → logits.

    For 1x28x28 / 10 classes: 61,470 weights without biases (150 + 2,400 + 48,000 +
    10,080 + 840) and 61,706 parameters in all. The seed's Keras model ends in a softmax;
    here fc3 returns logits (use cross-entropy on them). The flatten is channel-major
    (PyTorch) rather than Keras' channels-last, which is irrelevant when training from
    scratch.

    ``init="keras"`` (default) reproduces Keras' defaults: Glorot-uniform weights, zero
    biases. ``init="pytorch"`` keeps PyTorch's default initialisation.
    """

    MIN_IMAGE_SIZE = 12

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: tuple[int, int] = (28, 28),
        init: str = "keras",
    ) -> None:
        super().__init__()
        if init not in _INITS:
            raise ConfigError(f"lenet5_d2l init must be one of {_INITS}, got {init!r}")
        h, w = image_size
        if min(h, w) < self.MIN_IMAGE_SIZE:
            raise ConfigError(
                f"lenet5_d2l needs images of at least {self.MIN_IMAGE_SIZE}x{self.MIN_IMAGE_SIZE} "
                f"(a VALID 5x5 conv after the first pool, then another pool), got {h}x{w}; "
                "for small images such as 8x8 digits use 'mlp', 'vgg' or 'resnet_cifar'"
            )
        out_h, out_w = (h // 2 - 4) // 2, (w // 2 - 4) // 2
        self.conv1 = nn.Conv2d(in_channels, 6, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.fc1 = nn.Linear(16 * out_h * out_w, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)
        self.act = nn.Sigmoid()
        self.pool = nn.AvgPool2d(2)
        self.flatten = nn.Flatten()
        if init == "keras":
            for layer in (self.conv1, self.conv2, self.fc1, self.fc2, self.fc3):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act(self.conv1(x)))
        x = self.pool(self.act(self.conv2(x)))
        x = self.act(self.fc1(self.flatten(x)))
        x = self.act(self.fc2(x))
        return self.fc3(x)


@register_model
def lenet5_d2l(
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: tuple[int, int] = (28, 28),
    init: str = "keras",
) -> LeNet5D2L:
    """The mask-search seed's d2l LeNet-5 (6-16-120-84, sigmoid, average pooling)."""
    return LeNet5D2L(in_channels, num_classes, image_size, init=init)
