"""Typed settings of a mask search and the two presets: ``seed`` (the reference's behaviour) and ``improved``.

``seed`` follows spec §9.1: test-split evaluation, mean-of-layer sparsity, absolute loss caps (index + 1) / 8,
r = 0.15·(1 − t/T), SA with T0 = 1 and log cooling and prune-only moves, GA 12/2/5/0.9/20 with single-point
crossover and resampling mutation. Deviations from the reference code (each one a bug fix, spec §5.7 and §4.2):
children are always evaluated as ``W0 ⊙ mask``; each layer ends at its best state, which the next layer builds on
(the reference continued from the last accepted state but returned the last best snapshot; the two coincide in
the published run); GA elites are always kept (the reference's regenerate-without-elites branch cannot trigger
once one valid chromosome exists); an SA candidate that violates the cap is never accepted, even from a violating
state.

``improved`` (spec §8, §9.2): selection on the validation split (test reported once), global weight-count
sparsity, an accuracy budget of 5 points against the unpruned baseline shared out over layers by weight count,
evaluations shared out over layers by weight count, temperature calibrated from sampled cost changes with
geometric cooling and an adaptive move size, moves that also restore weights, uniform crossover, and then ten
joint passes over all layers whose moves change one layer at a time. Between phases the network is fine-tuned for
3 epochs with the masks fixed and the loss term is measured from the adapted network (iterative pruning: without
it the search stalls where (ΔL)² outweighs the 1/s gain, about 68% global sparsity on MNIST-5k; with it, 85%);
the result is fine-tuned for 3 more epochs. About the seed's number of evaluations for a 5-layer model (SA 1,015
vs 1,005; GA 1,060). Measured on MNIST-5k, seed 0, SA: budgets of 3 and 5 points gave trade-off scores 0.81 and
0.83 (`evoprune bench search --preset mnist5k` has the table over three seeds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from evoprune.config import from_data, to_data
from evoprune.errors import ConfigError
from evoprune.search.objective import SPARSITY_MODES, ConstraintMetric, SparsityMode
from evoprune.train import TRAIN_PRESETS, TrainConfig

Algorithm = Literal["sa", "ga"]
ALGORITHMS: tuple[str, ...] = ("sa", "ga")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _check_choice(value: object, allowed: tuple[str, ...], what: str) -> None:
    _check(value in allowed, f"{what} must be one of {', '.join(allowed)}, got {value!r}")


@dataclass(frozen=True)
class SAConfig:
    """Simulated annealing. ``iterations`` proposals per layer (plus one evaluation of the starting state);
    ``t0=None`` calibrates T0 from ``calibration_samples`` proposals so that a worse move of mean size is accepted
    with probability ``initial_acceptance``; the calibrated temperature is relative to the current cost (the
    1/sparsity term's slope changes by orders of magnitude during a run), then cooled by ``cooling``. ``rate_schedule='adaptive'`` grows the move size after an accepted
    move and shrinks it after a rejection (1/5 success rule) instead of the seed's linear decay."""

    iterations: int = 200
    t0: float | None = 1.0
    cooling: Literal["log", "geometric"] = "log"
    final_temperature_ratio: float = 0.01
    calibration_samples: int = 10
    initial_acceptance: float = 0.5
    rate_schedule: Literal["linear", "adaptive"] = "linear"
    joint_iterations: int = 0

    def __post_init__(self) -> None:
        _check(self.iterations >= 1, f"sa.iterations must be ≥ 1, got {self.iterations}")
        _check(self.joint_iterations >= 0, f"sa.joint_iterations must be ≥ 0, got {self.joint_iterations}")
        _check(self.t0 is None or self.t0 > 0, f"sa.t0 must be > 0 (or None to calibrate), got {self.t0}")
        _check_choice(self.cooling, ("log", "geometric"), "sa.cooling")
        _check_choice(self.rate_schedule, ("linear", "adaptive"), "sa.rate_schedule")
        _check(0 < self.final_temperature_ratio <= 1, f"sa.final_temperature_ratio must be in (0, 1], got {self.final_temperature_ratio}")
        _check(self.calibration_samples >= 1, f"sa.calibration_samples must be ≥ 1, got {self.calibration_samples}")
        _check(0 < self.initial_acceptance < 1, f"sa.initial_acceptance must be in (0, 1), got {self.initial_acceptance}")


@dataclass(frozen=True)
class GAConfig:
    """Genetic algorithm, one population per layer (and one for the joint pass if ``joint_generations``)."""

    population: int = 12
    generations: int = 20
    elite: int = 2
    tournament: int = 5
    crossover: Literal["single_point", "uniform"] = "single_point"
    crossover_rate: float = 0.9
    mutation: Literal["resample", "prune_restore"] = "resample"
    init: Literal["random", "around_current"] = "random"
    init_retries: int = 8
    joint_generations: int = 0

    def __post_init__(self) -> None:
        _check(self.population >= 2, f"ga.population must be ≥ 2, got {self.population}")
        _check(self.generations >= 1, f"ga.generations must be ≥ 1, got {self.generations}")
        _check(self.joint_generations >= 0, f"ga.joint_generations must be ≥ 0, got {self.joint_generations}")
        _check(0 <= self.elite < self.population, f"ga.elite must be in [0, population), got {self.elite}")
        _check(self.tournament >= 1, f"ga.tournament must be ≥ 1, got {self.tournament}")
        _check(0 <= self.crossover_rate <= 1, f"ga.crossover_rate must be in [0, 1], got {self.crossover_rate}")
        _check_choice(self.crossover, ("single_point", "uniform"), "ga.crossover")
        _check_choice(self.mutation, ("resample", "prune_restore"), "ga.mutation")
        _check_choice(self.init, ("random", "around_current"), "ga.init")
        _check(self.init_retries >= 1, f"ga.init_retries must be ≥ 1, got {self.init_retries}")


@dataclass(frozen=True)
class SearchConfig:
    """Everything a search run needs besides the model and data. Build one with ``preset(name, **overrides)``.

    Caps: ``caps='seed'`` gives absolute loss caps ``loss_to_warmup · (index + 1) / total_layers`` using Keras-style
    layer indices (overridable with ``layer_indices``/``total_layers``); ``cap_reference_loss`` scales them by
    ``baseline_loss / cap_reference_loss`` (e.g. 0.0895, the seed's baseline, for a dataset whose baseline loss
    lies above the absolute caps). ``caps='budget'`` allows the loss to grow by ``budget`` (relative) or the
    accuracy to drop by ``budget`` (absolute fraction) against the baseline, shared over layers by ``warmup``.
    Fine-tuning uses the recipe ``finetune`` (the project's one :class:`~evoprune.train.TrainConfig`; its
    ``epochs`` are replaced by ``finetune_epochs`` at the end and ``finetune_between`` between phases).
    ``finetune_between`` trains the network for that many epochs with the masks fixed after every phase but the
    last (iterative pruning: the next phase starts from a network that has adapted to the masks so far, and may
    prune what the budget now allows); ``joint_rounds`` splits the joint pass into that many phases, so a
    fine-tune can come between them. Caps stay relative to the unpruned baseline, and weights pruned earlier keep
    their pre-pruning values, so a restore move brings a weight back as it was.
    ``joint_moves='one_layer'`` makes each SA move or GA mutation of a multi-layer phase change one layer, drawn in
    proportion to its kept weights, instead of every layer at the same rate: a small, sensitive layer (LeNet's
    150-weight conv1) is then not hit by every move of a joint pass.
    ``allocation='weights'`` shares the per-layer evaluations (``sa.iterations``/``ga.generations`` times the number
    of layers) in proportion to the layers' weight counts instead of equally.

    Speed: ``batch_size`` images per forward chunk (default by device: 512 on a CPU, where bigger chunks fall out
    of cache and run slower, 8192 on a GPU); ``population_mode='auto'`` scores a GA population with one
    ``vmap``-batched forward on a GPU and member by member on a CPU, where the batched form measured no faster
    (``benchmarks/bench_mask_search.py --speed`` times both). ``early_stop`` ends an evaluation as soon as the
    candidate certainly breaks its cap; such a candidate's cost is penalty + 1/sparsity either way, so every
    decision (and the evaluation count) is the same as without it.
    """

    preset: str = "seed"
    selection_split: Literal["test", "val"] = "test"
    eval_size: int | None = None
    sparsity: SparsityMode = "mean_layer"
    caps: Literal["seed", "budget"] = "seed"
    loss_to_warmup: float = 1.0
    cap_reference_loss: float | None = None
    layer_indices: tuple[int, ...] | None = None
    total_layers: int | None = None
    budget: float = 0.01
    budget_metric: ConstraintMetric = "accuracy"
    warmup: Literal["linear", "weights", "none"] = "weights"
    allocation: Literal["uniform", "weights"] = "uniform"
    mutation_rate: float = 0.15
    restore_ratio: float = 0.0
    joint_moves: Literal["all", "one_layer"] = "all"
    magnitude_bias: float = 0.0
    finetune_epochs: int = 0
    finetune_between: int = 0
    joint_rounds: int = 1
    finetune: TrainConfig = field(default_factory=lambda: TRAIN_PRESETS["finetune"])
    baselines: bool = True
    eps: float = 1e-8
    penalty: float = 1e8
    batch_size: int | None = None
    population_batch_size: int | None = None
    population_mode: Literal["auto", "vmap", "loop"] = "auto"
    early_stop: bool = True
    sa: SAConfig = field(default_factory=SAConfig)
    ga: GAConfig = field(default_factory=GAConfig)

    def __post_init__(self) -> None:
        _check_choice(self.selection_split, ("test", "val"), "selection_split")
        _check_choice(self.sparsity, SPARSITY_MODES, "sparsity")
        _check_choice(self.caps, ("seed", "budget"), "caps")
        _check_choice(self.budget_metric, ("loss", "accuracy"), "budget_metric")
        _check_choice(self.warmup, ("linear", "weights", "none"), "warmup")
        _check_choice(self.allocation, ("uniform", "weights"), "allocation")
        _check(self.budget > 0, f"budget must be > 0 (allowed {self.budget_metric} change against the baseline), got {self.budget}")
        _check(self.budget_metric != "accuracy" or self.budget < 1, f"an accuracy budget is a fraction below 1 (0.01 = one point), got {self.budget}")
        _check(self.loss_to_warmup > 0, f"loss_to_warmup must be > 0, got {self.loss_to_warmup}")
        _check(self.cap_reference_loss is None or self.cap_reference_loss > 0,
               f"cap_reference_loss must be > 0, got {self.cap_reference_loss}")
        _check(0 < self.mutation_rate <= 1, f"mutation_rate must be in (0, 1], got {self.mutation_rate}")
        _check_choice(self.joint_moves, ("all", "one_layer"), "joint_moves")
        _check(self.restore_ratio >= 0, f"restore_ratio must be ≥ 0, got {self.restore_ratio}")
        _check(0 <= self.magnitude_bias <= 1, f"magnitude_bias must be in [0, 1], got {self.magnitude_bias}")
        _check(self.finetune_epochs >= 0, f"finetune_epochs must be ≥ 0, got {self.finetune_epochs}")
        _check(self.finetune_between >= 0, f"finetune_between must be ≥ 0 (epochs after each phase), got {self.finetune_between}")
        _check(self.joint_rounds >= 1, f"joint_rounds must be ≥ 1, got {self.joint_rounds}")
        _check(self.eval_size is None or self.eval_size >= 1, f"eval_size must be ≥ 1, got {self.eval_size}")
        _check(self.batch_size is None or self.batch_size >= 1, f"batch_size must be ≥ 1, got {self.batch_size}")
        _check_choice(self.population_mode, ("auto", "vmap", "loop"), "population_mode")
        _check(self.eps > 0 and self.penalty > 0, "eps and penalty must be > 0")
        if self.layer_indices is not None:
            object.__setattr__(self, "layer_indices", tuple(int(i) for i in self.layer_indices))
    def with_overrides(self, **overrides: Any) -> SearchConfig:
        """A copy with fields replaced and the whole checked again; ``sa``, ``ga`` and ``finetune`` take dicts of
        their own fields (merged into the current ones). ``None`` values (options not given) are ignored."""
        data = self.to_dict()
        for key, value in overrides.items():
            if value is None:
                continue
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = to_data(value)
        return from_data(SearchConfig, data)

    def to_dict(self) -> dict[str, Any]:
        return to_data(self)


PRESETS: dict[str, SearchConfig] = {
    "seed": SearchConfig(),
    "improved": SearchConfig(
        preset="improved",
        selection_split="val",
        sparsity="global",
        caps="budget",
        budget=0.05,
        budget_metric="accuracy",
        warmup="weights",
        allocation="weights",
        restore_ratio=0.5,
        joint_moves="one_layer",
        finetune_between=3,
        joint_rounds=10,
        finetune_epochs=3,
        finetune=TRAIN_PRESETS["finetune"].with_overrides(lr=2e-3),
        sa=SAConfig(iterations=70, t0=None, cooling="geometric", rate_schedule="adaptive", joint_iterations=650),
        ga=GAConfig(generations=7, crossover="uniform", mutation="prune_restore", init="around_current",
                    joint_generations=53),
    ),
}


def preset(name: str, **overrides: Any) -> SearchConfig:
    """The named preset (``seed`` or ``improved``) with optional overrides (see ``SearchConfig.with_overrides``)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown search preset {name!r}; available: {', '.join(PRESETS)}")
    return PRESETS[name].with_overrides(**overrides)
