"""Settings and presets of the ``metrics`` benchmark: every metric prunes ResNet-20 and VGG to ≈50% of MACs.

Three presets: ``smoke`` (synthetic data, seconds: checks the pipeline), ``reduced`` (the CPU protocol the
transfer table in ``docs/benchmarks.md`` was made with) and ``full`` (the full-size protocol, sized for a GPU).
The settings are a typed config (:mod:`evoprune.config`): ``--set finetune.lr=0.02`` changes one field and is
checked like a preset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evoprune.bench.common import fingerprint
from evoprune.bench.registry import split_list
from evoprune.config import from_data, to_data
from evoprune.errors import ConfigError
from evoprune.train import TrainConfig

METRICS = ("random", "WL1", "WL2", "FPGM", "BNScale", "Taylor", "DI", "SymDiv", "AbsSNR", "eq3", "GA_Func1", "EP_Func1")
LABELS = {"WL1": "L1", "WL2": "L2", "BNScale": "BN scale", "eq3": "eq3 (GA_Func2)"}
# table key -> (zoo model, its arguments); VGG's width comes from the settings.
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "resnet20": ("resnet_cifar", {"depth": 20}),
    "vgg16": ("vgg", {"depth": 16}),
}
# The baselines' recipe: SGD + Nesterov, cosine decay, ±2 px shifts (no flips: Fashion items have a handedness).
TRAIN_RECIPE = TrainConfig(epochs=15, batch_size=128, optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True,
                           weight_decay=5e-4, schedule="cosine", augment="shift")
# Every metric's fine-tuning: the same recipe, shorter and at a fifth of the learning rate.
FINETUNE_RECIPE = TRAIN_RECIPE.with_overrides(epochs=3, lr=0.01)
_BASELINE_KEYS = ("data", "vgg_width", "train_samples", "eval_samples")
_RUN_KEYS = _BASELINE_KEYS + ("macs_target", "scoring_samples")


@dataclass(frozen=True)
class MetricsBenchSettings:
    """The protocol, the same for every metric so that only the channel choice differs.

    ``train`` is the baselines' recipe, ``finetune`` every pruned model's. ``train_samples`` / ``eval_samples``
    keep a seeded random subset of the training split / of the validation and test splits (None: all of them).
    """

    name: str = "custom"
    description: str = ""
    data: str = "fashion"
    models: tuple[str, ...] = ("resnet20", "vgg16")
    vgg_width: float = 0.5
    metrics: tuple[str, ...] = METRICS
    seeds: tuple[int, ...] = (0, 1, 2)
    macs_target: float = 0.5
    train: TrainConfig = TRAIN_RECIPE
    finetune: TrainConfig = FINETUNE_RECIPE
    scoring_samples: int = 1000
    train_samples: int | None = None
    eval_samples: int | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODELS]
        if unknown or not self.models:
            raise ConfigError(f"models {list(self.models)}: choose one or more of {', '.join(MODELS)}")
        if not self.metrics:
            raise ConfigError("metrics is empty; give at least one metric, e.g. --metrics eq3,WL1")
        if not self.seeds:
            raise ConfigError("seeds is empty; give at least one seed, e.g. --seeds 0,1,2")
        if not 0.0 < self.macs_target < 1.0:
            raise ConfigError(f"macs_target must be strictly between 0 and 1, got {self.macs_target}")
        if not self.vgg_width > 0:
            raise ConfigError(f"vgg_width must be > 0, got {self.vgg_width}")
        for key, value in (("train.epochs", self.train.epochs), ("finetune.epochs", self.finetune.epochs),
                           ("scoring_samples", self.scoring_samples)):
            if value < 1:
                raise ConfigError(f"{key} must be ≥ 1, got {value}")
        for key in ("train_samples", "eval_samples"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"{key} must be ≥ 1 or None (all), got {value}")

    def baseline_hash(self) -> str:
        """Fingerprint of what shaped a baseline: a cached baseline is reused only when it matches."""
        return fingerprint({**{k: getattr(self, k) for k in _BASELINE_KEYS}, **_recipe_keys("train", self.train)})

    def run_hash(self) -> str:
        """Fingerprint of what shaped a pruned model: a finished run is skipped on resume only when it matches."""
        return fingerprint({**{k: getattr(self, k) for k in _RUN_KEYS}, **_recipe_keys("train", self.train),
                            **_recipe_keys("finetune", self.finetune)})

    def summary(self) -> str:
        train = "all" if self.train_samples is None else f"{self.train_samples:,}"
        evals = "all" if self.eval_samples is None else f"{self.eval_samples:,}"
        return (f"{self.data}; {', '.join(self.models)}; {len(self.metrics)} metrics; seeds "
                f"{','.join(map(str, self.seeds))}; baselines: {_n(self.train.epochs, 'epoch')} on {train} training "
                f"images; {evals} val/test images; {_n(self.finetune.epochs, 'fine-tuning epoch')}; "
                f"MACs kept {self.macs_target:.0%}")

    def to_dict(self) -> dict[str, Any]:
        return to_data(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MetricsBenchSettings:
        """Settings from a results file, checked like ``--set``.

        Files written before the recipes were settings (by ``benchmarks/bench_transfer.py``) hold comma strings
        for lists, flat ``train_epochs`` / ``finetune_epochs`` / ``finetune_lr`` and the script's own flags.
        """
        data = dict(values)
        for key in ("models", "metrics", "seeds"):
            if isinstance(data.get(key), str):
                items = split_list(data[key])
                data[key] = [int(s) for s in items] if key == "seeds" else list(items)
        recipes = {"train": to_data(TRAIN_RECIPE), "finetune": to_data(FINETUNE_RECIPE)}
        for flat, (recipe, field) in {"train_epochs": ("train", "epochs"), "finetune_epochs": ("finetune", "epochs"),
                                      "finetune_lr": ("finetune", "lr")}.items():
            if flat in data:
                data[recipe] = {**recipes[recipe], **data.get(recipe, {}), field: data.pop(flat)}
        for key in ("threads", "cache", "out", "fresh", "toy"):  # the script's run options, not settings
            data.pop(key, None)
        return from_data(cls, data, "settings")


def _recipe_keys(name: str, recipe: TrainConfig) -> dict[str, Any]:
    """A recipe's part of a fingerprint: the fields fingerprints have always held (``train_epochs``,
    ``finetune_epochs``, ``finetune_lr``) plus every other field that differs from the standard recipe, so a
    changed recipe changes the fingerprint and the presets keep theirs (and match the committed results)."""
    standard = to_data(TRAIN_RECIPE if name == "train" else FINETUNE_RECIPE)
    flat = ("epochs", "lr") if name == "finetune" else ("epochs",)
    keys = {f"{name}_{k}": getattr(recipe, k) for k in flat}
    keys.update({f"{name}.{k}": v for k, v in to_data(recipe).items() if k not in flat and v != standard[k]})
    return keys


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


PRESETS: dict[str, MetricsBenchSettings] = {
    "smoke": MetricsBenchSettings(
        name="smoke", description="seconds on a CPU: synthetic 12×12 data, VGG at width 0.125, 3 metrics, 2 seeds, "
        "1 training and 1 fine-tuning epoch; checks the pipeline, its figures mean nothing",
        data="synthetic", vgg_width=0.125, metrics=("random", "WL1", "eq3"), seeds=(0, 1),
        train=TRAIN_RECIPE.with_overrides(epochs=1), finetune=FINETUNE_RECIPE.with_overrides(epochs=1),
        scoring_samples=64),
    "reduced": MetricsBenchSettings(
        name="reduced", description="the CPU protocol of the transfer table in docs/benchmarks.md: Fashion-MNIST, "
        "10,000 training images, 6 training epochs, 1 fine-tuning epoch, 5,000 val and test images, 3 seeds "
        "(hours on 2 CPU cores)",
        train=TRAIN_RECIPE.with_overrides(epochs=6), finetune=FINETUNE_RECIPE.with_overrides(epochs=1),
        train_samples=10000, eval_samples=5000),
    "full": MetricsBenchSettings(
        name="full", description="the full-size protocol, sized for a GPU (--device cuda): Fashion-MNIST 48,000 "
        "training / 12,000 val / 10,000 test images, 15 training epochs, 3 fine-tuning epochs, 3 seeds"),
}
