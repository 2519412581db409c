"""Small helpers shared by the zoo models and by code that walks their weights."""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
from torch import nn

from evoprune.errors import ConfigError

# Layers whose weight tensors are candidates for (mask or structured) pruning.
PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.modules.conv._ConvNd, nn.Linear)


def check_positive_int(value: object, what: str) -> int:
    """Return ``value`` as int (NumPy integers accepted), or raise ConfigError (a ValueError) saying which
    argument is wrong."""
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        number = 0
    if isinstance(value, bool) or number < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return number


def as_image_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    """Normalise an image size given as ``int`` or ``(H, W)`` to a tuple of two positive ints."""
    if not isinstance(image_size, Sequence) and hasattr(image_size, "__index__"):
        size = (image_size, image_size)
    elif isinstance(image_size, Sequence) and not isinstance(image_size, str):
        size = tuple(image_size)
    else:
        size = ()
    if len(size) != 2:
        raise ConfigError(f"image_size must be an int or (height, width), got {image_size!r}")
    return (check_positive_int(size[0], "image height"), check_positive_int(size[1], "image width"))


def scale_width(channels: int, width: float) -> int:
    """Channel count scaled by a width multiplier, rounded, at least 1."""
    if not width > 0:
        raise ConfigError(f"width multiplier must be > 0, got {width!r}")
    return max(1, int(round(channels * width)))


def prunable_weights(
    model: nn.Module, example_inputs: torch.Tensor | None = None
) -> list[tuple[str, nn.Parameter]]:
    """Conv and linear weight tensors of ``model`` as ``(qualified name, parameter)``.

    Biases (and BatchNorm parameters) are left out: mask search never prunes them.
    Without ``example_inputs`` the order is module registration order, which is the
    forward order for every zoo model. With ``example_inputs`` the model is run once
    (no grad) and layers are ordered by their first call, which also holds for
    third-party models that register modules out of order; layers never called are
    appended in registration order.
    """
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES) and m.weight is not None]
    if example_inputs is not None:
        first_call: dict[int, int] = {}

        def record(module: nn.Module, _inputs: object) -> None:  # must return None: not alter inputs
            first_call.setdefault(id(module), len(first_call))

        handles = [m.register_forward_pre_hook(record) for _, m in layers]
        was_training = model.training
        try:
            model.eval()
            with torch.no_grad():
                model(example_inputs)
        finally:
            model.train(was_training)
            for h in handles:
                h.remove()
        registration = {id(m): i for i, (_, m) in enumerate(layers)}
        layers.sort(key=lambda nm: (id(nm[1]) not in first_call, first_call.get(id(nm[1]), registration[id(nm[1])])))
    return [(f"{name}.weight" if name else "weight", m.weight) for name, m in layers]
