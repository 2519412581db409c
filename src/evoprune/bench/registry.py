"""Benchmark targets: a name → (presets, options, run function) registry behind ``evoprune bench TARGET``.

A target is one comparison table (``criteria``: pruning functions told apart by oracle correlation,
accuracy-vs-MACs curves and paired statistics; ``search``: the mask-search variants). Each lives in its own
module of this package exposing ``TARGET``; add the module to ``TARGET_MODULES`` to enable it. The command line
is generic: it adds the shared options (``--preset``, ``--seeds``, ``--device``, ``--set``, ``--out``,
``--resume``...) and each target's own :class:`Option` entries, builds the settings from the preset through
:func:`evoprune.config.with_overrides` (so every field can be set and is checked), then calls
``TARGET.run(settings, RunOptions)``.
"""

from __future__ import annotations

import difflib
import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from evoprune.errors import ConfigError

# target name -> module defining TARGET; modules load only when a target is used.
TARGET_MODULES: dict[str, str] = {
    "criteria": "evoprune.bench.criteria",
    "search": "evoprune.bench.search",
    "budget": "evoprune.bench.budget",
}

Existing = Literal["resume", "fresh", "error"]


class Settings(Protocol):
    """A preset: a frozen dataclass typed for :func:`evoprune.config.from_data` (``--set`` changes any field),
    with at least these fields."""

    description: str
    seeds: tuple[int, ...]
    device: str

    def summary(self) -> str: ...


@dataclass(frozen=True)
class Option:
    """A target's own command-line option, mapped onto one field of its settings."""

    flag: str
    field: str
    help: str
    parse: Callable[[str], Any]
    metavar: str | None = None


@dataclass(frozen=True)
class RunOptions:
    """How to run a target (not what it measures): where results go and what to do with earlier results.

    ``existing``: ``resume`` keeps finished runs of the same settings and skips them, ``fresh`` ignores them,
    ``error`` refuses to touch a results file that already holds runs (the command line's default).
    """

    out: Path
    name: str
    existing: Existing = "error"
    cache: Path | None = None
    progress: bool = True
    command: str = ""
    log: Callable[[str], None] = print


@dataclass(frozen=True)
class BenchReport:
    """Where a target wrote its results, and the Markdown it wrote."""

    json_path: Path
    markdown_path: Path
    markdown: str
    runs_done: int
    runs_skipped: int


@dataclass(frozen=True)
class Target:
    name: str
    help: str
    presets: Mapping[str, Settings]
    run: Callable[[Any, RunOptions], BenchReport]
    options: tuple[Option, ...] = ()
    render: Callable[[Path], str] | None = None  # Markdown of an existing results file, nothing run
    set_example: str = "KEY=VALUE"  # a typical --set, for the help text

    def preset(self, name: str) -> Settings:
        if name not in self.presets:
            raise ConfigError(f"unknown preset {name!r} for bench {self.name}; choose from {', '.join(self.presets)}"
                              + _did_you_mean(name, list(self.presets)))
        return self.presets[name]


def available_targets() -> list[str]:
    return list(TARGET_MODULES)


def get_target(name: str) -> Target:
    """The target called ``name``; a clear error (with close names) for an unknown one."""
    if name not in TARGET_MODULES:
        raise ConfigError(f"unknown bench target {name!r}; choose from {', '.join(TARGET_MODULES)}"
                          + _did_you_mean(name, list(TARGET_MODULES)))
    return importlib.import_module(TARGET_MODULES[name]).TARGET


def _did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=2)
    return f". Did you mean {' or '.join(close)}?" if close else ""


def split_list(text: str) -> tuple[str, ...]:
    """Split a comma list at top-level commas only, so formulas such as ``div(P, Q)`` stay whole."""
    items, depth, current = [], 0, []
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            items.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    items.append("".join(current).strip())
    return tuple(item for item in items if item)


#: ``--metrics`` and ``--models``, the same for every target that compares metrics on the Fashion-MNIST zoo nets.
METRICS_OPTION = Option("--metrics", "metrics", "comma list of metric names or formulas (default: the preset's)",
                        split_list, "A,B,...")
MODELS_OPTION = Option("--models", "models", "comma list of resnet20, vgg16, mobilenetv2 (default: the preset's)",
                       split_list, "A,B")


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` → ``(0, 1, 2)``, with an error that names the option."""
    try:
        seeds = tuple(int(s) for s in split_list(text))
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected comma-separated integers, e.g. --seeds 0,1,2") from None
    if not seeds:
        raise ConfigError("--seeds is empty; give comma-separated integers, e.g. --seeds 0,1,2")
    return seeds


def read_previous(path: Path, existing: Existing) -> dict[str, Any]:
    """The results file's contents when resuming, ``{}`` otherwise; an error when it holds runs and ``existing`` says so."""
    if not path.is_file() or existing == "fresh":
        return {}
    try:
        previous = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not a readable results file ({exc}); move it away or pass --fresh") from None
    finished = len(previous.get("runs") or previous.get("records") or [])
    if existing == "error" and finished:
        raise ConfigError(f"{path} already holds {finished} finished runs; pass --resume to continue "
                          "(finished runs of the same settings are skipped) or --fresh to start over")
    return previous
