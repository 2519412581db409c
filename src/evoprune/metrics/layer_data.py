"""What a metric may read about one prunable layer, and how a metric says what it needs."""

from __future__ import annotations

from dataclasses import dataclass, fields

from torch import Tensor

from evoprune.expr.stats import ClassStats


@dataclass(frozen=True)
class Needs:
    """Inputs a metric needs; combine with ``|``.

    ``stats``: streaming per-class moments of the feature maps; ``features``: the raw feature maps of the
    whole scoring set (one layer at a time); ``labels``: class labels; ``weight``: the layer weight; ``bn``:
    the scale γ of the BatchNorm that directly follows the layer; ``grads``: first-order Taylor statistics
    (needs a backward pass with labels).
    """

    stats: bool = False
    features: bool = False
    labels: bool = False
    weight: bool = False
    bn: bool = False
    grads: bool = False

    def __or__(self, other: Needs) -> Needs:
        return Needs(**{f.name: getattr(self, f.name) or getattr(other, f.name) for f in fields(self)})

    @property
    def data(self) -> bool:
        """True when a forward pass over the scoring set is needed."""
        return self.stats or self.features or self.grads

    def describe(self) -> str:
        on = [f.name for f in fields(self) if getattr(self, f.name)]
        return ", ".join(on) if on else "nothing"


@dataclass
class LayerData:
    """Everything collected for one prunable layer (fields a metric does not need may be None).

    ``weight``: ``[C_out, ...]`` in PyTorch layout (conv ``[C_out, C_in/g, kh, kw]``, linear ``[C_out, C_in]``);
    ``features``: ``[N, C, D]`` feature maps at the layer's feature point (D = spatial positions, 1 for
    linear layers); ``labels``: ``[N]`` int64 (aligned with ``features``); ``stats``: streaming per-class
    sufficient statistics at the same point; ``bn_weight``: ``[C]`` γ of the following BatchNorm;
    ``taylor``: ``[C]`` mean over samples n of |mean_d a_{n,d}·∂L/∂a_{n,d}|, L the summed cross-entropy
    (first-order Taylor criterion, Molchanov et al. 2017).
    """

    name: str
    weight: Tensor | None = None
    features: Tensor | None = None
    labels: Tensor | None = None
    stats: ClassStats | None = None
    bn_weight: Tensor | None = None
    taylor: Tensor | None = None

    @property
    def num_channels(self) -> int:
        for t in (self.weight, self.bn_weight, self.taylor):
            if t is not None:
                return int(t.shape[0])
        if self.features is not None:
            return int(self.features.shape[1])
        if self.stats is not None:
            return self.stats.num_channels
        raise ValueError(f"layer {self.name!r}: no data to count channels from")
