"""Fidelities and successive halving: config checks, promotion, the per-fidelity fitness cache, the oracle and recal
fidelities against direct computations, and resume of a multi-fidelity run."""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from evoprune.criteria import group_correlations, group_scores, oracle_importance, recalibrate_batchnorm
from evoprune.criteria.curves import prune_uniform
from evoprune.errors import ConfigError
from evoprune.evolve import evolve, with_overrides
from evoprune.evolve.fitness import FitnessJob, combine_fitness, derive_seed, prepare_task
from evoprune.evolve.population import CacheEntry, Evaluation, FitnessCache, promoted
from evoprune.evolve.rundir import RunDir
from evoprune.evolve.screen import run_oracle_job, run_recal_job, spearman
from evoprune.train import evaluate
from test_evolve_engine import summary, tiny_config

LEVELS = {"fidelity.levels": ["oracle", "recal", "finetune"], "fidelity.promote": [0.5, 0.5],
          "fidelity.oracle_samples": 120, "evolution.population": 10}


def multi_config(**overrides: Any) -> Any:
    return tiny_config(**{**LEVELS, **overrides})


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    run_dir = tmp_path_factory.mktemp("multi")
    return evolve(multi_config(), run_dir), run_dir


# --- config -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "words"), [
    ({"fidelity.levels": []}, "fidelity.levels is empty"),
    ({"fidelity.levels": ["finetune", "oracle"], "fidelity.promote": [0.5]}, "cheapest to the most expensive"),
    ({"fidelity.levels": ["oracle", "oracle"], "fidelity.promote": [0.5]}, "without repeats"),
    ({"fidelity.levels": ["oracle", "finetune"]}, "one fraction per step"),
    ({"fidelity.levels": ["oracle", "finetune"], "fidelity.promote": [0.0]}, "in (0, 1]"),
    ({"fidelity.levels": ["exact"]}, "fidelity.levels"),
    ({"fidelity.recal_ratios": [1.0]}, "recal_ratios"),
    ({"fidelity.screen_dtype": "float16"}, "screen_dtype"),
    ({"fidelity.levels": ["oracle"], "evolution.reevaluate_elites": True}, "reevaluate_elites"),
])
def test_bad_fidelity_settings_are_one_error_naming_the_key(changes: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match="fidelity|reevaluate") as info:
        tiny_config(**changes)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_the_default_is_the_single_finetune_fidelity() -> None:
    config = tiny_config()
    assert config.fidelity.levels == ("finetune",) and config.fidelity.promote == ()


# --- promotion and ranking ----------------------------------------------------------------------------------------


def _entry(key: str, fidelity: str, score: float, *, failed: bool = False, size: int = 3) -> CacheEntry:
    entry = CacheEntry(key, size, 1, 0, "random")
    weights = {"a": 1.0}
    tasks = {"a": {"score": score, "status": "error" if failed else "ok", "error": None, "seconds": 0.0}}
    entry.add(Evaluation(0, tasks, combine_fitness(fidelity, {"a": score}, weights), fidelity), weights)
    return entry


@pytest.mark.parametrize(("n", "fraction", "expected"), [(30, 0.1, 3), (10, 0.25, 3), (7, 0.5, 4), (5, 1.0, 5),
                                                         (1, 0.01, 1), (40, 0.05, 2)])
def test_successive_halving_promotes_exactly_the_fraction_rounded_up(n: int, fraction: float, expected: int) -> None:
    cache = FitnessCache({f"k{i}": _entry(f"k{i}", "oracle", i / n - 0.5) for i in range(n)})
    pool = list(cache)
    chosen = promoted(pool, cache, "oracle", fraction)
    assert len(chosen) == expected == math.ceil(round(fraction * n, 9))
    assert chosen == [f"k{i}" for i in range(n - 1, n - 1 - expected, -1)]  # best first


def test_failed_candidates_are_never_promoted_and_ties_go_to_the_smaller_tree() -> None:
    cache = FitnessCache({"a": _entry("a", "recal", 0.9, failed=True), "b": _entry("b", "recal", 0.5, size=5),
                          "c": _entry("c", "recal", 0.5, size=2), "d": _entry("d", "recal", 0.1)})
    assert promoted(list(cache), cache, "recal", 0.5) == ["c", "b"]
    assert promoted(list(cache), cache, "recal", 1.0) == ["c", "b", "d"]


def test_ranking_is_lexicographic_higher_fidelity_first_then_fitness_there() -> None:
    screened = _entry("s", "oracle", 0.9)
    recal = _entry("r", "oracle", 0.1)
    recal.add(Evaluation(0, {"a": {"score": 0.2, "status": "ok"}}, 0.2, "recal"), {"a": 1.0})
    failed = _entry("f", "oracle", 0.95)
    failed.add(Evaluation(0, {"a": {"score": 0.0, "status": "timeout"}}, 0.0, "recal"), {"a": 1.0})
    assert (recal.reached, recal.fitness) == ("recal", 0.2)
    assert (failed.reached, failed.fitness) == ("oracle", 0.95)  # a failed promotion leaves it where it was
    order = sorted([screened, recal, failed], key=CacheEntry.rank_key)
    assert [e.key for e in order] == ["r", "f", "s"]
    assert screened.fitness_at("recal") == 0.0 and screened.fitness_at("oracle") == pytest.approx(0.9)


def test_oracle_fitness_is_a_weighted_mean_that_may_be_negative() -> None:
    assert combine_fitness("oracle", {"a": -0.5, "b": 0.7}, {"a": 1.0, "b": 3.0}) == pytest.approx(0.4)
    assert combine_fitness("oracle", {"a": math.nan}, {"a": 1.0}) == -1.0
    assert combine_fitness("recal", {"a": 0.81, "b": 0.64}, {"a": 1.0, "b": 1.0}) == pytest.approx(0.72)


# --- a multi-fidelity run -----------------------------------------------------------------------------------------


def test_each_generation_promotes_the_configured_fraction_of_its_new_candidates(multi: tuple[Any, Path]) -> None:
    result, _ = multi
    for h in result.history:
        per = h["fidelities"]
        assert per["oracle"]["failed"] == 0
        assert per["recal"]["candidates"] == math.ceil(0.5 * per["oracle"]["candidates"])
        assert per["finetune"]["candidates"] == math.ceil(0.5 * per["recal"]["candidates"])
    assert result.best.fidelity == "finetune"
    assert "lexicographically" in json.loads((multi[1] / "results.json").read_text())["selection"]


def test_the_fitness_cache_holds_one_evaluation_per_function_fidelity_and_task(multi: tuple[Any, Path]) -> None:
    _, run_dir = multi
    events = [e for e in RunDir(run_dir).events() if e["event"] == "evaluation"]
    counts = Counter((e["key"], e["fidelity"], e["index"], e["task"]) for e in events)
    assert counts and max(counts.values()) == 1
    by_fidelity = Counter(e["fidelity"] for e in events)
    assert by_fidelity["oracle"] > by_fidelity["recal"] > by_fidelity["finetune"] > 0
    cache = json.loads((run_dir / "checkpoint.json").read_text())["cache"]
    for entry in cache:
        fidelities = [e["fidelity"] for e in entry["evaluations"]]
        assert fidelities[0] == "oracle" and len(set(fidelities)) == len(fidelities)
        assert fidelities == [f for f in ("oracle", "recal", "finetune") if f in fidelities]
    assert sorted(p.name for p in (run_dir / "oracle").iterdir()) == ["mlp-syn.pt", "vgg-syn.pt"]


def test_a_resumed_multi_fidelity_run_ends_like_the_uninterrupted_one(multi: tuple[Any, Path], tmp_path: Path) -> None:
    result, run_dir = multi
    shutil.copytree(run_dir / "models", tmp_path / "models")
    shutil.copytree(run_dir / "oracle", tmp_path / "oracle")
    evolve(multi_config(**{"evolution.generations": 2}), tmp_path)
    events = tmp_path / "events.jsonl"
    logged = events.read_text()
    assert "oracle_done" not in logged  # the cached oracles were reused
    resumed = evolve(multi_config(), tmp_path, resume=True, executor="process")  # the executor changes nothing
    assert summary(resumed) == summary(result)
    assert (tmp_path / "results.json").read_bytes() == (run_dir / "results.json").read_bytes()


def test_a_changed_oracle_setting_recomputes_the_cached_oracle(multi: tuple[Any, Path], tmp_path: Path) -> None:
    _, run_dir = multi
    shutil.copytree(run_dir / "models", tmp_path / "models")
    shutil.copytree(run_dir / "oracle", tmp_path / "oracle")
    evolve(multi_config(**{"evolution.generations": 1, "fidelity.oracle_samples": 100}), tmp_path)
    assert [e["event"] for e in RunDir(tmp_path).events()].count("oracle_done") == 2


# --- the cheap fidelities against direct computations --------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle(multi: tuple[Any, Path]) -> Any:
    config = multi_config()
    task = config.tasks[1]  # VGG-11 at 1/8 width: BatchNorm, several groups
    return prepare_task(task, config, multi[1] / "models", oracle_dir=multi[1] / "oracle").bundle


@pytest.mark.parametrize("formula", ["sum(abs(WI))", "div(pow2(sub(g_mean(P), g_mean(Q))), rho1(add(var(P), var(Q))))",
                                     "sum(abs(sub(X, mX)))"])
def test_the_oracle_fidelity_equals_a_direct_computation(bundle: Any, formula: str) -> None:
    config = multi_config()
    model, splits = bundle.materialise()
    oracle = oracle_importance(model, splits.val.x, splits.val.y, samples=config.fidelity.oracle_samples,
                               seed=derive_seed(config.seed, "oracle", bundle.name), device="cpu")
    scores = group_scores(model, formula, splits, samples=bundle.scoring_samples, seed=bundle.screen_seed)
    per_group = group_correlations({g: s.numpy() for g, s in scores.items()},
                                   {g: o.numpy() for g, o in oracle.increase.items()})
    expected = float(np.mean([rho for rho, _ in per_group.values()]))
    got = run_oracle_job(FitnessJob(formula, bundle.name, 0, 0, "oracle"), bundle)
    assert got["score"] == pytest.approx(expected, abs=1e-9)
    assert got["score"] == run_oracle_job(FitnessJob(formula, bundle.name, 0, 99, "oracle"), bundle)["score"]
    for g, s in scores.items():  # our Spearman is scipy's wherever the scores have no ties or -inf
        values = s.numpy()
        if np.isfinite(values).all() and len(np.unique(values)) == len(values):
            rho = scipy_stats.spearmanr(values, oracle.increase[g].numpy()).statistic
            assert spearman(values, oracle.increase[g].numpy()) == pytest.approx(rho, abs=1e-12)


@pytest.mark.parametrize("formula", ["sum(abs(WI))", "div(var(P), rho5(var(Q)))", "std(sub(abs(Q), mX))"])
def test_a_float32_screen_scores_close_to_float64(bundle: Any, formula: str) -> None:
    """``fidelity.screen_dtype = "float32"``: the same oracle fitness up to rounding of near-tied channels."""
    from dataclasses import replace

    single = replace(bundle, fidelity=replace(bundle.fidelity, screen_dtype="float32"), worker_state={})
    want = run_oracle_job(FitnessJob(formula, bundle.name, 0, 0, "oracle"), bundle)["score"]
    got = run_oracle_job(FitnessJob(formula, bundle.name, 0, 0, "oracle"), single)["score"]
    assert got == pytest.approx(want, abs=0.02)


def test_the_recal_fidelity_with_ratios_equals_prune_recalibrate_evaluate(bundle: Any) -> None:
    from dataclasses import replace

    fid = replace(bundle.fidelity, recal_ratios=(0.25, 0.5), recal_batches=3, recal_batch_size=16)
    ratio_bundle = replace(bundle, fidelity=fid, worker_state={})
    model, splits = ratio_bundle.materialise()
    formula = "sum(abs(WI))"
    scores = group_scores(model, formula, splits, samples=bundle.scoring_samples, seed=bundle.screen_seed)
    order = torch.randperm(len(splits.train.y), generator=torch.Generator().manual_seed(bundle.screen_seed))
    recal_x = splits.train.x[order[:48]]
    accuracies = []
    for ratio in (0.25, 0.5):
        pruned = prune_uniform(model, scores, ratio, splits.train.x[:1])
        recalibrate_batchnorm(pruned, recal_x, batches=3, batch_size=16)
        accuracies.append(evaluate(pruned, splits.val.x, splits.val.y).accuracy)
    got = run_recal_job(FitnessJob(formula, bundle.name, 0, 0, "recal"), ratio_bundle)
    assert got["accuracies"] == pytest.approx(accuracies, abs=1e-6)
    assert got["score"] == pytest.approx(sum(accuracies) / 2, abs=1e-6)


def test_recal_without_ratios_refuses_a_schedule_with_no_per_layer_widths() -> None:
    with pytest.raises(ConfigError, match="recal_ratios"):
        with_overrides(tiny_config(), {"fidelity.levels": ["recal"], "tasks.mlp-syn.schedule.global_ranking": True})
    assert with_overrides(tiny_config(), {"fidelity.levels": ["recal"], "fidelity.recal_ratios": [0.5],
                                          "tasks.mlp-syn.schedule.global_ranking": True}).fidelity.top == "recal"


def test_the_oracle_fidelity_runs_no_forward_pass_per_candidate(bundle: Any) -> None:
    from evoprune.evolve.screen import Screen

    screen = Screen.of(bundle)
    screen.features()  # the worker's one-time passes: moments at build, raw maps on first need
    run_oracle_job(FitnessJob("sum(WI)", bundle.name, 0, 0, "oracle"), bundle)  # and one forward for the call order
    calls = []
    handle = screen.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        for formula in ("sum(abs(WI))", "div(abs(sub(g_mean(P), g_mean(Q))), rho1(add(std(P), std(Q))))",
                        "sum(abs(sub(X, mX)))"):  # weights, moments, raw maps
            run_oracle_job(FitnessJob(formula, bundle.name, 0, 0, "oracle"), bundle)
    finally:
        handle.remove()
    assert calls == []
