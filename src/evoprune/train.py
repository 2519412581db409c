"""Seeded training, fine-tuning and evaluation loops over in-memory tensors.

Every search in this project runs these loops thousands of times, so they avoid per-step Python overhead: the
data is already a tensor on the device, batches are index slices of one shuffled permutation, augmentation is
vectorised over the batch, and evaluation runs in large batches under ``torch.inference_mode``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from evoprune.config import from_data, to_data
from evoprune.data import DatasetSplits, Split
from evoprune.device import resolve_device
from evoprune.errors import ConfigError, DataError, TrainingError
from evoprune.progress import make_progress

_FLOAT32_MAX = float(torch.finfo(torch.float32).max)
Optimizer = Literal["sgd", "adam", "adamw"]
Schedule = Literal["constant", "cosine", "step"]
Augment = Literal["none", "shift", "crop_flip"]


@dataclass(frozen=True)
class TrainConfig:
    """A training or fine-tuning recipe: optimiser, schedule, batch size, augmentation. The one recipe object
    that training, pruning's fine-tuning, mask search, evolution tasks and benchmarks all take.

    The seed is not part of a recipe: it is an argument of :func:`train`, so one recipe serves every run.
    ``augment="shift"`` translates each image by up to 2 pixels (digits, Fashion); ``"crop_flip"`` is the CIFAR
    recipe (zero-pad 4, random crop, horizontal flip). ``keep_best`` restores the weights of the epoch with the
    best validation accuracy: selection is on validation, never on test. In a TOML file or ``--set``, a recipe
    may start from a preset: ``finetune = {preset = "finetune", epochs = 1}``.
    """

    epochs: int = 10
    batch_size: int = 128
    optimizer: Optimizer = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: Schedule = "constant"
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    augment: Augment = "none"
    label_smoothing: float = 0.0
    eval_batch_size: int = 256
    keep_best: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ConfigError(f"epochs must be ≥ 0, got {self.epochs}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError(f"batch sizes must be ≥ 1, got {self.batch_size} and {self.eval_batch_size}")
        if not 0 < self.lr <= _FLOAT32_MAX:  # also false for NaN; above float32's range the update overflows
            raise ConfigError(f"lr must be a finite number > 0 (at most {_FLOAT32_MAX:.3g}), got {self.lr}")
        for name, ok, allowed in (("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
                                  ("weight_decay", 0 <= self.weight_decay < math.inf, "finite and ≥ 0"),
                                  ("gamma", 0 < self.gamma <= 1, "in (0, 1]"),
                                  ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)")):
            if not ok:  # also false for NaN
                raise ConfigError(f"{name} must be {allowed}, got {getattr(self, name)}")
        for name, allowed in (("optimizer", Optimizer), ("schedule", Schedule), ("augment", Augment)):
            if getattr(self, name) not in allowed.__args__:
                raise ConfigError(f"{name} must be one of {', '.join(allowed.__args__)}, got {getattr(self, name)!r}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise ConfigError("nesterov needs optimizer='sgd' and momentum > 0")

    @classmethod
    def config_preset(cls, name: str) -> TrainConfig:
        """The named recipe a ``{preset = NAME, ...}`` table starts from."""
        return get_train_preset(name)

    def with_overrides(self, **overrides: Any) -> TrainConfig:
        """A copy with the given fields replaced and checked; ``None`` values (options not given) are ignored."""
        return from_data(TrainConfig, {**self.to_dict(), **{k: v for k, v in overrides.items() if v is not None}})

    def to_dict(self) -> dict[str, Any]:
        return to_data(self)


TRAIN_PRESETS: dict[str, TrainConfig] = {
    # The mask-search seed's recipe (Keras SGD defaults, 50 epochs, batch 128, 20% validation split).
    "d2l_seed": TrainConfig(epochs=50, batch_size=128, optimizer="sgd", lr=0.1, keep_best=False),
    # Digits and small-image LeNet-style models: Adam, cosine decay, ±2 px shifts.
    "lenet5": TrainConfig(epochs=20, batch_size=64, optimizer="adam", lr=2e-3, schedule="cosine", augment="shift"),
    # VGG / ResNet on 28×28 or 32×32 images: SGD with Nesterov momentum, weight decay, cosine decay.
    "cifar": TrainConfig(epochs=30, batch_size=128, optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True,
                         weight_decay=5e-4, schedule="cosine", augment="crop_flip"),
    # Short recovery after pruning.
    "finetune": TrainConfig(epochs=3, batch_size=128, optimizer="adam", lr=5e-4, schedule="cosine"),
}


_MODEL_PRESETS = {"lenet5_d2l": "d2l_seed", "vgg": "cifar", "resnet_cifar": "cifar"}


def default_preset_for(model: str) -> str:
    """The training preset a zoo model gets when none is named (``lenet5`` for the small models)."""
    return _MODEL_PRESETS.get(model, "lenet5")


SMALL_IMAGE_SIDE = 16


def fit_augment_to_images(config: TrainConfig, image_size: tuple[int, int]) -> TrainConfig:
    """The default recipe for images smaller than 16 px: no translation (±2 px moves an 8×8 digit by a quarter).

    Measured on digits with an MLP: 72.8% test with ±2-px shifts, 96.1% without.
    """
    if min(image_size) < SMALL_IMAGE_SIDE and config.augment != "none":
        return config.with_overrides(augment="none")
    return config


def get_train_preset(name: str) -> TrainConfig:
    if name not in TRAIN_PRESETS:
        raise ConfigError(f"unknown training preset {name!r}; available: {', '.join(TRAIN_PRESETS)}")
    return TRAIN_PRESETS[name]


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float
    samples: int


@dataclass
class TrainResult:
    """Per-epoch history and the selected (best-validation) epoch."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_accuracy: float = float("nan")
    seconds: float = 0.0
    samples_seen: int = 0

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    weights: Mapping[str, torch.Tensor] | None = None,
) -> Evaluation:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``, in eval mode, restoring the previous mode.

    The one evaluation of the project. ``weights`` replaces named parameters for this evaluation only (through
    ``torch.func.functional_call``; the model is not modified): the mask search scores ``W ⊙ mask`` this way, and
    its fast ``MaskEvaluator`` is tested equal to it. An empty set or non-finite inputs raise DataError rather than
    report a meaningless accuracy.
    """
    if len(y) == 0:
        raise DataError("cannot evaluate on an empty set (0 samples); check the dataset split and --val-fraction")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
        raise DataError(f"{bad} of {len(y)} evaluation samples contain NaN or infinite values; "
                        "fix or reinstall the dataset files")
    device = _model_device(model) if device is None else resolve_device(device)
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(y), batch_size):
        xb = x[start:start + batch_size].to(device, non_blocking=True)
        yb = y[start:start + batch_size].to(device, non_blocking=True)
        logits = model(xb) if weights is None else functional_call(model, dict(weights), (xb,))
        total_loss += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += int((logits.argmax(1) == yb).sum())
    model.train(was_training)
    return Evaluation(loss=total_loss / len(y), accuracy=correct / len(y), samples=len(y))


def evaluate_split(model: nn.Module, split: Split, *, batch_size: int = 256) -> Evaluation:
    return evaluate(model, split.x, split.y, batch_size=batch_size)


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The recipe's optimiser over ``model``'s trainable parameters (shared with the stacked fine-tuning)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                               weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def lr_factor(config: TrainConfig, progress: float) -> float:
    """Learning-rate multiplier at ``progress`` ∈ [0, 1) of the run (updated every step)."""
    if config.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if config.schedule == "step":
        return config.gamma ** sum(progress >= m for m in config.milestones)
    return 1.0


def augment_batch(x: torch.Tensor, kind: Augment, generator: torch.Generator) -> torch.Tensor:
    """Random per-sample translation (and flip for ``crop_flip``), vectorised over the batch."""
    if kind == "none":
        return x
    pad = 2 if kind == "shift" else 4
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (2, b), generator=generator, device="cpu").to(x.device)
    rows = (offsets[0][:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (offsets[1][:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    out = padded[torch.arange(b, device=x.device)[:, None, None, None], torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
    if kind == "crop_flip":
        flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)[:, None, None, None]
        out = torch.where(flip, out.flip(-1), out)
    return out


def train(
    model: nn.Module,
    data: DatasetSplits,
    config: TrainConfig,
    *,
    seed: int = 0,
    device: torch.device | str = "auto",
    progress: bool = True,
    description: str = "train",
) -> TrainResult:
    """Train ``model`` in place on ``data.train``; validate on ``data.val`` after every epoch.

    With ``config.keep_best`` the weights of the best-validation epoch are restored at the end (selection on
    validation). The test split is never touched here. Deterministic for ``seed`` on the CPU.
    """
    dev = resolve_device(device)
    model.to(dev)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x_train, y_train = data.train.x.to(dev), data.train.y.to(dev)
    n = len(y_train)
    steps_per_epoch = max(1, math.ceil(n / config.batch_size))
    total_steps = steps_per_epoch * config.epochs
    optimizer = make_optimizer(model, config)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    result = TrainResult()
    best_state: dict[str, torch.Tensor] | None = None
    start = time.perf_counter()
    step = 0
    with make_progress(progress) as bar:
        task = bar.add_task(description, total=total_steps, status="")
        for epoch in range(1, config.epochs + 1):
            model.train()
            order = torch.randperm(n, generator=generator).to(dev)
            loss_sum = torch.zeros((), device=dev)
            correct = torch.zeros((), device=dev, dtype=torch.long)
            for s in range(steps_per_epoch):
                factor = lr_factor(config, step / max(total_steps, 1))
                for group, base in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = base * factor
                idx = order[s * config.batch_size:(s + 1) * config.batch_size]
                xb = augment_batch(x_train[idx], config.augment, generator)
                yb = y_train[idx]
                logits = model(xb)
                loss = F.cross_entropy(logits, yb, label_smoothing=config.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach() * len(yb)
                correct += (logits.detach().argmax(1) == yb).sum()
                step += 1
                if s % 20 == 19 or s == steps_per_epoch - 1:
                    bar.update(task, completed=step)
            if not math.isfinite(float(loss_sum)):
                raise TrainingError(f"{description}: the training loss became non-finite in epoch {epoch} "
                                    f"(optimizer {config.optimizer}, lr {config.lr:g}); lower the learning rate")
            val = evaluate(model, data.val.x, data.val.y, batch_size=config.eval_batch_size, device=dev)
            record = {
                "epoch": epoch,
                "train_loss": float(loss_sum) / n,
                "train_accuracy": int(correct) / n,
                "val_loss": val.loss,
                "val_accuracy": val.accuracy,
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - start,
            }
            result.history.append(record)
            result.samples_seen += n
            if not val.accuracy <= result.best_val_accuracy:  # also true while best is NaN
                result.best_val_accuracy, result.best_epoch = val.accuracy, epoch
                if config.keep_best:
                    best_state = copy.deepcopy(model.state_dict())
            bar.update(task, status=f"epoch {epoch}/{config.epochs} val acc {val.accuracy:.4f} (best {result.best_val_accuracy:.4f})")
    if config.keep_best and best_state is not None:
        model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - start
    return result
