"""Settings and presets of the ``budget`` benchmark: does a searched per-layer allocation beat uniform ratios?

Per (network, seed) a baseline is trained once (the criteria benchmark's recipe and data, so ``--cache
runs/criteria-baselines`` reuses its checkpoints); per metric and MACs target, four allocations of that network
are fine-tuned with one recipe and tested once: the layer-budget search's choice, uniform ratios at the budget,
the metric's global ranking at the budget, and the present ``evoprune prune --macs-target`` schedule (a solved
uniform ratio, which lands closest to the target and may pass it). Presets: ``smoke`` (synthetic data, seconds,
for CI) and ``cpu`` (Fashion-MNIST on this project's 2-core CPU; hours, resumable).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from evoprune.bench.common import fingerprint
from evoprune.bench.criteria_settings import FINETUNE_RECIPE, MODELS, TRAIN_RECIPE
from evoprune.bench.criteria_settings import PRESETS as CRITERIA_PRESETS
from evoprune.config import to_data
from evoprune.errors import ConfigError
from evoprune.train import TrainConfig

#: The rows of the table, in order.
ROWS: tuple[str, ...] = ("searched", "uniform", "global", "macs_schedule")


@dataclass(frozen=True)
class BudgetBenchSettings:
    """The protocol. ``algorithm``/``evaluations``/``val_samples``/``recalibration_batches`` shape the search
    (validation subset, BN recalibration per allocation); ``finetune`` on ``finetune_samples`` training images is
    the one recipe every row gets; ``train``/``train_samples``/``eval_samples`` shape the baselines."""

    name: str = "custom"
    description: str = ""
    data: str = "fashion"
    models: tuple[str, ...] = ("resnet20", "vgg16", "mobilenetv2")
    metrics: tuple[str, ...] = ("eq3", "l1")
    targets: tuple[float, ...] = (0.5, 0.3)
    seeds: tuple[int, ...] = (0, 1, 2)
    algorithm: str = "sa"
    evaluations: int = 500
    val_samples: int = 1000
    recalibration_batches: int = 16
    scoring_samples: int = 1000
    train: TrainConfig = TRAIN_RECIPE
    finetune: TrainConfig = FINETUNE_RECIPE
    train_samples: int | None = None
    eval_samples: int | None = None
    finetune_samples: int | None = None
    model_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    device: str = "cpu"

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODELS]
        if unknown or not self.models:
            raise ConfigError(f"models {list(self.models)}: choose one or more of {', '.join(MODELS)}")
        if not self.metrics:
            raise ConfigError("metrics is empty; give at least one metric, e.g. --metrics eq3,l1")
        if not self.targets or any(not 0.0 < t < 1.0 for t in self.targets):
            raise ConfigError(f"targets are fractions of MACs to keep, strictly between 0 and 1; got {list(self.targets)}")
        if not self.seeds:
            raise ConfigError("seeds is empty; give at least one seed, e.g. --seeds 0,1,2")
        if self.algorithm not in ("sa", "ga"):
            raise ConfigError(f"algorithm must be sa or ga (a search under a budget), got {self.algorithm!r}")
        for key in ("evaluations", "val_samples", "recalibration_batches", "scoring_samples"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be ≥ 1, got {getattr(self, key)}")
        bad_args = [k for k in self.model_args if k not in MODELS]
        if bad_args:
            raise ConfigError(f"model_args names unknown models {bad_args}; choose from {', '.join(MODELS)}")

    def model(self, key: str) -> tuple[str, dict[str, Any]]:
        """The zoo model and arguments of a table key (``model_args`` overrides the defaults)."""
        arch, args = MODELS[key]
        return arch, {**args, **self.model_args.get(key, {})}

    def cell_hash(self, key: str) -> str:
        """Fingerprint of what shaped one (network, seed, metric, target) record: reused on resume only if equal."""
        return fingerprint({"data": self.data, "model": self.model(key), "train": to_data(self.train),
                            "train_samples": self.train_samples, "eval_samples": self.eval_samples,
                            "algorithm": self.algorithm, "evaluations": self.evaluations,
                            "val_samples": self.val_samples, "recalibration_batches": self.recalibration_batches,
                            "scoring_samples": self.scoring_samples, "finetune": to_data(self.finetune),
                            "finetune_samples": self.finetune_samples})

    def summary(self) -> str:
        return (f"{self.data}; {', '.join(self.models)}; metrics {', '.join(self.metrics)}; MACs targets "
                f"{', '.join(f'{t:.0%}' for t in self.targets)}; seeds {','.join(map(str, self.seeds))}; "
                f"{self.algorithm.upper()} over {self.evaluations} allocations; fine-tuning {self.finetune.epochs} "
                f"epoch(s) on {'all' if self.finetune_samples is None else f'{self.finetune_samples:,}'} images")


PRESETS: dict[str, BudgetBenchSettings] = {
    "smoke": BudgetBenchSettings(
        name="smoke", description="seconds on a CPU: synthetic 12×12 data, small nets, one metric and target, "
        "a handful of allocations; checks the pipeline, its figures mean nothing",
        data="synthetic", models=("resnet20", "mobilenetv2"), metrics=("l1",), targets=(0.5,), seeds=(0,),
        evaluations=4, val_samples=48, recalibration_batches=2, scoring_samples=64,
        train=TRAIN_RECIPE.with_overrides(epochs=1), finetune=FINETUNE_RECIPE.with_overrides(epochs=1),
        finetune_samples=200,
        model_args=CRITERIA_PRESETS["smoke"].model_args),
    "cpu": BudgetBenchSettings(
        name="cpu", description="this project's 2-core CPU, resumable (hours: spread it over several runs): the "
        "criteria cpu preset's baselines (Fashion-MNIST, 10,000 training images, 4 epochs, 2,000 val/test images), "
        "SA over 500 allocations, fine-tuning 1 epoch on 3,000 training images",
        train=TRAIN_RECIPE.with_overrides(epochs=4), finetune=FINETUNE_RECIPE.with_overrides(epochs=1),
        train_samples=10000, eval_samples=2000, finetune_samples=3000),
}
