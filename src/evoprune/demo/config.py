"""The demo's sizes: one place that says how long each step runs, so a test can shrink them all."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from evoprune.errors import ConfigError


@dataclass(frozen=True)
class DemoConfig:
    """How much work each step of the demo does. The defaults run the whole demo in about 2 minutes on an idle
    2-core CPU and under 7 on a busy one (README, "What the demo shows", gives the measured run).

    Args:
        train_epochs: epochs of the LeNet-5 (None: the ``lenet5`` training preset's 20).
        finetune_epochs: fine-tuning epochs after every prune step (None: the ``finetune`` preset's 3).
        scoring_samples: class-balanced images the pruning metrics score channels on.
        metrics: pruning metrics compared on the paper's LeNet-5 schedule.
        search: overrides of the ``improved`` mask-search preset (``evoprune.search.preset``): fewer evaluations,
            joint rounds and fine-tuning epochs than the preset's, and no random/magnitude baselines (each is
            fine-tuned, which took longer than the search itself), so each search takes about half a minute.
        evolve_preset: evolution preset run at the end.
        evolve_overrides: dotted-key overrides of that preset (``{"evolution.generations": 2}``).
    """

    train_epochs: int | None = None
    finetune_epochs: int | None = None
    scoring_samples: int = 1000
    metrics: tuple[str, ...] = ("eq3", "WL1", "random")
    search: Mapping[str, Any] = field(default_factory=lambda: {
        "sa": {"iterations": 70, "joint_iterations": 60}, "ga": {"generations": 7, "joint_generations": 4},
        "joint_rounds": 2, "finetune_between": 1, "finetune_epochs": 1, "baselines": False})
    evolve_preset: str = "quick"
    evolve_overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("train_epochs", "finetune_epochs"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"demo {name} must be ≥ 0, got {value}")
        if self.train_epochs == 0:
            raise ConfigError("demo train_epochs must be ≥ 1: the later steps need a trained model")
        if self.scoring_samples < 10:
            raise ConfigError(f"demo scoring_samples must be ≥ 10 (one per class), got {self.scoring_samples}")
        if not self.metrics:
            raise ConfigError("demo metrics is empty; name at least one pruning metric, e.g. eq3")
