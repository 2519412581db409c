"""The run directory: config, event log, per-generation checkpoint, pretrained models, results.

Layout::

    RUN_DIR/config.json         the validated config (resume reads it back)
    RUN_DIR/events.jsonl        one JSON object per line: run, pretraining, every evaluation, every generation
    RUN_DIR/checkpoint.json     state after the last finished generation (written atomically: temp + rename)
    RUN_DIR/models/<task>.pt    pretrained task models (evoprune checkpoints, no pickled code)
    RUN_DIR/results.json, fitness.png, report.md   written at the end

Everything is JSON: the population as formula strings, the fitness cache, the RNG states of ``random``, numpy
and torch as plain numbers. Evaluations are logged as they finish, so a resumed run reuses the ones that finished
after the last checkpoint (a fitness depends only on formula, task and seed, so the values are the same).
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evoprune.atomic import write_atomic
from evoprune.errors import EvopruneError

CHECKPOINT_FORMAT = "evoprune.evolve.checkpoint/1"


class RunDirError(EvopruneError, ValueError):
    """A run directory is missing, belongs to another config, or its checkpoint is corrupt."""


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that a run killed at any moment leaves either the old or the new file (``evoprune.atomic``)."""
    text = json.dumps(data, indent=1, allow_nan=False) + "\n"
    write_atomic(path, lambda handle: handle.write(text.encode()))


def rng_state() -> dict[str, Any]:
    """The global RNG states of ``random``, numpy and torch (CPU) as JSON-safe data."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "random": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["random"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    raw = np.frombuffer(base64.b64decode(state["torch"]), dtype=np.uint8).copy()
    torch.set_rng_state(torch.from_numpy(raw))


def random_state_to_json(rng: random.Random) -> list[Any]:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def random_state_from_json(data: list[Any]) -> random.Random:
    rng = random.Random()
    rng.setstate((data[0], tuple(data[1]), data[2]))
    return rng


class RunDir:
    """Paths and I/O of one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._events = None

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.json"

    @property
    def events_path(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def models_dir(self) -> Path:
        return self.path / "models"

    @property
    def results_path(self) -> Path:
        return self.path / "results.json"

    # --- config ---------------------------------------------------------------------------------------------------

    def create(self, config_data: dict[str, Any], *, overwrite: bool = False) -> None:
        """Start a new run here; refuse a folder that already holds a run unless ``overwrite``."""
        if self.config_path.exists() and not overwrite:
            raise RunDirError(f"{self.path} already holds a run (config.json); continue it with --resume {self.path}, "
                              "or choose another --out")
        self.path.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for name in ("checkpoint.json", "events.jsonl", "results.json"):
                (self.path / name).unlink(missing_ok=True)
        write_json_atomic(self.config_path, config_data)

    def read_config(self) -> dict[str, Any]:
        if not self.config_path.is_file():
            raise RunDirError(f"{self.path} is not a run directory (no config.json); start a run with --out {self.path}")
        try:
            return json.loads(self.config_path.read_text())
        except json.JSONDecodeError as exc:
            raise RunDirError(f"{self.config_path} is corrupt ({exc}); the run cannot be resumed") from None

    # --- checkpoint -----------------------------------------------------------------------------------------------

    def write_checkpoint(self, state: dict[str, Any]) -> None:
        write_json_atomic(self.checkpoint_path, {"format": CHECKPOINT_FORMAT, **state})

    def read_checkpoint(self) -> dict[str, Any] | None:
        """The last checkpoint, or None if no generation finished yet."""
        if not self.checkpoint_path.is_file():
            return None
        try:
            data = json.loads(self.checkpoint_path.read_text())
        except json.JSONDecodeError as exc:
            raise RunDirError(f"{self.checkpoint_path} is corrupt ({exc}); it is written atomically, so something else "
                              "changed it. Start a new run.") from None
        if data.get("format") != CHECKPOINT_FORMAT:
            raise RunDirError(f"{self.checkpoint_path} is not an evoprune evolution checkpoint ({CHECKPOINT_FORMAT})")
        return data

    # --- event log ------------------------------------------------------------------------------------------------

    def log(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one event (flushed at once, so a killed run keeps every finished evaluation)."""
        record = {"time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"), "event": event, **fields}
        if self._events is None:
            self.path.mkdir(parents=True, exist_ok=True)
            self._events = open(self.events_path, "a", buffering=1)
        self._events.write(json.dumps(record, allow_nan=False, default=str) + "\n")
        self._events.flush()
        return record

    def events(self) -> list[dict[str, Any]]:
        """All complete events (a line cut short by a kill is skipped)."""
        if not self.events_path.is_file():
            return []
        out = []
        for line in self.events_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None
