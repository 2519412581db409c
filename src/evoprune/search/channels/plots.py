"""PNG figures of a channel search: every evaluated allocation's validation accuracy against the cost kept (the
front and the references marked), and the chosen allocation's per-group keep ratios against uniform and global
pruning at the same budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from evoprune.atomic import save_figure


def plot_front(result: Any, path: str | Path) -> Path:
    """Accuracy (validation, after BN recalibration) against the share of MACs (or parameters) kept."""
    kind = result.budget["kind"] if result.budget else "macs"
    key = f"{kind}_kept"
    records = result.records
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    ax.scatter([r[key] for r in records], [r["accuracy"] for r in records], s=9, alpha=0.4, color="tab:gray",
               label=f"evaluated ({len(records)})")
    if result.front:
        front = [records[i] for i in result.front]
        ax.plot([r[key] for r in front], [r["accuracy"] for r in front], "-o", markersize=4, color="tab:blue",
                label="non-dominated front")
    for (name, marker), color in zip((("uniform", "s"), ("global", "^"), ("chosen", "*")),
                                     ("tab:orange", "tab:green", "tab:red")):
        record = result.record(name)
        if record is not None:
            ax.scatter([record[key]], [record["accuracy"]], marker=marker, s=90, color=color, label=name, zorder=3)
    if result.budget:
        ax.axvline(result.budget["fraction"], color="black", linestyle=":", label=f"{kind} target")
    ax.set_xlabel(f"share of {'MACs' if kind == 'macs' else 'parameters'} kept")
    ax.set_ylabel("validation accuracy after BN recalibration")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{result.config.algorithm.upper()} channel search, metric {result.config.metric}")
    path = Path(path)
    save_figure(fig, path)
    plt.close(fig)
    return path


def plot_keep(result: Any, path: str | Path) -> Path:
    """Grouped bars: each group's share of channels kept by the chosen, uniform and global allocations."""
    names = [g["name"] for g in result.groups]
    widths = [g["width"] for g in result.groups]
    rows = {n: result.record(n) for n in ("chosen", "uniform", "global")}
    rows = {n: r for n, r in rows.items() if r is not None}
    fig, ax = plt.subplots(figsize=(max(7.0, 0.45 * len(names) * len(rows)), 4.5), constrained_layout=True)
    bar = 0.8 / len(rows)
    for k, (label, record) in enumerate(rows.items()):
        xs = [i + (k - (len(rows) - 1) / 2) * bar for i in range(len(names))]
        ax.bar(xs, [a / w for a, w in zip(record["keep"], widths)], bar,
               label=f"{label} (val acc {record['accuracy']:.3f})")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("share of channels kept")
    ax.set_ylim(0, 1.05)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Per-group keep ratios at the same budget")
    path = Path(path)
    save_figure(fig, path)
    plt.close(fig)
    return path
