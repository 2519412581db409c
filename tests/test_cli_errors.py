"""One error path for the command line: bad input is one line and exit 2, a bug is one line and a logged traceback.

Each case is an input from the adversarial audit (issue 10), reproduced and checked for its outcome.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from evoprune.cli import main
from evoprune.data import DatasetSplits, Split
from evoprune.errors import DataError, TrainingError
from evoprune.train import TRAIN_PRESETS, TrainConfig, evaluate, fit_augment_to_images, train

FAST_TRAIN = ["--model", "mlp", "--data", "digits", "--epochs", "1", "--quiet", "--model-arg", "hidden=8"]


def one_line_error(capsys: pytest.CaptureFixture[str], *fragments: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("evoprune: error:"), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Path:
    """A folder nothing can be written in: chmod 555, or /proc for root (who ignores file modes)."""
    if os.geteuid() == 0:
        return Path("/proc")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "mlp.pt"
    assert main(["train", *FAST_TRAIN, "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("device", ["cuda:7", "bogus"])
@pytest.mark.parametrize("command", [["train"], ["prune", "--model", "mlp"], ["search"], ["evolve"], ["demo"],
                                     ["bench", "criteria", "--preset", "smoke"]])
def test_a_bad_device_is_refused_before_any_work(command: list[str], device: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    assert main([*command, "--device", device]) == 2
    one_line_error(capsys, f"--device {device!r}")


def test_an_unknown_model_argument_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--model", "lenet5", "--data", "digits", "--model-arg", "bogus=1", "--quiet"]) == 2
    one_line_error(capsys, "unexpected argument(s) bogus", "it accepts")


def test_an_unexpected_error_is_one_line_and_a_logged_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*_: object, **__: object) -> None:
        raise KeyError("internal bookkeeping")

    monkeypatch.setattr("evoprune.cli.train.get_baseline", broken)
    monkeypatch.setenv("EVOPRUNE_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.delenv("EVOPRUNE_DEBUG", raising=False)
    assert main(["train", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("evoprune: internal error: KeyError: 'internal bookkeeping'") and "Traceback" not in err
    (log,) = (tmp_path / "logs").iterdir()
    assert str(log) in err and "Traceback" in log.read_text() and "def broken" not in err
    assert "raise KeyError" in log.read_text()
    with pytest.raises(KeyError):  # --debug shows the real exception
        main(["--debug", "train", "--quiet"])
    monkeypatch.setenv("EVOPRUNE_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["train", "--quiet"])


@pytest.mark.parametrize("where", ["folder", "under_file", "read_only"])
def test_train_refuses_an_unwritable_out_before_training(where: str, tmp_path: Path, read_only_dir: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("x")
    out = {"folder": tmp_path, "under_file": tmp_path / "afile" / "m.pt", "read_only": read_only_dir / "m.pt"}[where]
    assert main(["train", *FAST_TRAIN, "--out", str(out)]) == 2
    one_line_error(capsys, "--out")
    assert (tmp_path / "afile").read_text() == "x"


def test_prune_refuses_a_read_only_json_before_pruning(digits_checkpoint: Path, tmp_path: Path, read_only_dir: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.pt"
    assert main(["prune", "--checkpoint", str(digits_checkpoint), "--ratio", "0.3", "--finetune-epochs", "0",
                 "--no-latency", "--quiet", "--out", str(out), "--json", str(read_only_dir / "p.json")]) == 2
    one_line_error(capsys, "--json")
    assert not out.exists()  # nothing half done: the checkpoint is not written without its JSON


@pytest.mark.parametrize("out", ["afile", "afile/run"])
def test_search_refuses_a_bad_out_before_searching(out: str, digits_checkpoint: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("x")
    assert main(["search", "--checkpoint", str(digits_checkpoint), "--iterations", "2", "--quiet",
                 "--out", str(tmp_path / out)]) == 2
    one_line_error(capsys, "--out")


def test_search_refuses_a_read_only_out(digits_checkpoint: Path, read_only_dir: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "--checkpoint", str(digits_checkpoint), "--iterations", "2", "--quiet",
                 "--out", str(read_only_dir / "run")]) == 2
    one_line_error(capsys, "--out", "cannot write")


@pytest.mark.parametrize("command", ["search", "prune"])
def test_a_checkpoint_for_other_images_is_refused(command: str, digits_checkpoint: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A checkpoint that names no dataset is checked against the shape of the --data it is given."""
    from evoprune.checkpoint import load_checkpoint, save_checkpoint

    model, payload = load_checkpoint(digits_checkpoint)
    anonymous = save_checkpoint(tmp_path / "anonymous.pt", model, arch=payload["arch"],
                                arch_kwargs=payload["arch_kwargs"], meta={})
    extra = ["--iterations", "2"] if command == "search" else ["--ratio", "0.3", "--no-latency"]
    assert main([command, "--checkpoint", str(anonymous), "--data", "mnist5k", "--quiet", *extra,
                 "--out", str(tmp_path / "o")]) == 2
    one_line_error(capsys, "built for 1×8×8 images", "mnist5k has 1×28×28")


@pytest.mark.parametrize(("argv", "message"), [
    (["--latency-batch", "-1"], "--latency-batch must be ≥ 1"),
    (["--lr", "inf"], "lr must be a finite number > 0 (at most 3.4e+38), got inf"),
    (["--macs-target", "0.5"], "ratio 0.3 would be ignored"),
])
def test_prune_options_are_checked(argv: list[str], message: str, digits_checkpoint: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prune", "--checkpoint", str(digits_checkpoint), "--ratio", "0.3", "--quiet",
                 "--out", str(tmp_path / "p.pt"), *argv]) == 2
    one_line_error(capsys, message)


@pytest.mark.parametrize("lr", ["inf", "nan", "-1", "1e300"])
def test_train_refuses_a_non_finite_learning_rate(lr: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", *FAST_TRAIN, "--lr", lr, "--out", str(tmp_path / "m.pt")]) == 2
    one_line_error(capsys, "lr must be a finite number > 0")
    assert not (tmp_path / "m.pt").exists()


def test_diverging_training_stops_with_an_error(tiny_data: DatasetSplits) -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    with pytest.raises(TrainingError, match="non-finite in epoch 1.*lower the learning rate"):
        train(model, tiny_data, TrainConfig(epochs=3, optimizer="sgd", lr=1e30, batch_size=16), progress=False)


def test_evaluation_refuses_empty_and_non_finite_sets() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    with pytest.raises(DataError, match="empty set"):
        evaluate(model, torch.zeros(0, 1, 2, 2), torch.zeros(0, dtype=torch.long))
    x = torch.rand(5, 1, 2, 2)
    x[1, 0, 0, 0] = float("nan")
    with pytest.raises(DataError, match="1 of 5 evaluation samples contain NaN"):
        evaluate(model, x, torch.zeros(5, dtype=torch.long))


def test_the_default_recipe_drops_shifts_for_tiny_images(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert fit_augment_to_images(TRAIN_PRESETS["lenet5"], (8, 8)).augment == "none"
    assert fit_augment_to_images(TRAIN_PRESETS["lenet5"], (28, 28)).augment == "shift"
    assert main(["train", *FAST_TRAIN, "--out", str(tmp_path / "m.pt")]) == 0
    assert "augment none" in capsys.readouterr().out
    assert main(["train", *FAST_TRAIN, "--preset", "lenet5", "--out", str(tmp_path / "m.pt")]) == 0
    assert "augment shift" in capsys.readouterr().out  # a named preset is taken as it is


@pytest.fixture
def tiny_data() -> DatasetSplits:
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 1, 8, 8, generator=g), torch.arange(64) % 10

    def split(n: int) -> Split:
        return Split(x[:n].clone(), y[:n].clone())

    return DatasetSplits(name="tiny", train=split(64), val=split(32), test=split(32), num_classes=10,
                         class_names=tuple(map(str, range(10))))
