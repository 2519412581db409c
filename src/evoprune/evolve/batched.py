"""Population-batched fine-tuning: K candidates of one architecture trained together as one stacked model.

When several candidates prune a task to the same architecture (the paper's LeNet schedule fixes every layer's
channel count; uniform ratios do too), fine-tuning them one by one pays every step's fixed costs K times. Here the
K members become one network of grouped layers: activations keep the members side by side in the channels
(``[B, K·C, H, W]``, channels-last) and, after a flatten, as ``[K, B, F]``; a convolution becomes one grouped
convolution (K× its groups), a linear layer one batched matmul, BatchNorm one BatchNorm over K·C channels; ReLU,
pooling and residual additions work channel by channel and need no change.

Why grouped layers and not ``vmap(functional_call)`` over ``stack_module_state`` (PyTorch's model-ensembling
recipe): on this project's CPU its batching rules move the member dimension between batch and channels with a copy
at every layer and run contiguous grouped convolutions, 1.5–2× *slower* per member than one by one
(``benchmarks/bench_batched_finetune.py``), while channels-last grouped layers are the fastest form measured.

Each member reproduces ``train.train(model, data, recipe, seed=seed)`` to float tolerance (tested):

- **Batches.** Every member draws its own permutation and augmentation from its own ``torch.Generator(seed)``, in
  the order ``train.train`` draws them, so members with different seeds see different batches. Members with one
  seed (evolution's case) draw the same batches, so each batch is drawn and passed once: the first convolution
  reads it as one dense convolution with K·C' outputs (channels-last from there on), when the check below passes.
- **Gradients and optimiser.** The step minimises the *sum* of the members' mean losses, so each member's gradient
  is exactly its own (a mean would scale it by 1/K). One optimiser owns the stacked tensors; SGD (momentum,
  Nesterov, weight decay), Adam and AdamW keep element-wise state, so each member's slice follows exactly the
  update its own optimiser would make. The learning-rate schedule is the recipe's, shared by all members.
- **BatchNorm.** Channels are normalised independently, so one BatchNorm over the K·C stacked channels normalises
  each member by its own batch statistics and updates its own slice of the running mean and variance: exactly the
  statistics ``train.train`` leaves (no ``replace_all_batch_norm_modules_``, no recalibration).
- **Selection.** Validation after every epoch on all members at once (equal to ``train.evaluate``, tested); with
  ``keep_best`` each member's best-validation epoch is restored at the end.
- **Divergence.** A member whose training loss becomes non-finite gets the ``TrainingError`` ``train.train`` would
  have raised, as its result instead of an exception, so it costs the others nothing (the members' gradients and
  optimiser states never mix).

What stacks (else ConfigError before any training, and the caller fine-tunes one by one): models of one architecture built from Conv2d (zero padding), Linear,
BatchNorm2d, Flatten and parameter-free channel-wise modules (activations, pooling), combined by any forward code
that treats channels independently. A forward that mixes channels by position (``torch.cat`` of feature maps,
``x.view(len(x), -1)``, ``x.mean((2, 3))`` before a Linear) is caught: the stacked network is checked against each
member's own output once, before training. Dropout in training mode is refused (``train.train`` draws its masks
from the global RNG seeded per run; stacked members cannot share one stream). The global RNG is not touched here.
"""

from __future__ import annotations

import copy
import ctypes
import functools
import math
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from evoprune.data import DatasetSplits
from evoprune.device import resolve_device
from evoprune.errors import ConfigError, DataError, TrainingError
from evoprune.progress import make_progress
from evoprune.train import Evaluation, TrainConfig, TrainResult, augment_batch, lr_factor, make_optimizer

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (glibc malloc.h)

_CHANNELWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
                nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Identity, nn.Dropout)


class StackedConv2d(nn.Module):
    """K convolutions as one grouped convolution over ``[B, K·C, H, W]``; tensors stacked along dim 0.

    Given a *shared* input ``[B, C, H, W]`` (every member sees the same images: the first layer when all members
    train on the same batches) an ungrouped convolution is one dense convolution with K·C' outputs, which is
    cheaper than K groups over K copies of the input; a grouped one gets the copies.
    """

    def __init__(self, convs: Sequence[nn.Conv2d]) -> None:
        super().__init__()
        c = convs[0]
        self.members, self.in_channels, self.member_groups = len(convs), c.in_channels, c.groups
        self.options = dict(stride=c.stride, padding=c.padding, dilation=c.dilation)
        self.weight = nn.Parameter(torch.cat([m.weight.detach() for m in convs]))
        self.bias = None if c.bias is None else nn.Parameter(torch.cat([m.bias.detach() for m in convs]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.members > 1 and x.shape[1] == self.in_channels:  # shared input
            if self.member_groups == 1:
                out = F.conv2d(x, self.weight, self.bias, groups=1, **self.options)
                return out.contiguous(memory_format=torch.channels_last)  # a no-op for a channels-last input
            x = x.repeat(1, self.members, 1, 1)
        return F.conv2d(x, self.weight, self.bias, groups=self.member_groups * self.members, **self.options)


class StackedLinear(nn.Module):
    """K linear layers as one batched matmul over ``[K, B, F]``."""

    def __init__(self, linears: Sequence[nn.Linear]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in linears]))
        self.bias = None if linears[0].bias is None else nn.Parameter(torch.stack([m.bias.detach() for m in linears]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.transpose(1, 2)
        if x.dim() == 2:  # shared input [B, F]
            x = x.unsqueeze(0).expand(len(self.weight), *x.shape)
        return torch.bmm(x, weight) if self.bias is None else torch.baddbmm(self.bias.unsqueeze(1), x, weight)


class StackedBatchNorm2d(nn.Module):
    """K BatchNorm2d layers as one over K·C channels (channels are normalised independently: exact)."""

    def __init__(self, norms: Sequence[nn.BatchNorm2d]) -> None:
        super().__init__()
        n = norms[0]
        self.members, self.channels = len(norms), n.num_features
        self.eps, self.momentum, self.track = n.eps, n.momentum, n.track_running_stats
        self.weight = self.bias = None
        if n.affine:
            self.weight = nn.Parameter(torch.cat([m.weight.detach() for m in norms]))
            self.bias = nn.Parameter(torch.cat([m.bias.detach() for m in norms]))
        if self.track:
            self.register_buffer("running_mean", torch.cat([m.running_mean for m in norms]))
            self.register_buffer("running_var", torch.cat([m.running_var for m in norms]))
            self.register_buffer("num_batches_tracked", torch.stack([m.num_batches_tracked for m in norms]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``nn.BatchNorm2d.forward`` with every member's batch count advanced together."""
        batch_stats = self.training or not self.track
        stats = (self.running_mean, self.running_var) if self.track else (None, None)
        if self.training and self.track:
            self.num_batches_tracked.add_(1)
        if self.members > 1 and x.shape[1] == self.channels:  # shared input: each member normalises its own copy
            x = x.repeat(1, self.members, 1, 1)
        return F.batch_norm(x, *stats, self.weight, self.bias, batch_stats, self.momentum, self.eps)


class StackedFlatten(nn.Module):
    """``nn.Flatten()`` per member: ``[B, K·C, H, W]`` → ``[K, B, C·H·W]`` (channel-major, as one member's)."""

    def __init__(self, members: int) -> None:
        super().__init__()
        self.members = members

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(len(x), self.members, -1).transpose(0, 1)


def _stacked_module(modules: Sequence[nn.Module]) -> nn.Module | None:
    """The grouped replacement of one leaf module of every member; None if it stays as it is."""
    m = modules[0]
    if isinstance(m, nn.Conv2d) and m.padding_mode == "zeros":
        return StackedConv2d(modules)
    if isinstance(m, nn.Linear):
        return StackedLinear(modules)
    if isinstance(m, nn.BatchNorm2d) and (m.momentum is not None or not m.track_running_stats):
        return StackedBatchNorm2d(modules)
    if isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1:
        return StackedFlatten(len(modules))
    if isinstance(m, nn.Dropout) and m.p > 0:
        raise ConfigError(f"batched fine-tuning cannot reproduce per-seed dropout masks ({m}); "
                          "fine-tune these models one by one with train.train")
    if isinstance(m, _CHANNELWISE):
        return None
    raise ConfigError(f"batched fine-tuning has no grouped form of {type(m).__name__}; fine-tune one by one")


def architecture(model: nn.Module) -> tuple[str, tuple[tuple[str, tuple[int, ...], torch.dtype, bool], ...]]:
    """What must be equal for models to stack: their layers and every tensor's name, shape, dtype and grad flag."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return repr(model), tuple((name, tuple(t.shape), t.dtype, t.requires_grad) for name, t in tensors)


def stack_models(models: Sequence[nn.Module]) -> nn.Module:
    """One network of grouped layers computing every member: input ``[B, K·C, H, W]``, output ``[K, B, classes]``.

    Member ``k``'s tensor ``name`` is ``net.get_parameter(name).view(K, *shape)[k]`` (or ``get_buffer``).
    """
    if not models:
        raise ConfigError("batched fine-tuning needs at least one model")
    first = architecture(models[0])
    for i, model in enumerate(models[1:], start=1):
        if architecture(model) != first:
            raise ConfigError(f"model {i} differs from model 0 in its layers or tensor shapes; only candidates "
                              "pruned to the same architecture can be fine-tuned together")
    net = copy.deepcopy(models[0])
    replaced: dict[str, nn.Module | None] = {}
    for name, module in models[0].named_modules(remove_duplicate=False):
        if next(module.children(), None) is not None or name in replaced:
            continue
        replaced[name] = _stacked_module([m.get_submodule(name) for m in models])
        if replaced[name] is not None:
            parent, _, attr = name.rpartition(".")
            setattr(net.get_submodule(parent), attr, replaced[name])
    own = [(n, m) for n, m in net.named_modules() if next(m.children(), None) is None
           and not isinstance(m, (StackedConv2d, StackedLinear, StackedBatchNorm2d))
           and any(True for _ in [*m.parameters(recurse=False), *m.buffers(recurse=False)])]
    if own:
        raise ConfigError(f"batched fine-tuning cannot stack the tensors of layer {own[0][0]!r}; fine-tune one by one")
    return net


def _check_outputs(net: nn.Module, models: Sequence[nn.Module], x: torch.Tensor, *, shared: bool) -> None:
    """The stacked network must give each member's own output (eval mode): catches channel-mixing forwards."""
    with torch.inference_mode():
        was = [m.training for m in models]
        for m in [net, *models]:
            m.eval()
        try:
            got = net(_stacked_input(x, len(models), shared))
        except RuntimeError as exc:  # e.g. a spatial mean or view feeding a stacked Linear the wrong shape
            raise ConfigError(f"the models' forward does not run on stacked members ({exc}); fine-tune one by one") from exc
        for k, (model, mode) in enumerate(zip(models, was)):
            want = model(x)
            model.train(mode)
            if got.shape[1:] != want.shape or not torch.allclose(got[k], want, rtol=1e-4, atol=1e-5, equal_nan=True):
                raise ConfigError("the stacked network does not reproduce the models' outputs: their forward mixes "
                                  "channels by position (torch.cat, view, mean over space before a Linear); "
                                  "fine-tune one by one")


def _member_channels(x: torch.Tensor) -> torch.Tensor:
    """``[K, B, C, H, W]`` → ``[B, K·C, H, W]`` in channels-last memory (the fastest grouped layout on the CPU)."""
    k, b, c, h, w = x.shape
    return x.permute(1, 0, 2, 3, 4).reshape(b, k * c, h, w).contiguous(memory_format=torch.channels_last)


def _stacked_input(x: torch.Tensor, members: int, shared: bool) -> torch.Tensor:
    """One batch ``[B, C, H, W]`` seen by every member: as it is (``shared``) or as K copies side by side."""
    if shared:
        x = x.contiguous(memory_format=torch.channels_last)
        if x.shape[1] == 1:  # one channel: say channels-last in the strides, so the convolution's output is too
            x = x.as_strided(x.shape, (x.shape[2] * x.shape[3], 1, x.shape[3], 1))
        return x
    return _member_channels(x.unsqueeze(0).expand(members, *x.shape))


def _shared_input(net: nn.Module, models: Sequence[nn.Module], seeds: Sequence[int], x: torch.Tensor) -> bool:
    """Whether the members can take one shared batch: they draw the same batches (one seed) and the network's first
    layers accept it (checked); otherwise each member gets its own copy (also checked, raising if that fails)."""
    if len(models) > 1 and len(set(seeds)) == 1:
        try:
            _check_outputs(net, models, x, shared=True)
            return True
        except ConfigError:  # e.g. a Flatten reads the input first: it cannot tell one input from K
            pass
    _check_outputs(net, models, x, shared=False)
    return False


@functools.cache
def _keep_large_blocks_in_the_heap() -> None:
    """Fix glibc's mmap and trim thresholds at 1 GiB in this process (once; a no-op without glibc).

    Why: stacked activations are blocks of megabytes. glibc serves blocks above its *dynamic* mmap threshold with
    fresh mappings and unmaps them on free, so every step page-faults its activations in again; whether the
    threshold has grown past them depends on what the process freed before, so the same run took 0.10 or 0.19 s
    per candidate at K = 8 (``benchmarks/bench_batched_finetune.py``). Fixed thresholds keep them in the heap
    (and the heap's top is not handed back after each step).
    It changes no number, only where freed memory waits.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)
        libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    except (OSError, AttributeError):
        pass


def train_stacked(
    models: Sequence[nn.Module],
    data: DatasetSplits,
    recipe: TrainConfig,
    *,
    seeds: Sequence[int],
    device: torch.device | str = "auto",
    progress: bool = False,
    description: str = "train",
) -> list[TrainResult | TrainingError]:
    """Train every ``models[k]`` in place as ``train.train(models[k], data, recipe, seed=seeds[k])`` would, all at once.

    Returns one entry per member: its :class:`TrainResult` (per-epoch history, best epoch), or the TrainingError
    ``train.train`` would have raised for it (its model then holds the weights it diverged with, as there). A
    member's ``seconds`` is its share (1/K) of the batch's wall time; history ``seconds`` are the batch's elapsed
    time. Raises ConfigError before any training if the models do not stack (see :func:`stack_models`; the check
    of the stacked outputs also decides whether the members can share one input).
    """
    if len(seeds) != len(models):
        raise ConfigError(f"train_stacked needs one seed per model, got {len(seeds)} seeds for {len(models)} models")
    if len(data.val.y) == 0:
        raise DataError("cannot evaluate on an empty set (0 samples); check the dataset split and --val-fraction")
    if data.val.x.is_floating_point() and not bool(torch.isfinite(data.val.x).all()):
        raise DataError("validation samples contain NaN or infinite values; fix or reinstall the dataset files")
    dev = resolve_device(device)
    if dev.type == "cpu":
        _keep_large_blocks_in_the_heap()
    for model in models:
        model.to(dev)
    net = stack_models(models).to(dev)
    x_train, y_train = data.train.x.to(dev), data.train.y.to(dev)
    shared = _shared_input(net, models, seeds, x_train[:4])
    k_models, n = len(models), len(y_train)
    generators = [torch.Generator().manual_seed(s) for s in (seeds[:1] if shared else seeds)]
    steps_per_epoch = max(1, math.ceil(n / recipe.batch_size))
    total_steps = steps_per_epoch * recipe.epochs
    optimizer = make_optimizer(net, recipe)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    results: list[TrainResult | TrainingError] = [TrainResult() for _ in models]
    best: list[dict[str, torch.Tensor] | None] = [None] * k_models
    start = time.perf_counter()
    step = 0
    with make_progress(progress) as bar:
        task = bar.add_task(description, total=total_steps, status="")
        for epoch in range(1, recipe.epochs + 1):
            net.train()
            orders = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(dev)
            loss_sum = torch.zeros(k_models, device=dev)
            correct = torch.zeros(k_models, device=dev, dtype=torch.long)
            for s in range(steps_per_epoch):
                factor = lr_factor(recipe, step / max(total_steps, 1))
                for group, lr in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = lr * factor
                idx = orders[:, s * recipe.batch_size:(s + 1) * recipe.batch_size]
                if recipe.augment == "none":
                    xb = x_train[idx]
                else:  # each member's augmentation draws from its own generator, as train.train's does
                    xb = torch.stack([augment_batch(x_train[i], recipe.augment, g) for i, g in zip(idx, generators)])
                if shared:  # one seed: every member draws the same batch, so it is drawn and passed once
                    xb, yb = _stacked_input(xb[0], k_models, True), y_train[idx].expand(k_models, -1)
                else:
                    xb, yb = _member_channels(xb), y_train[idx]
                logits = net(xb)
                losses = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none",
                                         label_smoothing=recipe.label_smoothing).view_as(yb).mean(1)
                optimizer.zero_grad(set_to_none=True)
                losses.sum().backward()  # the sum: each member's gradient is its own mean loss's
                optimizer.step()
                loss_sum += losses.detach() * yb.shape[1]
                correct += (logits.detach().argmax(2) == yb).sum(1)
                step += 1
                if s % 20 == 19 or s == steps_per_epoch - 1:
                    bar.update(task, completed=step)
            _diverged(results, loss_sum, models, net, epoch, recipe, description)
            val = evaluate_stacked(net, k_models, data.val.x, data.val.y, batch_size=recipe.eval_batch_size,
                                   shared=shared)
            elapsed = time.perf_counter() - start
            for k, result in enumerate(results):
                if isinstance(result, TrainingError):
                    continue
                result.history.append({
                    "epoch": epoch, "train_loss": float(loss_sum[k]) / n, "train_accuracy": int(correct[k]) / n,
                    "val_loss": val[k].loss, "val_accuracy": val[k].accuracy, "lr": optimizer.param_groups[0]["lr"],
                    "seconds": elapsed,
                })
                result.samples_seen += n
                if not val[k].accuracy <= result.best_val_accuracy:  # also true while best is NaN
                    result.best_val_accuracy, result.best_epoch = val[k].accuracy, epoch
                    if recipe.keep_best:
                        best[k] = {name: t.clone() for name, t in _member(net, models[k], k, k_models).items()}
            if all(isinstance(r, TrainingError) for r in results):
                break
            accuracies = [r.history[-1]["val_accuracy"] for r in results if isinstance(r, TrainResult)]
            bar.update(task, status=f"epoch {epoch}/{recipe.epochs} best val acc {max(accuracies):.4f}")
    seconds = (time.perf_counter() - start) / k_models
    for k, (model, result) in enumerate(zip(models, results)):
        if isinstance(result, TrainResult):
            _load(model, best[k] if best[k] is not None else _member(net, model, k, k_models))
            result.seconds = seconds
    return results


def _diverged(results: list[TrainResult | TrainingError], loss_sum: torch.Tensor, models: Sequence[nn.Module],
              net: nn.Module, epoch: int, recipe: TrainConfig, description: str) -> None:
    """Turn each member whose epoch loss is not finite into train.train's TrainingError, its weights as they are."""
    for k in torch.nonzero(~torch.isfinite(loss_sum)).flatten().tolist():
        if isinstance(results[k], TrainingError):
            continue
        _load(models[k], _member(net, models[k], k, len(models)))
        results[k] = TrainingError(f"{description}: the training loss became non-finite in epoch {epoch} "
                                   f"(optimizer {recipe.optimizer}, lr {recipe.lr:g}); lower the learning rate")


def _member(net: nn.Module, model: nn.Module, k: int, members: int) -> dict[str, torch.Tensor]:
    """Member ``k``'s parameters and buffers, by ``model``'s names, as views into the stacked network."""
    out = {}
    for name, t in model.named_parameters():
        out[name] = net.get_parameter(name).detach().view(members, *t.shape)[k]
    for name, t in model.named_buffers():
        out[name] = net.get_buffer(name).view(members, *t.shape)[k]
    return out


def _load(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            tensor.copy_(state[name])


@torch.inference_mode()
def evaluate_stacked(net: nn.Module, members: int, x: torch.Tensor, y: torch.Tensor, *,
                     batch_size: int = 256, shared: bool = False) -> list[Evaluation]:
    """``train.evaluate`` of every member of a :func:`stack_models` network on ``(x, y)`` (tested equal to it).

    ``shared``: pass each batch once rather than K copies (the network must accept it, see :func:`_shared_input`).
    Runs in eval mode and restores the previous mode.
    """
    was_training = net.training
    net.eval()
    dev = next(net.parameters()).device
    total_loss = torch.zeros(members, dtype=torch.float64, device=dev)
    correct = torch.zeros(members, dtype=torch.long, device=dev)
    for start in range(0, len(y), batch_size):
        xb, yb = x[start:start + batch_size].to(dev), y[start:start + batch_size].to(dev)
        logits = net(_stacked_input(xb, members, shared))
        losses = F.cross_entropy(logits.flatten(0, 1), yb.repeat(members), reduction="none")
        total_loss += losses.view(members, -1).sum(1).double()
        correct += (logits.argmax(2) == yb).sum(1)
    net.train(was_training)
    return [Evaluation(loss=float(total_loss[k]) / len(y), accuracy=int(correct[k]) / len(y), samples=len(y))
            for k in range(members)]
