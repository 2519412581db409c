"""`prune` and `search` on a damaged checkpoint print one error line and exit 2 (issue 10, item 3)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evoprune.checkpoint import save_checkpoint
from evoprune.cli import main
from evoprune.models import build_model
from evoprune.prune.history import example_input, replay_history


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    return path


def _dataset_123(tmp_path: Path) -> Path:
    return save_checkpoint(tmp_path / "meta.pt", build_model("lenet5"), arch="lenet5", arch_kwargs={},
                           meta={"dataset": 123})


def _index_99999(tmp_path: Path) -> Path:
    history = [["fc1", True, [3]]]
    model = replay_history(build_model("lenet5"), history, example_input({}))
    path = save_checkpoint(tmp_path / "idx.pt", model, arch="lenet5", arch_kwargs={}, pruning_history=history)
    payload = torch.load(path, weights_only=True)
    payload["meta"]["pruning"]["history"] = [["fc1", True, [99999]]]
    torch.save(payload, path)
    return path


@pytest.mark.parametrize(("make", "message"), [
    (_empty, "empty (0 bytes)"),
    (_dataset_123, "field 'meta.dataset'"),
    (_index_99999, "[99999] are outside 0..499"),
])
@pytest.mark.parametrize("command", [
    ["prune", "--metric", "WL1", "--ratio", "0.5", "--finetune-epochs", "0", "--no-latency", "--quiet"],
    ["search", "--quiet"],
])
def test_damaged_checkpoint_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], make,
                                                   message: str, command: list[str]) -> None:
    path = make(tmp_path)
    code = main([*command, "--checkpoint", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("evoprune: error: checkpoint") and message in err and str(path) in err
    assert err.count("\n") == 1 and "Traceback" not in err
