"""Checkpoints that load without unpickling code: architecture name and arguments plus a ``state_dict``.

The file is a plain ``torch.save`` of a dict holding only tensors, strings, numbers, lists and dicts, so it loads
with ``torch.load(weights_only=True)``; the model is rebuilt from the zoo by name, never unpickled. Everything
read is checked (types, ranges, pruning history against the layers, weights against the rebuilt model), so a
damaged or hand-edited file ends in one :class:`CheckpointError` naming the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from evoprune.atomic import write_atomic
from evoprune.errors import CheckpointError, describe, first_line
from evoprune.models import build_model
from evoprune.prune.history import apply_pruning_record, check_pruning_record, pruning_record

FORMAT = "evoprune.checkpoint/1"
_MAX_SEED = 2**32 - 1  # numpy / scikit-learn seeds
_MAX_NAME = 100  # model and dataset names: longer ones are damage, and would flood the error message
_MAX_PRUNED_FACTOR = 1000  # a pruned model keeps at least 0.1% of the weights of the model it was pruned from


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    arch: str,
    arch_kwargs: dict[str, Any],
    meta: dict[str, Any] | None = None,
    pruning_history: list[list[Any]] | None = None,
) -> Path:
    """Write ``model``'s weights with the zoo name and arguments that rebuild it, atomically (temp file + rename).

    A structurally pruned model passes the ``pruning_history`` that shrank it from the zoo model (its
    ``ChannelPruner.pruning_history_``); :func:`load_checkpoint` replays it before loading the weights.
    """
    meta = dict(meta or {})
    if pruning_history:
        meta["pruning"] = pruning_record(pruning_history, arch_kwargs)
    payload = {
        "format": FORMAT,
        "arch": arch,
        "arch_kwargs": dict(arch_kwargs),
        "meta": meta,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    return write_atomic(path, lambda handle: torch.save(payload, handle))


def pruning_history_of(payload: dict[str, Any]) -> list[list[Any]]:
    """The pruning history stored in a checkpoint payload ([] for an unpruned model), to prune it further."""
    record = payload.get("meta", {}).get("pruning") or {}
    return [list(entry) for entry in record.get("history", [])]


def _refuse(path: Path, problem: str) -> CheckpointError:
    """The one error for a damaged checkpoint: which file, what is wrong, how to fix it."""
    return CheckpointError(
        f"checkpoint {path}: {problem}. The file is corrupt, truncated, edited or not an evoprune checkpoint: "
        "restore the original, or write a new one with `evoprune train` (or `evoprune prune`)"
    )


def _check_meta(path: Path, meta: object) -> dict[str, Any]:
    """The ``meta`` fields that loading and the commands read: dataset, seed, normalize, pruning."""
    if not isinstance(meta, dict) or not all(isinstance(k, str) for k in meta):
        raise _refuse(path, f"field 'meta' must be a dict with string keys, found {describe(meta)}")
    dataset = meta.get("dataset")
    if dataset is not None and not (isinstance(dataset, str) and 0 < len(dataset) <= _MAX_NAME):
        raise _refuse(path, f"field 'meta.dataset' must be a dataset name, found {describe(dataset)}")
    seed = meta.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED):
        raise _refuse(path, f"field 'meta.seed' must be an integer in [0, {_MAX_SEED}], found {describe(seed)}")
    normalize = meta.get("normalize")
    if normalize is not None and not isinstance(normalize, bool):
        raise _refuse(path, f"field 'meta.normalize' must be true or false, found {describe(normalize)}")
    if meta.get("pruning") is not None:
        try:
            check_pruning_record(meta["pruning"])
        except CheckpointError as exc:
            raise _refuse(path, str(exc)) from exc
    return meta


def read_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint's payload without building the model (``meta`` is ``{}`` when absent)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; train one with `evoprune train --out {path}`")
    if path.stat().st_size == 0:
        raise _refuse(path, "the file is empty (0 bytes)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be opened ({first_line(exc)}); check its permissions") from exc
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        raise _refuse(path, f"the file cannot be read ({first_line(exc)}); it may be truncated") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise _refuse(path, f"its 'format' is not {FORMAT!r}")
    for key in ("arch", "arch_kwargs", "state_dict"):
        if key not in payload:
            raise _refuse(path, f"the {key!r} entry is missing")
    if not isinstance(payload["arch"], str) or not 0 < len(payload["arch"]) <= _MAX_NAME:
        raise _refuse(path, f"field 'arch' must be a zoo model name, found {describe(payload['arch'])}")
    kwargs = payload["arch_kwargs"]
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise _refuse(path, f"field 'arch_kwargs' must be a dict with string keys, found {describe(kwargs)}")
    state = payload["state_dict"]
    if not isinstance(state, dict) or not state:
        raise _refuse(path, f"field 'state_dict' must be a non-empty dict of tensors, found {describe(state)}")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor) or value.layout != torch.strided:
            raise _refuse(path, f"field 'state_dict' must map names to dense tensors; entry {describe(key)} is "
                                f"{describe(value)}")
    payload["meta"] = _check_meta(path, payload.get("meta", {}))
    return payload


def _check_state_dict(path: Path, model: nn.Module, state: dict[str, torch.Tensor], arch: str, pruned: bool) -> None:
    """Refuse weights whose names, shapes or kinds differ from the rebuilt model's (before ``load_state_dict``)."""
    expected = model.state_dict()
    mismatch = f"field 'state_dict' does not match architecture {arch!r}"
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = [f"{what} {', '.join(repr(k[:60]) for k in keys[:4])}{' ...' if len(keys) > 4 else ''}"
                 for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        raise _refuse(path, f"{mismatch}: {'; '.join(parts)}")
    for key, want in expected.items():
        got = state[key]
        if got.shape != want.shape:
            after = " (after its pruning history)" if pruned else ""
            raise _refuse(path, f"{mismatch}{after}: {key!r} has shape {list(got.shape)}, the model needs "
                                f"{list(want.shape)}")
        if got.dtype.is_floating_point != want.dtype.is_floating_point or got.is_complex() or got.dtype == torch.bool:
            raise _refuse(path, f"{mismatch}: {key!r} holds {got.dtype} values where {want.dtype} is needed")


def _build(path: Path, arch: str, kwargs: dict[str, Any]) -> nn.Module:
    """The zoo model a checkpoint names, or a CheckpointError when its name or arguments are wrong."""
    try:
        return build_model(arch, **kwargs)
    except Exception as exc:
        raise _refuse(path, f"fields 'arch'/'arch_kwargs' cannot build {arch!r} with {describe(kwargs)} "
                            f"({first_line(exc)})") from exc


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model by name from the zoo and load its weights. Returns ``(model, payload)``.

    A structurally pruned model (``meta["pruning"]``, saved with its ``pruning_history``) is rebuilt unpruned, then its
    recorded pruning history is replayed so every layer has its pruned width before the weights load.
    """
    path = Path(path)
    payload = read_checkpoint(path, map_location=map_location)
    arch, kwargs = payload["arch"], payload["arch_kwargs"]
    record = payload["meta"].get("pruning")
    state = payload["state_dict"]
    with torch.device("meta"):  # shapes first, without allocating: arch_kwargs could ask for terabytes
        skeleton = _build(path, arch, kwargs)
    if not record:
        _check_state_dict(path, skeleton, state, arch, pruned=False)
        model = _build(path, arch, kwargs)
    else:
        needed, stored = (sum(t.numel() for t in sd.values()) for sd in (skeleton.state_dict(), state))
        if needed > stored * _MAX_PRUNED_FACTOR:
            raise _refuse(path, f"fields 'arch'/'arch_kwargs' {describe(kwargs)} build a {arch!r} of {needed:,} "
                                f"weights, more than {_MAX_PRUNED_FACTOR} times the {stored:,} in 'state_dict'")
        model = _build(path, arch, kwargs)
        try:
            apply_pruning_record(model, record, kwargs)
        except CheckpointError as exc:
            raise _refuse(path, str(exc)) from exc
        _check_state_dict(path, model, state, arch, pruned=True)
    try:
        model.load_state_dict(state)
    except Exception as exc:
        raise _refuse(path, f"field 'state_dict' does not load into {arch!r} ({first_line(exc)})") from exc
    return model, payload
