"""``evoprune bench budget``: the smoke preset end to end (JSON, Markdown), resume, render, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evoprune.bench.budget_report import render_file
from evoprune.bench.budget_settings import PRESETS, ROWS, BudgetBenchSettings
from evoprune.cli import main
from evoprune.config import with_overrides
from evoprune.errors import ConfigError


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("budget")
    assert main(["bench", "budget", "--preset", "smoke", "--threads", "1", "--out", str(out), "--quiet"]) == 0
    return out


def test_smoke_writes_json_and_markdown(smoke_run: Path) -> None:
    results = json.loads((smoke_run / "budget-smoke.json").read_text())
    settings = PRESETS["smoke"]
    assert {(r["network"], r["seed"], r["metric"], r["target"]) for r in results["records"]} == {
        (n, s, m, t) for n in settings.models for s in settings.seeds for m in settings.metrics for t in settings.targets}
    for record in results["records"]:
        assert set(record["rows"]) == set(ROWS)
        for name in ("searched", "uniform", "global"):  # these meet the target exactly, as counted
            assert record["rows"][name]["meets_target"] and record["rows"][name]["macs_kept"] <= record["target"]
        assert all(0.0 <= row["test_accuracy"] <= 1.0 for row in record["rows"].values())
        assert record["rows"]["searched"]["val_accuracy_recalibrated"] >= max(
            record["rows"][n]["val_accuracy_recalibrated"] for n in ("uniform", "global"))
        assert 1 <= record["evaluations"] <= settings.evaluations
    text = (smoke_run / "budget-smoke.md").read_text()
    assert "## 50% of MACs, metric `l1`" in text and "searched − uniform" in text and "Search cost" in text
    assert render_file(smoke_run / "budget-smoke.json") == text


def test_resume_skips_finished_searches(smoke_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (smoke_run / "budget-smoke.json").read_text()
    assert main(["bench", "budget", "--preset", "smoke", "--out", str(smoke_run), "--quiet", "--resume"]) == 0
    assert "2 already done" in capsys.readouterr().out
    assert json.loads(before)["records"] == json.loads((smoke_run / "budget-smoke.json").read_text())["records"]
    assert main(["bench", "budget", "--preset", "smoke", "--out", str(smoke_run), "--quiet"]) != 0  # no --resume


def test_bad_settings() -> None:
    for change, message in ((["targets=[1.2]"], "targets"), (["algorithm='nsga2'"], "sa or ga"),
                            (["models=['resnet50']"], "models"), (["evaluations=0"], "evaluations")):
        with pytest.raises(ConfigError, match=message):
            with_overrides(PRESETS["smoke"], change)
    assert isinstance(PRESETS["cpu"], BudgetBenchSettings) and PRESETS["cpu"].evaluations == 500
