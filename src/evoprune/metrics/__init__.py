"""Named channel-importance metrics, and the engine that scores a model's layers with them.

    from evoprune.metrics import get_metric, score_layers
    scores = score_layers(model, "eq3", x, y)      # {layer name: Tensor[C]}, higher = keep

``get_metric`` takes a name (``list_metrics()``) or any formula of the design space; a :class:`Metric`
declares its :class:`Needs` and exposes ``score(LayerData) -> Tensor[C]``.
"""

from evoprune.expr.stats import ClassStats
from evoprune.metrics.base import Metric, UnscorableLayerError, needs_of_tree
from evoprune.metrics.layer_data import LayerData, Needs
from evoprune.metrics.registry import (
    UnknownMetricError,
    get_metric,
    list_metrics,
    register_metric,
    unregister_metric,
)
from evoprune.metrics.scoring import (
    FeaturePoint,
    collect_layer_data,
    feature_points,
    iter_layer_data,
    prunable_layers,
    score_layers,
    scoring_set,
)

__all__ = [
    "ClassStats", "FeaturePoint", "LayerData", "Metric", "Needs", "UnknownMetricError", "UnscorableLayerError",
    "collect_layer_data", "feature_points", "get_metric", "iter_layer_data", "list_metrics", "needs_of_tree",
    "prunable_layers", "register_metric", "score_layers", "scoring_set", "unregister_metric",
]
