"""`evoprune prune`: from a trained checkpoint to a pruned checkpoint, results JSON and ONNX; clean errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evoprune.checkpoint import load_checkpoint
from evoprune.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "resnet.pt"
    assert main(["train", "--model", "resnet_cifar", "--model-arg", "depth=8", "--model-arg", "width=0.5",
                 "--data", "synthetic", "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    return out


def test_prune_checkpoint_to_a_macs_target(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pruned.pt"
    code = main(["prune", "--checkpoint", str(checkpoint), "--metric", "WL1", "--macs-target", "0.5",
                 "--finetune-epochs", "1", "--latency-batch", "8", "--latency-repeats", "2", "--quiet", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "MACs" in text and "CPU latency, batch 8" in text and "channels per prunable layer" in text
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["data"] == "synthetic" and report["metric"] == "WL1"
    assert report["after"]["macs"] < report["before"]["macs"] and 0.4 < report["macs_kept"] < 0.6
    assert report["steps"][0]["finetune_epochs"] == 1 and report["after"]["test_accuracy"] is not None
    model, payload = load_checkpoint(out)
    assert sum(p.numel() for p in model.parameters()) == report["after"]["params"]
    assert payload["meta"]["metric"] == "WL1"


def test_prune_zoo_model_train_free_with_a_formula_and_a_table(tmp_path: Path) -> None:
    out = tmp_path / "p.pt"
    code = main(["prune", "--model", "vgg", "--model-arg", "depth=11", "--model-arg", "width=0.25", "--data", "synthetic",
                 "--metric", "sum(abs(WI))", "--ratio-table", "features.*=0.5", "--ignore", "features.0",
                 "--finetune-epochs", "0", "--no-latency", "--quiet", "--out", str(out)])
    assert code == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert "features.0" not in report["after"]["widths"] and report["after"]["widths"]["features.4"] == 16
    model, _ = load_checkpoint(out)
    assert model.features[0].out_channels == 16 and model.features[4].out_channels == 16
    assert report["steps"][0]["finetune_epochs"] == 0


def test_onnx_export_from_the_command_line(checkpoint: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnx", reason="onnx is not installed (pip install 'evoprune[onnx]')")
    import onnx

    onnx_path = tmp_path / "m.onnx"
    assert main(["prune", "--checkpoint", str(checkpoint), "--metric", "BNScale", "--ratio", "0.5", "--finetune-epochs",
                 "0", "--no-latency", "--quiet", "--out", str(tmp_path / "p.pt"), "--onnx", str(onnx_path)]) == 0
    onnx.checker.check_model(onnx.load(str(onnx_path)))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--metric", "eq33", "--ratio", "0.5"], "unknown metric 'eq33'; did you mean"),
        (["--ratio-table", "conv9=0.5"], "unknown layer 'conv9' in the ratio table"),
        (["--ratio", "1.0"], "would remove every channel"),
        ([], "say what to remove"),
        (["--schedule", "lenet5_paper"], "needs the paper's LeNet-5"),
        (["--schedule", "resnet56_paper", "--ratio", "0.3"], "fixes what is removed"),
    ],
)
def test_errors_are_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    base = ["prune", "--model", "resnet_cifar", "--model-arg", "depth=8", "--data", "synthetic", "--finetune-epochs", "0",
            "--no-latency", "--quiet", "--out", str(tmp_path / "x.pt")]
    assert main(base + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("evoprune: error:") and message in err and "Traceback" not in err
