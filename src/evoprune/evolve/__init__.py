"""GP co-evolution of channel-pruning functions (spec ``gp-pruning-functions.md`` §3–§4, with §9's fixes).

    from evoprune.evolve import evolve, load_preset
    result = evolve(load_preset("quick"), "runs/evolve-quick")      # -> EvolutionResult
    result.best.infix, result.best.fitness, result.hall_of_fame

Modules: ``config`` (typed TOML presets and overrides), ``operators`` (DEAP tree operators with limits and bounded
retries), ``fitness`` (tasks, pretraining, one evaluation), ``population`` (fitness cache, selection, hall of
fame), ``engine`` (the loop, checkpoint and resume), ``rundir`` (run-directory files), ``report`` (results, plot),
``batched`` (several candidates of one architecture fine-tuned as one stacked model).
"""

from evoprune.evolve.config import (
    PAPER_SEEDS,
    EvaluationConfig,
    EvolutionConfig,
    GPConfig,
    OperatorConfig,
    TaskConfig,
    available_presets,
    config_from_dict,
    config_to_dict,
    load_config,
    load_preset,
    with_overrides,
)
from evoprune.evolve.engine import EvolutionResult, HallOfFameEntry, Observer, evolve
from evoprune.evolve.fitness import WORST_FITNESS, FitnessJob, TaskBundle, run_fitness_job, weighted_geometric_mean
from evoprune.evolve.operators import Variation
from evoprune.evolve.rundir import RunDirError

__all__ = [
    "PAPER_SEEDS", "WORST_FITNESS", "EvaluationConfig", "EvolutionConfig", "EvolutionResult", "FitnessJob",
    "GPConfig", "HallOfFameEntry", "Observer", "OperatorConfig", "RunDirError", "TaskBundle", "TaskConfig",
    "Variation", "available_presets", "config_from_dict", "config_to_dict", "evolve", "load_config", "load_preset",
    "run_fitness_job", "weighted_geometric_mean", "with_overrides",
]
