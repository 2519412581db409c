"""End to end: search_masks → SearchResult → run directory, the CLI, and clear errors for bad settings."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from evoprune.checkpoint import save_checkpoint
from evoprune.cli import main
from evoprune.data import load_dataset
from evoprune.errors import ConfigError
from evoprune.models import build_model
from evoprune.search import apply_masks, load_masks, preset, search_masks, write_run
from evoprune.train import TrainConfig, train


@pytest.fixture(scope="module")
def trained():
    data = load_dataset("synthetic", seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", in_channels=1, num_classes=4, image_size=(12, 12))
    train(model, data, TrainConfig(epochs=3, optimizer="adam", lr=1e-2, batch_size=32), progress=False, device="cpu")
    return model.eval(), data


def small_seed_config(**overrides):
    return preset("seed", sa={"iterations": 8}, ga={"generations": 2}, cap_reference_loss=0.05, **overrides)


def test_run_directory_has_results_history_masks_and_plots(trained, tmp_path) -> None:
    model, data = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = search_masks(model, data, algorithm="sa", config=small_seed_config(), device="cpu")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the search must not touch weights"
    paths = write_run(result, tmp_path)
    summary = json.loads(paths["results"].read_text())
    for key in ("accuracy", "loss", "sparsity", "layers", "evaluations", "wall_time_s", "trade_off", "baselines",
                "baseline", "final", "phases", "config", "machine"):
        assert key in summary
    assert set(summary["sparsity"]) == {"global", "mean_layer"}
    assert summary["trade_off"] == pytest.approx(
        summary["sparsity"]["mean_layer"] * summary["accuracy"] / summary["baseline"]["test"]["accuracy"])
    assert [row["layer"] for row in summary["layers"]] == list(result.masks)
    assert summary["evaluations"] == len(result.layers) * 9
    assert all(p["ms_per_evaluation"] > 0 for p in summary["phases"])
    lines = paths["history"].read_text().splitlines()
    assert len(lines) == len(result.history) and json.loads(lines[0])["kind"] == "start"
    masks = load_masks(paths["masks"])
    assert all(torch.equal(masks[k], result.masks[k]) for k in masks)
    for key in ("history_plot", "layers_plot"):
        assert paths[key].stat().st_size > 1000
    assert {b["kind"] for b in summary["baselines"]} == {"random_global", "random_layer", "magnitude_global", "magnitude_layer"}
    for b in summary["baselines"]:
        assert b["sparsity_global"] == pytest.approx(result.sparsity["global"])


def test_improved_with_finetuning_delivers_masked_weights(trained) -> None:
    model, data = trained
    config = preset("improved", sa={"iterations": 10, "joint_iterations": 10}, finetune_epochs=1)
    result = search_masks(model, data, algorithm="sa", config=config, device="cpu")
    assert result.selection_split == "val" and result.finetuned is not None
    assert set(result.finetuned) == {"val", "test"}
    assert all("finetuned" in b for b in result.baselines)
    fresh = build_model("mlp", in_channels=1, num_classes=4, image_size=(12, 12))
    result.apply_to(fresh)
    assert prune.is_pruned(fresh)
    for name, mask in result.masks.items():
        assert bool((fresh.get_submodule(name).weight[~mask] == 0).all())


def test_bad_settings_are_clear_errors(trained) -> None:
    model, data = trained
    with pytest.raises(ConfigError, match="budget must be > 0"):
        preset("improved", budget=0)
    with pytest.raises(ConfigError, match="budget must be > 0"):
        preset("improved", budget=-0.1)
    with pytest.raises(ConfigError, match="unknown search preset"):
        preset("fastest")
    with pytest.raises(ConfigError, match="unknown setting 'temperature'"):
        preset("seed", temperature=3)
    with pytest.raises(ConfigError, match="unknown setting 'sa.iterationz'. Did you mean 'iterations'"):
        preset("seed", sa={"iterationz": 3})
    with pytest.raises(ConfigError, match="finetune.lr must be a number"):
        preset("seed", finetune={"lr": "fast"})
    assert preset("improved", finetune={"epochs": 9}).finetune.lr == 2e-3  # merged into the preset's recipe
    with pytest.raises(ConfigError, match="unknown layer"):
        search_masks(model, data, config=small_seed_config(), layers=["fc99"], device="cpu")
    with pytest.raises(ConfigError, match="algorithm"):
        search_masks(model, data, algorithm="pso", config=small_seed_config(), device="cpu")
    with pytest.raises(ConfigError, match="layer_indices"):
        search_masks(model, data, config=small_seed_config(layer_indices=(0,)), device="cpu")
    pruned = apply_masks(build_model("mlp", in_channels=1, num_classes=4, image_size=(12, 12)),
                         {"classifier": torch.ones(4, 128, dtype=torch.bool)})
    with pytest.raises(ConfigError, match="already carries"):
        search_masks(pruned, data, config=small_seed_config(), device="cpu")


def test_layers_subset_and_cap_warning(trained) -> None:
    model, data = trained
    layer = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    result = search_masks(model, data, config=preset("seed", sa={"iterations": 3}, baselines=False),
                          layers=[layer], device="cpu")
    assert list(result.masks) == [layer]
    caps_below_baseline = result.baseline["test"]["loss"] >= result.phases[0]["limit"]
    assert bool(result.warnings) == caps_below_baseline


def test_cli_runs_both_algorithms_from_a_checkpoint(trained, tmp_path) -> None:
    model, _ = trained
    ckpt = save_checkpoint(tmp_path / "mlp.pt", model, arch="mlp",
                           arch_kwargs={"in_channels": 1, "num_classes": 4, "image_size": (12, 12)},
                           meta={"dataset": "synthetic", "seed": 0})
    out = tmp_path / "run"
    code = main(["search", "--checkpoint", str(ckpt), "--algorithm", "both", "--iterations", "4", "--generations", "1",
                 "--cap-reference-loss", "0.05", "--out", str(out), "--quiet"])
    assert code == 0
    for algorithm in ("sa", "ga"):
        summary = json.loads((out / algorithm / "results.json").read_text())
        assert summary["algorithm"] == algorithm and summary["preset"] == "seed"
    assert (out / "search.png").stat().st_size > 1000 and (out / "layers.png").stat().st_size > 1000
    assert main(["search", "--checkpoint", str(ckpt), "--layers", "nope", "--quiet", "--out", str(out)]) == 2
    assert main(["search", "--checkpoint", str(ckpt), "--preset", "improved", "--budget", "0", "--quiet"]) == 2
