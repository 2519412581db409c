"""Summary statistics of the criteria benchmark (issue 12): rank correlations with the oracle, curve areas, mean
ranks and paired comparisons between metrics.

Everything here is a plain function over numpy arrays and plain records, so the benchmark's JSON can be summarised
again from the file alone; the only randomness (the bootstrap) is drawn from a seed. Results are plain dicts
(``TypedDict``) of floats and strings, ready for ``atomic.write_json``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations
from typing import TypedDict

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from evoprune.errors import ConfigError

# A two-sided exact Wilcoxon test on n non-zero differences cannot go below 2 / 2**n: 0.0625 for n = 5, so with
# fewer than 6 non-zero pairs p < 0.05 is impossible whatever the data, and we report "no power" instead of a p.
MIN_NONZERO_PAIRS = 6

# Paired differences are rounded to this many decimals so that differences equal in exact arithmetic
# (0.83 - 0.81 and 0.62 - 0.60) tie and equal values win half, as scipy's wilcoxon advises.
DIFF_DECIMALS = 12

# The fields of one long-format benchmark record; any other keys are ignored.
RECORD_KEYS = ("metric", "network", "ratio", "seed", "value")

Cell = tuple[str, float, int]


class CorrelationSummary(TypedDict):
    """Per-group correlations averaged with each group weighted equally, and the worst group of each."""

    groups: int
    spearman_mean: float
    spearman_worst: float
    spearman_worst_group: str
    kendall_mean: float
    kendall_worst: float
    kendall_worst_group: str


class PairStats(TypedDict):
    """Metric ``a`` against metric ``b`` over the cells both have; ``mean_diff`` is ``a - b`` in the values' unit.

    ``p`` is ``None`` when fewer than ``MIN_NONZERO_PAIRS`` differences are non-zero (the test has no power);
    ``p_holm`` is ``p`` adjusted by Holm's step-down correction over every pair tested in the same table (a pair
    tested alone: ``p``)."""

    a: str
    b: str
    n: int
    n_nonzero: int
    win_rate: float
    p: float | None
    p_holm: float | None
    mean_diff: float
    ci_low: float
    ci_high: float


class PairwiseTable(TypedDict):
    """Every ordered pair of metrics; ``metrics`` is sorted by mean rank (best first)."""

    metrics: list[str]
    mean_rank: dict[str, float]
    ranked_cells: int
    higher_is_better: bool
    pairs: list[PairStats]


def _vector(values: ArrayLike, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ConfigError(f"{what}: expected a 1-D array of scores, got shape {array.shape}")
    return array


def rank_scores(scores: ArrayLike) -> np.ndarray:
    """Average ranks (1 = lowest score, ties share their mean rank). Non-finite scores (−inf, the interpreter's
    mark for a channel a metric cannot score, and NaN or +inf alike) rank below every finite score, tied."""
    values = _vector(scores, "scores")
    finite = np.isfinite(values)
    below = int((~finite).sum())
    ranks = np.full(values.shape, (below + 1) / 2.0)
    ranks[finite] = below + stats.rankdata(values[finite], method="average")
    return ranks


def rank_correlations(scores: ArrayLike, oracle: ArrayLike) -> tuple[float, float]:
    """Spearman ρ and Kendall τ-b between one group's channel scores and the oracle's.

    Both are computed on :func:`rank_scores` ranks (Kendall's τ is rank-invariant, so this only fixes how
    non-finite scores count). A constant vector (or fewer than two channels) carries no ranking: its correlation
    is 0, not NaN, so a metric that cannot tell channels apart scores as "no better than chance" in the averages.
    """
    x, y = rank_scores(scores), rank_scores(oracle)
    if x.shape != y.shape:
        raise ConfigError(f"scores have {x.size} channels but the oracle has {y.size}; score the same group")
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0, 0.0
    rho = float(np.corrcoef(x, y)[0, 1])
    tau = float(stats.kendalltau(x, y, variant="b").statistic)
    return rho, tau


def group_correlations(scores: Mapping[str, ArrayLike],
                       oracle: Mapping[str, ArrayLike]) -> dict[str, tuple[float, float]]:
    """``{group: (spearman, kendall)}`` for every group of the oracle; ``scores`` must hold the same groups."""
    if set(scores) != set(oracle):
        missing, extra = sorted(set(oracle) - set(scores)), sorted(set(scores) - set(oracle))
        raise ConfigError(f"metric scores and oracle name different groups (missing {missing}, extra {extra}); "
                          "score every group the oracle measured")
    if not oracle:
        raise ConfigError("no groups to correlate: the oracle is empty")
    return {group: rank_correlations(scores[group], oracle[group]) for group in oracle}


def summarise_correlations(per_group: Mapping[str, tuple[float, float]]) -> CorrelationSummary:
    """Mean over groups (each group weighted equally, whatever its channel count) and the worst group."""
    if not per_group:
        raise ConfigError("no groups to summarise")
    names = list(per_group)
    table = np.array([per_group[name] for name in names], dtype=np.float64)
    worst = table.argmin(axis=0)
    return CorrelationSummary(
        groups=len(names),
        spearman_mean=float(table[:, 0].mean()), spearman_worst=float(table[worst[0], 0]),
        spearman_worst_group=names[worst[0]],
        kendall_mean=float(table[:, 1].mean()), kendall_worst=float(table[worst[1], 1]),
        kendall_worst_group=names[worst[1]],
    )


def curve_auc(macs_kept: ArrayLike, accuracy: ArrayLike, unpruned_accuracy: float) -> float:
    """Normalised area under the accuracy-vs-MACs curve.

    The curve is the measured points ``(x_i, acc_i)``, ``x_i`` the fraction of the unpruned MACs kept (in (0, 1]),
    plus the unpruned point ``(1, unpruned_accuracy)``, joined by straight lines in order of ``x``. The area
    under it (trapezoid rule) is divided by ``unpruned_accuracy × (1 − min x_i)``: the area of a curve that loses
    nothing. So 1.0 = no accuracy lost anywhere on the measured span, ``chance / unpruned`` ≈ a network at chance
    at every ratio; a pruned net that beats the unpruned one can exceed 1. Comparable across metrics only over
    the same ratios (the benchmark uses the same architectures for every metric)."""
    x, y = _vector(macs_kept, "macs_kept"), _vector(accuracy, "accuracy")
    if x.size == 0 or x.shape != y.shape:
        raise ConfigError(f"a curve needs one accuracy per MACs fraction and at least one point "
                          f"(got {x.size} MACs fractions, {y.size} accuracies)")
    if not (np.isfinite(x).all() and np.isfinite(y).all() and np.isfinite(unpruned_accuracy)):
        raise ConfigError("curve points must be finite numbers")
    if x.min() <= 0 or x.max() > 1:
        raise ConfigError(f"MACs fractions must lie in (0, 1], got {x.min():g}..{x.max():g}; "
                          "divide the pruned MACs by the unpruned MACs")
    if unpruned_accuracy <= 0 or x.min() == 1:
        raise ConfigError("the curve needs a positive unpruned accuracy and a point below 100% MACs")
    order = np.argsort(np.append(x, 1.0), kind="stable")
    xs, ys = np.append(x, 1.0)[order], np.append(y, unpruned_accuracy)[order]
    return float(np.trapezoid(ys, xs) / (unpruned_accuracy * (1.0 - x.min())))


def _cells(records: Iterable[Mapping[str, object]]) -> dict[str, dict[Cell, float]]:
    """``{metric: {(network, ratio, seed): value}}`` from long-format records, checked once."""
    table: dict[str, dict[Cell, float]] = {}
    for i, record in enumerate(records):
        missing = [key for key in RECORD_KEYS if key not in record]
        if missing:
            raise ConfigError(f"record {i} lacks {missing}; each record needs {list(RECORD_KEYS)}")
        try:
            cell = (str(record["network"]), float(record["ratio"]), int(record["seed"]))
            value = float(record["value"])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"record {i}: ratio, seed and value must be numbers ({exc})") from None
        if not np.isfinite(value):
            raise ConfigError(f"record {i} ({record['metric']}, cell {cell}): value {value} is not finite")
        values = table.setdefault(str(record["metric"]), {})
        if cell in values:
            raise ConfigError(f"record {i}: metric {record['metric']} has two values for cell {cell}")
        values[cell] = value
    if not table:
        raise ConfigError("no records to compare")
    return table


def mean_ranks(records: Iterable[Mapping[str, object]], *,
               higher_is_better: bool = True) -> tuple[dict[str, float], int]:
    """Mean rank of each metric over the (network, ratio, seed) cells every metric has (rank 1 = best value;
    ties share their average rank), and the number of those cells. Cells some metric lacks (an unfinished run)
    are left out, so every metric is ranked against the same field."""
    return _mean_ranks(_cells(records), higher_is_better)


def _mean_ranks(table: dict[str, dict[Cell, float]], higher_is_better: bool) -> tuple[dict[str, float], int]:
    metrics = sorted(table)
    common = sorted(set.intersection(*(set(cells) for cells in table.values())))
    if not common:
        raise ConfigError(f"no (network, ratio, seed) cell has a value for every metric ({', '.join(metrics)})")
    values = np.array([[table[m][cell] for m in metrics] for cell in common])
    ranks = stats.rankdata(-values if higher_is_better else values, method="average", axis=1)
    return dict(zip(metrics, ranks.mean(axis=0).tolist())), len(common)


def win_rate(a: ArrayLike, b: ArrayLike, *, higher_is_better: bool = True) -> float:
    """Share of paired cells where ``a`` beats ``b``; a tie counts half."""
    return _win_rate(_paired_diff(a, b), higher_is_better)


def _win_rate(diff: np.ndarray, higher_is_better: bool) -> float:
    gain = diff if higher_is_better else -diff
    return float(((gain > 0).sum() + 0.5 * (gain == 0).sum()) / gain.size)


def wilcoxon_p(diff: ArrayLike) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of paired differences, or ``None`` without power.

    Zero differences are dropped (``zero_method="wilcox"``, Wilcoxon's own rule: a tie says nothing about the
    direction); fewer than ``MIN_NONZERO_PAIRS`` non-zero differences cannot reach p < 0.05 and give ``None``.
    scipy's ``method="auto"`` (scipy >= 1.15): the exact null distribution without ties or zeros, otherwise an
    exact permutation test up to 13 pairs and the tie-corrected normal approximation above."""
    d = np.round(_vector(diff, "differences"), DIFF_DECIMALS)
    if np.count_nonzero(d) < MIN_NONZERO_PAIRS:
        return None
    return float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def bootstrap_mean_ci(diff: ArrayLike, *, seed: int, resamples: int = 2000,
                      confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean paired difference, resampling cells with replacement.

    Deterministic for a seed (the same seed for every pair, so an interval does not move when a metric is
    added to the table)."""
    d = _vector(diff, "differences")
    if d.size == 0 or resamples < 1 or not 0 < confidence < 1:
        raise ConfigError("the bootstrap needs at least one difference, resamples >= 1 and 0 < confidence < 1")
    picks = np.random.default_rng(seed).integers(0, d.size, size=(resamples, d.size))
    means = d[picks].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def _paired_diff(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    x, y = _vector(a, "a"), _vector(b, "b")
    if x.shape != y.shape or x.size == 0:
        raise ConfigError(f"paired samples need the same, non-zero length (got {x.size} and {y.size})")
    return np.round(x - y, DIFF_DECIMALS)


def compare_pair(a: ArrayLike, b: ArrayLike, *, names: tuple[str, str] = ("a", "b"), higher_is_better: bool = True,
                 seed: int = 0, resamples: int = 2000) -> PairStats:
    """Win rate, Wilcoxon p and the mean difference ``a - b`` with its bootstrap 95% interval, over paired
    cells (``a[i]`` and ``b[i]`` measured in the same network, ratio and seed)."""
    diff = _paired_diff(a, b)
    low, high = bootstrap_mean_ci(diff, seed=seed, resamples=resamples)
    p = wilcoxon_p(diff)
    return PairStats(a=names[0], b=names[1], n=int(diff.size), n_nonzero=int(np.count_nonzero(diff)),
                     win_rate=_win_rate(diff, higher_is_better), p=p, p_holm=p,
                     mean_diff=float(diff.mean()), ci_low=low, ci_high=high)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values, in the input order: the k-th smallest of m tested p-values times
    (m − k + 1), made monotone and capped at 1. ``None`` (not tested) stays ``None`` and is not counted in m.

    Rejecting where the adjusted p < α keeps the chance of any false "distinguishable" at most α over the
    whole table, whatever the dependence between the tests."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for k, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - k) * p))
        adjusted[i] = running
    return adjusted


def _mirror(pair: PairStats) -> PairStats:
    """``b`` against ``a``: the same test and resamples, seen from the other side."""
    return PairStats(a=pair["b"], b=pair["a"], n=pair["n"], n_nonzero=pair["n_nonzero"],
                     win_rate=1.0 - pair["win_rate"], p=pair["p"], p_holm=pair["p_holm"],
                     mean_diff=-pair["mean_diff"],
                     ci_low=-pair["ci_high"], ci_high=-pair["ci_low"])


def pairwise_table(records: Iterable[Mapping[str, object]], *, higher_is_better: bool = True, seed: int = 0,
                   resamples: int = 2000) -> PairwiseTable:
    """Every metric against every other over the cells both have, from long-format records
    ``{"metric", "network", "ratio", "seed", "value"}``; metrics sorted by mean rank (ties by name).

    Each unordered pair is tested once and mirrored, so ``(a, b)`` and ``(b, a)`` agree exactly; ``p_holm``
    corrects for every unordered pair tested."""
    table = _cells(records)
    ranks, ranked_cells = _mean_ranks(table, higher_is_better)
    metrics = sorted(table, key=lambda m: (ranks[m], m))
    tested: list[PairStats] = []
    for a, b in combinations(metrics, 2):
        shared = sorted(set(table[a]) & set(table[b]))
        if not shared:
            raise ConfigError(f"metrics {a} and {b} share no (network, ratio, seed) cell")
        tested.append(compare_pair([table[a][c] for c in shared], [table[b][c] for c in shared], names=(a, b),
                                   higher_is_better=higher_is_better, seed=seed, resamples=resamples))
    pairs: list[PairStats] = []
    for pair, adjusted in zip(tested, holm([pair["p"] for pair in tested])):
        pair["p_holm"] = adjusted
        pairs += [pair, _mirror(pair)]
    return PairwiseTable(metrics=metrics, mean_rank={m: ranks[m] for m in metrics}, ranked_cells=ranked_cells,
                         higher_is_better=higher_is_better, pairs=pairs)


def _better(pair: PairStats, higher_is_better: bool) -> bool:
    """Whether ``a`` is the better side: the sign of the mean difference, the win rate where it is exactly 0."""
    if pair["mean_diff"] != 0:
        return (pair["mean_diff"] > 0) == higher_is_better
    return pair["win_rate"] > 0.5


#: Undistinguished and untested pairs are listed by name up to this many, then only counted (a table of 25
#: metrics has 300 pairs).
UNTESTED_LISTED = 12


def reading(table: PairwiseTable, *, alpha: float = 0.05, unit: str = "(network, ratio, seed) cells") -> str:
    """One plain-language paragraph: which metrics are distinguishable from which (Holm-corrected Wilcoxon
    p < alpha over every tested pair of the table, the better side by the sign of the mean difference), which
    are not, and which pairs have too few non-zero differences to test. Pairs are listed once each, metrics in
    mean-rank order."""
    order = {m: i for i, m in enumerate(table["metrics"])}
    beats: dict[str, list[str]] = {}
    ties: dict[str, list[str]] = {}
    untested: dict[str, list[str]] = {}
    tested = uncorrected = 0
    for pair in table["pairs"]:
        if order[pair["a"]] > order[pair["b"]]:
            continue
        if pair["p"] is None or pair["p_holm"] is None:
            untested.setdefault(pair["a"], []).append(pair["b"])
            continue
        tested += 1
        uncorrected += pair["p"] < alpha
        if pair["p_holm"] >= alpha:
            ties.setdefault(pair["a"], []).append(pair["b"])
        elif _better(pair, table["higher_is_better"]):
            beats.setdefault(pair["a"], []).append(pair["b"])
        else:
            beats.setdefault(pair["b"], []).append(pair["a"])

    def listed(groups: dict[str, list[str]], sign: str) -> str:
        parts = [f"{m} {sign} {', '.join(sorted(groups[m], key=order.__getitem__))}"
                 for m in sorted(groups, key=order.__getitem__)]
        return "; ".join(parts)

    found = sum(len(v) for v in beats.values())
    ranked = ", ".join(f"{m} {table['mean_rank'][m]:.1f}" for m in table["metrics"])
    text = [f"Paired over the same {unit}, two-sided Wilcoxon signed-rank test at "
            f"α = {alpha:g}; metrics by mean rank ({ranked}); \"A > B\" reads \"A is better than B\".",
            f"Distinguishable after Holm's correction for the {tested} tests ({found} pairs; {uncorrected} pass "
            f"uncorrected, where about {tested * alpha:.1f} would by chance if no metric differed): "
            f"{listed(beats, '>')}." if found else
            "No pair could be tested." if not tested else
            f"No pair of the {tested} tested is distinguishable after Holm's correction ({uncorrected} pass "
            f"uncorrected, where about {tested * alpha:.1f} would by chance if no metric differed)."]
    if ties and found:
        count = sum(len(v) for v in ties.values())
        text.append(f"Not distinguishable: {listed(ties, '~')}." if count <= UNTESTED_LISTED else
                    f"The other {count} tested pairs are not distinguishable.")
    if untested:
        count = sum(len(v) for v in untested.values())
        pairs = listed(untested, "~") if count <= UNTESTED_LISTED else f"{count} pairs"
        text.append(f"Not distinguishable for lack of data (fewer than {MIN_NONZERO_PAIRS} non-zero paired "
                    f"differences, so the test has no power): {pairs}.")
    return " ".join(text)
