"""The GP loop on tiny tasks: elitism, the fitness cache, failures, geometric-mean fitness, resume, executors."""

from __future__ import annotations

import json
import math
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest

from evoprune.evolve import WORST_FITNESS, EvolutionConfig, config_from_dict, evolve, with_overrides
from evoprune.evolve.rundir import RunDir
from evoprune.parallel import Outcome, ProcessExecutor, SerialExecutor

# Two tiny tasks on the synthetic 12x12 dataset: an MLP and a VGG-11 at 1/8 width. An evaluation takes ~0.1 s.
TINY_TOML = """
name = "tiny"
seed = 3
[evolution]
generations = 3
population = 6
elites = 3
seeds = ["AbsSNR", "WL1", "FDR", "GeoMedian", "WL2"]
random_init = 1
[evaluation]
executor = "serial"
timeout = 120
[[tasks]]
name = "mlp-syn"
model = "mlp"
dataset = "synthetic"
schedule = {ratio = 0.75}
scoring_samples = 120
train_samples = 120
model_args = {hidden = [32, 16]}
pretrain = {preset = "lenet5", epochs = 15, augment = "none"}
finetune = {preset = "finetune", epochs = 1, lr = 1e-4}
[[tasks]]
name = "vgg-syn"
model = "vgg"
dataset = "synthetic"
schedule = {ratio = 0.5}
scoring_samples = 120
train_samples = 120
model_args = {depth = 11, width = 0.125}
pretrain = {preset = "lenet5", epochs = 15, augment = "none"}
finetune = {preset = "finetune", epochs = 1, lr = 1e-3}
"""

# Valid on the synthetic test layers is irrelevant for given seeds: this one overflows to inf on any real layer.
OVERFLOW = "pow2(" * 10 + "sum(X)" + ")" * 10


def tiny_config(**overrides: Any) -> EvolutionConfig:
    """The tiny config with dotted-key overrides (``{"evolution.population": 8}``)."""
    return with_overrides(config_from_dict(tomllib.loads(TINY_TOML), source="tiny"), overrides)


def summary(result: Any) -> dict[str, Any]:
    """What must be identical between two runs that should be equal."""
    return {
        "hof": [(h.formula, h.fitness, h.accuracies, h.evaluations) for h in result.hall_of_fame],
        "history": [(h["generation"], h["best"], h["mean"], h["best_formula"]) for h in result.history],
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """One uninterrupted serial run of the tiny config, shared by the tests that compare against it."""
    run_dir = tmp_path_factory.mktemp("reference")
    return evolve(tiny_config(), run_dir), run_dir


def test_run_directory_holds_config_log_checkpoint_results_and_plot(reference: tuple[Any, Path]) -> None:
    result, run_dir = reference
    for name in ("config.json", "events.jsonl", "checkpoint.json", "results.json", "fitness.png", "report.md"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "models" / "mlp-syn.pt").is_file()
    data = json.loads((run_dir / "results.json").read_text())
    assert data["best"]["formula"] == result.best.formula
    assert [h["generation"] for h in data["history"]] == [0, 1, 2]
    checkpoint = json.loads((run_dir / "checkpoint.json").read_text())
    assert checkpoint["generation"] == 2 and len(checkpoint["population"]) == 6
    assert all(isinstance(p["formula"], str) for p in checkpoint["population"])
    assert (run_dir / "fitness.png").read_bytes()[:4] == b"\x89PNG"


def test_elites_survive_and_the_best_fitness_never_drops(reference: tuple[Any, Path]) -> None:
    result, run_dir = reference
    bests = [h["best"] for h in result.history]
    assert bests == sorted(bests)
    assert result.best.fitness == bests[-1]
    populations = _populations(run_dir)
    cache = json.loads((run_dir / "checkpoint.json").read_text())["cache"]
    fitness = {e["key"]: _entry_fitness(e) for e in cache}
    for before, after in zip(populations, populations[1:]):
        ranked = sorted(dict.fromkeys(before), key=lambda k: -fitness[k])
        assert set(ranked[:3]) <= set(after)  # the 3 elites of one generation are in the next


def _populations(run_dir: Path) -> list[list[str]]:
    return [e["population"] for e in RunDir(run_dir).events() if e["event"] == "population"]


def _entry_fitness(entry: dict[str, Any]) -> float:
    return entry["evaluations"][0]["fitness"]


def test_each_function_is_evaluated_once_per_task_and_duplicates_hit_the_cache(reference: tuple[Any, Path], tmp_path: Path) -> None:
    copy_models(reference[1], tmp_path)
    result = evolve(tiny_config(**{"evolution.seed_copies": 2, "evolution.generations": 2}), tmp_path)
    events = RunDir(tmp_path).events()
    evaluated = [(e["key"], e["index"], e["task"]) for e in events if e["event"] == "evaluation"]
    assert len(evaluated) == len(set(evaluated))
    gen0 = result.history[0]
    assert gen0["unique"] == 6 and gen0["evaluated"] == 6  # 5 seeds x 2 copies + 1 random tree -> 6 functions
    assert result.evaluations == len(evaluated)


def test_fitness_is_the_weighted_geometric_mean_of_task_accuracies(reference: tuple[Any, Path]) -> None:
    result, _ = reference
    for h in result.hall_of_fame:
        a, b = h.accuracies["mlp-syn"], h.accuracies["vgg-syn"]
        assert h.fitness == pytest.approx(math.sqrt(a * b), rel=1e-12)
    alpha = tiny_config(**{"evolution.alpha": 0.8}).task_weights()
    assert alpha == {"mlp-syn": pytest.approx(0.2), "vgg-syn": pytest.approx(0.8)}


def test_a_failing_candidate_gets_the_worst_fitness_and_the_run_goes_on(reference: tuple[Any, Path], tmp_path: Path) -> None:
    copy_models(reference[1], tmp_path)
    config = tiny_config(**{"evolution.seeds": ["WL1", OVERFLOW, "AbsSNR"], "evolution.random_init": 0,
                            "evolution.generations": 2, "evolution.population": 4, "evolution.elites": 2})
    result = evolve(config, tmp_path)
    failures = [e for e in RunDir(tmp_path).events() if e["event"] == "failure"]
    assert failures and all("non-finite" in f["error"] for f in failures if f["key"].startswith("pow2"))
    failed = [s for s in result.seeds if s.formula.startswith("pow2")]
    assert failed and failed[0].fitness == WORST_FITNESS and failed[0].failures == 1
    assert len(result.history) == 2 and result.best.fitness > WORST_FITNESS


def test_elites_can_be_re_evaluated_with_new_seeds(reference: tuple[Any, Path], tmp_path: Path) -> None:
    copy_models(reference[1], tmp_path)
    config = tiny_config(**{"evolution.reevaluate_elites": True, "evolution.max_evaluations": 2})
    result = evolve(config, tmp_path)
    events = [e for e in RunDir(tmp_path).events() if e["event"] == "evaluation"]
    assert {e["index"] for e in events} == {0, 1}
    twice = [h for h in result.hall_of_fame if h.evaluations == 2]
    assert twice and all(h.evaluations <= 2 for h in result.hall_of_fame)
    cache = {e["key"]: e for e in json.loads((tmp_path / "checkpoint.json").read_text())["cache"]}
    h = twice[0]
    per_task = {t: sum(ev["tasks"][t]["score"] for ev in cache[h.formula]["evaluations"]) / 2 for t in h.accuracies}
    assert h.accuracies == pytest.approx(per_task)


def test_resuming_a_finished_prefix_equals_an_uninterrupted_run(reference: tuple[Any, Path], tmp_path: Path) -> None:
    copy_models(reference[1], tmp_path)
    evolve(tiny_config(**{"evolution.generations": 2}), tmp_path)
    resumed = evolve(tiny_config(), tmp_path, resume=True)  # only the generation count differs
    assert summary(resumed) == summary(reference[0])


class _Killed(Exception):
    """Stands in for the process dying in the middle of a generation."""


class DiesAfter(SerialExecutor):
    """A serial executor whose process 'dies' after a given number of finished evaluations."""

    def __init__(self, evaluations: int) -> None:
        super().__init__()
        self.left = evaluations

    def run(self, fn, jobs, *, timeout=None, on_done=None) -> list[Outcome]:
        def done(outcome: Outcome) -> None:
            if on_done is not None:
                on_done(outcome)
            self.left -= 1
            if self.left == 0:
                raise _Killed

        return super().run(fn, jobs, timeout=timeout, on_done=done)


def copy_models(source: Path, run_dir: Path) -> None:
    """Give a new run the pretrained models of another run with the same tasks (reused, not retrained)."""
    shutil.copytree(source / "models", run_dir / "models")


def test_a_run_dying_mid_generation_resumes_to_the_same_end(reference: tuple[Any, Path], tmp_path: Path) -> None:
    gen0_jobs = reference[0].timing[0]["jobs"]
    copy_models(reference[1], tmp_path)
    with pytest.raises(_Killed):
        evolve(tiny_config(), tmp_path, executor=DiesAfter(gen0_jobs + 3))
    assert json.loads((tmp_path / "checkpoint.json").read_text())["generation"] == 0
    resumed = evolve(None, tmp_path, resume=True)
    assert summary(resumed) == summary(reference[0])
    assert resumed.timing[1]["reused"] == 3  # the evaluations logged before the 'kill' were not redone


def test_resume_refuses_settings_that_change_results(reference: tuple[Any, Path]) -> None:
    from evoprune.evolve import RunDirError

    with pytest.raises(RunDirError, match="change the results"):
        evolve(tiny_config(seed=4), reference[1], resume=True)
    with pytest.raises(Exception, match="already holds a run"):
        evolve(tiny_config(), reference[1])


def test_process_executor_gives_the_same_run_as_serial(reference: tuple[Any, Path], tmp_path: Path) -> None:
    copy_models(reference[1], tmp_path)
    with ProcessExecutor(2, threads=1) as ex:
        result = evolve(tiny_config(**{"evaluation.timeout": 900}), tmp_path, executor=ex)  # equality, not limits, under test
    assert summary(result) == summary(reference[0])
    workers = {e["worker"] for e in RunDir(tmp_path).events() if e["event"] == "evaluation"}
    assert all(w.startswith("process-") for w in workers) and len(workers) >= 2


def test_tournament_selection_keeps_the_elites_too(reference: tuple[Any, Path], tmp_path: Path) -> None:
    copy_models(reference[1], tmp_path)
    result = evolve(tiny_config(**{"evolution.selection": "tournament", "evolution.tournament_size": 2}), tmp_path)
    bests = [h["best"] for h in result.history]
    assert bests == sorted(bests) and len(result.history) == 3
    origins = [e["origins"] for e in RunDir(tmp_path).events() if e["event"] == "population"]
    assert all(o[:3] == ["elite"] * 3 for o in origins[1:])
    assert summary(result) != summary(reference[0])  # a different search, same machinery


# --- population-batched fine-tuning ------------------------------------------------------------------------------

BATCHED = {"tasks.mlp-syn.finetune_batch": 4, "tasks.vgg-syn.finetune_batch": 4}


@pytest.fixture(scope="module")
def batched_reference(reference: tuple[Any, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    run_dir = tmp_path_factory.mktemp("batched")
    copy_models(reference[1], run_dir)
    return evolve(tiny_config(**BATCHED), run_dir), run_dir


def test_batched_fine_tuning_runs_chunks_of_candidates_as_one_job(batched_reference: tuple[Any, Path]) -> None:
    from evoprune.evolve.fitness import FitnessJob, derive_seed, prepare_task, run_fitness_job

    result, run_dir = batched_reference
    evaluations = [e for e in RunDir(run_dir).events() if e["event"] == "evaluation"]
    assert result.timing[0]["jobs"] < len([e for e in evaluations if e["generation"] == 0])  # 4 to a job
    config = tiny_config(**BATCHED)
    bundles = {t.name: prepare_task(t, config, run_dir / "models").bundle for t in config.tasks}
    checked = 0
    for e in evaluations[:12]:  # each member scores as it would alone, to float tolerance (one validation sample)
        if e["status"] != "ok":
            continue
        seed = derive_seed(config.seed, "eval", e["index"], e["task"])
        alone = run_fitness_job(FitnessJob(e["key"], e["task"], e["index"], seed), bundles[e["task"]])
        assert alone["score"] == pytest.approx(e["score"], abs=1.01 / len(bundles[e["task"]].val_y))
        checked += 1
    assert checked >= 8


def test_a_batched_run_killed_mid_batch_resumes_to_the_same_end(batched_reference: tuple[Any, Path],
                                                                 tmp_path: Path) -> None:
    result, run_dir = batched_reference
    copy_models(run_dir, tmp_path)
    with pytest.raises(_Killed):
        evolve(tiny_config(**BATCHED), tmp_path, executor=DiesAfter(result.timing[0]["jobs"] + 2))
    events = (tmp_path / "events.jsonl").read_text().splitlines(keepends=True)
    last = max(i for i, line in enumerate(events) if '"event": "evaluation"' in line)
    (tmp_path / "events.jsonl").write_text("".join(events[:last]))  # the kill came while a batch was being logged
    resumed = evolve(None, tmp_path, resume=True)
    assert summary(resumed) == summary(result)


def test_batched_process_executor_gives_the_same_run_as_serial(batched_reference: tuple[Any, Path],
                                                                 tmp_path: Path) -> None:
    copy_models(batched_reference[1], tmp_path)
    with ProcessExecutor(2, threads=1) as ex:
        result = evolve(tiny_config(**{**BATCHED, "evaluation.timeout": 900}), tmp_path, executor=ex)
    assert summary(result) == summary(batched_reference[0])
