"""The :class:`Metric` type: a named channel-importance function (higher score = more important)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from evoprune.errors import EvopruneError
from evoprune.expr import Node, analyse, evaluate, parse, sanitize_scores, simplify, to_infix, to_latex, to_prefix
from evoprune.metrics.layer_data import LayerData, Needs

KINDS = ("seed", "evolved", "inspired", "human", "baseline", "formula")


class UnscorableLayerError(EvopruneError, ValueError):
    """A metric cannot score this layer at all (e.g. ``BNScale`` on a layer with no BatchNorm after it).

    Distinct from other failures so that a Torch-Pruning importance can leave such a layer unscored, as
    Torch-Pruning's own BN-scale importance does, instead of failing for a layer the pruner never asks about.
    """

    def __init__(self, layer: str, reason: str) -> None:
        self.layer = layer
        super().__init__(f"layer {layer!r}: {reason}")


def needs_of_tree(tree: Node) -> Needs:
    """What scoring with a tree requires: the needs of its simplified form, which is what scoring evaluates (raw
    features only for matrix work on P/Q/X that is not dead weight)."""
    info = analyse(tree, simplify=True)
    return Needs(
        stats=info.uses_maps and not info.needs_features,
        features=info.needs_features,
        labels=info.label_aware,
        weight=info.uses_weight,
    )


@dataclass(frozen=True)
class Metric:
    """A channel-importance metric.

    ``tree`` is its formula in the design space as written or evolved (None where not expressible, e.g. MMD);
    scoring evaluates its :attr:`simplified` form (same scores, often a cheaper path). ``fn``, when set, is a
    direct implementation used for scoring instead of the tree (same values, less memory).
    ``score(data)`` returns ``[C]`` float64 scores, finite or −inf (non-finite values are mapped to −inf so
    a broken channel score never outranks a finite one).
    """

    name: str
    kind: str
    doc: str
    source: str
    needs: Needs
    tree: Node | None = None
    fn: Callable[[LayerData], Tensor] | None = None
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown metric kind {self.kind!r}; known: {', '.join(KINDS)}")
        if self.tree is None and self.fn is None:
            raise ValueError(f"metric {self.name!r} needs a tree or a function")

    @classmethod
    def from_formula(cls, formula: str | Node, *, name: str | None = None, kind: str = "formula",
                     doc: str = "", source: str = "user formula", aliases: tuple[str, ...] = (),
                     fn: Callable[[LayerData], Tensor] | None = None) -> Metric:
        tree = parse(formula) if isinstance(formula, str) else formula
        return cls(name=name or to_prefix(tree), kind=kind, doc=doc, source=source, needs=needs_of_tree(tree),
                   tree=tree, fn=fn, aliases=aliases)

    @property
    def formula(self) -> str | None:
        return None if self.tree is None else to_prefix(self.tree)

    @property
    def simplified(self) -> Node | None:
        """The tree that scoring evaluates (equal to ``tree`` when there is nothing to simplify)."""
        return None if self.tree is None else simplify(self.tree)

    @property
    def infix(self) -> str | None:
        return None if self.tree is None else to_infix(self.tree)

    @property
    def latex(self) -> str | None:
        return None if self.tree is None else to_latex(self.tree)

    @property
    def label_aware(self) -> bool:
        return self.needs.labels

    def raw_score(self, data: LayerData) -> Tensor:
        """Scores before the non-finite guard (for tests and diagnostics)."""
        if self.fn is not None:
            return self.fn(data)
        assert self.tree is not None
        return evaluate(self.tree, stats=data.stats, features=data.features, labels=data.labels,
                        weight=data.weight, layer=data.name)

    def score(self, data: LayerData) -> Tensor:
        """``[C]`` importance of every output channel of the layer; higher = keep."""
        out = self.raw_score(data)
        if out.ndim != 1:
            raise ValueError(f"metric {self.name!r} returned shape {tuple(out.shape)}, expected [C]")
        return sanitize_scores(out.to(torch.float64))

    def __call__(self, data: LayerData) -> Tensor:
        return self.score(data)
