"""Presets load into validated configs; bad settings are one clear error; overrides; fitness maths; ranking."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from evoprune.config import parse_assignment
from evoprune.errors import ConfigError
from evoprune.evolve import (
    PAPER_SEEDS,
    available_presets,
    config_from_dict,
    config_to_dict,
    load_config,
    load_preset,
    weighted_geometric_mean,
)
from evoprune.evolve.fitness import WORST_FITNESS, derive_seed
from evoprune.evolve.population import CacheEntry, Evaluation, FitnessCache, Individual, select_elites, tournament
from evoprune.evolve.rundir import rng_state, set_rng_state

TASK = {"name": "t", "model": "mlp", "dataset": "synthetic", "schedule": {"ratio": 0.5}}


def test_the_three_presets_load_with_the_settings_the_issue_asks_for() -> None:
    assert {"quick", "cpu", "paper"} <= set(available_presets())
    quick, cpu, paper = load_preset("quick"), load_preset("cpu"), load_preset("paper")
    assert {t.dataset for t in quick.tasks} == {"digits", "mnist5k"}
    assert cpu.fidelity.levels == ("oracle", "finetune") and quick.fidelity.levels == ("finetune",)
    screened = cpu.evolution.population - cpu.evolution.elites
    assert screened * (cpu.evolution.generations - 1) + cpu.evolution.random_init + 7 >= 20_000  # 50x the old 382
    assert paper.fidelity.levels == ("finetune",)
    assert cpu.evaluation.workers == 2
    assert [t.model for t in cpu.tasks] == ["lenet5", "vgg"] and cpu.tasks[0].schedule == "lenet5_paper"
    for config in (quick, cpu):  # Fashion-MNIST is the held-out transfer target: never in evolution
        assert all(t.dataset in ("mnist5k", "digits") for t in config.tasks)
    assert {t.dataset for t in paper.tasks} == {"mnist", "cifar10"}
    assert paper.evolution.elites == 6 and paper.evolution.alpha == 0.5
    assert tuple(paper.evolution.seeds) == PAPER_SEEDS
    assert paper.task_weights() == {"lenet5-mnist": 0.5, "vgg16-cifar10": 0.5}


def test_config_round_trips_through_plain_data() -> None:
    config = load_preset("cpu")
    assert config_from_dict(config_to_dict(config)) == config


def test_overrides_by_dotted_key_and_task_name() -> None:
    config = load_config("quick", {"evolution.population": 8, "tasks.vgg-digits.finetune.epochs": 3, "tasks.0.weight": 2.0})
    assert config.evolution.population == 8
    assert config.tasks[1].finetune.epochs == 3 and config.tasks[0].weight == 2.0
    assert config.tasks[1].finetune.batch_size == 64  # the rest of the task's recipe stays
    assert parse_assignment("evolution.seeds=[\"WL1\", \"FDR\"]") == ("evolution.seeds", ["WL1", "FDR"])
    assert parse_assignment("evaluation.executor=ray") == ("evaluation.executor", "ray")
    assert parse_assignment("evaluation.timeout=2.5") == ("evaluation.timeout", 2.5)
    with pytest.raises(ConfigError, match="no entry 'nope'; entries: lenet5-mnist5k, vgg-digits"):
        load_config("quick", {"tasks.nope.weight": 1.0})


@pytest.mark.parametrize(("data", "message"), [
    ({"evolution": {"populaton": 5}, "tasks": [TASK]}, "Did you mean 'population'"),
    ({"evolution": {"population": "ten"}, "tasks": [TASK]}, "must be an integer"),
    ({"evolution": {"population": 6, "elites": 6}, "tasks": [TASK]}, "must be smaller"),
    ({"evolution": {"selection": "roulette"}, "tasks": [TASK]}, "must be one of 'truncation', 'tournament'"),
    ({"evolution": {"crossover_prob": 1.5}, "tasks": [TASK]}, r"in \[0, 1\]"),
    ({"tasks": []}, "at least one fitness task"),
    ({"tasks": [TASK, TASK]}, "unique"),
    ({"tasks": [{**TASK, "finetune": {"epochz": 1}}]}, "unknown setting 'tasks.*finetune.epochz'. Did you mean 'epochs'"),
    ({"tasks": [{**TASK, "finetune": {"preset": "finetun"}}]}, "unknown training preset 'finetun'"),
    ({"tasks": [{**TASK, "pretrain": {"lr": "fast"}}]}, "pretrain.lr must be a number"),
    ({"tasks": [{**TASK, "schedule": {"ratio": 1.5}}]}, "schedule"),
    ({"tasks": [{k: v for k, v in TASK.items() if k != "model"}]}, "lacks required setting"),
    ({"evolution": {"alpha": 0.3}, "tasks": [TASK]}, "exactly two tasks"),
    ({"operators": {"mutation_max_height": 12}, "tasks": [TASK]}, "max_height"),
    ({"evaluation": {"threads": 0}, "tasks": [TASK]}, "threads"),
    ({"tasks": [TASK], "sed": 3}, "Did you mean 'seed'"),
])
def test_bad_settings_are_one_clear_error(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data, source="test")


def test_fitness_hash_ignores_where_a_run_executes_but_not_what_it_computes() -> None:
    base = load_preset("quick")
    same = load_config("quick", {"evaluation.executor": "ray", "evaluation.workers": 7, "evolution.generations": 9})
    assert same.fitness_hash() == base.fitness_hash()
    for key, value in (("seed", 1), ("evaluation.threads", 2), ("tasks.0.finetune.epochs", 2)):
        assert load_config("quick", {key: value}).fitness_hash() != base.fitness_hash(), key


def test_weighted_geometric_mean() -> None:
    w = {"a": 0.5, "b": 0.5}
    assert weighted_geometric_mean({"a": 0.81, "b": 0.64}, w) == pytest.approx(0.72)
    assert weighted_geometric_mean({"a": 0.9, "b": 0.4}, {"a": 3, "b": 1}) == pytest.approx(0.9**0.75 * 0.4**0.25)
    assert weighted_geometric_mean({"a": 0.9, "b": 0.0}, w) == 0.0
    assert weighted_geometric_mean({"a": 0.9, "b": math.nan}, w) == WORST_FITNESS
    assert weighted_geometric_mean({"a": 0.9, "b": math.inf}, w) == WORST_FITNESS


def _entry(key: str, accuracies: list[dict[str, float]], size: int = 3) -> CacheEntry:
    entry = CacheEntry(key, size, 1, 0, "seed")
    w = {"a": 0.5, "b": 0.5}
    for i, acc in enumerate(accuracies):
        tasks = {t: {"score": v, "status": "ok"} for t, v in acc.items()}
        entry.add(Evaluation(i, tasks, weighted_geometric_mean(acc, w)), w)
    return entry


def test_re_evaluated_fitness_combines_the_mean_accuracy_per_task() -> None:
    entry = _entry("k", [{"a": 0.8, "b": 0.6}, {"a": 0.6, "b": 0.6}])
    assert entry.accuracies == pytest.approx({"a": 0.7, "b": 0.6})
    assert entry.fitness == pytest.approx(math.sqrt(0.7 * 0.6))


def test_elites_are_the_best_distinct_functions_ties_broken_by_size() -> None:
    cache = FitnessCache({
        "a": _entry("a", [{"a": 0.9, "b": 0.9}], size=9),
        "b": _entry("b", [{"a": 0.9, "b": 0.9}], size=3),
        "c": _entry("c", [{"a": 0.5, "b": 0.5}]),
        "d": _entry("d", [{"a": 0.7, "b": 0.7}]),
    })
    pop = [Individual(None, k, k, "x") for k in ("a", "a", "c", "b", "b", "d")]  # type: ignore[arg-type]
    assert [i.key for i in select_elites(pop, cache, 3)] == ["b", "a", "d"]
    assert [i.key for i in select_elites(pop[:2], cache, 2)] == ["a", "a"]  # too few distinct: duplicates fill in
    assert [e.key for e in cache.hall_of_fame(2)] == ["b", "a"]
    wins = [tournament(pop, cache, 6, random.Random(s)).key for s in range(20)]
    assert set(wins) <= {"a", "b", "d"} and wins.count("c") == 0


def test_seeds_and_rng_states_are_stable_and_json_safe() -> None:
    import json

    assert derive_seed(0, "eval", 0, "t") == derive_seed(0, "eval", 0, "t") != derive_seed(1, "eval", 0, "t")
    state = json.loads(json.dumps(rng_state()))
    import numpy as np
    import torch

    a = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_a_preset_file_of_random_bytes_is_one_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "mine.toml"
    bad.write_bytes(bytes(range(128, 256)) * 3)
    with pytest.raises(ConfigError, match="cannot be read as UTF-8 TOML"):
        load_config(bad)
