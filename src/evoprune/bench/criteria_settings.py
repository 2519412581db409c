"""Settings and presets of the ``criteria`` benchmark: a yardstick that can tell pruning functions apart.

Per (network, seed) a baseline is trained once; then every metric is measured three ways on the same network, so
only the choice of channels differs: its rank correlation with the oracle (each channel's true loss increase when
it alone is removed), an accuracy-vs-MACs curve at uniform per-layer ratios right after pruning and after BatchNorm
recalibration, and the accuracy after a short fine-tune at a few of those ratios. Presets: ``smoke`` (synthetic
data, under a minute, for CI), ``cpu`` (Fashion-MNIST on this project's 2-core CPU; resumable), ``full`` (all of
Fashion-MNIST, longer training and fine-tuning, sized for a GPU). Settings are a typed config
(:mod:`evoprune.config`): ``--set ratios=[0.1,0.3]`` changes one field and is checked like a preset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from evoprune.bench.common import fingerprint
from evoprune.config import from_data, to_data
from evoprune.errors import ConfigError
from evoprune.train import TrainConfig

#: Every library metric family the benchmark compares by default (the oracle and Torch-Pruning's own group
#: importances are added as reference rows, see ``REFERENCES``).
METRICS: tuple[str, ...] = (
    "random", "WL1", "WL2", "FPGM", "BNScale", "Taylor", "DI", "MMD",
    "AbsSNR", "FDR", "SymDiv", "Tstats", "GeoMedian",
    "GA_Func1", "eq3", "GA_Func3", "GA_Func4", "GA_inspired_1", "GA_inspired_2", "EP_Func1", "EP_Func2",
)
#: Reference rows that are not library metrics: the oracle (an upper reference no formula can use at pruning time)
#: and Torch-Pruning's group importances.
REFERENCES: tuple[str, ...] = ("oracle", "tp_l1", "tp_l2", "tp_bn_scale", "tp_taylor")
# table key -> (zoo model, its arguments)
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "resnet20": ("resnet_cifar", {"depth": 20}),
    "vgg16": ("vgg", {"depth": 16, "width": 0.5}),
    "mobilenetv2": ("mobilenetv2", {"width": 0.5}),
}
# Baselines: SGD + Nesterov, cosine decay, ±2 px shifts (no flips: Fashion items have a handedness).
TRAIN_RECIPE = TrainConfig(epochs=15, batch_size=128, optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True,
                           weight_decay=5e-4, schedule="cosine", augment="shift")
FINETUNE_RECIPE = TRAIN_RECIPE.with_overrides(epochs=3, lr=0.01)


@dataclass(frozen=True)
class CriteriaBenchSettings:
    """The protocol, the same for every metric.

    ``seeds`` are the (network, seed) cells of the oracle-correlation and curve columns (forward passes only);
    those of them also in ``finetune_seeds`` get the fine-tuned column (so ``--seeds 0`` narrows both) at ``finetune_ratios``, fine-tuning on
    ``finetune_samples`` training images (a seeded subset; None: all). ``oracle_samples``
    class-balanced validation images define the oracle; curves are measured on the test split (``eval_samples``
    of it), BatchNorm recalibrated on ``recalibration_batches`` training batches.
    """

    name: str = "custom"
    description: str = ""
    data: str = "fashion"
    models: tuple[str, ...] = ("resnet20", "vgg16", "mobilenetv2")
    metrics: tuple[str, ...] = METRICS
    references: tuple[str, ...] = REFERENCES
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    finetune_seeds: tuple[int, ...] = (0, 1, 2)
    ratios: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)
    finetune_ratios: tuple[float, ...] = (0.2, 0.5)
    train: TrainConfig = TRAIN_RECIPE
    finetune: TrainConfig = FINETUNE_RECIPE
    scoring_samples: int = 1000
    oracle_samples: int = 1000
    recalibration_batches: int = 20
    train_samples: int | None = None
    eval_samples: int | None = None
    finetune_samples: int | None = None
    model_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    device: str = "auto"

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODELS]
        if unknown or not self.models:
            raise ConfigError(f"models {list(self.models)}: choose one or more of {', '.join(MODELS)}")
        if not self.metrics and not self.references:
            raise ConfigError("metrics and references are both empty; give at least one metric")
        bad_refs = [r for r in self.references if r not in REFERENCES]
        if bad_refs:
            raise ConfigError(f"references {bad_refs}: choose from {', '.join(REFERENCES)}")
        if not self.seeds:
            raise ConfigError("seeds is empty; give at least one seed, e.g. --seeds 0,1,2")
        if not self.ratios or any(not 0.0 < r < 1.0 for r in self.ratios):
            raise ConfigError(f"ratios must be fractions of channels strictly between 0 and 1, got {list(self.ratios)}")
        missing = [r for r in self.finetune_ratios if r not in self.ratios]
        if missing:
            raise ConfigError(f"finetune_ratios {missing} are not among ratios {list(self.ratios)}")
        if self.train.epochs < 1:
            raise ConfigError(f"train.epochs must be ≥ 1 (the baselines are trained), got {self.train.epochs}")
        for key in ("scoring_samples", "oracle_samples", "recalibration_batches"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be ≥ 1, got {getattr(self, key)}")
        for key in ("train_samples", "eval_samples", "finetune_samples"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"{key} must be ≥ 1 or None (all), got {value}")
        bad_args = [k for k in self.model_args if k not in MODELS]
        if bad_args:
            raise ConfigError(f"model_args names unknown models {bad_args}; choose from {', '.join(MODELS)}")

    @property
    def tuned_seeds(self) -> tuple[int, ...]:
        """The seeds that are run and fine-tuned."""
        return tuple(s for s in self.seeds if s in self.finetune_seeds)

    def model(self, key: str) -> tuple[str, dict[str, Any]]:
        """The zoo model and arguments of a table key (``model_args`` overrides the defaults)."""
        arch, args = MODELS[key]
        return arch, {**args, **self.model_args.get(key, {})}

    def baseline_hash(self, key: str) -> str:
        """Fingerprint of what shaped one network's baselines."""
        return fingerprint({"data": self.data, "model": self.model(key), "train": to_data(self.train),
                            "train_samples": self.train_samples})

    def cell_hash(self, key: str) -> str:
        """Fingerprint of what shaped one (network, seed) cell's measurements: finished cells are skipped on
        resume only when it matches."""
        return fingerprint({"baseline": self.baseline_hash(key), "ratios": self.ratios,
                            "finetune_ratios": self.finetune_ratios, "finetune": to_data(self.finetune),
                            "scoring_samples": self.scoring_samples, "oracle_samples": self.oracle_samples,
                            "recalibration_batches": self.recalibration_batches, "eval_samples": self.eval_samples,
                            "finetune_samples": self.finetune_samples})

    def summary(self) -> str:
        train = "all" if self.train_samples is None else f"{self.train_samples:,}"
        return (f"{self.data}; {', '.join(self.models)}; {len(self.metrics)} metrics + {len(self.references)} "
                f"references; seeds {','.join(map(str, self.seeds))} (fine-tuned: "
                f"{','.join(map(str, self.tuned_seeds)) or 'none'}); ratios {', '.join(f'{r:.0%}' for r in self.ratios)}; "
                f"baselines {self.train.epochs} epochs on {train} training images; fine-tuning "
                f"{self.finetune.epochs} epochs at {', '.join(f'{r:.0%}' for r in self.finetune_ratios)}")

    def to_dict(self) -> dict[str, Any]:
        return to_data(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CriteriaBenchSettings:
        return from_data(cls, values, "settings")


PRESETS: dict[str, CriteriaBenchSettings] = {
    "smoke": CriteriaBenchSettings(
        name="smoke", description="under a minute on a CPU: synthetic 12×12 data, small nets, 3 metrics + the "
        "oracle, 2 seeds; checks the pipeline, its figures mean nothing",
        data="synthetic", models=("resnet20", "vgg16", "mobilenetv2"), metrics=("random", "WL1", "eq3"),
        references=("oracle", "tp_l1"), seeds=(0, 1), finetune_seeds=(0,), ratios=(0.2, 0.5),
        finetune_ratios=(0.5,), train=TRAIN_RECIPE.with_overrides(epochs=1),
        finetune=FINETUNE_RECIPE.with_overrides(epochs=1), scoring_samples=64, oracle_samples=64, finetune_samples=200,
        recalibration_batches=2,
        model_args={"resnet20": {"depth": 8, "width": 0.5}, "vgg16": {"depth": 11, "width": 0.125},
                    "mobilenetv2": {"width": 0.25}}),
    "cpu": CriteriaBenchSettings(
        name="cpu", description="this project's 2-core CPU, resumable (spread it over several runs): Fashion-MNIST, "
        "10,000 training images, 4 training epochs, 2,000 val/test images, 5 seeds for oracle and curves, 3 "
        "fine-tuned (1 epoch on 3,000 training images)",
        train=TRAIN_RECIPE.with_overrides(epochs=4), finetune=FINETUNE_RECIPE.with_overrides(epochs=1),
        train_samples=10000, eval_samples=2000, finetune_samples=3000),
    "full": CriteriaBenchSettings(
        name="full", description="sized for a GPU (--device cuda): all 48,000 Fashion-MNIST training images, 15 "
        "training epochs, 3 fine-tuning epochs, 5 seeds"),
}
