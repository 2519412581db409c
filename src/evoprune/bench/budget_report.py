"""The ``budget`` benchmark's Markdown, rendered from its results JSON alone: per MACs target and metric, each
network's test accuracy (mean ± std over seeds) for the searched allocation and the three references after the
same fine-tuning, the MACs they kept, and the searched − uniform difference with its sign per seed."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evoprune.bench.budget_settings import ROWS
from evoprune.bench.common import mean_std
from evoprune.errors import ConfigError

_LABELS = {"searched": "searched", "uniform": "uniform", "global": "global ranking",
           "macs_schedule": "`--macs-target` schedule"}


def _cell(values: list[float], scale: float = 100.0) -> str:
    if not values:
        return "—"
    mean, std = mean_std([v * scale for v in values])
    return f"{mean:.2f}" if len(values) == 1 else f"{mean:.2f} ± {std:.2f}"


def render_markdown(results: Mapping[str, Any]) -> str:
    """The report: settings, one table per (target, metric), search cost."""
    settings = results["settings"]
    records = results.get("records", [])
    lines = [f"# Layer-budget search vs uniform, global and the `--macs-target` schedule ({settings['name']})", "",
             f"{settings['description']}", "",
             f"Command: `{results.get('command', '')}`; machine: {results['machine'].get('cpu')} "
             f"({results['machine'].get('nproc')} cores, {results['machine'].get('threads')} torch threads). "
             f"Selection on validation; test accuracy (%) measured once per row after the same fine-tuning "
             f"({settings['finetune']['epochs']} epoch(s)); mean ± std over seeds; MACs kept in brackets. "
             f"`searched`: {settings['algorithm'].upper()} over {settings['evaluations']} allocations compared by "
             "validation accuracy after BN recalibration. A row marked † missed the target (the `--macs-target` "
             "schedule lands closest to it, from either side).", ""]
    networks = list(dict.fromkeys(r["network"] for r in records))
    for target in settings["targets"]:
        for metric in settings["metrics"]:
            cells = [r for r in records if r["target"] == target and r["metric"] == metric]
            if not cells:
                continue
            lines += [f"## {target:.0%} of MACs, metric `{metric}`", "",
                      "| network | seeds | " + " | ".join(_LABELS[row] for row in ROWS) + " | searched − uniform |",
                      "| --- | ---: | " + " | ".join("---:" for _ in ROWS) + " | ---: |"]
            for net in networks:
                mine = [r for r in cells if r["network"] == net]
                if not mine:
                    continue
                parts = []
                for row in ROWS:
                    tests = [r["rows"][row]["test_accuracy"] for r in mine]
                    kept = mean_std([r["rows"][row]["macs_kept"] for r in mine])[0]
                    missed = "†" if any(not r["rows"][row]["meets_target"] for r in mine) else ""
                    parts.append(f"{_cell(tests)} ({kept:.1%}){missed}")
                diffs = [r["rows"]["searched"]["test_accuracy"] - r["rows"]["uniform"]["test_accuracy"] for r in mine]
                signs = "".join("+" if d > 0 else "−" if d < 0 else "=" for d in diffs)
                lines.append(f"| {net} | {len(mine)} | " + " | ".join(parts) + f" | {_cell(diffs)} ({signs}) |")
            lines.append("")
    if records:
        parts = ("recalibrate", "evaluate", "prune", "count")
        lines += ["## Search cost", "", "Time per allocation split into BN recalibration, validation, pruning a copy "
                  "(Torch-Pruning) and counting MACs.", "",
                  "| network | searches | allocations per search | search s (mean) | recalibration | evaluation | "
                  "pruning | counting |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for net in networks:
            mine = [r for r in records if r["network"] == net]
            spent = {k: sum(r["seconds_breakdown"][f"evaluation_{k}"] for r in mine) for k in parts}
            total = sum(spent.values()) or 1.0
            search = mean_std([r["seconds_breakdown"]["search"] for r in mine])[0]
            lines.append(f"| {net} | {len(mine)} | {mean_std([r['evaluations'] for r in mine])[0]:.0f} | {search:.0f} | "
                         + " | ".join(f"{spent[k] / total:.0%}" for k in parts) + " |")
        lines.append("")
    todo = len(settings["models"]) * len(settings["seeds"]) * len(settings["metrics"]) * len(settings["targets"])
    if len(records) < todo:
        lines += [f"Partial: {len(records)} of {todo} searches done; resume with `--resume`.", ""]
    return "\n".join(lines)


def render_file(path: Path) -> str:
    """The Markdown report of an existing results file."""
    try:
        results = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not a readable budget results file ({exc})") from None
    return render_markdown(results)
