"""Save, load and export pruned models without pickled code.

A pruned checkpoint is an ordinary evoprune checkpoint (``evoprune.checkpoint``: zoo name, arguments, state
dict; loads with ``torch.load(weights_only=True)``) whose ``meta["pruning"]`` holds Torch-Pruning's pruning
history: the ordered list of ``[root layer, output channels?, [indices]]`` removals. Loading rebuilds the
unpruned zoo model, replays the history through a fresh dependency graph (so every coupled BatchNorm, residual
partner and consumer shrinks exactly as it did), then loads the weights. A checkpoint without pruning history
loads as the plain model, so ``load_pruned`` accepts every evoprune checkpoint.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evoprune.checkpoint import load_checkpoint, save_checkpoint
from evoprune.errors import CheckpointError
from evoprune.prune.errors import PruningError
from evoprune.prune.graph import ModelGraph

PRUNING_FORMAT = "evoprune.pruning/1"


def example_input(arch_kwargs: dict[str, Any], batch: int = 1) -> torch.Tensor:
    """A zero input shaped for a zoo model built with ``arch_kwargs`` (channels and image size)."""
    size = arch_kwargs.get("image_size", (28, 28))
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return torch.zeros(batch, int(arch_kwargs.get("in_channels", 1)), int(h), int(w))


def save_pruned(
    path: str | Path,
    model: nn.Module,
    *,
    arch: str,
    arch_kwargs: dict[str, Any],
    pruning_history: list[list[Any]],
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (a pruned zoo model) with the history that rebuilds its shape from ``arch``."""
    history = [[str(name), bool(out), [int(i) for i in idxs]] for name, out, idxs in pruning_history]
    record = {"format": PRUNING_FORMAT, "history": history,
              "input_shape": list(example_input(arch_kwargs).shape[1:])}
    return save_checkpoint(path, model.cpu(), arch=arch, arch_kwargs=arch_kwargs, meta={**(meta or {}), "pruning": record})


def replay_history(model: nn.Module, history: list[list[Any]], example_inputs: torch.Tensor) -> nn.Module:
    """Apply a recorded pruning history to a freshly built (unpruned) model, in place."""
    graph = ModelGraph(model, example_inputs)
    try:
        graph.DG.load_pruning_history([[str(n), bool(o), [int(i) for i in idxs]] for n, o, idxs in history])
    except (AttributeError, IndexError, RuntimeError, ValueError) as exc:
        raise PruningError(f"the pruning history does not fit this model ({type(exc).__name__}: {exc})") from exc
    return model


def apply_pruning_record(model: nn.Module, record: dict[str, Any], arch_kwargs: dict[str, Any]) -> nn.Module:
    """Shrink a freshly built zoo model as a checkpoint's ``meta["pruning"]`` record says (in place)."""
    if record.get("format") != PRUNING_FORMAT:
        raise CheckpointError(f"unknown pruning record format {record.get('format')!r}")
    shape = record.get("input_shape") or list(example_input(arch_kwargs).shape[1:])
    try:
        return replay_history(model, record["history"], torch.zeros(1, *shape))
    except PruningError as exc:
        raise CheckpointError(str(exc)) from exc


def load_pruned(path: str | Path, *, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a (pruned or plain) checkpoint's model: zoo model, replayed history, weights. ``(model, payload)``.

    The same as :func:`evoprune.checkpoint.load_checkpoint`, which replays pruning histories itself.
    """
    return load_checkpoint(path, map_location=map_location)


def pruning_history_of(payload: dict[str, Any]) -> list[list[Any]]:
    """The pruning history stored in a checkpoint payload ([] for an unpruned model)."""
    record = payload.get("meta", {}).get("pruning") or {}
    return [list(entry) for entry in record.get("history", [])]


def export_onnx(model: nn.Module, path: str | Path, example_inputs: torch.Tensor, *, opset: int = 17) -> Path:
    """Export ``model`` to ONNX with a dynamic batch axis (input ``input``, output ``logits``).

    Uses PyTorch's TorchScript-based exporter, which needs no extra package to write the file; checking or
    running the file needs ``onnx`` (``pip install 'evoprune[onnx]'``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu = model.cpu().eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        try:
            torch.onnx.export(
                cpu, (example_inputs.cpu(),), str(path), dynamo=False, opset_version=opset,
                input_names=["input"], output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            )
        except Exception as exc:
            raise PruningError(f"ONNX export of {type(model).__name__} failed ({type(exc).__name__}: {str(exc)[:300]})") from exc
    return path
