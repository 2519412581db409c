"""Training, evaluation and checkpoints on tiny synthetic data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from evoprune.checkpoint import load_checkpoint, save_checkpoint
from evoprune.data import load_dataset
from evoprune.errors import CheckpointError, ConfigError
from evoprune.models import build_model
from evoprune.train import TRAIN_PRESETS, TrainConfig, augment_batch, evaluate, train


@pytest.fixture(scope="module")
def tiny():
    return load_dataset("synthetic", num_samples=240, num_classes=4, image_size=12)


def small_model(data, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", in_channels=data.in_channels, num_classes=data.num_classes,
                       image_size=data.image_size, hidden=(32,))


def test_training_learns_and_keeps_best_validation_epoch(tiny) -> None:
    model = small_model(tiny)
    before = evaluate(model, tiny.val.x, tiny.val.y).accuracy
    result = train(model, tiny, TrainConfig(epochs=8, batch_size=32, optimizer="adam", lr=1e-2), progress=False)
    after = evaluate(model, tiny.val.x, tiny.val.y)
    assert after.accuracy >= 0.9 > before
    assert len(result.history) == 8 and result.samples_seen == 8 * len(tiny.train)
    assert after.accuracy == pytest.approx(result.best_val_accuracy)
    assert result.best_val_accuracy == max(r["val_accuracy"] for r in result.history)


def test_training_is_deterministic_for_a_seed(tiny) -> None:
    config = TrainConfig(epochs=2, batch_size=16, optimizer="sgd", lr=0.1, momentum=0.9, augment="shift")
    a, b, c = small_model(tiny), small_model(tiny), small_model(tiny)
    train(a, tiny, config, seed=5, progress=False)
    train(b, tiny, config, seed=5, progress=False)
    train(c, tiny, config, seed=6, progress=False)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_schedules_reach_the_expected_final_rate(tiny) -> None:
    for schedule, expected in (("constant", 0.1), ("step", 0.1 * 0.1 ** 2)):
        model = small_model(tiny)
        result = train(model, tiny, TrainConfig(epochs=4, batch_size=64, lr=0.1, schedule=schedule), progress=False)
        assert result.history[-1]["lr"] == pytest.approx(expected)
    model = small_model(tiny)
    result = train(model, tiny, TrainConfig(epochs=4, batch_size=64, lr=0.1, schedule="cosine"), progress=False)
    assert result.history[-1]["lr"] < 0.01


def test_evaluate_matches_a_plain_computation(tiny) -> None:
    model = small_model(tiny).eval()
    got = evaluate(model, tiny.test.x, tiny.test.y, batch_size=7)
    with torch.no_grad():
        logits = model(tiny.test.x)
    assert got.loss == pytest.approx(F.cross_entropy(logits, tiny.test.y).item(), rel=1e-5)
    assert got.accuracy == pytest.approx((logits.argmax(1) == tiny.test.y).float().mean().item())


def test_augmentation_moves_pixels_without_changing_shape() -> None:
    x = torch.zeros(64, 1, 10, 10)
    x[:, :, 4:6, 4:6] = 1.0
    gen = torch.Generator().manual_seed(0)
    shifted = augment_batch(x, "shift", gen)
    assert shifted.shape == x.shape
    assert torch.all(shifted.sum((1, 2, 3)) == 4.0)  # a 2-px shift keeps the centred square inside
    assert (shifted != x).any(dim=(1, 2, 3)).float().mean() > 0.5
    flipped = augment_batch(torch.rand(16, 3, 8, 8), "crop_flip", gen)
    assert flipped.shape == (16, 3, 8, 8)


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ConfigError, match="optimizer"):
        TrainConfig(optimizer="rmsprop")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="lr"):
        TrainConfig(lr=0)
    with pytest.raises(ConfigError, match="unknown setting 'epoch'. Did you mean 'epochs'"):
        TRAIN_PRESETS["lenet5"].with_overrides(epoch=3)


def test_d2l_seed_preset_is_the_seed_recipe() -> None:
    p = TRAIN_PRESETS["d2l_seed"]
    assert (p.optimizer, p.lr, p.batch_size, p.epochs, p.momentum) == ("sgd", 0.1, 128, 50, 0.0)


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    kwargs = {"in_channels": 1, "num_classes": 10, "image_size": (28, 28)}
    model = build_model("lenet5_d2l", **kwargs)
    path = save_checkpoint(tmp_path / "m.pt", model, arch="lenet5_d2l", arch_kwargs=kwargs, meta={"val_accuracy": 0.5})
    loaded, payload = load_checkpoint(path)
    assert payload["meta"]["val_accuracy"] == 0.5
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(model.eval()(x), loaded.eval()(x))


def test_checkpoint_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(corrupt)
    model = build_model("lenet5_d2l")
    path = save_checkpoint(tmp_path / "m.pt", model, arch="lenet5_d2l", arch_kwargs={"num_classes": 10})
    payload = torch.load(path, weights_only=True)
    payload["arch_kwargs"] = {"num_classes": 7}
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(path)


def test_checkpoint_refuses_pickled_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": "evoprune.checkpoint/1", "arch": nn.ReLU(), "arch_kwargs": {}, "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(path)


def test_load_checkpoint_replays_structural_pruning(tmp_path: Path) -> None:
    from evoprune.prune import ChannelPruner, PruneSchedule

    data = load_dataset("synthetic", num_samples=120, num_classes=4, image_size=16)
    kwargs = {"in_channels": 1, "num_classes": 4, "image_size": (16, 16)}
    pruner = ChannelPruner("l1", schedule=PruneSchedule(ratio=0.5), finetune=None, evaluate_test=False,
                           latency_repeats=1).prune(build_model("lenet5", **kwargs), data)
    path = save_checkpoint(tmp_path / "pruned.pt", pruner.model_, arch="lenet5", arch_kwargs=kwargs,
                           pruning_history=pruner.pruning_history_)
    loaded, _ = load_checkpoint(path)
    assert loaded.conv1.out_channels == pruner.model_.conv1.out_channels == 10
    x = data.test.x[:4]
    assert torch.equal(loaded.eval()(x), pruner.model_.eval()(x))


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    from evoprune.atomic import write_atomic

    target = tmp_path / "state.json"
    write_atomic(target, lambda handle: handle.write(b"old"))

    def broken(handle) -> None:
        handle.write(b"half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_atomic(target, broken)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["state.json"]
