"""``evoprune evolve``: SIGKILL mid-run then --resume equals an uninterrupted run; a small quick preset; errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_evolve_engine import TINY_TOML, summary, tiny_config

from evoprune.cli import main
from evoprune.evolve import evolve


def _results_summary(run_dir: Path) -> dict[str, object]:
    data = json.loads((run_dir / "results.json").read_text())
    return {
        "hof": [(h["formula"], h["fitness"], h["accuracies"], h["evaluations"]) for h in data["hall_of_fame"]],
        "history": [(h["generation"], h["best"], h["mean"], h["best_formula"]) for h in data["history"]],
    }


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "evoprune", "evolve", *args]


@pytest.mark.slow  # ~20-40 s here: two CLI processes (3 s of imports each) plus the reference run
def test_sigkill_mid_run_then_resume_ends_exactly_like_an_uninterrupted_run(tmp_path: Path) -> None:
    reference = evolve(tiny_config(), tmp_path / "reference")
    preset = tmp_path / "tiny.toml"
    preset.write_text(TINY_TOML)
    run_dir = tmp_path / "killed"
    shutil.copytree(tmp_path / "reference" / "models", run_dir / "models")  # same pretrained models, reused
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_cli("--preset", str(preset), "--out", str(run_dir), "--quiet"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint = run_dir / "checkpoint.json"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    killed_at = json.loads(checkpoint.read_text())["generation"]
    assert killed_at < 2 and not (run_dir / "results.json").exists()
    resumed = subprocess.run(_cli("--resume", str(run_dir), "--quiet"), env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "hall of fame" in resumed.stdout
    assert _results_summary(run_dir) == summary(reference)
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]
    assert [e["event"] for e in events].count("resume") == 1


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
    assert "cannot change" in capsys.readouterr().err
    assert main(["evolve", "--preset", "quik"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'quick'" in err and "Traceback" not in err
    assert main(["evolve", "--set", "evolution.populaton=3"]) == 2
    assert "Did you mean 'population'" in capsys.readouterr().err


def test_list_presets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evolve", "--list-presets"]) == 0
    out = capsys.readouterr().out
    assert "quick" in out and "cpu" in out and "paper" in out
