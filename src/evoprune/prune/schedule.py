"""Pruning schedules: how many output channels each layer loses at each step, and the paper's presets.

Counting rule: a ratio ``r`` over ``n`` steps removes, after step ``k``, ``floor(r * k / n * W0)`` channels of a
layer whose original width is ``W0`` (ratios always refer to the original width, as in the paper's code). A
``counts`` entry gives the exact number removed at each step instead. A layer never drops below
``min_channels`` (its removals are clamped, and the clamp is reported); a ratio or count that would remove every
channel of a layer is an error, whatever ``min_channels`` says, because it is surely a mistake in the table.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from evoprune.prune.errors import PruningError
from evoprune.prune.graph import ChannelGroup, matches

_EPS = 1e-9  # so that 0.6 * 50 = 29.999999999999996 still counts as 30


@dataclass(frozen=True)
class PruneSchedule:
    """What to remove and how.

    Args:
        ratio: fraction of every prunable layer's original channels removed by the last step (0 = leave alone).
        ratios: per-layer ratios overriding ``ratio``; keys are layer names or globs (``"layer*.*.conv1"``).
        counts: exact channels removed at each step, ``{layer: (step1, step2, ...)}``; overrides ``ratios``.
        steps: prune steps; the pruner fine-tunes after each one.
        global_ranking: rank channels across layers: each step removes the same total as the per-layer counts
            would, taken from the lowest-scoring channels of any layer (scores are made comparable, see
            ``importance``), never below ``min_channels`` in any layer.
        macs_target: keep this fraction of the model's MACs; the pruner solves for ``ratio`` (ratio-table entries
            stay as given).
        ignore: layer names or globs never pruned (the output layer is always ignored).
        min_channels: the narrowest any pruned layer may become.
    """

    ratio: float = 0.0
    ratios: Mapping[str, float] = field(default_factory=dict)
    counts: Mapping[str, Sequence[int]] = field(default_factory=dict)
    steps: int = 1
    global_ranking: bool = False
    macs_target: float | None = None
    ignore: tuple[str, ...] = ()
    min_channels: int = 1
    name: str = "custom"

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise PruningError(f"steps must be a positive integer, got {self.steps!r}")
        if not isinstance(self.min_channels, int) or self.min_channels < 1:
            raise PruningError(f"min_channels must be ≥ 1 (a layer never loses every channel), got {self.min_channels!r}")
        for where, value in [("ratio", self.ratio), *((f"ratio of {k!r}", v) for k, v in self.ratios.items())]:
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                hint = " (1 would remove every channel)" if isinstance(value, (int, float)) and value >= 1 else ""
                raise PruningError(f"{where} must be in [0, 1){hint}, got {value!r}")
        for key, per_step in self.counts.items():
            if len(per_step) != self.steps or any(not isinstance(c, int) or c < 0 for c in per_step):
                raise PruningError(
                    f"counts for {key!r} must be {self.steps} non-negative integers (one per step), got {tuple(per_step)!r}"
                )
        if self.macs_target is not None:
            if not 0.0 < self.macs_target < 1.0:
                raise PruningError(f"macs_target is the fraction of MACs to keep, in (0, 1); got {self.macs_target!r}")
            if self.counts:
                raise PruningError("macs_target solves for a ratio, so it cannot be combined with exact counts")

    def replace(self, **changes: Any) -> PruneSchedule:
        return replace(self, **changes)

    def describe(self) -> str:
        parts = [f"{self.steps} step(s)"]
        if self.macs_target is not None:
            parts.append(f"MACs target {self.macs_target:.0%}")
        if self.ratio:
            parts.append(f"ratio {self.ratio:g}")
        if self.ratios:
            parts.append("ratios " + ", ".join(f"{k}={v:g}" for k, v in self.ratios.items()))
        if self.counts:
            parts.append("counts " + ", ".join(f"{k}={'/'.join(map(str, v))}" for k, v in self.counts.items()))
        parts.append("global ranking" if self.global_ranking else "per-layer ranking")
        if self.ignore:
            parts.append("ignore " + ", ".join(self.ignore))
        return f"{self.name}: " + "; ".join(parts)


@dataclass(frozen=True)
class ResolvedSchedule:
    """Per-group removals per step (group name → counts), and the groups clamped to ``min_channels``."""

    removals: dict[str, tuple[int, ...]]
    clamped: tuple[str, ...]
    original: dict[str, int]

    def final_widths(self) -> dict[str, int]:
        return {g: self.original[g] - sum(r) for g, r in self.removals.items()}


def _unknown_key_error(key: str, what: str, valid: list[str], ignored: list[str]) -> PruningError:
    close = difflib.get_close_matches(key, valid + ignored, n=2, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    ignored_note = f" ({', '.join(ignored)} never pruned)" if ignored else ""
    return PruningError(
        f"unknown layer {key!r} in the {what}.{hint} Valid layers: {', '.join(valid)}{ignored_note}. "
        "Keys are layer names or globs such as 'features.*'"
    )


def _lookup(table: Mapping[str, Any], group: ChannelGroup, what: str) -> Any:
    hits = {key: value for key, value in table.items() if any(matches(key, m) for m in group.members)}
    values = {tuple(v) if isinstance(v, (list, tuple)) else v for v in hits.values()}
    if len(values) > 1:
        raise PruningError(
            f"the {what} gives different values to coupled layers {', '.join(group.members)} ({hits}); they are pruned "
            "together, so give them one value"
        )
    return next(iter(hits.values())) if hits else None


def resolve(schedule: PruneSchedule, groups: list[ChannelGroup], all_groups: list[ChannelGroup]) -> ResolvedSchedule:
    """Per-step removal counts for every prunable group; checks every table key names a real layer."""
    valid = [m for g in groups for m in g.members]
    ignored = [m for g in all_groups for m in g.members if m not in valid]
    for what, table in (("ratio table", schedule.ratios), ("counts table", schedule.counts)):
        for key in table:
            if not any(matches(key, name) for name in valid):
                if any(matches(key, name) for name in ignored):
                    raise PruningError(f"layer {key!r} in the {what} is ignored (the output layer or --ignore); "
                                       f"prunable layers: {', '.join(valid)}")
                raise _unknown_key_error(key, what, valid, ignored)
    all_names = valid + ignored
    for key in schedule.ignore:
        if not any(matches(key, name) for name in all_names):
            raise _unknown_key_error(key, "ignore list", all_names, [])
    removals: dict[str, tuple[int, ...]] = {}
    clamped: list[str] = []
    for group in groups:
        w0, n = group.width, schedule.steps
        counts = _lookup(schedule.counts, group, "counts table")
        if counts is not None:
            per_step = [int(c) for c in counts]
            source = f"counts {'/'.join(map(str, per_step))}"
        else:
            ratio = _lookup(schedule.ratios, group, "ratio table")
            ratio = schedule.ratio if ratio is None else float(ratio)
            cumulative = [math.floor(ratio * k / n * w0 + _EPS) for k in range(n + 1)]
            per_step = [b - a for a, b in zip(cumulative, cumulative[1:])]
            source = f"ratio {ratio:g}"
        if sum(per_step) >= w0:
            raise PruningError(
                f"{source} would remove every channel of {group.label} ({w0} channels); keep at least one "
                f"(at most {w0 - 1} removed, a ratio below {(w0 - 0.5) / w0:.3g})"
            )
        allowed = max(0, w0 - schedule.min_channels)
        if sum(per_step) > allowed:
            clamped.append(group.name)
            per_step = _clamp(per_step, allowed)
        if any(per_step):
            removals[group.name] = tuple(per_step)
    return ResolvedSchedule(removals, tuple(clamped), {g.name: g.width for g in groups})


def _clamp(per_step: list[int], allowed: int) -> list[int]:
    """Cut per-step removals so their sum is at most ``allowed`` (later steps give way first)."""
    out, left = [], allowed
    for c in per_step:
        take = min(c, left)
        out.append(take)
        left -= take
    return out


# --- presets: the paper's schedules (gp-pruning-functions.md §4.1, §4.2, §6) ---------------------------------------


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    build: Callable[[list[ChannelGroup]], PruneSchedule]


def _lenet5_paper(groups: list[ChannelGroup]) -> PruneSchedule:
    widths = {g.name: g.width for g in groups}
    expected = {"conv1": 20, "conv2": 50, "fc1": 500}
    if any(widths.get(k) != v for k, v in expected.items()):
        raise PruningError(
            "the lenet5_paper schedule needs the paper's LeNet-5 (conv1 20, conv2 50, fc1 500 channels: model "
            f"'lenet5'); this model has {', '.join(f'{k} {v}' for k, v in widths.items())}"
        )
    return PruneSchedule(counts={"conv1": (10, 5, 0), "conv2": (30, 8, 1), "fc1": (400, 55, 5)}, steps=3,
                         name="lenet5_paper")


def _vgg16_paper(groups: list[ChannelGroup]) -> PruneSchedule:
    return PruneSchedule(counts={g.name: (int(0.2 * g.width + _EPS),) * 2 for g in groups}, steps=2, name="vgg16_paper")


def _resnet56_paper(groups: list[ChannelGroup]) -> PruneSchedule:
    inner = "layer*.*.conv1"
    if not any(matches(inner, m) for g in groups for m in g.members):
        raise PruningError("the resnet56_paper schedule prunes the blocks' inner convs (layer*.*.conv1) of a "
                           "'resnet_cifar' model; this model has none")
    return PruneSchedule(ratios={inner: 0.4}, steps=1, name="resnet56_paper")


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("lenet5_paper", "LeNet-5: conv1 20→5, conv2 50→11, fc1 500→40 in three steps (removing 10/5/0, "
               "30/8/1, 400/55/5; spec §4.1)", _lenet5_paper),
        Preset("vgg16_paper", "VGG: two steps, each removing floor(20%) of every layer's original width "
               "(64→40, 128→78, 256→154, 512→308; spec §4.2)", _vgg16_paper),
        Preset("resnet56_paper", "ResNet: 40% of each block's inner channels (conv1 outputs) in one shot, residual "
               "stream untouched (spec §6)", _resnet56_paper),
    )
}


@dataclass(frozen=True)
class PresetSchedule:
    """A named preset plus the settings that do not change what it removes (ranking scope, ignored layers,
    minimum width). A plain preset name is shorthand for ``PresetSchedule(name)``."""

    name: str
    global_ranking: bool = False
    ignore: tuple[str, ...] = ()
    min_channels: int = 1

    def build(self, groups: list[ChannelGroup]) -> PruneSchedule:
        """The preset's schedule for a model whose (non-ignored) prunable groups are ``groups``."""
        return get_preset(self.name).build(groups).replace(
            global_ranking=self.global_ranking, ignore=tuple(self.ignore), min_channels=self.min_channels)


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        close = difflib.get_close_matches(name, list(PRESETS), n=1, cutoff=0.4)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise PruningError(f"unknown schedule preset {name!r}.{hint} Presets: {', '.join(PRESETS)}")
    return PRESETS[name]
