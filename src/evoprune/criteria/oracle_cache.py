"""The oracle of a trained network, computed once and kept on disk.

The oracle costs a partial forward per channel (minutes for a ResNet on a CPU) and depends only on the weights,
the validation images and its own settings, so evolution (one per task in ``RUN_DIR/oracle/``) and the criteria
benchmark (one per baseline beside the cached checkpoints) compute it once and read it back on every later run.
The file holds plain tensors and numbers (read with ``weights_only=True``) under a key of exactly those inputs;
a file with another key, or a damaged one, is recomputed, so no run ever reads the oracle of another model.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from evoprune.atomic import write_atomic
from evoprune.criteria.oracle import oracle_importance

FORMAT = "evoprune.oracle/1"


@dataclass(frozen=True)
class StoredOracle:
    """The part of an :class:`~evoprune.criteria.OracleResult` worth keeping: the loss increase per channel of each
    group, the unpruned loss on the same images, how many images, and how long computing it took (``reused``:
    read from the file, not computed now)."""

    increase: dict[str, torch.Tensor]
    baseline_loss: float
    samples: int
    seconds: float
    reused: bool


def oracle_key(model: nn.Module, x_val: torch.Tensor, y_val: torch.Tensor, *, samples: int, seed: int,
               ablations: int) -> str:
    """A digest of everything the oracle depends on: every state tensor (name, dtype, shape, bytes), the
    validation images and labels, and the settings."""
    digest = hashlib.sha256(FORMAT.encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.numpy().tobytes())
    digest.update(x_val.detach().cpu().contiguous().numpy().tobytes())
    digest.update(y_val.detach().cpu().contiguous().numpy().tobytes())
    digest.update(json.dumps([samples, seed, ablations]).encode())
    return digest.hexdigest()


def cached_oracle(model: nn.Module, x_val: torch.Tensor, y_val: torch.Tensor, path: Path, *, samples: int = 1000,
                  seed: int = 0, ablations: int = 4, device: str | torch.device = "auto",
                  progress: bool = False) -> StoredOracle:
    """:func:`~evoprune.criteria.oracle_importance` of ``model``, read from ``path`` when it holds this exact
    oracle, otherwise computed and saved there (atomically)."""
    key = oracle_key(model, x_val, y_val, samples=samples, seed=seed, ablations=ablations)
    if path.is_file():
        try:
            saved = torch.load(path, weights_only=True)
            if isinstance(saved, dict) and saved.get("key") == key:
                return StoredOracle(dict(saved["increase"]), float(saved["baseline_loss"]), int(saved["samples"]),
                                    float(saved["seconds"]), reused=True)
        except (OSError, RuntimeError, KeyError, AttributeError, TypeError, ValueError, EOFError, pickle.UnpicklingError):
            pass  # damaged: computed again below
    result = oracle_importance(model, x_val, y_val, samples=samples, seed=seed, ablations=ablations, device=device,
                               progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda handle: torch.save({"key": key, "increase": result.increase,
                                                  "baseline_loss": result.baseline_loss, "samples": result.samples,
                                                  "seconds": result.seconds}, handle))
    return StoredOracle(result.increase, result.baseline_loss, result.samples, result.seconds, reused=False)
