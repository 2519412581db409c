"""The command line: help, a tiny training run end to end, and clean errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evoprune.checkpoint import load_checkpoint
from evoprune.cli import COMMANDS, main


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_train_command_writes_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run" / "m.pt"
    code = main(["train", "--model", "mlp", "--data", "digits", "--epochs", "6", "--lr", "0.01", "--augment", "none", "--quiet",
                 "--model-arg", "hidden=16", "--out", str(out)])
    assert code == 0
    model, payload = load_checkpoint(out)
    assert payload["arch_kwargs"]["hidden"] == 16
    summary = json.loads(out.with_suffix(".json").read_text())
    assert 0.5 < summary["val_accuracy"] <= 1.0
    assert "test" in capsys.readouterr().out


def test_errors_are_one_line_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--data", "mnist55", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("evoprune: error: unknown dataset") and "Traceback" not in err
