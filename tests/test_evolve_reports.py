"""benchmarks/bench_evolve.py --from-run and benchmarks/evolve_finalists.py on a tiny multi-fidelity run: the
per-fidelity report of a finished run, and its hall of fame re-evaluated with fresh seeds beside the references."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evoprune.evolve import evolve
from test_fidelity import multi_config

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    evolve(multi_config(**{"evolution.generations": 2}), folder)
    return folder


def _script(name: str, *args: str) -> None:
    done = subprocess.run([sys.executable, str(BENCHMARKS / name), *args], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_report_of_a_finished_run_counts_candidates_per_fidelity(run_dir: Path, tmp_path: Path) -> None:
    _script("bench_evolve.py", "--from-run", str(run_dir), "--out", str(tmp_path))
    (json_path,) = tmp_path.glob("evolve_*.json")
    preset = json.loads(json_path.read_text())["preset"]
    results = json.loads((run_dir / "results.json").read_text())
    assert len(preset["history"]) == 2 and preset["evaluations"] == results["evaluations"]
    levels = results["config"]["fidelity"]["levels"]
    assert list(preset["jobs_per_fidelity"]) == levels
    assert preset["jobs_per_fidelity"][levels[0]] > preset["jobs_per_fidelity"][levels[-1]] > 0
    assert preset["wall_s"] >= preset["generation_s"] > 0
    assert f"new at {levels[0]}" in json_path.with_suffix(".md").read_text()


def test_finalists_are_re_evaluated_with_fresh_seeds_beside_the_references(run_dir: Path, tmp_path: Path) -> None:
    _script("evolve_finalists.py", str(run_dir), "--top", "2", "--seeds", "2", "--workers", "1", "--out", str(tmp_path))
    (json_path,) = tmp_path.glob("evolve_*_finalists.json")
    data = json.loads(json_path.read_text())
    names = [f["name"] for f in data["finalists"]]
    assert {"eq3", "EP_Func1", "HoF #1"} <= set(names) and data["chosen"].startswith("HoF")
    fresh = [f["fresh_fitness"] for f in data["finalists"]]
    assert fresh == sorted(fresh, reverse=True)  # ranked by the fresh fitness
    for f in data["finalists"]:
        assert all(len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores) for scores in f["fresh"].values())
