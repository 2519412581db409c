"""Scoring engine: collect what a metric needs at each prunable layer, and score every channel.

Public API::

    scoring_set(x, y, size=2000, seed=0) -> (x_s, y_s)           balanced per class, seeded
    prunable_layers(model) -> [layer names]                      Conv/Linear except output layers
    iter_layer_data(model, layers, x, y, needs=...) -> LayerData one layer at a time
    collect_layer_data(model, layers, x, y, needs=...) -> {name: LayerData}
    score_layers(model, metric, x, y, layers=None) -> {name: Tensor[C]}   higher = keep

Feature maps are read at each layer's *feature point* (after the BatchNorm/activation/pooling that
directly follow it; see :mod:`evoprune.metrics.feature_points`). The model runs in eval mode (BN uses its
running statistics; the official code's train-mode BN during ResNet scoring is not reproduced).

Passes over the scoring set, in batches of ``batch_size``:

* one streaming pass for **all** layers for per-class moments (:class:`~evoprune.expr.ClassStats`) and
  first-order Taylor statistics; it ends each batch's forward early after the last tapped layer unless
  gradients are needed;
* for metrics that need raw feature maps, one pass **per layer**, holding only that layer's
  ``[N, C, D]`` maps, stopping each forward at the layer; :func:`iter_layer_data` yields the layer
  before the next one is collected, so at most one layer's activations are alive (if the caller drops it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evoprune.expr.stats import ClassStats
from evoprune.metrics.base import Metric
from evoprune.metrics.feature_points import (
    Capture,
    FeaturePoint,
    StopForward,
    bn_modules,
    feature_points,
    prunable_layers,
)
from evoprune.metrics.layer_data import LayerData, Needs
from evoprune.metrics.registry import get_metric

__all__ = ["FeaturePoint", "collect_layer_data", "feature_points", "iter_layer_data", "prunable_layers",
           "score_layers", "scoring_set"]


def scoring_set(x: Tensor, y: Tensor, *, size: int = 2000, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A class-balanced random subset of ``size`` samples (all of them if fewer), shuffled, seeded.

    Each class gets ``size // L`` samples (a class with fewer gives all it has); the remainder is spread
    over classes that still have samples left.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples, y has {y.shape[0]}")
    if size >= y.shape[0]:
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(y.shape[0], generator=g)
        return x[idx], y[idx]
    g = torch.Generator().manual_seed(seed)
    y_cpu = y.cpu()
    classes = torch.unique(y_cpu)
    pools = {int(c): torch.nonzero(y_cpu == c).flatten() for c in classes}
    pools = {c: p[torch.randperm(p.numel(), generator=g)] for c, p in pools.items()}
    take = {c: min(size // len(classes), p.numel()) for c, p in pools.items()}
    left = size - sum(take.values())
    order = [int(c) for c in classes[torch.randperm(len(classes), generator=g)]]
    while left > 0:
        spare = [c for c in order if take[c] < pools[c].numel()]
        if not spare:
            break
        for c in spare:
            if left == 0:
                break
            take[c] += 1
            left -= 1
    idx = torch.cat([pools[c][:take[c]] for c in pools])
    idx = idx[torch.randperm(idx.numel(), generator=g)].to(y.device)
    return x[idx], y[idx]


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _positions(t: Tensor) -> int:
    return int(t[0].numel() // t.shape[1]) if t.shape[0] else 1


class _StreamingPass:
    """Accumulates ClassStats and Taylor sums for many layers in one pass."""

    def __init__(self, layers: Sequence[str], stats: bool, grads: bool) -> None:
        self.layers = list(layers)
        self.want_stats = stats
        self.want_grads = grads
        self.stats: dict[str, ClassStats] = {}
        self.taylor: dict[str, Tensor] = {}
        self.live: dict[str, Tensor] = {}
        self.labels: Tensor | None = None
        self.fired = 0

    def sink(self, key: str, t: Tensor) -> None:
        if key not in self.layers:
            return
        if self.want_stats:
            st = self.stats.get(key)
            if st is None:
                st = self.stats[key] = ClassStats.empty(t.shape[1], _positions(t), device=t.device)
            st.update(t.detach(), self.labels)
        if self.want_grads:
            self.live[key] = t
        self.fired += 1
        if not self.want_grads and self.fired == len(self.layers):
            raise StopForward


def _streaming(cap: Capture, layers, x, y, needs: Needs, batch_size: int, device) -> _StreamingPass:
    sp = _StreamingPass(layers, needs.stats, needs.grads)
    cap.sink = sp.sink
    cap.clone_outputs = needs.grads
    n = x.shape[0]
    try:
        for i in range(0, n, batch_size):
            xb = x[i:i + batch_size].to(device)
            yb = None if y is None else y[i:i + batch_size].to(device)
            sp.labels, sp.fired, sp.live = yb, 0, {}
            if not needs.grads:
                with torch.no_grad():
                    cap.run(xb)
                continue
            with torch.enable_grad():
                xb = xb.requires_grad_(True) if xb.is_floating_point() else xb
                logits = cap.run(xb)
                loss = F.cross_entropy(logits, yb, reduction="sum")
                keys = list(sp.live)
                grads = torch.autograd.grad(loss, [sp.live[k] for k in keys], allow_unused=True)
            for k, g in zip(keys, grads):
                a = sp.live[k].detach()
                b = a.shape[0]
                g = torch.zeros_like(a) if g is None else g
                contrib = (a * g).reshape(b, a.shape[1], -1).mean(-1).abs().sum(0).to(torch.float64)
                sp.taylor[k] = sp.taylor.get(k, 0) + contrib
    finally:
        cap.sink = None
        cap.clone_outputs = False
    for k in sp.taylor:
        sp.taylor[k] = sp.taylor[k] / n
    for st in sp.stats.values():
        st.release()
    return sp


class _LayerBuffer:
    """Holds one layer's ``[N, C, D]`` feature maps for the whole scoring set."""

    def __init__(self, layer: str, n: int) -> None:
        self.layer = layer
        self.n = n
        self.features: Tensor | None = None
        self.offset = 0

    def sink(self, key: str, t: Tensor) -> None:
        if key != self.layer:
            return
        b, c = t.shape[0], t.shape[1]
        flat = t.detach().reshape(b, c, -1)
        if self.features is None:
            self.features = torch.empty((self.n, c, flat.shape[2]), dtype=flat.dtype, device=flat.device)
        self.features[self.offset:self.offset + b] = flat
        self.offset += b
        raise StopForward


def iter_layer_data(
    model: nn.Module,
    layers: Sequence[str] | None,
    x: Tensor,
    y: Tensor | None = None,
    *,
    needs: Needs,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    point: str = "auto",
) -> Iterator[LayerData]:
    """Yield a :class:`LayerData` per layer, in order, with the fields ``needs`` asks for.

    ``weight`` (and ``bn_weight`` when a BN follows) are always filled. ``x``/``y`` is the scoring set
    (see :func:`scoring_set`); ``y`` is required for label-aware needs. The model is put in eval mode
    for the passes and restored afterwards; its parameters and gradients are not modified.
    ``point``: "auto" (feature points, see :mod:`~evoprune.metrics.feature_points`) or "output" (raw
    layer outputs).
    """
    layers = list(prunable_layers(model) if layers is None else layers)
    if (needs.labels or needs.grads) and y is None:
        raise ValueError("this metric needs labels: pass y")
    device = torch.device(device) if device is not None else _model_device(model)
    named = dict(model.named_modules())
    points = feature_points(model, layers, point=point)
    bns = bn_modules(model, points.values())

    def base(name: str) -> LayerData:
        bn = bns[name]
        return LayerData(name=name, weight=named[name].weight.detach(),
                         bn_weight=None if bn is None or bn.weight is None else bn.weight.detach(),
                         labels=None if y is None else y)

    if not needs.data:
        for name in layers:
            yield base(name)
        return
    was_training = model.training
    model.eval()
    cap = Capture(model, points)
    try:
        streamed = None
        if needs.grads or (needs.stats and not needs.features):
            streamed = _streaming(cap, layers, x, y, needs, batch_size, device)
        for name in layers:
            data = base(name)
            if streamed is not None:
                data.stats = streamed.stats.get(name)
                data.taylor = streamed.taylor.get(name)
            if needs.features:
                buf = _LayerBuffer(name, x.shape[0])
                cap.sink = buf.sink
                with torch.no_grad():
                    for i in range(0, x.shape[0], batch_size):
                        cap.run(x[i:i + batch_size].to(device))
                cap.sink = None
                data.features = buf.features
                del buf
                if needs.stats and data.stats is None:
                    data.stats = ClassStats.from_features(data.features, None if y is None else y.to(device))
                if y is not None:
                    data.labels = y.to(device)
            yield data
            del data
    finally:
        cap.close()
        model.train(was_training)


def collect_layer_data(
    model: nn.Module,
    layers: Sequence[str] | None,
    x: Tensor,
    y: Tensor | None = None,
    *,
    needs: Needs,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    point: str = "auto",
) -> dict[str, LayerData]:
    """All layers' :class:`LayerData` at once (with ``needs.features`` this holds every layer's maps:
    prefer :func:`iter_layer_data` or :func:`score_layers` for large models)."""
    return {d.name: d for d in iter_layer_data(model, layers, x, y, needs=needs, batch_size=batch_size,
                                               device=device, point=point)}


def score_layers(
    model: nn.Module,
    metric: str | Metric,
    x: Tensor | None = None,
    y: Tensor | None = None,
    layers: Sequence[str] | None = None,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    point: str = "auto",
) -> dict[str, Tensor]:
    """Score every output channel of each layer: ``{layer name: Tensor[C]}`` (float64, finite or −inf,
    higher = more important), in layer order. ``metric`` is a name or a formula (:func:`get_metric`);
    ``layers`` defaults to :func:`prunable_layers`. Data-free metrics (e.g. ``WL1``) need no ``x``."""
    m = get_metric(metric)
    if m.needs.data and x is None:
        raise ValueError(f"metric {m.name!r} reads feature maps: pass the scoring set x (and y)")
    if x is None:
        x = torch.empty(0)
    out: dict[str, Tensor] = {}
    for data in iter_layer_data(model, layers, x, y, needs=m.needs, batch_size=batch_size, device=device,
                                point=point):
        out[data.name] = m.score(data)
        del data
    return out
