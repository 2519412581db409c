"""Name → builder registry for the model zoo (timm-style ``@register_model``).

Models are built by name so that checkpoints, presets and the CLI can refer to an
architecture with a plain string plus keyword arguments. Input channels, class count
and image size always come from the dataset, so every builder takes them as keywords.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable
from typing import overload

from torch import nn

from evoprune.errors import ConfigError
from evoprune.models.utils import as_image_size, check_positive_int

ModelBuilder = Callable[..., nn.Module]

_REGISTRY: dict[str, ModelBuilder] = {}

# Keywords every builder must accept; build_model always passes them.
_COMMON_KWARGS = ("in_channels", "num_classes", "image_size")


def _normalise(name: str) -> str:
    """Make look-ups forgiving about case and '-' vs '_' (CLI users type both)."""
    return name.strip().lower().replace("-", "_")


@overload
def register_model(fn_or_name: ModelBuilder) -> ModelBuilder: ...
@overload
def register_model(fn_or_name: str) -> Callable[[ModelBuilder], ModelBuilder]: ...


def register_model(fn_or_name: ModelBuilder | str) -> ModelBuilder | Callable[[ModelBuilder], ModelBuilder]:
    """Register a builder under its function name (``@register_model``) or a given one
    (``@register_model("name")``).

    The builder must accept ``in_channels``, ``num_classes`` and ``image_size`` as
    keyword arguments; this is checked here so a broken builder fails at import time,
    not in the middle of an experiment.
    """

    def _register(fn: ModelBuilder, name: str) -> ModelBuilder:
        key = _normalise(name)
        if key in _REGISTRY:
            raise ConfigError(f"model name {key!r} is already registered")
        params = inspect.signature(fn).parameters
        missing = [k for k in _COMMON_KWARGS if k not in params]
        if missing:
            raise TypeError(f"builder {fn.__qualname__} must accept keyword(s) {', '.join(missing)}")
        _REGISTRY[key] = fn
        return fn

    if isinstance(fn_or_name, str):
        return lambda fn: _register(fn, fn_or_name)
    return _register(fn_or_name, fn_or_name.__name__)


def available_models() -> list[str]:
    """Sorted names of all registered models."""
    return sorted(_REGISTRY)


def _unknown_model_message(name: str) -> str:
    known = available_models()
    msg = f"unknown model {name!r}."
    key = _normalise(name)
    # Common spellings from other zoos: 'vgg16', 'resnet56' are depth variants here.
    match = re.fullmatch(r"(vgg|resnet)_?(\d+)", key)
    if match and (target := {"vgg": "vgg", "resnet": "resnet_cifar"}[match.group(1)]) in _REGISTRY:
        msg += f" Did you mean {target!r} with depth={int(match.group(2))}?"
    else:
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
        if close:
            msg += f" Did you mean {close[0]!r}?"
    return msg + f" Known models: {', '.join(known)}."


def get_builder(name: str) -> ModelBuilder:
    """The registered builder for ``name``; a ConfigError (a ValueError) naming the closest match if unknown."""
    try:
        return _REGISTRY[_normalise(name)]
    except KeyError:
        raise ConfigError(_unknown_model_message(name)) from None


def build_model(
    name: str,
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int | tuple[int, int] = (28, 28),
    **kwargs: object,
) -> nn.Module:
    """Build the zoo model ``name`` for the given input shape and class count.

    Extra keyword arguments go to the builder (e.g. ``depth``, ``width``); an argument the builder does not know,
    or a value it cannot use, raises ConfigError listing the arguments it accepts.
    """
    builder = get_builder(name)
    params = inspect.signature(builder).parameters
    accepts_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in kwargs if k not in params or k in _COMMON_KWARGS]
    options = ", ".join(k for k in params if k not in _COMMON_KWARGS) or "no extra arguments"
    if unknown and not accepts_var_kw:
        raise ConfigError(
            f"model {_normalise(name)!r} got unexpected argument(s) {', '.join(sorted(unknown))}; "
            f"it accepts: {options} (e.g. --model-arg KEY=VALUE)"
        )
    common = {"in_channels": check_positive_int(in_channels, "in_channels"),
              "num_classes": check_positive_int(num_classes, "num_classes"), "image_size": as_image_size(image_size)}
    try:
        return builder(**common, **kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # a value of the wrong kind, e.g. depth="deep"
        given = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "no extra arguments"
        raise ConfigError(f"model {_normalise(name)!r} cannot be built with {given}: {exc}; "
                          f"it accepts: {options}") from exc
