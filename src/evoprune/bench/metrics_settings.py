"""Settings and presets of the ``metrics`` benchmark: every metric prunes ResNet-20 and VGG to ≈50% of MACs.

Three presets: ``smoke`` (synthetic data, seconds: checks the pipeline), ``reduced`` (the CPU protocol the
transfer table in ``docs/benchmarks.md`` was made with) and ``full`` (the full-size protocol, sized for a GPU).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from evoprune.bench.common import fingerprint
from evoprune.bench.registry import split_list
from evoprune.errors import ConfigError

METRICS = ("random", "WL1", "WL2", "FPGM", "BNScale", "Taylor", "DI", "SymDiv", "AbsSNR", "eq3", "GA_Func1", "EP_Func1")
LABELS = {"WL1": "L1", "WL2": "L2", "BNScale": "BN scale", "eq3": "eq3 (GA_Func2)"}
# table key -> (zoo model, its arguments); VGG's width comes from the settings.
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "resnet20": ("resnet_cifar", {"depth": 20}),
    "vgg16": ("vgg", {"depth": 16}),
}
_BASELINE_KEYS = ("data", "vgg_width", "train_epochs", "train_samples", "eval_samples")
_RUN_KEYS = _BASELINE_KEYS + ("macs_target", "finetune_epochs", "finetune_lr", "scoring_samples")


@dataclass(frozen=True)
class MetricsBenchSettings:
    """The protocol, the same for every metric so that only the channel choice differs.

    ``train_samples`` / ``eval_samples`` keep a seeded random subset of the training split / of the validation
    and test splits (None: all of them).
    """

    name: str = "custom"
    description: str = ""
    data: str = "fashion"
    models: tuple[str, ...] = ("resnet20", "vgg16")
    vgg_width: float = 0.5
    metrics: tuple[str, ...] = METRICS
    seeds: tuple[int, ...] = (0, 1, 2)
    macs_target: float = 0.5
    train_epochs: int = 15
    finetune_epochs: int = 3
    finetune_lr: float = 0.01
    scoring_samples: int = 1000
    train_samples: int | None = None
    eval_samples: int | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODELS]
        if unknown or not self.models:
            raise ConfigError(f"bench metrics models {list(self.models)}: choose one or more of {', '.join(MODELS)}")
        if not self.metrics:
            raise ConfigError("bench metrics needs at least one metric, e.g. --metrics eq3,WL1")
        if not self.seeds:
            raise ConfigError("bench metrics needs at least one seed, e.g. --seeds 0,1,2")
        if not 0.0 < self.macs_target < 1.0:
            raise ConfigError(f"macs_target must be strictly between 0 and 1, got {self.macs_target}")
        for key in ("train_epochs", "finetune_epochs", "scoring_samples"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be ≥ 1, got {getattr(self, key)}")
        for key in ("train_samples", "eval_samples"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"{key} must be ≥ 1 or None (all), got {value}")

    def baseline_hash(self) -> str:
        """Fingerprint of what shaped a baseline: a cached baseline is reused only when it matches."""
        return fingerprint({k: getattr(self, k) for k in _BASELINE_KEYS})

    def run_hash(self) -> str:
        """Fingerprint of what shaped a pruned model: a finished run is skipped on resume only when it matches."""
        return fingerprint({k: getattr(self, k) for k in _RUN_KEYS})

    def summary(self) -> str:
        train = "all" if self.train_samples is None else f"{self.train_samples:,}"
        evals = "all" if self.eval_samples is None else f"{self.eval_samples:,}"
        return (f"{self.data}; {', '.join(self.models)}; {len(self.metrics)} metrics; seeds "
                f"{','.join(map(str, self.seeds))}; baselines: {_n(self.train_epochs, 'epoch')} on {train} training "
                f"images; {evals} val/test images; {_n(self.finetune_epochs, 'fine-tuning epoch')}; "
                f"MACs kept {self.macs_target:.0%}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MetricsBenchSettings:
        """Settings from a results file; lists may be comma strings (files written by the script before this package)."""
        known = {f.name for f in fields(cls)}
        out: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                continue
            if key in ("models", "metrics", "seeds"):
                items = split_list(value) if isinstance(value, str) else tuple(value)
                value = tuple(int(s) for s in items) if key == "seeds" else tuple(items)
            out[key] = value
        return cls(**out)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


PRESETS: dict[str, MetricsBenchSettings] = {
    "smoke": MetricsBenchSettings(
        name="smoke", description="seconds on a CPU: synthetic 12×12 data, VGG at width 0.125, 3 metrics, 2 seeds, "
        "1 training and 1 fine-tuning epoch; checks the pipeline, its figures mean nothing",
        data="synthetic", vgg_width=0.125, metrics=("random", "WL1", "eq3"), seeds=(0, 1), train_epochs=1,
        finetune_epochs=1, scoring_samples=64),
    "reduced": MetricsBenchSettings(
        name="reduced", description="the CPU protocol of the transfer table in docs/benchmarks.md: Fashion-MNIST, "
        "10,000 training images, 6 training epochs, 1 fine-tuning epoch, 5,000 val and test images, 3 seeds "
        "(hours on 2 CPU cores)",
        train_epochs=6, finetune_epochs=1, train_samples=10000, eval_samples=5000),
    "full": MetricsBenchSettings(
        name="full", description="the full-size protocol, sized for a GPU (--device cuda): Fashion-MNIST 48,000 "
        "training / 12,000 val / 10,000 test images, 15 training epochs, 3 fine-tuning epochs, 3 seeds"),
}
