"""The criteria benchmark's figures: a heat map of pairwise win rates and one accuracy-vs-MACs plot per network."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from evoprune.atomic import save_figure
from evoprune.criteria.stats import PairwiseTable
from evoprune.errors import ConfigError


def plot_win_rates(table: PairwiseTable, path: Path, *, alpha: float = 0.05) -> Path:
    """Cell (row, column) is the share of paired cells where the row's metric beats the column's (ties half);
    rows and columns in mean-rank order, so a good metric's row is blue; ``*`` marks Wilcoxon p < alpha."""
    metrics = table["metrics"]
    index = {m: i for i, m in enumerate(metrics)}
    rates = np.full((len(metrics), len(metrics)), np.nan)
    marked = np.zeros(rates.shape, dtype=bool)
    for pair in table["pairs"]:
        i, j = index[pair["a"]], index[pair["b"]]
        rates[i, j] = pair["win_rate"]
        marked[i, j] = pair["p"] is not None and pair["p"] < alpha
    size = 2.5 + 0.55 * len(metrics)
    fig, ax = plt.subplots(figsize=(size + 1.2, size), constrained_layout=True)
    ax.set_facecolor("0.85")  # the diagonal (a metric against itself) stays grey
    image = ax.imshow(rates, cmap="RdBu", vmin=0.0, vmax=1.0)
    font = 8 if len(metrics) <= 12 else 7
    for (i, j), rate in np.ndenumerate(rates):
        if np.isfinite(rate):
            ax.text(j, i, f"{rate:.2f}{'*' if marked[i, j] else ''}", ha="center", va="center", fontsize=font,
                    color="white" if abs(rate - 0.5) > 0.3 else "black")
    labels = [f"{m} ({table['mean_rank'][m]:.1f})" for m in metrics]
    ax.set_xticks(range(len(metrics)), metrics, rotation=45, ha="right", fontsize=font + 1)
    ax.set_yticks(range(len(metrics)), labels, fontsize=font + 1)
    ax.set_xlabel("against (column)")
    ax.set_ylabel(f"metric (mean rank over {table['ranked_cells']} cells)")
    fig.colorbar(image, ax=ax, shrink=0.8, label="win rate of row over column")
    ax.set_title(f"Pairwise win rates over paired (network, ratio, seed) cells; * Wilcoxon p < {alpha:g}",
                 fontsize=10)
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def _mean_curve(points: list[Mapping[str, float]], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean MACs fraction, mean and std of ``key`` over seeds, one entry per ratio (ascending MACs)."""
    ratios = sorted({float(p["ratio"]) for p in points})
    macs = np.array([np.mean([p["macs"] for p in points if p["ratio"] == r]) for r in ratios])
    values = [np.array([p[key] for p in points if p["ratio"] == r], dtype=np.float64) for r in ratios]
    order = np.argsort(macs)
    return macs[order], np.array([v.mean() for v in values])[order], np.array([v.std() for v in values])[order]


def plot_accuracy_macs(points: Iterable[Mapping[str, float]], path: Path, *, network: str,
                       unpruned_accuracy: float | None = None) -> Path:
    """Test accuracy against the fraction of MACs kept for one network: per metric the mean over seeds with a
    ± std band, right after pruning (solid) and, when the points carry ``accuracy_recalibrated``, after BN
    recalibration (dashed, in a second panel with the same y axis: twenty metrics twice on one axis would not
    read at a glance). Points are ``{"metric", "seed", "ratio", "macs" (fraction kept), "accuracy"}``; the
    unpruned accuracy, when given, starts every line at 100% MACs (the curve whose area ``curve_auc`` measures)."""
    by_metric: dict[str, list[Mapping[str, float]]] = {}
    for point in points:
        by_metric.setdefault(str(point["metric"]), []).append(point)
    if not by_metric:
        raise ConfigError(f"no curve points to plot for {network}")
    panels = [("accuracy", "-", "right after pruning")]
    if all("accuracy_recalibrated" in p for group in by_metric.values() for p in group):
        panels.append(("accuracy_recalibrated", "--", "after BN recalibration"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 + 3.8 * len(panels), 4.8), sharey=True,
                             constrained_layout=True, squeeze=False)
    colors = plt.get_cmap("tab10").colors
    for ax, (key, style, label) in zip(axes[0], panels):
        for k, (metric, metric_points) in enumerate(by_metric.items()):
            x, mean, std = _mean_curve(metric_points, key)
            if unpruned_accuracy is not None:
                x, mean, std = np.append(x, 1.0), np.append(mean, unpruned_accuracy), np.append(std, 0.0)
            color = colors[k % len(colors)]
            ax.plot(x, mean, style, marker="os^Dv"[k // len(colors) % 5], markersize=4, color=color, label=metric)
            ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.12, linewidth=0)
        if unpruned_accuracy is not None:
            ax.axhline(unpruned_accuracy, color="black", linewidth=0.8, linestyle=":")
        ax.invert_xaxis()
        ax.set_xlabel("fraction of MACs kept (pruning goes right)")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("test accuracy")
    axes[0, -1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="metric")
    fig.suptitle(f"{network}: accuracy against MACs kept (mean ± std over seeds"
                 f"{', dotted: unpruned' if unpruned_accuracy is not None else ''})")
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
