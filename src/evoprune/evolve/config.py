"""Typed, validated configuration of an evolution run, loaded from TOML presets and overridable per key.

A config has five parts: the search itself (``[evolution]``: population, selection, variation rates), the tree
operators (``[operators]``: limits and generators), how candidates are evaluated (``[evaluation]``: executor,
workers, time limit), which fidelities score them (``[fidelity]``: levels and successive halving) and the fitness
tasks (``[[tasks]]``). Everything is a frozen dataclass so a run's settings
cannot drift once it started, built and checked once by the project's one configuration protocol
(:mod:`evoprune.config`); :func:`config_to_dict` / :func:`config_from_dict` round-trip it through plain data (the
run directory keeps ``config.json``). Every bad value is one :class:`~evoprune.errors.ConfigError` that names the
dotted key, the value and what is allowed. A task's ``pretrain`` and ``finetune`` are typed training recipes
(:class:`~evoprune.train.TrainConfig`, ``{preset = "finetune", epochs = 1}`` in TOML) and its ``schedule`` a
schedule preset name or a typed :class:`~evoprune.prune.PruneSchedule`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from evoprune import config as protocol
from evoprune.errors import ConfigError
from evoprune.prune import PruneSchedule
from evoprune.train import TRAIN_PRESETS, TrainConfig

Selection = Literal["truncation", "tournament"]
Generator = Literal["full", "grow", "half"]
ExecutorKind = Literal["serial", "process", "ray"]
NonFinite = Literal["fail", "allow"]
Fidelity = Literal["oracle", "recal", "finetune"]

#: The fidelities from the cheapest to the most expensive (``[fidelity] levels`` keeps this order).
FIDELITIES: tuple[str, ...] = ("oracle", "recal", "finetune")

#: The seven human-designed seed functions of the paper (spec §2.3), by metric-library name.
PAPER_SEEDS: tuple[str, ...] = ("AbsSNR", "FDR", "SymDiv", "Tstats", "WL1", "WL2", "GeoMedian")


@dataclass(frozen=True)
class GPConfig:
    """The GP loop (the ``[evolution]`` section). ``generations`` counts generation 0 (the initial population), as the paper's code does.

    The paper's scheme is ``selection="truncation"``: the best ``elites`` are kept unchanged and every other
    slot is a clone of a random elite, then varied (one-point crossover of consecutive pairs with
    ``crossover_prob``, subtree mutation with ``mutation_prob``). ``"tournament"`` keeps the same elites but
    draws the parents of the children by tournaments of ``tournament_size`` over the whole population.
    ``unique_children`` re-mutates (up to the retry limit) a child whose canonical form was already evaluated
    or is already in the new population: a duplicate costs no evaluation (the fitness cache) but wastes a slot.
    ``reevaluate_elites`` gives each elite one more evaluation with a new seed per generation, up to
    ``max_evaluations``; its fitness is the mean (fitness is noisy; the paper kept lucky values forever).
    """

    generations: int = 10
    population: int = 14
    elites: int = 6
    selection: Selection = "truncation"
    tournament_size: int = 3
    crossover_prob: float = 0.75
    mutation_prob: float = 0.75
    seeds: tuple[str, ...] = PAPER_SEEDS
    seed_copies: int = 1
    random_init: int = 0
    unique_children: bool = True
    reevaluate_elites: bool = False
    max_evaluations: int = 3
    hall_of_fame: int = 10
    alpha: float | None = None

    def __post_init__(self) -> None:
        _at_least("evolution.generations", self.generations, 1)
        _at_least("evolution.population", self.population, 2)
        _at_least("evolution.elites", self.elites, 1)
        if self.elites >= self.population:
            raise ConfigError(f"evolution.elites ({self.elites}) must be smaller than evolution.population "
                              f"({self.population}): the other slots are the children")
        _at_least("evolution.tournament_size", self.tournament_size, 1)
        _probability("evolution.crossover_prob", self.crossover_prob)
        _probability("evolution.mutation_prob", self.mutation_prob)
        _at_least("evolution.seed_copies", self.seed_copies, 0)
        _at_least("evolution.random_init", self.random_init, 0)
        _at_least("evolution.max_evaluations", self.max_evaluations, 1)
        _at_least("evolution.hall_of_fame", self.hall_of_fame, 1)
        if not self.seeds and self.random_init == 0:
            raise ConfigError("the initial population is empty: give evolution.seeds or evolution.random_init > 0")
        if self.seed_copies == 0 and self.random_init == 0:
            raise ConfigError("the initial population is empty: evolution.seed_copies is 0 and random_init is 0")
        if self.alpha is not None:
            _probability("evolution.alpha", self.alpha)


@dataclass(frozen=True)
class OperatorConfig:
    """Tree generation and the limits every child must respect.

    Mutation replaces a random subtree with a new tree of height ``mutation_min_height``–``mutation_max_height``
    (the paper: ``genFull`` 0–4). Random initial trees use ``genHalfAndHalf`` with ``init_min_height``–
    ``init_max_height``. A child that breaks ``max_height`` / ``max_size`` (DEAP ``staticLimit``-style), fails to
    type-check, or gives a non-finite score on the synthetic test layers is invalid; the operator is retried from
    the original parents at most ``max_retries`` times, then the parents are kept. A child is also invalid when
    :mod:`evoprune.evolve.cost` estimates it would hold more than ``max_elements`` values in memory or take more
    than ``max_operations`` operations on some layer of a task (the limits also fail a given seed at evaluation
    time, rather than letting it exhaust a worker's memory). ``constants`` adds scalar
    constant terminals (the paper has none); ``exclude`` drops primitives or operands from the design space.
    """

    max_height: int = 10
    max_size: int = 64
    mutation_generator: Generator = "full"
    mutation_min_height: int = 0
    mutation_max_height: int = 4
    init_min_height: int = 1
    init_max_height: int = 4
    max_retries: int = 10
    max_elements: float = 3e7
    max_operations: float = 1e10
    constants: tuple[float, ...] = ()
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _at_least("operators.max_height", self.max_height, 1)
        _at_least("operators.max_size", self.max_size, 1)
        _at_least("operators.mutation_min_height", self.mutation_min_height, 0)
        _at_least("operators.init_min_height", self.init_min_height, 0)
        _at_least("operators.max_retries", self.max_retries, 1)
        if not (self.max_elements > 0 and self.max_operations > 0):
            raise ConfigError("operators.max_elements and operators.max_operations must be > 0")
        if self.mutation_max_height < self.mutation_min_height:
            raise ConfigError("operators.mutation_max_height must be ≥ operators.mutation_min_height")
        if self.init_max_height < self.init_min_height:
            raise ConfigError("operators.init_max_height must be ≥ operators.init_min_height")
        if self.mutation_max_height > self.max_height or self.init_max_height > self.max_height:
            raise ConfigError("operators.max_height must be at least the mutation and initial tree heights")


# More workers or threads than any machine or cluster runs at once is a typo (or a damaged config.json).
_MAX_PARALLEL = 65536


@dataclass(frozen=True)
class EvaluationConfig:
    """Where and how candidates are evaluated. None of it changes a candidate's fitness except ``threads``,
    ``device`` and ``nonfinite`` (floating-point results can depend on the thread count and the device).

    ``workers=0`` means one per CPU core (process executor) or as many as the cluster runs at once (Ray).
    ``threads`` is the torch thread count inside every evaluation, the same in every executor, so a fitness
    depends only on (formula, task, seed). ``timeout`` is the per-evaluation wall-clock limit in seconds
    (0 = none); a candidate that runs over, raises or crashes its worker gets the worst fitness.
    ``nonfinite="fail"`` fails a candidate whose scores on a real layer are NaN or infinite; ``"allow"`` ranks
    such channels last instead. ``gpus_per_task`` (Ray): 0 asks for one GPU per evaluation when the cluster has
    GPUs and none otherwise; fractions share a GPU.
    """

    executor: ExecutorKind = "process"
    workers: int = 0
    threads: int = 1
    timeout: float = 600.0
    device: str = "cpu"
    address: str | None = None
    gpus_per_task: float = 0.0
    nonfinite: NonFinite = "fail"

    def __post_init__(self) -> None:
        _at_least("evaluation.workers", self.workers, 0)
        _at_least("evaluation.threads", self.threads, 1)
        for name, value in (("workers", self.workers), ("threads", self.threads)):
            if value > _MAX_PARALLEL:
                raise ConfigError(f"evaluation.{name} must be ≤ {_MAX_PARALLEL}, got {value}")
        if self.timeout < 0:
            raise ConfigError(f"evaluation.timeout must be ≥ 0 seconds (0 = no limit), got {self.timeout}")
        if self.gpus_per_task < 0:
            raise ConfigError(f"evaluation.gpus_per_task must be ≥ 0, got {self.gpus_per_task}")


@dataclass(frozen=True)
class TaskConfig:
    """One fitness task: a pretrained model, a dataset, a pruning schedule and a fine-tuning budget.

    ``schedule`` is a preset name of :mod:`evoprune.prune` (``"lenet5_paper"``, ``"vgg16_paper"``,
    ``"resnet56_paper"``) or a table of :class:`~evoprune.prune.PruneSchedule` fields (``ratio``, ``steps``, …).
    ``pretrain`` and ``finetune`` are training recipes; in TOML a table such as ``{preset = "lenet5", epochs = 4}``
    (a named recipe with fields replaced). The fitness is the validation accuracy after pruning and fine-tuning
    (the test split is never loaded into an evaluation). ``train_samples`` / ``val_samples`` cap the fine-tuning
    and validation sets (0 = all; a fixed seeded subset), to fit a budget. ``finetune_batch`` > 1 fine-tunes up to
    that many candidates of one evaluation round together, as one stacked model per architecture they prune to
    (:mod:`evoprune.evolve.batched`: equal to one by one to float tolerance; worth it where
    ``benchmarks/bench_batched_finetune.py`` measures a gain, e.g. LeNet-5, not the small VGG).
    """

    name: str
    model: str
    dataset: str
    schedule: str | PruneSchedule
    weight: float = 1.0
    model_args: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = None
    normalize: bool = False
    val_fraction: float = 0.2
    scoring_samples: int = 1000
    train_samples: int = 0
    val_samples: int = 0
    coupling: Literal["mean", "max", "params", "root", "last"] = "mean"
    pretrain: TrainConfig = field(default_factory=lambda: TRAIN_PRESETS["lenet5"])
    finetune: TrainConfig = field(default_factory=lambda: TRAIN_PRESETS["finetune"])
    finetune_batch: int = 1

    def __post_init__(self) -> None:
        where = f"task {self.name!r}"
        if not self.name or any(c in self.name for c in "/\\:. ") or self.name.startswith("-"):
            raise ConfigError(f"task name {self.name!r} must be non-empty, without '/', '\\', ':', '.' or spaces "
                              "(it names files and overrides)")
        if not self.weight > 0:
            raise ConfigError(f"{where}: weight must be > 0, got {self.weight}")
        _at_least(f"{where}: scoring_samples", self.scoring_samples, 1)
        _at_least(f"{where}: train_samples", self.train_samples, 0)
        _at_least(f"{where}: val_samples", self.val_samples, 0)
        _at_least(f"{where}: finetune_batch", self.finetune_batch, 1)
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"{where}: val_fraction must be in (0, 1), got {self.val_fraction}")
        if isinstance(self.schedule, str) and not self.schedule:
            raise ConfigError(f"{where}: schedule must be a preset name or a table, got {self.schedule!r}")


@dataclass(frozen=True)
class FidelityConfig:
    """Which fidelities score candidates and how candidates climb them (the ``[fidelity]`` section).

    ``levels`` are the fidelities used, cheapest first, in the order of :data:`FIDELITIES`:

    - ``oracle``: the mean over prunable groups of the Spearman correlation between the candidate's channel scores
      and the task's oracle importance (validation-loss increase per removed channel, computed once per task on
      ``oracle_samples`` validation images and cached in ``RUN_DIR/oracle/``); no forward pass per candidate;
    - ``recal``: validation accuracy after one cut to the schedule's final widths (or, with ``recal_ratios``, the
      mean over those uniform ratios) and BatchNorm recalibration on ``recal_batches`` training batches, no
      gradient step;
    - ``finetune``: validation accuracy after pruning with the schedule and fine-tuning (the paper's fitness).

    At ``oracle`` and ``recal`` a formula is scored from moments of the task's whole scoring set; those whose
    simplified form reads raw feature maps (ten to a hundred times slower; most GP children late in a run) see a
    class-balanced subset of ``feature_samples`` of those images instead, which bounds a screen's cost and memory. ``screen_dtype`` is the
    precision they evaluate formulas in: ``float32`` halves the memory traffic of the weight- and map-sized values
    GP children compute (about 1.3× faster on them, ``benchmarks/results/oracle_children_r3.md``) at the cost of
    rounding that can reorder near-tied channels; ``finetune`` always scores in float64.

    Every new candidate gets ``levels[0]``; of each generation's new candidates (every candidate but the elites),
    the best ``promote[i]`` fraction at ``levels[i]`` (rounded up) is evaluated at ``levels[i + 1]``. The default,
    ``finetune`` alone, is the single-fidelity evolution of the paper.
    """

    levels: tuple[Fidelity, ...] = ("finetune",)
    promote: tuple[float, ...] = ()
    oracle_samples: int = 1000
    oracle_ablations: int = 4
    recal_ratios: tuple[float, ...] = ()
    recal_batches: int = 20
    recal_batch_size: int = 64
    feature_samples: int = 250
    screen_dtype: Literal["float64", "float32"] = "float64"

    def __post_init__(self) -> None:
        if not self.levels:
            raise ConfigError("fidelity.levels is empty: give one or more of " + ", ".join(FIDELITIES))
        order = [FIDELITIES.index(level) for level in self.levels]
        if order != sorted(set(order)):
            raise ConfigError(f"fidelity.levels must go from the cheapest to the most expensive without repeats "
                              f"({' < '.join(FIDELITIES)}), got {list(self.levels)}")
        if len(self.promote) != len(self.levels) - 1:
            raise ConfigError(f"fidelity.promote needs one fraction per step between levels ({len(self.levels) - 1} "
                              f"for {list(self.levels)}), got {list(self.promote)}")
        for fraction in self.promote:
            if not 0.0 < fraction <= 1.0:
                raise ConfigError(f"fidelity.promote fractions must be in (0, 1], got {fraction!r}")
        if self.screen_dtype not in ("float64", "float32"):
            raise ConfigError(f"fidelity.screen_dtype must be float64 or float32, got {self.screen_dtype!r}")
        _at_least("fidelity.oracle_samples", self.oracle_samples, 1)
        _at_least("fidelity.oracle_ablations", self.oracle_ablations, 1)
        _at_least("fidelity.recal_batches", self.recal_batches, 1)
        _at_least("fidelity.recal_batch_size", self.recal_batch_size, 1)
        _at_least("fidelity.feature_samples", self.feature_samples, 1)
        for ratio in self.recal_ratios:
            if not 0.0 < ratio < 1.0:
                raise ConfigError(f"fidelity.recal_ratios must be in (0, 1), got {ratio!r}")

    @property
    def top(self) -> str:
        """The most expensive fidelity of the run."""
        return self.levels[-1]


@dataclass(frozen=True)
class EvolutionConfig:
    """A whole run: search, operators, evaluation, fidelities and tasks. ``seed`` derives every other seed."""

    tasks: tuple[TaskConfig, ...]
    name: str = "custom"
    description: str = ""
    seed: int = 0
    evolution: GPConfig = field(default_factory=GPConfig)
    operators: OperatorConfig = field(default_factory=OperatorConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    fidelity: FidelityConfig = field(default_factory=FidelityConfig)

    def __post_init__(self) -> None:
        if self.evolution.reevaluate_elites and self.fidelity.top != "finetune":
            raise ConfigError("evolution.reevaluate_elites re-evaluates elites with new seeds at the finetune fidelity, "
                              f"but fidelity.levels ends with {self.fidelity.top!r} (deterministic for a formula): "
                              "turn it off or add finetune")
        if not self.tasks:
            raise ConfigError("an evolution needs at least one fitness task ([[tasks]] in the TOML file)")
        if "recal" in self.fidelity.levels and not self.fidelity.recal_ratios:
            for task in self.tasks:
                if isinstance(task.schedule, PruneSchedule) and (task.schedule.global_ranking
                                                                 or task.schedule.macs_target is not None):
                    raise ConfigError(f"task {task.name!r}: the recal fidelity cuts each layer to the schedule's final "
                                      "width, but this schedule ranks globally or solves a MACs target; set "
                                      "fidelity.recal_ratios instead")
        names = [t.name for t in self.tasks]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"task names must be unique; repeated: {', '.join(dup)}")
        if self.evolution.alpha is not None and len(self.tasks) != 2:
            raise ConfigError(f"evolution.alpha weighs exactly two tasks (the second gets alpha, the first 1 − alpha); "
                              f"this config has {len(self.tasks)}: set each task's weight instead")

    def task_weights(self) -> dict[str, float]:
        """Normalised weights of the weighted geometric mean (``alpha`` overrides the tasks' own weights)."""
        if self.evolution.alpha is not None:
            a = self.evolution.alpha
            return {self.tasks[0].name: 1.0 - a, self.tasks[1].name: a}
        total = sum(t.weight for t in self.tasks)
        return {t.name: t.weight / total for t in self.tasks}

    def selection_rule(self) -> str:
        """One line saying what the fitness is and how candidates are compared (results.json, report.md)."""
        fid = self.fidelity
        if len(fid.levels) == 1:
            return f"fitness = {_FIDELITY_WORDS[fid.top]} on validation data; the test split is never used"
        steps = ", ".join(f"best {f:g} of {a} to {b}" for f, a, b in zip(fid.promote, fid.levels, fid.levels[1:]))
        return (f"fidelities {' < '.join(fid.levels)} ({steps}, per generation); candidates compared "
                "lexicographically: the higher fidelity reached first, then fitness there; all on validation data, the "
                "test split is never used")

    def fitness_hash(self) -> str:
        """Digest of every setting that changes what the run computes (not where or how fast)."""
        data = config_to_dict(self)
        data.pop("name", None)
        data.pop("description", None)
        data["evolution"].pop("generations", None)
        for key in ("executor", "workers", "timeout", "address", "gpus_per_task"):
            data["evaluation"].pop(key, None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


_FIDELITY_WORDS = {
    "oracle": "mean Spearman correlation of channel scores with the oracle importance",
    "recal": "validation accuracy after one cut and BatchNorm recalibration",
    "finetune": "validation accuracy after pruning and fine-tuning",
}

# ------------------------------------------------------------------------------------------------ validation helpers


def _at_least(name: str, value: int | float, low: int) -> None:
    if value < low:
        raise ConfigError(f"{name} must be ≥ {low}, got {value!r}")


def _probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be in [0, 1], got {value!r}")


# ------------------------------------------------------------------------------------------------ dict <-> dataclass

def config_to_dict(config: EvolutionConfig) -> dict[str, Any]:
    """Plain JSON/TOML-ready data (tuples become lists)."""
    return protocol.to_data(config)


def config_from_dict(data: Any, *, source: str = "config") -> EvolutionConfig:
    """Validate plain data (parsed TOML or ``config.json``) into an :class:`EvolutionConfig`."""
    try:
        return protocol.from_data(EvolutionConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


# ------------------------------------------------------------------------------------------------ presets and files


def available_presets() -> list[str]:
    """Names of the TOML presets shipped in ``evoprune/presets``."""
    folder = resources.files("evoprune") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def preset_data(name_or_path: str | Path) -> tuple[dict[str, Any], str]:
    """Raw data of a preset name (``quick``) or a TOML file path, and a label for error messages."""
    text_name = str(name_or_path)
    path = Path(text_name)
    if text_name.endswith(".toml") or path.is_file():
        return protocol.load_toml(path), str(path)
    names = available_presets()
    if text_name not in names:
        close = difflib.get_close_matches(text_name, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown preset {text_name!r}.{hint} Presets: {', '.join(names)}; or give a .toml file")
    text = (resources.files("evoprune") / "presets" / f"{text_name}.toml").read_text()
    return protocol.parse_toml(text, f"preset {text_name!r}"), f"preset {text_name!r}"


def load_config(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> EvolutionConfig:
    """A preset (``"quick"``, ``"cpu"``, ``"paper"``) or TOML file, with dotted-key overrides applied.

    Override keys are dotted paths: ``"evolution.population"``, ``"seed"``, ``"tasks.lenet5-mnist5k.finetune.epochs"``
    (a task by name or by index).
    """
    data, source = preset_data(name_or_path)
    for key, value in (overrides or {}).items():
        protocol.set_dotted(data, key, value)
    return config_from_dict(data, source=source)


def load_preset(name: str, **overrides: Any) -> EvolutionConfig:
    """A shipped preset; keyword overrides use ``__`` for dots (``evolution__population=8``)."""
    return load_config(name, {k.replace("__", "."): v for k, v in overrides.items()})


def with_overrides(config: EvolutionConfig, overrides: dict[str, Any]) -> EvolutionConfig:
    """A copy of ``config`` with dotted-key overrides applied and validated."""
    try:
        return protocol.with_overrides(config, overrides)
    except ConfigError as exc:
        raise ConfigError(f"config: {exc}") from None


def replace_evaluation(config: EvolutionConfig, **changes: Any) -> EvolutionConfig:
    """Change how evaluation runs (executor, workers, timeout, address…), which never changes results."""
    return replace(config, evaluation=replace(config.evaluation, **changes))
