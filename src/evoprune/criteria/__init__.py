"""How pruning criteria are compared (issue 12): the oracle importance of every channel, accuracy-vs-MACs curves
right after pruning and after BatchNorm recalibration, and the statistics that rank metrics by them.

>>> oracle = oracle_importance(model, data.val.x, data.val.y, samples=1000)   # loss increase per channel
>>> oracle = cached_oracle(model, data.val.x, data.val.y, Path("oracle.pt"))   # the same, computed once
>>> curve = metric_curve(model, "eq3", data)                                  # one point per uniform ratio
"""

from evoprune.criteria.curves import CurvePoint, group_scores, metric_curve, prune_lowest, prune_uniform
from evoprune.criteria.oracle import OracleResult, oracle_importance
from evoprune.criteria.oracle_cache import StoredOracle, cached_oracle
from evoprune.criteria.recalibrate import recalibrate_batchnorm
from evoprune.criteria.stats import (
    compare_pair,
    curve_auc,
    group_correlations,
    holm,
    mean_ranks,
    pairwise_table,
    rank_correlations,
    reading,
    summarise_correlations,
)

__all__ = [
    "CurvePoint",
    "group_scores",
    "metric_curve",
    "prune_lowest",
    "prune_uniform",
    "OracleResult",
    "oracle_importance",
    "StoredOracle",
    "cached_oracle",
    "recalibrate_batchnorm",
    "rank_correlations",
    "group_correlations",
    "summarise_correlations",
    "curve_auc",
    "mean_ranks",
    "compare_pair",
    "holm",
    "pairwise_table",
    "reading",
]
