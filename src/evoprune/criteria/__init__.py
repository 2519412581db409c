"""How pruning criteria are compared (issue 12): the oracle importance of every channel, accuracy-vs-MACs curves
right after pruning and after BatchNorm recalibration, and the statistics that rank metrics by them.

>>> oracle = oracle_importance(model, data.val.x, data.val.y, samples=1000)   # loss increase per channel
>>> curve = metric_curve(model, "eq3", data)                                  # one point per uniform ratio
"""

from evoprune.criteria.recalibrate import recalibrate_batchnorm

__all__ = [
    "recalibrate_batchnorm",
]
