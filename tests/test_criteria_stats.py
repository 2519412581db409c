"""The criteria benchmark's statistics against scipy and hand values, and its plots as files."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from evoprune.criteria.plots import plot_accuracy_macs, plot_win_rates
from evoprune.criteria.stats import (
    bootstrap_mean_ci,
    compare_pair,
    curve_auc,
    group_correlations,
    holm,
    mean_ranks,
    pairwise_table,
    rank_correlations,
    rank_scores,
    reading,
    summarise_correlations,
    wilcoxon_p,
    win_rate,
)
from evoprune.errors import ConfigError


def test_correlations_match_scipy_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=30).astype(float)  # many ties
    oracle = scores + rng.normal(0, 1.5, size=30)
    rho, tau = rank_correlations(scores, oracle)
    assert rho == pytest.approx(stats.spearmanr(scores, oracle).statistic)
    assert tau == pytest.approx(stats.kendalltau(scores, oracle).statistic)


def test_non_finite_scores_rank_lowest_and_tied():
    assert rank_scores([2.0, -np.inf, 5.0, np.nan, 1e300]).tolist() == [3.0, 1.5, 4.0, 1.5, 5.0]
    # −inf channels are the oracle's two least important ones: a perfect ranking apart from their tie.
    rho, tau = rank_correlations([-np.inf, -np.inf, 1.0, 2.0], [0.1, 0.2, 0.3, 0.4])
    assert rho == pytest.approx(stats.spearmanr([0, 0, 1, 2], [1, 2, 3, 4]).statistic)
    assert tau == pytest.approx(stats.kendalltau([0, 0, 1, 2], [1, 2, 3, 4]).statistic)


def test_constant_scores_correlate_zero():
    assert rank_correlations([1.0, 1.0, 1.0], [0.1, 0.5, 0.2]) == (0.0, 0.0)
    assert rank_correlations([-np.inf] * 3, [0.1, 0.5, 0.2]) == (0.0, 0.0)
    assert rank_correlations([3.0], [1.0]) == (0.0, 0.0)
    with pytest.raises(ConfigError):
        rank_correlations([1.0, 2.0], [1.0, 2.0, 3.0])


def test_group_summary_weights_groups_equally():
    oracle = {"conv1": [1.0, 2.0, 3.0], "conv2": np.arange(100.0)}
    scores = {"conv1": [3.0, 2.0, 1.0], "conv2": np.arange(100.0)}
    per_group = group_correlations(scores, oracle)
    assert per_group == {"conv1": (-1.0, -1.0), "conv2": (pytest.approx(1.0), pytest.approx(1.0))}
    summary = summarise_correlations(per_group)
    assert summary["spearman_mean"] == pytest.approx(0.0)
    assert summary["kendall_worst"] == -1.0 and summary["spearman_worst_group"] == "conv1"
    with pytest.raises(ConfigError, match="missing"):
        group_correlations({"conv1": [1.0]}, oracle)


def test_auc_hand_examples():
    # No loss anywhere: 1.0.
    assert curve_auc([0.5, 0.8], [0.9, 0.9], 0.9) == pytest.approx(1.0)
    # Linear fall from 0.8 at full MACs to 0.4 at half: mean height 0.6, normalised by 0.8.
    assert curve_auc([0.5], [0.4], 0.8) == pytest.approx(0.75)
    # Unsorted points; trapezoids (0.5..0.75: mean 0.5) and (0.75..1: mean 0.75) over span 0.5, by 1.0.
    assert curve_auc([0.75, 0.5], [0.5, 0.5], 1.0) == pytest.approx((0.25 * 0.5 + 0.25 * 0.75) / 0.5)
    for bad in ([0.0], [1.2]):
        with pytest.raises(ConfigError):
            curve_auc(bad, [0.5], 0.9)
    with pytest.raises(ConfigError):
        curve_auc([1.0], [0.5], 0.9)


def _records(values: dict[str, list[float]], networks: tuple[str, ...] = ("net",)) -> list[dict]:
    """Long-format records, one cell per value (ratios cycle over 0.1..0.5, seeds count up)."""
    out = []
    for metric, column in values.items():
        for i, value in enumerate(column):
            out.append({"metric": metric, "network": networks[i % len(networks)], "ratio": 0.1 * (1 + i % 5),
                        "seed": i // 5, "value": value})
    return out


def test_mean_ranks_with_ties_and_incomplete_cells():
    records = _records({"a": [0.9, 0.5], "b": [0.9, 0.7], "c": [0.1, 0.7]})
    records.append({"metric": "a", "network": "net", "ratio": 0.5, "seed": 9, "value": 0.0})  # only a has it
    ranks, cells = mean_ranks(records)
    assert cells == 2
    assert ranks == {"a": pytest.approx((1.5 + 3) / 2), "b": pytest.approx((1.5 + 1.5) / 2),
                     "c": pytest.approx((3 + 1.5) / 2)}
    lower, _ = mean_ranks(records, higher_is_better=False)
    assert lower["b"] == pytest.approx(2.5)
    with pytest.raises(ConfigError, match="two values"):
        mean_ranks(records + records[:1])


def test_win_rate_counts_ties_half():
    assert win_rate([1, 2, 3, 4], [0, 2, 5, 1]) == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert win_rate([1, 2, 3, 4], [0, 2, 5, 1], higher_is_better=False) == pytest.approx((0 + 0.5 + 1 + 0) / 4)
    assert win_rate([0.83, 0.62], [0.81 + 0.02, 0.60 + 0.02]) == 0.5  # equal up to float rounding: ties


def test_wilcoxon_matches_scipy_and_refuses_without_power():
    # Hollander & Wolfe's depression data (scipy's wilcoxon example): exact two-sided p = 0.0390625.
    x = np.array([1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30])
    y = np.array([0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29])
    assert wilcoxon_p(x - y) == pytest.approx(0.0390625)
    d = np.array([0.0, 0.0, 1.0, 2.0, -0.5, 3.0, 4.0, 5.0, 0.0])
    assert wilcoxon_p(d) == pytest.approx(stats.wilcoxon(d, zero_method="wilcox").pvalue)
    assert wilcoxon_p([0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0]) is None  # 5 non-zero: p >= 0.0625 whatever the data


def test_bootstrap_interval_covers_the_shift_and_is_seeded():
    rng = np.random.default_rng(1)
    b = rng.normal(0.7, 0.05, size=40)
    a = b + 0.02 + rng.normal(0, 0.01, size=40)
    low, high = bootstrap_mean_ci(a - b, seed=3)
    assert low < 0.02 < high and low > 0
    assert bootstrap_mean_ci(a - b, seed=3) == (low, high)
    assert bootstrap_mean_ci(a - b, seed=4) != (low, high)
    pair = compare_pair(a, b, seed=3)
    assert (pair["ci_low"], pair["ci_high"]) == pytest.approx((low, high), abs=1e-11)  # differences rounded
    assert pair["win_rate"] > 0.9 and pair["p"] < 1e-6


def _table() -> dict:
    rng = np.random.default_rng(2)
    base = rng.uniform(0.5, 0.8, size=20)
    return pairwise_table(_records({"good": base + 0.05 + rng.normal(0, 0.005, 20), "plain": base,
                                    "twin": base.copy(), "few": np.r_[base[:4] + 0.1, base[4:]]},
                                   networks=("resnet20", "vgg16")), seed=0, resamples=500)


def test_pairwise_table_and_reading():
    table = _table()
    assert table["metrics"][0] == "good" and table["ranked_cells"] == 20
    pairs = {(p["a"], p["b"]): p for p in table["pairs"]}
    assert len(pairs) == 4 * 3
    good, back = pairs["good", "plain"], pairs["plain", "good"]
    assert good["win_rate"] == 1.0 and back["win_rate"] == 0.0 and good["p"] == back["p"] < 0.05
    assert good["mean_diff"] == -back["mean_diff"] and good["ci_low"] == -back["ci_high"] > 0
    assert pairs["plain", "twin"]["p"] is None and pairs["plain", "twin"]["win_rate"] == 0.5
    assert pairs["few", "plain"]["n_nonzero"] == 4 and pairs["few", "plain"]["p"] is None
    text = reading(table, alpha=0.05)
    assert "\n" not in text
    assert "good > " in text and "plain" in text.split("good > ")[1].split(";")[0]
    untestable = text.split("lack of data")[1]
    assert "plain ~ twin" in untestable or "twin ~ plain" in untestable
    assert "good ~" not in text.split("Not distinguishable")[0]
    assert pairwise_table(_records({"good": [1.0] * 3, "x": [0.0] * 3}), seed=0) == pairwise_table(
        _records({"good": [1.0] * 3, "x": [0.0] * 3}), seed=0)


def test_holm_by_hand_and_in_the_table():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04 -> monotone: 0.04 becomes 0.06
    assert holm([0.01, 0.04, 0.03, None, 0.005]) == pytest.approx([0.03, 0.06, 0.06, None, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0] and holm([]) == []
    table = _table()
    tested = [p for p in table["pairs"] if p["p"] is not None]
    assert tested and all(p["p"] <= p["p_holm"] <= 1.0 for p in tested)
    assert all(p["p_holm"] is None for p in table["pairs"] if p["p"] is None)
    unordered = {frozenset((p["a"], p["b"])): p["p"] for p in tested}
    assert {frozenset((p["a"], p["b"])): p["p_holm"] for p in tested} == pytest.approx(
        dict(zip(unordered, holm(list(unordered.values())))))
    assert "Holm's correction" in reading(table)


def test_plots_write_pngs(tmp_path):
    table = _table()
    heat = plot_win_rates(table, tmp_path / "win_rates.png")
    points = [{"metric": m, "seed": s, "ratio": r, "macs": 1 - 1.8 * r + 0.8 * r * r,
               "accuracy": 0.85 - k * r - 0.01 * s, "accuracy_recalibrated": 0.86 - 0.5 * k * r}
              for k, m in zip((0.5, 1.0, 1.5), ("oracle", "L1", "random")) for s in range(3)
              for r in (0.1, 0.2, 0.3, 0.4, 0.5)]
    curve = plot_accuracy_macs(points, tmp_path / "curves.png", network="resnet20", unpruned_accuracy=0.86)
    for path in (heat, curve):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
