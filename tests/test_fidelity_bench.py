"""benchmarks/bench_fidelity.py at its smoke size: the speed table and the study (formula set from every source,
scores at every fidelity, correlations, scatter plot)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_fidelity.py"


def _run(*args: str) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_speed_smoke_times_every_fidelity(tmp_path: Path) -> None:
    _run("speed", "--smoke", "--work", str(tmp_path / "work"), "--out", str(tmp_path))
    data = json.loads((tmp_path / "fidelity-speed-smoke.json").read_text())
    rows = data["fidelities"]
    assert set(rows) == {"oracle", "recal", "finetune"} and rows["oracle"]["candidates"] == 12
    assert rows["oracle"]["median_s"] < rows["finetune"]["median_s"]
    assert len(data["oracle_computations"]) == 2 and "candidates/s" in (tmp_path / "fidelity-speed-smoke.md").read_text()


@pytest.mark.slow
def test_the_study_smoke_scores_formulas_of_every_source_at_every_fidelity(tmp_path: Path) -> None:
    args = ("study", "--smoke", "--formulas", "26", "--work", str(tmp_path / "work"), "--out", str(tmp_path))
    _run(*args)
    data = json.loads((tmp_path / "fidelity-smoke.json").read_text())
    assert data["formulas"] == 26 and all(data["sources"][s] > 0 for s in ("library", "evolved", "random"))
    assert len({r["key"] for r in data["rows"]}) == 26
    assert set(data["correlations"]) == {"oracle~finetune", "recal~finetune", "oracle~recal"}
    assert (tmp_path / "fidelity-smoke.png").stat().st_size > 0
    journal = (tmp_path / "work" / "study.jsonl").read_text().splitlines()
    assert len(journal) == 26 * 2 * 3
    _run(*args)  # a second run reuses every scored job
    assert (tmp_path / "work" / "study.jsonl").read_text().splitlines() == journal
