"""Masks in and out: apply them with ``torch.nn.utils.prune``, save and load them without pickled code.

A mask set is ``{module name: bool tensor shaped like module.weight}`` (True = weight kept); biases are never
masked. ``apply_masks`` goes through ``prune.custom_from_mask``, so ``prune.is_pruned``, ``prune.remove``,
Lightning's pruning callback and sparsity counters all see an ordinary pruned model. Files are either a
``torch.save`` of a plain dict of bool tensors (``.pt``, loaded with ``weights_only=True``) or NumPy ``.npz``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from evoprune.atomic import write_atomic
from evoprune.errors import ConfigError


def check_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Every name must be a module with a ``weight`` of the mask's shape, and every mask boolean."""
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        module = modules.get(name)
        if module is None or not isinstance(getattr(module, "weight", None), torch.Tensor):
            weighted = [n for n, m in modules.items() if isinstance(getattr(m, "weight", None), torch.Tensor)]
            raise ConfigError(f"mask for unknown layer {name!r}; layers with weights: {', '.join(weighted)}")
        weight = module.weight
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise ConfigError(f"mask for layer {name!r} must be a bool tensor, got {getattr(mask, 'dtype', type(mask))}")
        if tuple(mask.shape) != tuple(weight.shape):
            raise ConfigError(f"mask for layer {name!r} has shape {tuple(mask.shape)} but its weight has shape {tuple(weight.shape)}")


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Attach each mask to its layer's ``weight`` with ``prune.custom_from_mask`` (in place; returns ``model``)."""
    check_masks(model, masks)
    for name, mask in masks.items():
        module = model.get_submodule(name)
        prune.custom_from_mask(module, "weight", mask.to(module.weight.device))
    return model


def masks_from_model(model: nn.Module) -> dict[str, torch.Tensor]:
    """The ``weight_mask`` buffers of a model pruned through ``torch.nn.utils.prune``, as bool tensors."""
    return {name: module.weight_mask.detach().bool().cpu() for name, module in model.named_modules()
            if isinstance(getattr(module, "weight_mask", None), torch.Tensor)}


def save_masks(path: str | Path, masks: Mapping[str, torch.Tensor]) -> Path:
    """Write masks to ``.pt`` (torch.save of a dict of bool tensors) or ``.npz``, atomically."""
    path = Path(path)
    payload = {name: mask.detach().bool().cpu().contiguous() for name, mask in masks.items()}
    if path.suffix == ".npz":
        return write_atomic(path, lambda fh: np.savez_compressed(fh, **{k: m.numpy() for k, m in payload.items()}))
    return write_atomic(path, lambda fh: torch.save(payload, fh))


def load_masks(path: str | Path) -> dict[str, torch.Tensor]:
    """Read masks written by ``save_masks`` (no code is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"mask file {path} does not exist")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                raw = {name: torch.from_numpy(data[name].copy()) for name in data.files}
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign files raise many types
        raise ConfigError(f"cannot read masks from {path} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from exc
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in raw.items()):
        raise ConfigError(f"{path} does not hold a dict of layer name → mask tensor")
    bad = [k for k, v in raw.items() if v.dtype != torch.bool]
    if bad:
        raise ConfigError(f"{path}: masks for {bad} are not boolean")
    return dict(raw)


def layer_stats(masks: Mapping[str, torch.Tensor]) -> list[dict[str, float | int | str]]:
    """Per-layer size, pruned and kept counts and sparsity."""
    out: list[dict[str, float | int | str]] = []
    for name, mask in masks.items():
        size, kept = mask.numel(), int(mask.sum())
        out.append({"layer": name, "size": size, "pruned": size - kept, "kept": kept, "sparsity": (size - kept) / size})
    return out
