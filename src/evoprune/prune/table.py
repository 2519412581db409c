"""Pruning tables on disk: how many channels each prunable group loses, as a JSON file ``evoprune prune --table``
applies.

A table written by a search (``evoprune search --space channels``) names each group by its first member (the
names of :class:`~evoprune.prune.graph.ModelGraph`) with the channels it loses in one step, and the widths of the
network it was made for, so that applying it to another network is refused instead of silently giving another
architecture. Which channels go is the pruning metric's choice; how many is the table's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evoprune.atomic import write_json
from evoprune.prune.errors import PruningError
from evoprune.prune.graph import ChannelGroup

TABLE_FORMAT = "evoprune.table/1"


@dataclass(frozen=True)
class PruneTable:
    """``removed[group]`` channels go from each group of a network whose widths are ``widths``; ``source`` says
    where the table came from (free-form, kept for the reader)."""

    removed: dict[str, int]
    widths: dict[str, int]
    source: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, tuple[int]]:
        """The one-step ``PruneSchedule.counts`` of this table."""
        return {name: (count,) for name, count in self.removed.items()}

    def check_fits(self, groups: list[ChannelGroup], *, where: str) -> None:
        """Refuse a network whose prunable groups or widths differ from the ones the table was made for."""
        have = {g.name: g.width for g in groups}
        if have != self.widths:
            diff = [f"{n}: table {self.widths.get(n, 'absent')}, model {have.get(n, 'absent')}"
                    for n in sorted(set(have) | set(self.widths), key=str) if have.get(n) != self.widths.get(n)]
            raise PruningError(f"{where} was made for another network ({'; '.join(diff[:4])}"
                               f"{'; …' if len(diff) > 4 else ''}); apply it to the unpruned model it was searched on")


def write_table(path: str | Path, removed: Mapping[str, int], widths: Mapping[str, int], *,
                source: Mapping[str, Any] | None = None) -> Path:
    """Write a table (atomically) that :func:`read_table` and ``evoprune prune --table`` read back."""
    return write_json(path, {"format": TABLE_FORMAT, "removed": {k: int(v) for k, v in removed.items()},
                             "widths": {k: int(v) for k, v in widths.items()}, "source": dict(source or {})})


def read_table(path: str | Path) -> PruneTable:
    """The table at ``path``; one clear error for a file that is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PruningError(f"--table {path}: not a readable JSON pruning table ({exc}); give a tables/*.json file "
                           "written by `evoprune search --space channels`") from None
    if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
        raise PruningError(f"--table {path}: not a pruning table (expected \"format\": \"{TABLE_FORMAT}\"); give a "
                           "tables/*.json file written by `evoprune search --space channels`")
    removed, widths = data.get("removed"), data.get("widths")
    for key, table in (("removed", removed), ("widths", widths)):
        if not isinstance(table, dict) or not all(isinstance(v, int) and v >= 0 for v in table.values()):
            raise PruningError(f"--table {path}: {key!r} must map group names to non-negative integers")
    bad = [n for n, r in removed.items() if n not in widths or r >= widths[n]]
    if bad:
        raise PruningError(f"--table {path}: group(s) {', '.join(bad)} missing from 'widths' or losing every channel")
    return PruneTable(dict(removed), dict(widths), dict(data.get("source") or {}))
