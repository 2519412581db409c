"""What every benchmark target shares: machine facts, mean ± std, settings fingerprints, atomic result files."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from evoprune.atomic import write_atomic


def machine() -> dict[str, Any]:
    """What a reader needs to interpret a figure: cores, CPU model, torch version and threads, GPU if any."""
    cpu = platform.processor() or "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fingerprint(values: Mapping[str, Any]) -> str:
    """A short hash of the settings that shaped a result: results are reused only when it matches."""
    blob = json.dumps(dict(values), sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    text = json.dumps(payload, indent=2) + "\n"
    write_atomic(path, lambda handle: handle.write(text.encode()))


def write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda handle: handle.write(text.encode()))
