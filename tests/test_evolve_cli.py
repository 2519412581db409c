"""``evoprune evolve``: a small quick preset; errors. (SIGKILL + resume: ``test_evolve_determinism.py``.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evoprune.cli import main


def test_quick_preset_smoke_run_prints_the_hall_of_fame(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """CI's smoke test: the real `quick` preset, shrunk (fewer samples, epochs, individuals), run serially."""
    code = main([
        "evolve", "--preset", "quick", "--out", str(tmp_path / "quick"), "--quiet", "--executor", "serial",
        "--generations", "2", "--population", "4",
        "--set", "evolution.elites=2", "--set", 'evolution.seeds=["WL1", "AbsSNR", "FDR"]',
        "--set", "evolution.random_init=1",
        "--set", "tasks.lenet5-mnist5k.pretrain.epochs=1", "--set", "tasks.lenet5-mnist5k.train_samples=300",
        "--set", "tasks.lenet5-mnist5k.val_samples=200", "--set", "tasks.lenet5-mnist5k.scoring_samples=200",
        "--set", "tasks.vgg-digits.pretrain.epochs=3", "--set", "tasks.vgg-digits.train_samples=300",
        "--set", "tasks.vgg-digits.scoring_samples=200",
    ])
    assert code == 0
    out = capsys.readouterr().out
    assert "hall of fame" in out and "best:" in out
    data = json.loads((tmp_path / "quick" / "results.json").read_text())
    assert len(data["history"]) == 2 and data["failures"] == 0
    assert set(data["tasks"]) == {"lenet5-mnist5k", "vgg-digits"}
    assert 0 < data["best"]["fitness"] <= 1
    assert (tmp_path / "quick" / "report.md").read_text().startswith("# Evolution run `quick`")


def test_resume_refuses_changed_settings_and_bad_input_is_one_clean_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evolve", "--resume", str(tmp_path / "nothing"), "--quiet"]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["evolve", "--resume", str(tmp_path), "--seed", "3"]) == 2
    assert "--seed cannot be given with it" in capsys.readouterr().err
    assert main(["evolve", "--preset", "quik"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'quick'" in err and "Traceback" not in err
    assert main(["evolve", "--set", "evolution.populaton=3"]) == 2
    assert "Did you mean 'population'" in capsys.readouterr().err


def test_list_presets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evolve", "--list-presets"]) == 0
    out = capsys.readouterr().out
    assert "quick" in out and "cpu" in out and "paper" in out
