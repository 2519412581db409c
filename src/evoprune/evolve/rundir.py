"""The run directory: config, event log, per-generation checkpoint, pretrained models, results.

Layout::

    RUN_DIR/config.json         the validated config (resume reads it back)
    RUN_DIR/events.jsonl        one JSON object per line: run, pretraining, every evaluation, every generation
    RUN_DIR/checkpoint.json     state after the last finished generation (written atomically: temp + rename)
    RUN_DIR/models/<task>.pt    pretrained task models (evoprune checkpoints, no pickled code)
    RUN_DIR/oracle/<task>.pt    each task's oracle importance (the oracle fidelity; tensors, read weights_only)
    RUN_DIR/results.json, fitness.png, report.md   written at the end

Everything is JSON: the population as formula strings, the fitness cache, the RNG states of ``random``, numpy
and torch as plain numbers. Evaluations are logged as they finish, so a resumed run reuses the ones that finished
after the last checkpoint (a fitness depends only on formula, task and seed, so the values are the same).

A run directory is read back as untrusted input: every value from ``config.json``, ``checkpoint.json`` and
``events.jsonl`` is checked (type, range, consistency with the config) before it is used, and anything wrong is
one :class:`RunDirError` naming the file, the field and the way out.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from evoprune.atomic import check_output, write_json
from evoprune.errors import ConfigError, EvopruneError

CHECKPOINT_FORMAT = "evoprune.evolve.checkpoint/3"

# What a run directory holds (besides the ``.NAME.*.tmp`` files an atomic write killed midway can leave).
RUN_ENTRIES = frozenset({"config.json", "events.jsonl", "checkpoint.json", "models", "oracle", "results.json",
                         "fitness.png", "report.md"})

_CHECKPOINT_FIX = ("evoprune writes it atomically, so something else changed it: remove checkpoint.json to redo the "
                   "run from generation 0 (evaluations logged in events.jsonl are reused), or start a new run")
_EVENTS_FIX = "evoprune only appends whole lines, so something else changed it: remove that line, or start a new run"
_CONFIG_FIX = "restore the run's config.json or start a new run"


class RunDirError(EvopruneError, ValueError):
    """A run directory is missing, belongs to another config, or one of its files is damaged or inconsistent."""


def write_json_atomic(path: Path, data: Any) -> None:
    """Run-directory JSON (compact indent, no NaN), atomic: a run killed at any moment leaves the old or the new file."""
    write_json(path, data, indent=1, allow_nan=False)


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number JSON allows")


def _loads(raw: bytes, label: str, fix: str) -> Any:
    """JSON from UTF-8 bytes (no NaN or Infinity), or one RunDirError naming ``label``."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunDirError(f"{label}: not UTF-8 text (bad byte at offset {exc.start}); {fix}") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise RunDirError(f"{label}: not valid JSON ({str(exc)[:200]}); {fix}") from None


def _show(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list, str, int, float, bool, type(None))) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Field:
    """A JSON value read from a run-directory file and where it sits there, with checks that fail as one line."""

    label: str  # the file (and line)
    where: str  # the field's path in it, e.g. cache[3].evaluations[0].fitness
    value: Any
    fix: str

    def fail(self, problem: str) -> NoReturn:
        where = f"field {self.where}" if self.where else "the top level"
        raise RunDirError(f"{self.label}: {where} {problem}; {self.fix}")

    def _child(self, name: str, value: Any) -> Field:
        where = f"{self.where}{name}" if name.startswith("[") or not self.where else f"{self.where}.{name}"
        return Field(self.label, where, value, self.fix)

    def obj(self) -> dict[str, Any]:
        if not isinstance(self.value, dict):
            self.fail(f"must be a JSON object, got {_show(self.value)}")
        return self.value

    def at(self, key: str) -> Field:
        data = self.obj()
        if key not in data:
            self._child(key, None).fail("is missing")
        return self._child(key, data[key])

    def items(self, length: int | None = None, why: str = "") -> list[Field]:
        if not isinstance(self.value, list):
            self.fail(f"must be a JSON list, got {_show(self.value)}")
        if length is not None and len(self.value) != length:
            self.fail(f"has {len(self.value)} entries, must have {length}{f' ({why})' if why else ''}")
        return [self._child(f"[{i}]", v) for i, v in enumerate(self.value)]

    def string(self) -> str:
        if not isinstance(self.value, str):
            self.fail(f"must be a string, got {_show(self.value)}")
        return self.value

    def optional_string(self) -> str | None:
        return None if self.value is None else self.string()

    def integer(self, low: int | None = None, high: int | None = None, why: str = "") -> int:
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            self.fail(f"must be an integer, got {_show(self.value)}")
        self._in_range(self.value, low, high, why)
        return self.value

    def number(self, low: float | None = None, high: float | None = None, why: str = "") -> float:
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)) or not math.isfinite(self.value):
            self.fail(f"must be a finite number, got {_show(self.value)}")
        self._in_range(self.value, low, high, why)
        return float(self.value)

    def _in_range(self, value: float, low: float | None, high: float | None, why: str) -> None:
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"in {low}..{high}" if low is not None and high is not None else (
                f"≥ {low}" if low is not None else f"≤ {high}")
            self.fail(f"is {_show(value)}, must be {bounds}{f' ({why})' if why else ''}")


# --- RNG states ---------------------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """The global RNG states of ``random``, numpy and torch (CPU) as JSON-safe data."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "random": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
    }


def _random_state(data: list[Any]) -> tuple[Any, ...]:
    return (data[0], tuple(data[1]), data[2])


def _numpy_state(data: list[Any]) -> tuple[Any, ...]:
    kind, keys, pos, has_gauss, cached = data
    return (kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached)


def _torch_state(text: str) -> torch.Tensor:
    raw = np.frombuffer(base64.b64decode(text, validate=True), dtype=np.uint8).copy()
    return torch.from_numpy(raw)


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (checked by :func:`_checked_global_rng` when read from a file)."""
    random.setstate(_random_state(state["random"]))
    np.random.set_state(_numpy_state(state["numpy"]))
    torch.set_rng_state(_torch_state(state["torch"]))


def random_state_to_json(rng: random.Random) -> list[Any]:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def random_state_from_json(data: list[Any]) -> random.Random:
    rng = random.Random()
    rng.setstate(_random_state(data))
    return rng


# Anything a malformed state makes these setters raise (they check sizes and values themselves).
_STATE_ERRORS = (ValueError, TypeError, OverflowError, RuntimeError, IndexError, KeyError, binascii.Error)


def _checked_random(field: Field) -> random.Random:
    parts = field.items(3, "version, internal state, gauss")
    parts[1].items()
    try:
        return random_state_from_json(field.value)
    except _STATE_ERRORS as exc:
        field.fail(f"is not a state of Python's random generator ({exc})")


def _checked_global_rng(field: Field) -> dict[str, Any]:
    """The global RNG states, each tried on a fresh generator first (restoring them cannot then fail)."""
    _checked_random(field.at("random"))
    numpy_field = field.at("numpy")
    numpy_field.items(5, "kind, keys, position, has_gauss, cached")
    try:
        np.random.RandomState().set_state(_numpy_state(numpy_field.value))
    except _STATE_ERRORS as exc:
        numpy_field.fail(f"is not a numpy generator state ({exc})")
    torch_field = field.at("torch")
    try:
        torch.Generator().set_state(_torch_state(torch_field.string()))
    except _STATE_ERRORS as exc:
        torch_field.fail(f"is not a torch generator state ({str(exc).splitlines()[0] if str(exc) else exc!r})")
    return field.value


# --- checkpoint ---------------------------------------------------------------------------------------------------


_UNIT_STATS = ("best", "mean", "median", "std", "worst", "hall_of_fame_best")
_COUNT_STATS = ("unique", "evaluated", "reevaluated", "cache_hits", "failed")


def _score_range(fidelity: str) -> tuple[float, str]:
    """The lowest score of a fidelity and what its scores are (the highest is 1)."""
    return (-1.0, "a correlation") if fidelity == "oracle" else (0.0, "an accuracy")


@dataclass
class Checkpoint:
    """A checked ``checkpoint.json``: the state after generation ``generation``."""

    generation: int
    population: list[tuple[str, str]]  # (formula, origin)
    cache: list[dict[str, Any]]  # CacheEntry.to_dict() records
    history: list[dict[str, Any]]
    timing: list[dict[str, Any]]
    gp_rng: random.Random
    global_rng: dict[str, Any]
    elapsed: float
    evaluations: int
    failures: int


def _checked_history(entry: Field, generation: int, tasks: list[str], levels: tuple[str, ...]) -> dict[str, Any]:
    entry.at("generation").integer(generation, generation, "entries are in generation order")
    for name in _UNIT_STATS:
        entry.at(name).number(-1.0, 1.0, "a fitness")
    for name in _COUNT_STATS:
        entry.at(name).integer(0)
    for name in ("mean_size", "mean_height"):
        entry.at(name).number(0.0)
    for name in ("best_formula", "best_infix"):
        entry.at(name).string()
    reached = entry.at("best_fidelity").optional_string()
    if reached is not None and reached not in levels:
        entry.at("best_fidelity").fail(f"is {reached!r}, not a fidelity of this run ({', '.join(levels)})")
    low, what = _score_range(reached or levels[-1])
    accuracies = entry.at("best_accuracies")
    for task in accuracies.obj():
        if task not in tasks:
            accuracies.fail(f"names task {task!r}, which the config does not have ({', '.join(tasks)})")
        accuracies.at(task).number(low, 1.0, what)
    if len(levels) > 1:
        per_level = entry.at("fidelities")
        if sorted(per_level.obj()) != sorted(levels):
            per_level.fail(f"names fidelities {sorted(per_level.obj())}, the config has {sorted(levels)}")
        for level in levels:
            for name in ("candidates", "evaluated", "failed"):
                per_level.at(level).at(name).integer(0)
    variation = entry.at("variation")
    for name in variation.obj():
        variation.at(name).integer(0)
    return entry.value


def _checked_cache_entry(entry: Field, generation: int, tasks: list[str], levels: tuple[str, ...],
                         max_evaluations: int) -> dict[str, Any]:
    """One fitness-cache entry: evaluations at this run's fidelities, numbered from 0 per fidelity, at most one at
    a deterministic fidelity and ``max_evaluations`` at ``finetune``."""
    from evoprune.expr import FormulaError, height, parse, size

    key_field = entry.at("key")
    try:
        node = parse(key_field.string())
    except FormulaError as exc:
        key_field.fail(f"is not a formula ({exc.reason})")
    entry.at("size").integer(size(node), size(node), f"the size of {key_field.value}")
    entry.at("height").integer(height(node), height(node), f"the height of {key_field.value}")
    entry.at("first_generation").integer(0, generation, "a generation this run has finished")
    entry.at("origin").string()
    seen: dict[str, int] = {}
    for evaluation in entry.at("evaluations").items():
        fidelity_field = evaluation.at("fidelity")
        fidelity = fidelity_field.string()
        if fidelity not in levels:
            fidelity_field.fail(f"is {fidelity!r}, not a fidelity of this run ({', '.join(levels)})")
        index = seen.get(fidelity, 0)
        allowed = max_evaluations if fidelity == "finetune" else 1
        if index >= allowed:
            fidelity_field.fail(f"has more than {allowed} evaluation(s) at {fidelity} (evolution.max_evaluations "
                                "applies to finetune; the other fidelities are deterministic)")
        seen[fidelity] = index + 1
        evaluation.at("index").integer(index, index, "evaluations are numbered from 0 at each fidelity")
        low, what = _score_range(fidelity)
        evaluation.at("fitness").number(low, 1.0, "a fitness")
        results = evaluation.at("tasks")
        if sorted(results.obj()) != sorted(tasks):
            results.fail(f"names tasks {sorted(results.obj())}, the config has {sorted(tasks)}")
        for task in tasks:
            result = results.at(task)
            result.at("score").number(low, 1.0, what)
            result.at("status").string()
            result.at("error").optional_string()
            result.at("seconds").number(0.0)
    return entry.value


def check_checkpoint(data: Any, label: str, config: Any) -> Checkpoint:
    """``checkpoint.json``'s data checked against the run's config (an :class:`EvolutionConfig`)."""
    from evoprune.expr import FormulaError, canonical_key, parse

    top = Field(label, "", data, _CHECKPOINT_FIX)
    if top.at("format").value != CHECKPOINT_FORMAT:
        top.at("format").fail(f"is {_show(top.at('format').value)}, not {CHECKPOINT_FORMAT!r}: not a checkpoint of "
                              "this evoprune version")
    if top.at("fitness_hash").string() != config.fitness_hash():
        top.at("fitness_hash").fail("does not match config.json: the checkpoint was written with other settings")
    generations = config.evolution.generations
    generation = top.at("generation").integer(0, generations - 1, f"config.json has {generations} generation(s)")
    tasks = [t.name for t in config.tasks]
    finished = generation + 1
    levels = tuple(config.fidelity.levels)
    history = [_checked_history(h, i, tasks, levels)
               for i, h in enumerate(top.at("history").items(finished, "one per finished generation"))]
    timing = []
    for i, t in enumerate(top.at("timing").items(finished, "one per finished generation")):
        t.at("generation").integer(i, i, "entries are in generation order")
        t.at("seconds").number(0.0)
        t.at("jobs").integer(0)
        t.at("reused").integer(0)
        timing.append(t.value)
    cache: list[dict[str, Any]] = []
    keys: set[str] = set()
    max_evaluations = config.evolution.max_evaluations if config.evolution.reevaluate_elites else 1
    for entry in top.at("cache").items():
        cache.append(_checked_cache_entry(entry, generation, tasks, levels, max_evaluations))
        if cache[-1]["key"] in keys:
            entry.at("key").fail("repeats an earlier entry's key")
        keys.add(cache[-1]["key"])
    population = []
    members = top.at("population").items()
    if not members:
        top.at("population").fail("is empty")
    for member in members:
        formula_field = member.at("formula")
        try:
            key = canonical_key(parse(formula_field.string()))
        except FormulaError as exc:
            formula_field.fail(f"is not a formula ({exc.reason})")
        if key not in keys:
            formula_field.fail(f"{formula_field.value} has no entry in the fitness cache (field cache)")
        population.append((formula_field.value, member.at("origin").string()))
    evaluations = top.at("evaluations").integer(0)
    return Checkpoint(
        generation=generation, population=population, cache=cache, history=history, timing=timing,
        gp_rng=_checked_random(top.at("gp_rng")), global_rng=_checked_global_rng(top.at("global_rng")),
        elapsed=top.at("elapsed").number(0.0), evaluations=evaluations,
        failures=top.at("failures").integer(0, evaluations, "at most the number of evaluations"),
    )


# --- the run directory --------------------------------------------------------------------------------------------


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
    def oracle_dir(self) -> Path:
        return self.path / "oracle"

    @property
    def results_path(self) -> Path:
        return self.path / "results.json"

    def _read(self, path: Path, fix: str) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise RunDirError(f"{path}: cannot be read ({exc.strerror or exc}); {fix}") from None

    # --- new runs -------------------------------------------------------------------------------------------------

    def check_new(self, *, overwrite: bool = False) -> None:
        """Refuse, before any work, a place where a new run cannot or should not be written.

        The path must be a folder (or not exist) in a writable place; an existing folder must be empty or hold
        only a run directory's files (a run there needs ``overwrite``), never anything else.
        """
        check_output(self.path, option="run directory (--out)", directory=True)
        if not self.path.is_dir():
            return
        if self.config_path.exists() and not overwrite:
            raise RunDirError(f"{self.path} already holds a run (config.json); continue it with --resume {self.path}, "
                              "start over with --overwrite, or choose another --out")
        foreign = sorted(p.name for p in self.path.iterdir()
                         if p.name not in RUN_ENTRIES and not (p.name.startswith(".") and p.name.endswith(".tmp")))
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise RunDirError(f"{self.path} is not empty and is not an evoprune run directory (it holds {shown}); "
                              "choose a new or empty folder for --out")

    def create(self, config_data: dict[str, Any]) -> None:
        """Start a new run here (after :meth:`check_new`): the config, and no files of an earlier run."""
        self.path.mkdir(parents=True, exist_ok=True)
        for name in ("checkpoint.json", "events.jsonl", "results.json"):
            (self.path / name).unlink(missing_ok=True)
        write_json_atomic(self.config_path, config_data)

    # --- config ---------------------------------------------------------------------------------------------------

    def read_config(self) -> dict[str, Any]:
        """``config.json``'s data (a JSON object, not yet a config: see :meth:`load_config`)."""
        if not self.config_path.is_file():
            raise RunDirError(f"{self.path} is not a run directory (no config.json); start a run with --out {self.path}")
        data = _loads(self._read(self.config_path, _CONFIG_FIX), str(self.config_path), _CONFIG_FIX)
        Field(str(self.config_path), "", data, _CONFIG_FIX).obj()
        return data

    def load_config(self) -> Any:
        """The run's :class:`~evoprune.evolve.config.EvolutionConfig`, validated like a preset."""
        from evoprune.evolve.config import config_from_dict

        try:
            return config_from_dict(self.read_config(), source=str(self.config_path))
        except ConfigError as exc:
            raise RunDirError(f"{exc}; {_CONFIG_FIX}") from None

    # --- checkpoint -----------------------------------------------------------------------------------------------

    def write_checkpoint(self, state: dict[str, Any]) -> None:
        write_json_atomic(self.checkpoint_path, {"format": CHECKPOINT_FORMAT, **state})

    def read_checkpoint(self, config: Any) -> Checkpoint | None:
        """The last checkpoint checked against ``config`` (the run's saved config), or None if no generation
        finished yet."""
        if not self.checkpoint_path.is_file():
            return None
        data = _loads(self._read(self.checkpoint_path, _CHECKPOINT_FIX), str(self.checkpoint_path), _CHECKPOINT_FIX)
        return check_checkpoint(data, str(self.checkpoint_path), config)

    # --- event log ------------------------------------------------------------------------------------------------

    def log(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one event (flushed at once, so a killed run keeps every finished evaluation)."""
        import datetime as _dt

        record = {"time": _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds"), "event": event, **fields}
        if self._events is None:
            self.path.mkdir(parents=True, exist_ok=True)
            self._drop_cut_line()
            self._events = open(self.events_path, "a", buffering=1, encoding="utf-8")
        self._events.write(json.dumps(record, allow_nan=False, default=str) + "\n")
        self._events.flush()
        return record

    def _drop_cut_line(self) -> None:
        """Remove a last line that a kill cut short, so the next event starts a line of its own."""
        if not self.events_path.is_file():
            return
        with open(self.events_path, "r+b") as handle:
            data = handle.read()
            if data and not data.endswith(b"\n"):
                handle.truncate(data.rfind(b"\n") + 1)

    def _records(self) -> list[tuple[str, dict[str, Any]]]:
        """``(label naming file and line, event)`` for every complete line, each a JSON object with an ``event``
        name; a last line cut short by a kill (no newline yet) is skipped."""
        if not self.events_path.is_file():
            return []
        lines = self._read(self.events_path, _EVENTS_FIX).split(b"\n")
        lines.pop()  # what follows the last newline: nothing, or a line cut short
        out = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            label = f"{self.events_path} line {number}"
            record = Field(label, "", _loads(line, label, _EVENTS_FIX), _EVENTS_FIX)
            record.at("event").string()
            out.append((label, record.value))
        return out

    def events(self) -> list[dict[str, Any]]:
        """Every complete event (a RunDirError names a damaged line)."""
        return [record for _, record in self._records()]

    def journal(self, tasks: list[str], levels: tuple[str, ...]) -> dict[tuple[str, str, int, str], dict[str, Any]]:
        """The logged evaluations, by ``(formula key, fidelity, evaluation index, task)``, each checked."""
        out = {}
        for label, record in self._records():
            if record["event"] != "evaluation":
                continue
            field = Field(label, "", record, _EVENTS_FIX)
            task = field.at("task").string()
            if task not in tasks:
                field.at("task").fail(f"is {task!r}, not a task of this run ({', '.join(tasks)})")
            fidelity = field.at("fidelity").string()
            if fidelity not in levels:
                field.at("fidelity").fail(f"is {fidelity!r}, not a fidelity of this run ({', '.join(levels)})")
            low, what = _score_range(fidelity)
            checked = {
                "key": field.at("key").string(), "fidelity": fidelity, "index": field.at("index").integer(0),
                "task": task, "status": field.at("status").string(), "score": field.at("score").number(low, 1.0, what),
                "error": field.at("error").optional_string(), "seconds": field.at("seconds").number(0.0),
            }
            out[(checked["key"], fidelity, checked["index"], task)] = checked
        return out

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None
