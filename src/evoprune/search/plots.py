"""PNG figures of mask searches: cost, accuracy and loss against sparsity (SA and GA on one figure), and
per-layer sparsity bars."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from evoprune.atomic import save_figure

_STYLE = {"sa": {"linestyle": "-", "marker": "."}, "ga": {"linestyle": "--", "marker": "o", "markersize": 3}}


def trajectory(history: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The states a search moved through: SA's accepted states, GA's best of each generation."""
    return [r for r in history if r.get("accepted", True) and r.get("kind") != "calibrate" and not r.get("violated")]


def plot_history(histories: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path) -> Path:
    """Cost (log scale), accuracy and loss against sparsity for each labelled history on one figure."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), constrained_layout=True)
    for label, history in histories.items():
        points = trajectory(history)
        if not points:
            continue
        style = _STYLE.get(label.split()[0].lower(), {"linestyle": "-"})
        xs = [p["sparsity"] for p in points]
        for ax, key in zip(axes, ("cost", "accuracy", "loss")):
            ax.plot(xs, [p[key] for p in points], label=label.upper() if label in _STYLE else label, **style)
    for ax, key in zip(axes, ("cost", "accuracy", "loss")):
        ax.set_xlabel("sparsity (the search's definition)")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend()
    fig.suptitle("Mask search: cost, accuracy and loss against sparsity")
    path = Path(path)
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def plot_layers(layer_tables: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path) -> Path:
    """Grouped bars of each layer's sparsity, one group per layer and one bar per labelled result."""
    labels = list(layer_tables)
    layers = [row["layer"] for row in next(iter(layer_tables.values()))] if labels else []
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(layers) * max(len(labels), 1)), 4), constrained_layout=True)
    width = 0.8 / max(len(labels), 1)
    for i, label in enumerate(labels):
        values = {row["layer"]: row["sparsity"] for row in layer_tables[label]}
        xs = [j + (i - (len(labels) - 1) / 2) * width for j in range(len(layers))]
        ax.bar(xs, [values.get(layer, 0.0) for layer in layers], width, label=label.upper() if label in _STYLE else label)
    ax.set_xticks(range(len(layers)), layers)
    ax.set_ylabel("share of weights pruned")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    if labels:
        ax.legend()
    ax.set_title("Per-layer sparsity")
    path = Path(path)
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
