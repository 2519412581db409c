"""Checkpoints that load without unpickling code: architecture name and arguments plus a ``state_dict``.

The file is a plain ``torch.save`` of a dict holding only tensors, strings, numbers, lists and dicts, so it loads
with ``torch.load(weights_only=True)``; the model is rebuilt from the zoo by name, never unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from evoprune.atomic import write_atomic
from evoprune.errors import CheckpointError

FORMAT = "evoprune.checkpoint/1"


def save_checkpoint(
    path: str | Path, model: nn.Module, *, arch: str, arch_kwargs: dict[str, Any], meta: dict[str, Any] | None = None
) -> Path:
    """Write ``model``'s weights with the zoo name and arguments that rebuild it, atomically (temp file + rename)."""
    payload = {
        "format": FORMAT,
        "arch": arch,
        "arch_kwargs": dict(arch_kwargs),
        "meta": dict(meta or {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    return write_atomic(path, lambda handle: torch.save(payload, handle))


def read_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint's payload without building the model."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; train one with `evoprune train --out {path}`")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "it is corrupt, truncated, or not an evoprune checkpoint. Retrain or restore it."
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an evoprune checkpoint (expected format {FORMAT!r})")
    for key in ("arch", "arch_kwargs", "state_dict"):
        if key not in payload:
            raise CheckpointError(f"checkpoint {path} lacks its {key!r} entry; it is incomplete")
    return payload


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model by name from the zoo and load its weights. Returns ``(model, payload)``.

    A structurally pruned model (``meta["pruning"]``, written by ``evoprune.prune``) is rebuilt unpruned, then its
    recorded pruning history is replayed so every layer has its pruned width before the weights load.
    """
    from evoprune.models import build_model

    payload = read_checkpoint(path, map_location=map_location)
    try:
        model = build_model(payload["arch"], **payload["arch_kwargs"])
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path}: cannot build {payload['arch']!r} with {payload['arch_kwargs']}: {exc}") from exc
    record = payload.get("meta", {}).get("pruning")
    if record:
        from evoprune.prune.io import apply_pruning_record

        try:
            apply_pruning_record(model, record, payload["arch_kwargs"])
        except CheckpointError as exc:
            raise CheckpointError(f"checkpoint {path}: {exc}") from exc
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()
        raise CheckpointError(
            f"checkpoint {path} does not match architecture {payload['arch']!r} {payload['arch_kwargs']}: "
            f"{' '.join(first[:3])[:400]}"
        ) from exc
    return model, payload
