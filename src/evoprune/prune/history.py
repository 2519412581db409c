"""The pruning record a pruned checkpoint carries, and its replay on a freshly built model.

``meta["pruning"]`` holds Torch-Pruning's pruning history: the ordered list of ``[root layer, output channels?,
[indices]]`` removals. Replaying it through a fresh dependency graph shrinks every coupled BatchNorm, residual
partner and consumer exactly as the original pruning did, so :mod:`evoprune.checkpoint` can rebuild a pruned model
from the zoo by name and load its weights, with no pickled code.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from evoprune.errors import CheckpointError, describe, first_line
from evoprune.prune.errors import PruningError
from evoprune.prune.graph import ModelGraph

PRUNING_FORMAT = "evoprune.pruning/1"


def example_input(arch_kwargs: dict[str, Any], batch: int = 1) -> torch.Tensor:
    """A zero input shaped for a zoo model built with ``arch_kwargs`` (channels and image size)."""
    size = arch_kwargs.get("image_size", (28, 28))
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return torch.zeros(batch, int(arch_kwargs.get("in_channels", 1)), int(h), int(w))


def pruning_record(pruning_history: list[list[Any]], arch_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The ``meta["pruning"]`` record of a model pruned by ``pruning_history`` from the zoo model ``arch_kwargs`` build."""
    history = [[str(name), bool(out), [int(i) for i in idxs]] for name, out, idxs in pruning_history]
    return {"format": PRUNING_FORMAT, "history": history, "input_shape": list(example_input(arch_kwargs).shape[1:])}


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
