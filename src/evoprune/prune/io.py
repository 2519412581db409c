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

from evoprune.checkpoint import describe, first_line, load_checkpoint, save_checkpoint
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


def _is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_pruning_record(record: object) -> None:
    """Refuse a ``meta["pruning"]`` record of the wrong shape or types (CheckpointError naming the field)."""
    if not isinstance(record, dict):
        raise CheckpointError(f"field 'meta.pruning' must be a dict, found {describe(record)}")
    if record.get("format") != PRUNING_FORMAT:
        raise CheckpointError(f"field 'meta.pruning.format' is {describe(record.get('format'))}, "
                              f"expected {PRUNING_FORMAT!r}")
    shape = record.get("input_shape")
    if shape is not None and not (isinstance(shape, list) and len(shape) == 3 and all(
            _is_index(v) and v > 0 for v in shape)):
        raise CheckpointError(f"field 'meta.pruning.input_shape' must be [channels, height, width] of positive "
                              f"integers, found {describe(shape)}")
    history = record.get("history")
    if not isinstance(history, list):
        raise CheckpointError(f"field 'meta.pruning.history' must be a list, found {describe(history)}")
    for step, entry in enumerate(history):
        if not (isinstance(entry, (list, tuple)) and len(entry) == 3 and isinstance(entry[0], str) and entry[0]
                and isinstance(entry[1], bool) and isinstance(entry[2], list) and all(_is_index(i) for i in entry[2])):
            raise CheckpointError(f"field 'meta.pruning.history[{step}]' must be [layer name, true/false, "
                                  f"[channel indices >= 0]], found {describe(entry)}")


def replay_history(model: nn.Module, history: list[list[Any]], example_inputs: torch.Tensor) -> nn.Module:
    """Apply a recorded pruning history to a freshly built (unpruned) model, in place.

    Each step is checked against the model as it stands (the layer exists and can be pruned, its indices are
    distinct, within its current channel count and leave at least one channel), because Torch-Pruning would
    otherwise shrink a layer's declared size without its weights for an index out of range.
    """
    graph = ModelGraph(model, example_inputs)
    for step, (name, out, idxs) in enumerate(history):
        name = str(name)
        where = f"step {step} ({name[:80]!r}, {'output' if out else 'input'} channels)"
        try:
            module = model.get_submodule(name)
        except AttributeError as exc:
            raise PruningError(f"{where}: {type(model).__name__} has no such layer") from exc
        pruner = graph.DG.get_pruner_of_module(module)
        if pruner is None or module not in graph.DG.module2node:
            raise PruningError(f"{where}: a {type(module).__name__} is not a prunable layer of the model")
        if out and name == graph.output_layer:
            raise PruningError(f"{where}: the output layer; its outputs are the classes and are never pruned")
        width = int(pruner.get_out_channels(module) if out else pruner.get_in_channels(module))
        indices = [int(i) for i in idxs]
        outside = [i for i in indices if not 0 <= i < width]
        if outside or len(set(indices)) != len(indices) or len(indices) >= width:
            problem = (f"indices {outside[:5]} are outside 0..{width - 1}" if outside
                       else "indices repeat" if len(set(indices)) != len(indices)
                       else f"removes all {width} channels")
            raise PruningError(f"{where}: {problem}; the layer has {width} channels at this step")
        try:
            graph.DG.load_pruning_history([[name, bool(out), indices]])
        except (AttributeError, IndexError, RuntimeError, ValueError) as exc:
            raise PruningError(f"{where} does not fit this model ({first_line(exc)})") from exc
    return model


def apply_pruning_record(model: nn.Module, record: dict[str, Any], arch_kwargs: dict[str, Any]) -> nn.Module:
    """Shrink a freshly built zoo model as a checkpoint's ``meta["pruning"]`` record says (in place)."""
    check_pruning_record(record)
    expected = list(example_input(arch_kwargs).shape[1:])
    shape = record.get("input_shape") or expected
    if shape != expected:
        raise CheckpointError(f"field 'meta.pruning.input_shape' is {shape} but 'arch_kwargs' give inputs of {expected}")
    try:
        return replay_history(model, record["history"], torch.zeros(1, *shape))
    except PruningError as exc:
        raise CheckpointError(f"field 'meta.pruning.history' does not fit the model: {exc}") from exc


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
