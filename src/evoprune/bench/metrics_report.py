"""The ``metrics`` benchmark's table: mean ± std over seeds, and its Markdown, rendered from the results JSON alone.

Rendering reads only the results file's contents (settings, command, machine, table), so a table in the docs can
be checked against, or regenerated from, the JSON that the run wrote.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from evoprune.bench.common import mean_std
from evoprune.bench.metrics_settings import LABELS, MetricsBenchSettings
from evoprune.errors import ConfigError


def summarise(runs: Sequence[Mapping[str, Any]], baselines: Mapping[str, Mapping[str, Any]],
              settings: MetricsBenchSettings) -> dict[str, Any]:
    """Mean ± std per model and metric over the settings' seeds only (a resumed file may hold others)."""
    seeds = set(settings.seeds)
    runs = [r for r in runs if r["seed"] in seeds]
    table: dict[str, Any] = {}
    for key in settings.models:
        base = [baselines[f"{key}/{seed}"]["test_accuracy"] for seed in settings.seeds if f"{key}/{seed}" in baselines]
        table[key] = {"baseline": mean_std(base) if base else None, "metrics": {}}
        for metric in settings.metrics:
            rows = [r for r in runs if r["model"] == key and r["metric"] == metric]
            if rows:
                table[key]["metrics"][metric] = {
                    "test": mean_std([r["test_accuracy"] for r in rows]),
                    "val_pruned": mean_std([r["val_accuracy_pruned"] for r in rows]),
                    "macs_kept": statistics.fmean(r["macs_kept"] for r in rows),
                    "params_kept": statistics.fmean(r["params_kept"] for r in rows),
                    "seeds": sorted(r["seed"] for r in rows),
                }
    return table


def _pct(ms: Sequence[float]) -> str:
    return f"{100 * ms[0]:.2f} ± {100 * ms[1]:.2f}"


def render_markdown(payload: Mapping[str, Any]) -> str:
    """The Markdown table of a results payload (as written to, or read from, the results JSON)."""
    s = MetricsBenchSettings.from_dict(payload["settings"])
    table, info = payload["table"], payload["machine"]
    seeds = ",".join(map(str, s.seeds))
    wall = f"Wall time {payload['seconds']:.0f} s."
    if "compute_seconds" in payload:
        wall += f" Training and pruning, over every invocation that made these runs: {payload['compute_seconds']:.0f} s."
    lines = [
        f"# Transfer table: every metric at ≈{s.macs_target:.0%} of MACs on {s.data}",
        "",
        f"Command: `{payload['command']}`. Machine: {info['cpu']} ({info['nproc']} cores), "
        f"torch {info['torch']}, CUDA: {info['cuda'] or 'none'}. {wall}",
        "",
        f"Protocol: baselines trained {s.train.epochs} epochs from scratch per seed (seeds {seeds}); one-shot "
        f"per-layer pruning to {s.macs_target:.0%} of MACs (one uniform ratio solved by bisection, so every metric gives "
        f"the same architecture); scoring on {s.scoring_samples} class-balanced training images; "
        f"{s.finetune.epochs} fine-tuning epochs for every metric ({s.finetune.optimizer.upper()} lr {s.finetune.lr}, "
        f"{s.finetune.schedule}), best "
        "validation epoch kept; test accuracy (%) measured once, mean ± sample std over seeds. *val pruned* is "
        "validation accuracy right after pruning, before fine-tuning."
        + (f" Training used {s.train_samples} images only (smoke run)." if s.train_samples else ""),
        "",
        "| metric | " + " | ".join(f"{m} test | {m} val pruned" for m in s.models) + " |",
        "|" + "---|" * (1 + 2 * len(s.models)),
    ]
    base_cells: list[str] = []
    for m in s.models:
        base = table[m]["baseline"]
        base_cells += [_pct(base) if base else "–", "–"]
    lines.append("| unpruned baseline | " + " | ".join(base_cells) + " |")
    for metric in s.metrics:
        cells: list[str] = []
        for m in s.models:
            entry = table[m]["metrics"].get(metric)
            cells += [_pct(entry["test"]), _pct(entry["val_pruned"])] if entry else ["–", "–"]
        lines.append(f"| {LABELS.get(metric, metric)} | " + " | ".join(cells) + " |")
    lines.append("")
    for m in s.models:
        some = next(iter(table[m]["metrics"].values()), None)
        if some:
            lines.append(f"{m}: MACs kept {some['macs_kept']:.1%}, parameters kept {some['params_kept']:.1%}.")
    measured = [k for k in s.metrics if any(k in table[m]["metrics"] for m in s.models)]
    ranked = sorted(measured, key=lambda k: -statistics.fmean(
        table[m]["metrics"][k]["test"][0] for m in s.models if k in table[m]["metrics"]))
    if ranked:
        lines += ["", "Mean test accuracy over models, best first: " + ", ".join(LABELS.get(k, k) for k in ranked) + "."]
    return "\n".join(lines) + "\n"


def render_file(path: Path) -> str:
    """The Markdown of a results JSON file written by ``evoprune bench metrics`` or the former ``benchmarks/bench_transfer.py``."""
    try:
        payload = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read results file {path}: {exc}") from None
    missing = [k for k in ("settings", "command", "machine", "seconds", "table") if k not in payload]
    if missing:
        raise ConfigError(f"{path} is not a finished metrics-bench results file (missing {', '.join(missing)})")
    return render_markdown(payload)
