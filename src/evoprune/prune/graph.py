"""A model traced by Torch-Pruning's dependency graph, with its prunable channel groups named.

Torch-Pruning couples every layer whose channels must shrink together (a conv and its BatchNorm, the convs that
write into one residual sum, the consumers of a concatenation) into a *group*. Here each group gets a stable
name, the first of its conv/linear members in forward order, so ratio tables, reports and checkpoints can refer to
it with a plain string. Tracing problems that Torch-Pruning would let through silently (layers cut off from the
autograd graph) are turned into one clear error.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.pruner import function as tp_function

from evoprune.prune.errors import PruningError

# Layers whose output channels root a pruning group (and whose outputs a metric scores).
ROOT_TYPES: tuple[type[nn.Module], ...] = (nn.modules.conv._ConvNd, nn.Linear)

# Torch-Pruning handlers that remove a conv/linear layer's *output* channels.
OUT_CHANNEL_FNS = (
    tp_function.prune_conv_out_channels,
    tp_function.prune_linear_out_channels,
    tp_function.prune_depthwise_conv_out_channels,
)


@dataclass(frozen=True)
class ChannelGroup:
    """Conv/linear layers whose output channels are pruned together.

    ``name`` is the first member in forward order; ``members`` are all coupled conv/linear layers in forward
    order (one for a plain conv, several for the convs feeding one residual sum); ``root`` is the module
    Torch-Pruning prunes through (its pruning history records this name); ``width`` is the current channel count.
    """

    name: str
    members: tuple[str, ...]
    root: str
    width: int

    @property
    def label(self) -> str:
        extra = len(self.members) - 1
        return self.name if not extra else f"{self.name} (+{extra} coupled)"


def matches(pattern: str, name: str) -> bool:
    """Exact name or shell-style glob (``layer*.conv1``); ``*`` also matches dots."""
    return pattern == name or fnmatch.fnmatchcase(name, pattern)


def _called_layers(model: nn.Module, example_inputs: torch.Tensor) -> list[nn.Module]:
    """Conv/linear modules in the order the forward pass first calls them (checks the input fits the model)."""
    order: list[nn.Module] = []
    seen: set[int] = set()

    def record(module: nn.Module, _inputs: object) -> None:
        if id(module) not in seen:
            seen.add(id(module))
            order.append(module)

    handles = [m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, ROOT_TYPES)]
    try:
        with torch.no_grad():
            model(example_inputs)
    except Exception as exc:
        raise PruningError(
            f"the model does not run on an example input of shape {tuple(example_inputs.shape)} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); pass inputs shaped like the data it was built for"
        ) from exc
    finally:
        for h in handles:
            h.remove()
    return order


class ModelGraph:
    """Torch-Pruning's ``DependencyGraph`` of ``model`` plus names, forward order and the output layer.

    The model is traced in eval mode (so BatchNorm statistics are not touched) and its train/eval mode restored.
    Raises :class:`PruningError` when the model cannot be traced, or when some of its conv/linear layers run in
    the forward pass but are invisible to the graph (``torch.no_grad``, ``.detach()``, ``.numpy()`` inside
    ``forward``), because pruning such a model would silently break it.
    """

    def __init__(self, model: nn.Module, example_inputs: torch.Tensor) -> None:
        self.model = model
        self.example_inputs = example_inputs
        self.names: dict[nn.Module, str] = {m: n for n, m in model.named_modules()}
        was_training = model.training
        model.eval()
        try:
            called = _called_layers(model, example_inputs)
            try:
                with torch.enable_grad():
                    self.DG = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs, verbose=False)
            except Exception as exc:
                raise PruningError(
                    f"Torch-Pruning cannot trace {type(model).__name__} ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:200] if str(exc) else 'no message'}). Its forward must be a plain "
                    "autograd computation on tensors; see Torch-Pruning's docs on customized pruners for exotic layers"
                ) from exc
        finally:
            model.train(was_training)
        hidden = [self.names[m] for m in called if m not in self.DG.module2node]
        if hidden:
            raise PruningError(
                f"Torch-Pruning cannot trace layer(s) {', '.join(hidden)} of {type(model).__name__}: they run in "
                "forward() but their outputs do not reach the model's output through autograd (torch.no_grad, "
                ".detach(), .numpy() or .data inside forward). Remove that from forward() to prune this model"
            )
        self.call_order: dict[str, int] = {self.names[m]: i for i, m in enumerate(called)}
        if not called:
            raise PruningError(f"{type(model).__name__} has no conv or linear layer to prune")
        # The last conv/linear layer the forward pass calls produces the logits: its outputs are the classes.
        self.output_layer: str = self.names[called[-1]]

    def module(self, name: str) -> nn.Module:
        return self.model.get_submodule(name)

    def all_groups(self) -> list[ChannelGroup]:
        """Every group rooted at a conv/linear layer, ordered by the forward position of its first member."""
        groups: list[ChannelGroup] = []
        for group in self.DG.get_all_groups(root_module_types=ROOT_TYPES):
            root = group[0].dep.target.module
            members: list[str] = []
            for dep, _ in group:
                target = dep.target.module
                if dep.handler in OUT_CHANNEL_FNS and isinstance(target, ROOT_TYPES) and target in self.names:
                    name = self.names[target]
                    if name not in members and name in self.call_order:
                        members.append(name)
            if not members:
                continue
            members.sort(key=self.call_order.__getitem__)
            groups.append(ChannelGroup(members[0], tuple(members), self.names[root], int(self.DG.get_out_channels(root))))
        groups.sort(key=lambda g: self.call_order[g.name])
        return groups

    def prunable_groups(self, ignore: Iterable[str] = ()) -> list[ChannelGroup]:
        """Groups none of whose members is ignored; the output layer is always ignored (its channels are classes)."""
        patterns = [self.output_layer, *ignore]
        return [g for g in self.all_groups() if not any(matches(p, m) for p in patterns for m in g.members)]

    def layer_names(self) -> list[str]:
        """Conv/linear layers that own output channels, in forward order (valid names for tables and ``ignore``)."""
        return [m for g in self.all_groups() for m in g.members]

    def tp_group(self, group: ChannelGroup, idxs: Sequence[int] | None = None) -> tp.dependency.Group:
        """Torch-Pruning's group for ``group``'s output channels ``idxs`` (all channels when None)."""
        module = self.module(group.root)
        fn = self.DG.get_pruner_of_module(module).prune_out_channels
        channels = list(range(self.DG.get_out_channels(module))) if idxs is None else [int(i) for i in idxs]
        return self.DG.get_pruning_group(module, fn, channels)

    def prune(self, group: ChannelGroup, idxs: Sequence[int]) -> None:
        """Remove output channels ``idxs`` of ``group`` and every coupled layer; refuses to empty a layer."""
        if not idxs:
            return
        tp_group = self.tp_group(group, idxs)
        if not self.DG.check_pruning_group(tp_group):
            raise PruningError(
                f"removing {len(idxs)} channel(s) of {group.label} would leave a coupled layer with no channel; "
                "lower its ratio or raise the minimum width"
            )
        tp_group.prune()

    def pruning_history(self) -> list[list[object]]:
        """Torch-Pruning's record of every removal so far: ``[root name, is_output_channels, [indices]]``."""
        return [[str(n), bool(out), [int(i) for i in idxs]] for n, out, idxs in self.DG.pruning_history()]

    def check_runs(self) -> None:
        """Run the pruned model once; a failure means the graph missed a coupling (e.g. a hard-coded reshape)."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                self.model(self.example_inputs)
        except Exception as exc:
            raise PruningError(
                f"the pruned {type(self.model).__name__} no longer runs ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200]}). Torch-Pruning's dependency graph missed a coupling in forward(), "
                "typically a reshape/view with hard-coded channel counts; compute such sizes from the tensor, or "
                "ignore the layers feeding it"
            ) from exc
        finally:
            self.model.train(was_training)
