"""The same seed gives the same evolution: in separate processes, and after SIGKILL + ``--resume`` in a fresh one,
with one fidelity or three (successive halving), serial or in worker processes.

Every process here is fresh, so type classes, primitives and trees sit at other addresses and (with another
``PYTHONHASHSEED``) strings hash differently: any random draw that followed set, dict or address order would
differ between them (DEAP's ``cxOnePoint`` did).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# One small MLP task on the synthetic data; fine-tuning is long enough (~0.1 s an evaluation) that the run is
# still going when the test kills it after generation 1, and the crossovers mix trees with several common types.
DETERMINISM_TOML = """
name = "determinism"
seed = 5
[evolution]
generations = 6
population = 10
elites = 3
seeds = ["AbsSNR", "WL1", "FDR", "GeoMedian", "WL2", "Tstats"]
random_init = 2
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
pretrain = {preset = "lenet5", epochs = 8, augment = "none"}
finetune = {preset = "finetune", epochs = 4, lr = 1e-4}
"""

OPERATORS_SCRIPT = """
import random
from evoprune.evolve.config import OperatorConfig, PAPER_SEEDS
from evoprune.evolve.operators import Variation, VariationStats
from evoprune.metrics import get_metric

variation = Variation(OperatorConfig())
parents = [variation.from_formula(get_metric(name).formula) for name in (*PAPER_SEEDS, "eq3", "GA_Func3")]
rng, stats = random.Random(0), VariationStats()
for a in parents:
    for b in parents:
        c1, c2, _ = variation.crossover(a, b, rng, stats)
        print("x", variation.formula(c1), variation.formula(c2))
    for _ in range(3):
        print("m", variation.formula(variation.mutate(a, rng, stats)[0]))
for _ in range(10):
    tree = variation.random_tree(rng, stats)
    print("r", variation.formula(tree) if tree is not None else None)
print("state", rng.random(), stats.as_dict())
"""


def _env(hash_seed: int) -> dict[str, str]:
    return {**os.environ, "PYTHONHASHSEED": str(hash_seed), "PYTHONUNBUFFERED": "1"}


def test_crossover_mutation_and_random_trees_are_the_same_in_every_process() -> None:
    procs = [subprocess.Popen([sys.executable, "-c", OPERATORS_SCRIPT], env=_env(seed), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for seed in (0, 1, 2)]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        outputs.append(out)
    assert outputs[0].count("\nx ") > 60 and "crossovers" in outputs[0]
    assert outputs[1] == outputs[0] and outputs[2] == outputs[0]


def _evolve(*args: str, hash_seed: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "evoprune", "evolve", *args, "--quiet"], env=_env(hash_seed),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finished_generation(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / "checkpoint.json").read_text())["generation"]
    except FileNotFoundError:
        return -1


def _three_runs(root: Path, toml: str, second: tuple[str, ...] = ()) -> dict[str, Path]:
    """Three fresh processes with the same seed, started together: two run to the end (the second with the
    executor options ``second``), one is SIGKILLed in the middle of generation 2 (after generation 1's checkpoint)."""
    preset = root / "preset.toml"
    preset.write_text(toml)
    dirs = {name: root / name for name in ("first", "second", "killed")}
    procs = {name: _evolve("--preset", str(preset), "--out", str(path), *(second if name == "second" else ()),
                           hash_seed=i)
             for i, (name, path) in enumerate(dirs.items())}
    killed = procs["killed"]
    try:
        deadline = time.monotonic() + 240
        while _finished_generation(dirs["killed"]) < 1 and killed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert killed.poll() is None, f"the run ended before it could be killed: {killed.stderr.read()[-2000:]}"
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
        for name in ("first", "second"):
            _, err = procs[name].communicate(timeout=300)
            assert procs[name].returncode == 0, err[-2000:]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stderr.close()
    return dirs


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _three_runs(tmp_path_factory.mktemp("determinism"), DETERMINISM_TOML)


# The same run with three fidelities and successive halving; the second run and the resume use worker processes.
FIDELITY_TOML = DETERMINISM_TOML.replace("[evaluation]", """[fidelity]
levels = ["oracle", "recal", "finetune"]
promote = [0.5, 0.5]
oracle_samples = 100
[evaluation]""")


@pytest.fixture(scope="module")
def fidelity_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _three_runs(tmp_path_factory.mktemp("fidelities"), FIDELITY_TOML,
                       ("--executor", "process", "--workers", "2"))


def test_the_same_seed_gives_a_byte_identical_results_file_in_separate_processes(runs: dict[str, Path]) -> None:
    first = (runs["first"] / "results.json").read_bytes()
    assert (runs["second"] / "results.json").read_bytes() == first
    history = json.loads(first)["history"]
    assert len(history) == 6 and sum(h["variation"]["crossovers"] for h in history) > 0


def test_sigkill_then_resume_in_a_fresh_process_gives_the_same_results_file(runs: dict[str, Path]) -> None:
    killed = runs["killed"]
    generation = _finished_generation(killed)
    assert 1 <= generation < 5 and not (killed / "results.json").exists()
    resumed = subprocess.run([sys.executable, "-m", "evoprune", "evolve", "--resume", str(killed), "--quiet"],
                             env=_env(7), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (killed / "results.json").read_bytes() == (runs["first"] / "results.json").read_bytes()
    events = [json.loads(line) for line in (killed / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events].count("resume") == 1


def test_with_fidelities_the_same_seed_gives_the_same_file_in_any_executor_and_after_sigkill_and_resume(
        fidelity_runs: dict[str, Path]) -> None:
    first = (fidelity_runs["first"] / "results.json").read_bytes()
    assert (fidelity_runs["second"] / "results.json").read_bytes() == first
    history = json.loads(first)["history"]
    assert all(set(h["fidelities"]) == {"oracle", "recal", "finetune"} for h in history)
    killed = fidelity_runs["killed"]
    assert 1 <= _finished_generation(killed) < 5 and not (killed / "results.json").exists()
    resumed = subprocess.run([sys.executable, "-m", "evoprune", "evolve", "--resume", str(killed), "--executor",
                              "process", "--workers", "2", "--quiet"],
                             env=_env(7), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (killed / "results.json").read_bytes() == first
