"""Multi-layer perceptron baseline on flattened images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from evoprune.models.registry import register_model
from evoprune.models.utils import check_positive_int


class MLP(nn.Module):
    """Fully connected ReLU network on the flattened image (the classic MNIST
    multi-layer perceptron baseline, e.g. LeCun et al., Proc. IEEE 1998, §III).

    Flatten → [Linear → ReLU] per entry of ``hidden`` → Linear → logits. Default hidden
    sizes (256, 128); ``hidden=()`` gives multinomial logistic regression. Works for any
    image size, including 8x8 digits. PyTorch-default initialisation.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: tuple[int, int] = (28, 28),
        hidden: Sequence[int] = (256, 128),
    ) -> None:
        super().__init__()
        if isinstance(hidden, int):
            hidden = (hidden,)
        features = in_channels * image_size[0] * image_size[1]
        layers: list[nn.Module] = [nn.Flatten()]
        for i, size in enumerate(hidden):
            size = check_positive_int(size, f"hidden[{i}]")
            layers += [nn.Linear(features, size), nn.ReLU(inplace=True)]
            features = size
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model
def mlp(
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: tuple[int, int] = (28, 28),
    hidden: Sequence[int] = (256, 128),
) -> MLP:
    """Flatten + ReLU MLP with ``hidden`` layer sizes (default (256, 128))."""
    return MLP(in_channels, num_classes, image_size, hidden=hidden)
