"""Device selection shared by every command: ``--device auto`` picks a GPU when one is present."""

from __future__ import annotations

import torch

from evoprune.errors import ConfigError


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"mps"`` into a usable ``torch.device``.

    Asking for an accelerator that is not there is an error rather than a silent fall-back to the CPU, so a
    benchmark never reports CPU numbers as GPU ones.
    """
    if isinstance(spec, torch.device):
        return spec
    text = spec.strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(text)
    except RuntimeError as exc:
        raise ConfigError(f"--device {spec!r} is not a device name; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {spec!r} asks for CUDA but no CUDA GPU is available here; use --device auto or cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {spec!r} asks for MPS but it is not available here; use --device auto or cpu")
    return device
