"""The demo's own figures: validation accuracy against MACs through each metric's prune steps, and mask-search
convergence against evaluations. (Per-layer sparsity, cost against sparsity and fitness per generation come from
``evoprune.search.plots`` and ``evoprune.evolve.report``.)"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from evoprune.atomic import save_figure
from evoprune.search.plots import trajectory


def plot_accuracy_macs(results: Mapping[str, Any], path: Path) -> Path:
    """One sawtooth per metric (``PruneResult`` by name): each prune step drops validation accuracy (dotted) and
    fine-tuning recovers it (solid); a star marks the test accuracy measured once at the end."""
    fig, ax = plt.subplots(figsize=(7.5, 4.6), constrained_layout=True)
    for i, (name, result) in enumerate(results.items()):
        color = f"C{i}"
        b = result.before
        xs, ys = [b.macs], [b.val_accuracy]
        for step in result.steps:
            ax.plot([xs[-1], step.macs], [ys[-1], step.val_accuracy_pruned], ":", color=color, alpha=0.7)
            ax.plot([step.macs, step.macs], [step.val_accuracy_pruned, step.val_accuracy], "-", color=color)
            ax.plot([step.macs], [step.val_accuracy_pruned], "x", color=color, alpha=0.7)
            xs.append(step.macs)
            ys.append(step.val_accuracy)
        ax.plot(xs, ys, "o", color=color, label=f"{name} (val, fine-tuned)")
        if result.after.test_accuracy is not None:
            ax.plot([result.after.macs], [result.after.test_accuracy], "*", color=color, markersize=12,
                    markeredgecolor="black", label=f"{name} test {result.after.test_accuracy:.3f}")
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("MACs per image (log scale, pruning goes right)")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("Pruning LeNet-5 on the paper's schedule: × pruned, ● after fine-tuning")
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


def plot_convergence(histories: Mapping[str, Sequence[Mapping[str, Any]]], path: Path) -> Path:
    """Sparsity and cost of the state each search moved through, against evaluations used so far."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    for label, history in histories.items():
        points = trajectory(history)
        evaluations = [p["evaluations"] for p in points]
        axes[0].plot(evaluations, [p["sparsity"] for p in points], label=label.upper())
        axes[1].plot(evaluations, [p["cost"] for p in points], label=label.upper())
    axes[0].set_ylabel("sparsity (share of weights pruned)")
    axes[1].set_ylabel("cost (log scale)")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("evaluations")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Mask search convergence (layer by layer, then a joint pass)")
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path
