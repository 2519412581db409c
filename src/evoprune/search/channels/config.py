"""Typed settings of a channel (layer-budget) search; every field reachable by ``--set KEY=VALUE``.

Defaults are sized for one search of about 500 allocations of a ResNet-20 on a 2-core CPU in under ten minutes:
1,000 validation images per evaluation, BatchNorm recalibrated on 16 batches of 64 training images (EagleEye's
adaptive BN: enough to rank allocations, far cheaper than fine-tuning each).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from evoprune.config import to_data
from evoprune.errors import ConfigError
from evoprune.prune.importance import COUPLINGS, Coupling
from evoprune.train import TRAIN_PRESETS, TrainConfig

ALGORITHMS: tuple[str, ...] = ("sa", "ga", "nsga2")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class ChannelSAConfig:
    """Simulated annealing: temperature ``t0`` in objective units (0.005 = half an accuracy point), cooled
    geometrically to ``t0 · final_temperature_ratio`` over the run."""

    t0: float = 0.005
    final_temperature_ratio: float = 0.05

    def __post_init__(self) -> None:
        _check(self.t0 > 0, f"sa.t0 must be > 0, got {self.t0}")
        _check(0 < self.final_temperature_ratio <= 1,
               f"sa.final_temperature_ratio must be in (0, 1], got {self.final_temperature_ratio}")


@dataclass(frozen=True)
class ChannelGAConfig:
    """Genetic algorithm: population, elites kept, tournament size, share of children made by crossover."""

    population: int = 16
    elite: int = 2
    tournament: int = 3
    crossover_rate: float = 0.9

    def __post_init__(self) -> None:
        _check(self.population >= 2, f"ga.population must be ≥ 2, got {self.population}")
        _check(0 <= self.elite < self.population, f"ga.elite must be in [0, population), got {self.elite}")
        _check(self.tournament >= 1, f"ga.tournament must be ≥ 1, got {self.tournament}")
        _check(0 <= self.crossover_rate <= 1, f"ga.crossover_rate must be in [0, 1], got {self.crossover_rate}")


@dataclass(frozen=True)
class NSGA2Config:
    """NSGA-II: population size and share of children made by crossover."""

    population: int = 24
    crossover_rate: float = 0.9

    def __post_init__(self) -> None:
        _check(self.population >= 4, f"nsga2.population must be ≥ 4, got {self.population}")
        _check(0 <= self.crossover_rate <= 1, f"nsga2.crossover_rate must be in [0, 1], got {self.crossover_rate}")


@dataclass(frozen=True)
class ChannelSearchConfig:
    """A layer-budget search: which algorithm, what it optimises, under which budget, at what cost.

    ``sa`` and ``ga`` need exactly one of ``macs_target`` (default 0.5) / ``params_target`` (the fraction of the unpruned
    network's MACs or parameters to keep at most); ``nsga2`` searches the whole objective-vs-cost front (cost:
    MACs, or parameters when ``params_target`` is given) and, when a target is given, fine-tunes the front's best
    point under it. ``metric`` (a library name or formula) chooses the channels inside each group, scored once on
    ``scoring_samples`` class-balanced training images. ``min_keep`` is the smallest share of a group kept.
    ``finetune`` is the one recipe (:class:`~evoprune.train.TrainConfig`) for the chosen allocation (epochs 0: none),
    on ``finetune_samples`` training images (a seeded subset; None: all); ``finetune_references`` fine-tunes the
    references (uniform, global, any given) the same way, for a comparison after equal fine-tuning.
    """

    algorithm: Literal["sa", "ga", "nsga2"] = "sa"
    metric: str = "eq3"
    objective: Literal["accuracy", "loss"] = "accuracy"
    macs_target: float | None = 0.5
    params_target: float | None = None
    evaluations: int = 500
    min_keep: float = 0.1
    move_groups: int = 2
    move_size: float = 0.125
    val_samples: int | None = 1000
    recalibration_batches: int = 16
    recalibration_batch_size: int = 64
    scoring_samples: int = 1000
    coupling: Coupling = "mean"
    finetune: TrainConfig = field(default_factory=lambda: TRAIN_PRESETS["finetune"])
    finetune_samples: int | None = None
    finetune_references: bool = False
    sa: ChannelSAConfig = field(default_factory=ChannelSAConfig)
    ga: ChannelGAConfig = field(default_factory=ChannelGAConfig)
    nsga2: NSGA2Config = field(default_factory=NSGA2Config)

    def __post_init__(self) -> None:
        _check(self.algorithm in ALGORITHMS, f"algorithm must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}")
        _check(self.objective in ("accuracy", "loss"), f"objective must be accuracy or loss, got {self.objective!r}")
        _check(self.coupling in COUPLINGS, f"coupling must be one of {', '.join(COUPLINGS)}, got {self.coupling!r}")
        for name in ("macs_target", "params_target"):
            value = getattr(self, name)
            _check(value is None or 0 < value < 1,
                   f"{name} is the fraction of the unpruned network's cost to keep, in (0, 1); got {value!r}")
        _check(self.macs_target is None or self.params_target is None,
               "give one of macs_target and params_target, not both")
        _check(self.algorithm == "nsga2" or self.target is not None,
               f"{self.algorithm} searches under a budget: give --macs-target F or --params-target F (e.g. 0.5), "
               "or --pareto for the NSGA-II front")
        _check(self.evaluations >= 1, f"evaluations must be ≥ 1, got {self.evaluations}")
        _check(0 < self.min_keep <= 1, f"min_keep must be in (0, 1], got {self.min_keep}")
        _check(self.move_groups >= 1, f"move_groups must be ≥ 1, got {self.move_groups}")
        _check(0 < self.move_size <= 1, f"move_size must be in (0, 1], got {self.move_size}")
        for name in ("val_samples", "finetune_samples"):
            value = getattr(self, name)
            _check(value is None or value >= 1, f"{name} must be ≥ 1 or None (all), got {value}")
        for name in ("recalibration_batches", "recalibration_batch_size", "scoring_samples"):
            _check(getattr(self, name) >= 1, f"{name} must be ≥ 1, got {getattr(self, name)}")

    @property
    def target(self) -> tuple[str, float] | None:
        """``("macs" | "params", fraction)``, or None (NSGA-II's whole front)."""
        if self.macs_target is not None:
            return "macs", self.macs_target
        if self.params_target is not None:
            return "params", self.params_target
        return None

    def to_dict(self) -> dict[str, Any]:
        return to_data(self)
