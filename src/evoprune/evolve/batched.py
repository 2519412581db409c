"""Population-batched fine-tuning: K candidates of one architecture trained together as one stacked model.

When several candidates prune a task to the same architecture (the paper's LeNet schedule fixes every layer's
channel count; uniform ratios do too), fine-tuning them one by one pays the per-step cost of a small network K
times. Here their parameters are stacked (``torch.func.stack_module_state``) and one ``vmap`` of
``functional_call`` runs all K forward and backward passes per step (PyTorch's model-ensembling recipe; a
convolution under ``vmap`` becomes one grouped convolution, a linear layer one batched matmul).

Each member reproduces ``train.train(model, data, recipe, seed=seed)`` to float tolerance (tested):

- **Batches.** Every member draws its own permutation and augmentation from its own ``torch.Generator(seed)``, in
  the order ``train.train`` draws them, so members with different seeds see different batches.
- **Gradients and optimiser.** The step minimises the *sum* of the members' mean losses, so each member's gradient
  is exactly its own (a mean would scale it by 1/K). One optimiser owns the stacked tensors; SGD (momentum,
  Nesterov, weight decay), Adam and AdamW keep element-wise state, so each member's slice follows exactly the
  update its own optimiser would make. The learning-rate schedule is the recipe's, shared by all members.
- **BatchNorm.** The running statistics are stacked buffers too. Under ``vmap`` PyTorch's batch-norm rule folds
  the member dimension into the channels, so each member normalises by its own batch statistics and updates its
  own slice of the running mean, variance and batch count in place: exactly the statistics ``train.train``
  leaves (no ``replace_all_batch_norm_modules_``, no recalibration).
- **Selection.** Validation after every epoch on all members at once (equal to ``train.evaluate``, tested); with
  ``keep_best`` each member's best-validation epoch is restored at the end.
- **Divergence.** A member whose training loss becomes non-finite gets the ``TrainingError`` ``train.train`` would
  have raised, as its result instead of an exception, so it costs none of the others anything (the members'
  gradients and optimiser states never mix).

Not reproducible this way, and refused: dropout in training mode (``train.train`` draws its masks from the global
RNG seeded per run; stacked members cannot share one global RNG stream). The global RNG is not touched here.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from evoprune.data import DatasetSplits
from evoprune.device import resolve_device
from evoprune.errors import ConfigError, DataError, TrainingError
from evoprune.progress import make_progress
from evoprune.train import Evaluation, TrainConfig, TrainResult, _lr_factor, _make_optimizer, augment_batch

Stacked = dict[str, torch.Tensor]


def check_stackable(models: Sequence[nn.Module]) -> None:
    """Raise ConfigError unless the models share one architecture (same modules, names, shapes) and use no dropout.

    Fitness calls this to decide whether a group of pruned candidates can be fine-tuned together.
    """
    if not models:
        raise ConfigError("train_stacked needs at least one model")
    first, shapes = repr(models[0]), _shapes(models[0])
    for i, model in enumerate(models[1:], start=1):
        if repr(model) != first or _shapes(model) != shapes:
            raise ConfigError(f"model {i} differs from model 0 in its layers or tensor shapes; only candidates "
                              "pruned to the same architecture can be fine-tuned together")
    dropout = [name for name, m in models[0].named_modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]
    if dropout:
        raise ConfigError(f"batched fine-tuning cannot reproduce per-seed dropout masks (layers {', '.join(dropout)}); "
                          "fine-tune these models one by one with train.train")


def _shapes(model: nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype, bool]]:
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return [(name, tuple(t.shape), t.dtype, t.requires_grad) for name, t in tensors]


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
    time. The models must pass :func:`check_stackable`.
    """
    if len(seeds) != len(models):
        raise ConfigError(f"train_stacked needs one seed per model, got {len(seeds)} seeds for {len(models)} models")
    check_stackable(models)
    if len(data.val.y) == 0:
        raise DataError("cannot evaluate on an empty set (0 samples); check the dataset split and --val-fraction")
    if data.val.x.is_floating_point() and not bool(torch.isfinite(data.val.x).all()):
        raise DataError("validation samples contain NaN or infinite values; fix or reinstall the dataset files")
    dev = resolve_device(device)
    for model in models:
        model.to(dev)
    k_models = len(models)
    params, buffers = stack_module_state(list(models))
    holder = nn.ParameterList(params.values())  # Parameters sharing the stacked storage: what the optimiser owns
    params = dict(zip(params, holder))
    base = copy.deepcopy(models[0]).to("meta")  # the code of the forward pass; its tensors come from the stack

    def forward(p: Stacked, b: Stacked, x: torch.Tensor) -> torch.Tensor:
        return functional_call(base, (p, b), (x,))

    batched_forward = vmap(forward)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    x_train, y_train = data.train.x.to(dev), data.train.y.to(dev)
    n = len(y_train)
    steps_per_epoch = max(1, math.ceil(n / recipe.batch_size))
    total_steps = steps_per_epoch * recipe.epochs
    optimizer = _make_optimizer(holder, recipe)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    results: list[TrainResult | TrainingError] = [TrainResult() for _ in models]
    best: list[Stacked | None] = [None] * k_models
    start = time.perf_counter()
    step = 0
    with make_progress(progress) as bar:
        task = bar.add_task(description, total=total_steps, status="")
        for epoch in range(1, recipe.epochs + 1):
            base.train()
            orders = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(dev)
            loss_sum = torch.zeros(k_models, device=dev)
            correct = torch.zeros(k_models, device=dev, dtype=torch.long)
            for s in range(steps_per_epoch):
                factor = _lr_factor(recipe, step / max(total_steps, 1))
                for group, lr in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = lr * factor
                idx = orders[:, s * recipe.batch_size:(s + 1) * recipe.batch_size]
                if recipe.augment == "none":
                    xb = x_train[idx]
                else:  # each member's augmentation draws from its own generator, as train.train's does
                    xb = torch.stack([augment_batch(x_train[i], recipe.augment, g) for i, g in zip(idx, generators)])
                yb = y_train[idx]
                logits = batched_forward(params, buffers, xb)
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
            _diverged(results, loss_sum, models, params, buffers, epoch, recipe, description)
            val = evaluate_stacked(base, params, buffers, data.val.x, data.val.y, batch_size=recipe.eval_batch_size)
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
                        best[k] = _member(params, buffers, k, clone=True)
            if all(isinstance(r, TrainingError) for r in results):
                break
            accuracies = [r.history[-1]["val_accuracy"] for r in results if isinstance(r, TrainResult)]
            bar.update(task, status=f"epoch {epoch}/{recipe.epochs} best val acc {max(accuracies):.4f}")
    seconds = (time.perf_counter() - start) / k_models
    for k, (model, result) in enumerate(zip(models, results)):
        if isinstance(result, TrainResult):
            _load(model, best[k] if best[k] is not None else _member(params, buffers, k))
            result.seconds = seconds
    return results


def _diverged(results: list[TrainResult | TrainingError], loss_sum: torch.Tensor, models: Sequence[nn.Module],
              params: Stacked, buffers: Stacked, epoch: int, recipe: TrainConfig, description: str) -> None:
    """Turn each member whose epoch loss is not finite into train.train's TrainingError, its weights as they are."""
    for k in torch.nonzero(~torch.isfinite(loss_sum)).flatten().tolist():
        if isinstance(results[k], TrainingError):
            continue
        _load(models[k], _member(params, buffers, k))
        results[k] = TrainingError(f"{description}: the training loss became non-finite in epoch {epoch} "
                                   f"(optimizer {recipe.optimizer}, lr {recipe.lr:g}); lower the learning rate")


def _member(params: Stacked, buffers: Stacked, k: int, *, clone: bool = False) -> Stacked:
    """Member ``k``'s parameters and buffers (views into the stack unless ``clone``)."""
    return {name: t[k].detach().clone() if clone else t[k].detach() for name, t in {**params, **buffers}.items()}


def _load(model: nn.Module, state: Stacked) -> None:
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            tensor.copy_(state[name])


@torch.inference_mode()
def evaluate_stacked(base: nn.Module, params: Stacked, buffers: Stacked, x: torch.Tensor, y: torch.Tensor, *,
                     batch_size: int = 256) -> list[Evaluation]:
    """``train.evaluate`` of every stacked member on ``(x, y)`` in one pass per batch (tested equal to it).

    ``base`` is the members' shared module (any device, e.g. ``meta``); it runs in eval mode, restored after.
    """
    was_training = base.training
    base.eval()
    dev = next(iter(params.values())).device
    k_models = next(iter(params.values())).shape[0]
    total_loss = torch.zeros(k_models, dtype=torch.float64, device=dev)
    correct = torch.zeros(k_models, dtype=torch.long, device=dev)
    batched_forward = vmap(lambda p, b, xb: functional_call(base, (p, b), (xb,)), in_dims=(0, 0, None))
    for start in range(0, len(y), batch_size):
        xb, yb = x[start:start + batch_size].to(dev), y[start:start + batch_size].to(dev)
        logits = batched_forward(params, buffers, xb)
        losses = F.cross_entropy(logits.flatten(0, 1), yb.repeat(k_models), reduction="none")
        total_loss += losses.view(k_models, -1).sum(1).double()
        correct += (logits.argmax(2) == yb).sum(1)
    base.train(was_training)
    return [Evaluation(loss=float(total_loss[k]) / len(y), accuracy=int(correct[k]) / len(y), samples=len(y))
            for k in range(k_models)]
