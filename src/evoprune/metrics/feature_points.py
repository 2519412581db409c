"""Where a layer's feature maps are read, and how they are captured during a forward pass.

**Rule.** A prunable layer's *feature point* is the output of the longest chain of channel-wise operations
that directly follows it, found by tracing the model with ``torch.fx``: starting from the layer's output we
move to its only user while that user is a BatchNorm, an elementwise activation (ReLU, sigmoid, tanh,
GELU, …), a pooling layer or a dropout, and the current value has no other user. This is the tensor a
channel mask would act on (spec §2.1): for LeNet-5 the post-ReLU, post-pool maps of conv1/conv2 and the
post-ReLU fc1 units (spec §4.1); for VGG the post-BN/ReLU maps, post-pool where a pool follows. The first
BatchNorm on the chain is the layer's BN (for BN-scale). A chain stops at anything that mixes channels or
has several users (a residual add, a concat, a flatten, the next conv).

If the model cannot be traced, or with ``point="output"``, the feature point is the layer's own output
(captured with a forward hook), and no BN is associated.

Capture: the traced graph gets an identity *tap* module after each feature node; taps hand the tensor to
a sink function during the forward pass. The traced module shares parameters and buffers with the model.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.fx import GraphModule, Node, symbolic_trace

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

_CHANNELWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.PReLU,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity,
)
_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CHANNELWISE_FUNCTIONS: set = {
    torch.relu, torch.sigmoid, torch.tanh, F.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.gelu, F.silu,
    F.mish, F.sigmoid, F.tanh, F.hardswish, F.hardsigmoid, F.hardtanh, F.softplus,
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.batch_norm,
}
for _n in ("max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "adaptive_avg_pool1d", "adaptive_max_pool1d",
           "relu_", "sigmoid_", "tanh_", "dropout", "feature_dropout", "alpha_dropout", "batch_norm", "hardtanh",
           "selu", "celu", "prelu", "rrelu"):
    if hasattr(torch, _n):
        _CHANNELWISE_FUNCTIONS.add(getattr(torch, _n))
for _n in ("relu_", "elu_", "leaky_relu_", "hardtanh_", "_max_pool1d", "_max_pool2d", "_max_pool3d", "_adaptive_max_pool1d", "_adaptive_max_pool2d",
           "_adaptive_max_pool3d"):
    if hasattr(F, _n):
        _CHANNELWISE_FUNCTIONS.add(getattr(F, _n))
_CHANNELWISE_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "contiguous"}


@dataclass(frozen=True)
class FeaturePoint:
    """Where layer ``layer``'s feature maps are read.

    ``node``: the fx node whose output is read (None when hooking the layer output); ``chain``: the
    channel-wise operations applied after the layer, in order; ``bn``: module name of the following
    BatchNorm or None; ``method``: "fx" or "output".
    """

    layer: str
    node: str | None
    chain: tuple[str, ...] = field(default=())
    bn: str | None = None
    method: str = "fx"


def is_prunable(module: nn.Module) -> bool:
    return isinstance(module, PRUNABLE_TYPES)


def _trace(model: nn.Module) -> GraphModule | None:
    was_training = model.training
    model.eval()  # functional dropout(training=self.training) is baked in at trace time
    try:
        return symbolic_trace(model)
    except Exception as err:
        warnings.warn(f"torch.fx could not trace {type(model).__name__} ({type(err).__name__}: {err}); "
                      "feature maps are read at the raw layer outputs", stacklevel=3)
        return None
    finally:
        model.train(was_training)


def _is_channelwise(node: Node, modules: dict[str, nn.Module], prev: Node) -> bool:
    if not node.args or node.args[0] is not prev:
        return False
    if node.op == "call_module":
        return isinstance(modules.get(node.target), _CHANNELWISE_MODULES)
    if node.op == "call_function":
        return node.target in _CHANNELWISE_FUNCTIONS
    if node.op == "call_method":
        return node.target in _CHANNELWISE_METHODS
    return False


def _describe(node: Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"{node.target} ({type(modules[node.target]).__name__})"
    return getattr(node.target, "__name__", str(node.target))


def _layer_nodes(gm: GraphModule) -> dict[str, Node]:
    modules = dict(gm.named_modules())
    out: dict[str, Node] = {}
    seen: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and is_prunable(modules[node.target]):
            seen[node.target] = seen.get(node.target, 0) + 1
            out[node.target] = node
    shared = [k for k, v in seen.items() if v > 1]
    for k in shared:  # a layer called twice has no single feature map
        del out[k]
    return out


def _chain(gm: GraphModule, start: Node) -> tuple[Node, list[Node]]:
    modules = dict(gm.named_modules())
    cur, chain = start, []
    while len(cur.users) == 1:
        nxt = next(iter(cur.users))
        if not _is_channelwise(nxt, modules, cur):
            break
        chain.append(nxt)
        cur = nxt
    return cur, chain


def _fallback_prunable(model: nn.Module) -> list[str]:
    names = [n for n, m in model.named_modules() if is_prunable(m)]
    return names[:-1]


def prunable_layers(model: nn.Module) -> list[str]:
    """Conv/Linear layers whose output channels can be scored: all except output layers.

    An output layer is one whose value reaches the model output without passing through another
    Conv/Linear layer (the classifier). Without ``torch.fx`` the last Conv/Linear module is dropped.
    """
    gm = _trace(model)
    if gm is None:
        return _fallback_prunable(model)
    modules = dict(gm.named_modules())
    layers = _layer_nodes(gm)

    def reaches_output(node: Node) -> bool:
        stack, seen = list(node.users), set()
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            if n.op == "output":
                return True
            if n.op == "call_module" and is_prunable(modules[n.target]):
                continue
            stack.extend(n.users)
        return False

    return [name for name, node in layers.items() if not reaches_output(node)]


def feature_points(model: nn.Module, layers: Sequence[str], *, point: str = "auto") -> dict[str, FeaturePoint]:
    """The feature point of each layer (see the module docstring); ``point`` is "auto" or "output"."""
    if point not in ("auto", "output"):
        raise ValueError(f"point must be 'auto' or 'output', got {point!r}")
    named = dict(model.named_modules())
    for name in layers:
        if name not in named:
            raise KeyError(f"no module named {name!r} in {type(model).__name__}")
        if not is_prunable(named[name]):
            raise TypeError(f"{name!r} is a {type(named[name]).__name__}, not a Conv1d/2d/3d or Linear layer")
    gm = _trace(model) if point == "auto" else None
    if gm is None:
        return {n: FeaturePoint(n, None, method="output") for n in layers}
    modules = dict(gm.named_modules())
    nodes = _layer_nodes(gm)
    out = {}
    for name in layers:
        if name not in nodes:
            warnings.warn(f"layer {name!r} is called more than once or not at all in the traced graph; "
                          "reading its raw output", stacklevel=2)
            out[name] = FeaturePoint(name, None, method="output")
            continue
        end, chain = _chain(gm, nodes[name])
        channels = _out_channels(named[name])
        bn = next((n.target for n in chain if n.op == "call_module" and isinstance(modules[n.target], _BN_TYPES)
                   and modules[n.target].num_features == channels), None)
        out[name] = FeaturePoint(name, end.name, tuple(_describe(n, modules) for n in chain), bn, "fx")
    return out


def _out_channels(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


class _Tap(nn.Module):
    """Identity that hands its input to the capture's sink."""

    def __init__(self, key: str, capture: Capture) -> None:
        super().__init__()
        self.key = key
        self._capture = [capture]  # a list, so the capture is not registered as a submodule

    def forward(self, x: Tensor) -> Tensor:
        return self._capture[0].emit(self.key, x)


class StopForward(Exception):
    """Raised by a sink to end a forward pass early (all wanted feature maps are captured)."""


class Capture:
    """Runs the model and calls ``sink(layer, tensor)`` at each layer's feature point.

    ``clone_outputs``: downstream ops get a copy, so an in-place op after the feature point cannot change
    the captured tensor (needed when gradients w.r.t. it are taken).
    """

    def __init__(self, model: nn.Module, points: dict[str, FeaturePoint]) -> None:
        self.model = model
        self.points = points
        self.sink: Callable[[str, Tensor], None] | None = None
        self.clone_outputs = False
        self._hooks: list = []
        fx_points = {k: p for k, p in points.items() if p.method == "fx"}
        self.graph_module: GraphModule | None = None
        if fx_points:
            gm = _trace(model)
            if gm is None:
                raise RuntimeError("model could not be traced although feature points came from torch.fx")
            by_name = {n.name: n for n in gm.graph.nodes}
            for i, (layer, p) in enumerate(fx_points.items()):
                target = by_name[p.node]
                tap_name = f"_evoprune_tap_{i}"
                gm.add_submodule(tap_name, _Tap(layer, self))
                with gm.graph.inserting_after(target):
                    tap = gm.graph.call_module(tap_name, (target,))
                target.replace_all_uses_with(tap, delete_user_cb=lambda user, t=tap: user is not t)
            gm.recompile()
            self.graph_module = gm
        modules = dict(model.named_modules())
        for layer, p in points.items():
            if p.method == "output":
                self._hooks.append(modules[layer].register_forward_hook(
                    lambda _mod, _inp, out, key=layer: self.emit(key, out)))

    def emit(self, key: str, x: Tensor) -> Tensor:
        if self.sink is not None:
            self.sink(key, x)
        return x.clone() if self.clone_outputs else x

    def run(self, x: Tensor) -> Tensor | None:
        """Forward pass; returns the model output, or None if a sink stopped it early."""
        try:
            return (self.graph_module or self.model)(x)
        except StopForward:
            return None

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def bn_modules(model: nn.Module, points: Iterable[FeaturePoint]) -> dict[str, nn.Module | None]:
    named = dict(model.named_modules())
    return {p.layer: (named[p.bn] if p.bn else None) for p in points}
