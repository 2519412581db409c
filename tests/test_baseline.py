"""The one baseline path: content-addressed reuse, complete checkpoint metadata, and commands that work on the
data a checkpoint was trained on (and refuse other data)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from evoprune.baseline import META_KEYS, BaselineSpec, DataSpec, checkpoint_data, get_baseline
from evoprune.checkpoint import load_checkpoint, save_checkpoint
from evoprune.cli import main
from evoprune.data import FASHION_SYSTEM_DIR
from evoprune.errors import ConfigError
from evoprune.models import build_model
from evoprune.train import TrainConfig

RECIPE = TrainConfig(epochs=1, batch_size=64, optimizer="adam", lr=1e-3)
TINY = BaselineSpec("mlp", DataSpec("digits", split_seed=3, normalize=True), RECIPE, seed=5, model_args={"hidden": 8})


def one_line_error(capsys: pytest.CaptureFixture[str], *fragments: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("evoprune: error:") and len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_the_cache_returns_the_same_checkpoint_for_the_same_spec(tmp_path: Path) -> None:
    first = get_baseline(TINY, cache_dir=tmp_path)
    again = get_baseline(TINY, cache_dir=tmp_path)
    assert not first.reused and again.reused and again.checkpoint == first.checkpoint
    for name, weight in first.model.state_dict().items():
        assert torch.equal(weight, again.model.state_dict()[name])
    assert again.meta == first.meta and again.arch_kwargs["hidden"] == 8
    assert torch.equal(again.data.val.y, first.data.val.y)


def test_a_changed_recipe_or_thread_count_trains_a_new_baseline(tmp_path: Path) -> None:
    first = get_baseline(TINY, cache_dir=tmp_path)
    other = get_baseline(BaselineSpec(TINY.model, TINY.data, RECIPE.with_overrides(lr=2e-3), seed=TINY.seed,
                                      model_args=TINY.model_args), cache_dir=tmp_path)
    assert not other.reused and other.checkpoint != first.checkpoint
    assert other.meta["train_config"]["lr"] == 2e-3 and first.meta["train_config"]["lr"] == 1e-3
    assert TINY.key(threads=1) != TINY.key(threads=2) != TINY.key()
    assert len(list(tmp_path.glob("*.pt"))) == 2


def test_a_fixed_path_is_reused_only_while_its_key_matches(tmp_path: Path) -> None:
    out = tmp_path / "model.pt"
    assert not get_baseline(TINY, out=out).reused
    assert get_baseline(TINY, out=out).reused
    assert not get_baseline(TINY, out=out, reuse=False).reused  # `evoprune train` always trains
    changed = BaselineSpec(TINY.model, TINY.data, RECIPE, seed=6, model_args=TINY.model_args)
    retrained = get_baseline(changed, out=out)
    assert not retrained.reused and load_checkpoint(out)[1]["meta"]["seed"] == 6
    with pytest.raises(ConfigError, match="exactly one of cache_dir"):
        get_baseline(TINY)


def test_the_metadata_names_model_data_split_recipe_seed_and_scores(tmp_path: Path) -> None:
    base = get_baseline(TINY, cache_dir=tmp_path)
    meta = load_checkpoint(base.checkpoint)[1]["meta"]
    assert set(META_KEYS) <= set(meta)
    assert (meta["model"], meta["model_args"], meta["dataset"]) == ("mlp", {"hidden": 8}, "digits")
    assert (meta["split_seed"], meta["val_fraction"], meta["normalize"], meta["seed"]) == (3, 0.2, True, 5)
    assert len(meta["mean"]) == len(meta["std"]) == 1 and meta["std"][0] > 0  # the standardisation it was trained with
    assert meta["train_config"] == RECIPE.to_dict()
    assert meta["best_epoch"] == 1 and 0 <= meta["val_accuracy"] <= 1 and 0 <= meta["test_accuracy"] <= 1
    assert meta["test_loss"] > 0 and meta["baseline_key"] == TINY.key()


def test_subsets_are_seeded_and_sized() -> None:
    spec = DataSpec("digits", split_seed=1, train_samples=100, eval_samples=50)
    a, b = spec.load(), spec.load()
    assert a.sizes() == {"train": 100, "val": 50, "test": 50} and torch.equal(a.train.y, b.train.y)
    with pytest.raises(ConfigError, match="train_samples must be ≥ 1"):
        DataSpec("digits", train_samples=0)


def test_checkpoint_data_follows_the_checkpoint_and_says_so() -> None:
    meta = {"dataset": "fashion", "split_seed": 4, "seed": 9, "val_fraction": 0.1, "normalize": True}
    spec, line = checkpoint_data(meta, source="checkpoint m.pt")
    assert spec == DataSpec("fashion", split_seed=4, val_fraction=0.1, normalize=True)
    assert line == ("data for checkpoint m.pt: fashion (checkpoint), split seed 4 (checkpoint), val_fraction 0.1 "
                    "(checkpoint), normalised (checkpoint)")
    spec, line = checkpoint_data(meta, source="c", dataset="Fashion", split_seed=2, normalize=False)
    assert (spec.split_seed, spec.normalize) == (2, False) and "split seed 2 (given)" in line
    # before split_seed existed, `evoprune train` split with its one seed; a checkpoint naming none gets the fallback
    assert checkpoint_data({"dataset": "digits", "seed": 7}, source="c")[0].split_seed == 7
    spec, line = checkpoint_data({"dataset": "digits"}, source="c", fallback_seed=3)
    assert spec.split_seed == 3 and "split seed 3 (default)" in line and "val_fraction 0.2 (default)" in line


@pytest.mark.parametrize(("meta", "dataset", "message"), [
    ({"dataset": "fashion"}, "mnist5k", "c was trained on 'fashion', not on --data 'mnist5k'; leave out --data"),
    ({}, None, "c does not name the dataset it was trained on; give --data NAME"),
    ({"dataset": "digits", "val_fraction": "a lot"}, None, "val_fraction must be a number"),
])
def test_checkpoint_data_refuses(meta: dict, dataset: str | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        checkpoint_data(meta, source="c", dataset=dataset)


@pytest.fixture(scope="module")
def fashion_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny MLP trained on 600 Fashion-MNIST images: same input shape and classes as MNIST.

    Module-scoped fixtures are built before ``require_fashion`` runs, so an absent dataset is skipped here too."""
    if not (FASHION_SYSTEM_DIR.is_dir() or os.environ.get("EVOPRUNE_FASHION_DIR")):
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    spec = BaselineSpec("mlp", DataSpec("fashion", split_seed=1, train_samples=600, eval_samples=300), RECIPE,
                        model_args={"hidden": 16})
    return get_baseline(spec, out=tmp_path_factory.mktemp("fashion") / "mlp.pt").checkpoint


def test_prune_fine_tunes_a_fashion_checkpoint_on_fashion(require_fashion: None, fashion_checkpoint: Path,
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pruned.pt"
    assert main(["prune", "--checkpoint", str(fashion_checkpoint), "--metric", "WL1", "--ratio", "0.5",
                 "--finetune-epochs", "1", "--scoring-samples", "100", "--no-latency", "--quiet",
                 "--out", str(out)]) == 0
    assert "data for checkpoint" in capsys.readouterr().out.replace("\n", " ")
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["data"] == "fashion" and report["steps"][0]["finetune_epochs"] == 1
    meta = load_checkpoint(out)[1]["meta"]
    assert (meta["dataset"], meta["split_seed"], meta["val_fraction"]) == ("fashion", 1, 0.2)


@pytest.mark.parametrize("command", ["prune", "search"])
def test_a_checkpoint_data_mismatch_is_one_line(require_fashion: None, fashion_checkpoint: Path, command: str,
                                                tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    extra = ["--ratio", "0.3", "--no-latency"] if command == "prune" else ["--iterations", "2"]
    assert main([command, "--checkpoint", str(fashion_checkpoint), "--data", "mnist5k", "--quiet", *extra,
                 "--out", str(tmp_path / "o")]) == 2
    one_line_error(capsys, "was trained on 'fashion', not on --data 'mnist5k'", "leave out --data")


def test_a_checkpoint_without_a_dataset_needs_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "anon.pt"
    kwargs = {"in_channels": 1, "num_classes": 10, "image_size": (8, 8), "hidden": 8}
    save_checkpoint(path, build_model("mlp", **kwargs), arch="mlp", arch_kwargs=kwargs, meta={})
    argv = ["prune", "--checkpoint", str(path), "--ratio", "0.3", "--no-latency", "--finetune-epochs", "0", "--quiet",
            "--out", str(tmp_path / "p.pt")]
    assert main(argv) == 2
    one_line_error(capsys, "does not name the dataset it was trained on; give --data NAME")
    assert main([*argv, "--data", "digits"]) == 0


def test_train_set_overrides_the_recipe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.pt"
    base = ["train", "--model", "mlp", "--model-arg", "hidden=8", "--data", "digits", "--epochs", "1", "--quiet",
            "--out", str(out)]
    assert main([*base, "--lr", "0.5", "--set", "lr=0.01", "--set", "milestones=[0.3,0.6]",
                 "--set", "schedule=step"]) == 0
    recipe = load_checkpoint(out)[1]["meta"]["train_config"]
    assert (recipe["lr"], recipe["milestones"], recipe["schedule"], recipe["epochs"]) == (0.01, [0.3, 0.6], "step", 1)
    capsys.readouterr()
    assert main([*base, "--set", "lrr=0.1"]) == 2
    one_line_error(capsys, "unknown setting 'lrr'", "Did you mean 'lr'?")


def test_an_evolution_task_checkpoint_carries_its_split(tmp_path: Path) -> None:
    from evoprune.evolve import load_config
    from evoprune.evolve.fitness import prepare_task

    config = load_config("quick", {"seed": 7, "evaluation.threads": 1, "tasks.vgg-digits.pretrain.epochs": 1,
                                   "tasks.vgg-digits.model_args.width": 0.125})
    task = next(t for t in config.tasks if t.name == "vgg-digits")
    prepared = prepare_task(task, config, tmp_path)
    meta = load_checkpoint(prepared.checkpoint)[1]["meta"]
    assert (meta["dataset"], meta["split_seed"]) == ("digits", 7) and meta["seed"] != 7  # training seed is derived
    spec, _ = checkpoint_data(meta, source="c", fallback_seed=0)  # what `evoprune search --checkpoint` loads
    assert torch.equal(spec.load().val.y, torch.as_tensor(prepared.bundle.val_y))
    assert prepare_task(task, config, tmp_path).bundle.state.keys() == prepared.bundle.state.keys()
