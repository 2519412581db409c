"""The machine a run uses: ``--device`` selection (``auto`` picks a GPU when one is present) and the facts a reader
needs to interpret a figure measured on it."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

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


def machine() -> dict[str, Any]:
    """Cores, CPU model, Python and torch versions, torch threads, GPU if any: recorded with every measured result."""
    cpu = platform.processor() or platform.machine() or "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def describe_machine() -> str:
    """:func:`machine` in one line, for reports."""
    m = machine()
    gpu = f", GPU {m['cuda']}" if m["cuda"] else ""
    return f"{m['cpu']}, {m['nproc']} cores, torch {m['torch']} with {m['threads']} thread(s){gpu}"
