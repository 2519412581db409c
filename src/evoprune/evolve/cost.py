"""A static cost model of a tree on a real layer, so that GP never breeds a function that cannot be afforded.

Typed trees cannot mis-shape, but they can still be expensive: ``sub(W, WI)`` pairs every channel's filter with the
whole kernel, a ``[C, F, K]`` tensor (1.6 GB in float64 for LeNet-5's fc1), and ``geo_median`` of such a value
costs ``C·F²·K`` operations. The interpreter keeps every intermediate value alive, so a tree's memory is about the
sum of its nodes' sizes. :func:`estimate_cost` computes that sum (elements) and a rough operation count from the
symbolic shapes and the layer's sizes, mirroring how :mod:`evoprune.expr.interpreter` batches values (channels,
and classes in the moment strategy); no tensor is allocated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from evoprune.expr import Call, Node, Var, analyse, infer_all, walk
from evoprune.expr.operands import CLASS_OPERANDS, SAMPLE_MATRICES

_PER_CHANNEL = frozenset({"P", "Q", "X", "mX", "mP", "mQ", "WI"})
_MOMENT_REDUCERS = frozenset({"g_mean", "sum", "var", "std", "num", "mean"})


@dataclass(frozen=True)
class LayerDims:
    """Sizes of one prunable layer as the interpreter sees it."""

    name: str
    channels: int  # C = F, output channels
    fan_in: int  # K
    positions: int  # D
    samples: int  # n, the scoring set
    classes: int  # L

    def size(self, symbol: str) -> int:
        return {"n_P": self.samples, "n_Q": self.samples, "n": self.samples, "D": self.positions,
                "K": self.fan_in, "F": self.channels}[symbol]


def estimate_cost(tree: Node, layer: LayerDims) -> tuple[int, int]:
    """``(elements, operations)``: elements held by all intermediate values, and a rough operation count."""
    shapes = infer_all(tree)
    materialised = analyse(tree).needs_features
    elements = operations = 0
    seen: set[Node] = set()
    for node in walk(tree):
        if node in seen:
            continue
        seen.add(node)
        if isinstance(node, Var) and node.name in SAMPLE_MATRICES and not materialised:
            continue  # a moment view, not a tensor
        if (not materialised and isinstance(node, Call) and node.op in _MOMENT_REDUCERS
                and isinstance(node.args[0], Var) and node.args[0].name in SAMPLE_MATRICES):
            per_value = math.prod(layer.size(d) for d in shapes[node].dims)
            elements += layer.channels * layer.classes * per_value
            operations += layer.channels * layer.classes * per_value
            continue
        names = {n.name for n in walk(node) if isinstance(n, Var)}
        batch = layer.channels if names & _PER_CHANNEL else 1
        class_dependent = bool(names & CLASS_OPERANDS)
        if class_dependent and not materialised:
            batch *= layer.classes
        size = batch * math.prod(layer.size(d) for d in shapes[node].dims)
        elements += size
        work = size
        if isinstance(node, Call):
            args = [shapes[a] for a in node.args]
            if node.op == "geo_median":
                work += size * layer.channels * layer.channels  # cdist between the F filters of each value
            elif node.op == "mmul" and all(s.rank >= 1 for s in args):
                inner = layer.size(args[0].dims[-1])
                work = size * inner
            elif node.op == "m_inv" and args[0].rank == 2:
                work = size * layer.size(args[0].dims[0])
        if materialised and class_dependent:
            work *= layer.classes  # the materialised strategy loops over classes
        operations += work
    return elements, operations


def layer_dims(model: nn.Module, x, y, samples: int) -> list[LayerDims]:
    """The sizes of every prunable layer of ``model`` (one forward pass on two examples)."""
    from evoprune.metrics import Needs, iter_layer_data, prunable_layers

    layers = prunable_layers(model)
    classes = int(y.max()) + 1 if len(y) else 1
    out = []
    was_training = model.training
    for data in iter_layer_data(model, layers, x[:2], y[:2], needs=Needs(stats=True, labels=True)):
        weight = data.weight
        out.append(LayerDims(data.name, int(weight.shape[0]), int(weight[0].numel()),
                             int(data.stats.positions) if data.stats is not None else 1,
                             min(samples, len(y)), classes))
    model.train(was_training)
    return out


def affordable(tree: Node, layers: list[LayerDims], max_elements: float, max_operations: float) -> str | None:
    """None if ``tree`` fits the limits on every layer, else why not."""
    for layer in layers:
        elements, operations = estimate_cost(tree, layer)
        if elements > max_elements:
            return (f"needs about {elements:.3g} values in memory on layer {layer.name!r} "
                    f"(limit operators.max_elements = {max_elements:.3g})")
        if operations > max_operations:
            return (f"needs about {operations:.3g} operations on layer {layer.name!r} "
                    f"(limit operators.max_operations = {max_operations:.3g})")
    return None
