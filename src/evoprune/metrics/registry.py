"""Metric registry: look a metric up by name (case-insensitive, aliases) or accept any formula."""

from __future__ import annotations

from evoprune.errors import EvopruneError
from evoprune.expr import FormulaError, parse
from evoprune.expr.errors import close_names
from evoprune.metrics.base import Metric
from evoprune.metrics.library import builtin_metrics


class UnknownMetricError(EvopruneError, ValueError):
    """Neither a known metric name nor a formula."""

    def __init__(self, name: str, suggestions: list[str]) -> None:
        self.name = name
        self.suggestions = suggestions
        msg = f"unknown metric {name!r}"
        if suggestions:
            msg += f"; did you mean: {', '.join(suggestions)}?"
        msg += " (see `evoprune metrics list`; a formula such as 'sum(abs(WI))' is accepted too)"
        super().__init__(msg)


_REGISTRY: dict[str, Metric] = {}
_LOOKUP: dict[str, str] = {}


def register_metric(metric: Metric, *, replace: bool = False) -> Metric:
    """Add a metric under its name and aliases (e.g. an evolved hall-of-fame formula)."""
    keys = [metric.name, *metric.aliases]
    for k in keys:
        owner = _LOOKUP.get(k.lower())
        if owner is not None and owner != metric.name and not replace:
            raise ValueError(f"metric name {k!r} is already taken by {owner!r}")
    if metric.name in _REGISTRY and not replace:
        raise ValueError(f"metric {metric.name!r} is already registered")
    _REGISTRY[metric.name] = metric
    for k in keys:
        _LOOKUP[k.lower()] = metric.name
    return metric


def unregister_metric(name: str) -> None:
    """Remove a metric (and its aliases) added with :func:`register_metric`."""
    key = _LOOKUP.get(name.lower())
    if key is None:
        raise UnknownMetricError(name, close_names(name, _all_names()))
    metric = _REGISTRY.pop(key)
    for k in (metric.name, *metric.aliases):
        _LOOKUP.pop(k.lower(), None)


for _m in builtin_metrics():
    register_metric(_m)


def list_metrics() -> list[Metric]:
    """All registered metrics, in registration order."""
    return list(_REGISTRY.values())


def _all_names() -> list[str]:
    names = []
    for m in _REGISTRY.values():
        names.extend([m.name, *m.aliases])
    return names


def get_metric(name_or_formula: str | Metric) -> Metric:
    """A metric by name or alias (case-insensitive), or a :class:`Metric` for any formula string.

    Raises :class:`UnknownMetricError` (with close names) for an unknown bare name, and
    :class:`~evoprune.expr.FormulaError` (with a caret) for a broken formula.
    """
    if isinstance(name_or_formula, Metric):
        return name_or_formula
    if not isinstance(name_or_formula, str):
        raise TypeError(f"expected a metric name or formula, got {type(name_or_formula).__name__}")
    text = name_or_formula.strip()
    key = _LOOKUP.get(text.lower())
    if key is not None:
        return _REGISTRY[key]
    looks_like_formula = any(ch in text for ch in "(),") or not text.replace("_", "").isalnum()
    try:
        tree = parse(text)
    except FormulaError as err:
        if looks_like_formula:
            raise
        raise UnknownMetricError(text, close_names(text, _all_names())) from err
    return Metric.from_formula(tree)
