"""Per-layer sparsity search: the global sparsity met exactly, magnitude inside each layer, the search never
worse than its start on validation, determinism, clear errors."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
import torch
from torch import nn

from evoprune.config import from_data
from evoprune.data import load_dataset
from evoprune.errors import ConfigError
from evoprune.models import build_model
from evoprune.search.sparsity import SparsitySearchConfig, SparsitySpace, search_sparsities

TINY = {"evaluations": 8, "val_samples": 64, "levels": 20, "finetune": {"preset": "finetune", "epochs": 0}}


def _config(**changes: object) -> SparsitySearchConfig:
    return from_data(SparsitySearchConfig, {**TINY, **changes})


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", num_samples=240, num_classes=4, image_size=28)


def _lenet() -> nn.Module:
    torch.manual_seed(0)
    return build_model("lenet5_d2l", in_channels=1, num_classes=4).eval()


def test_every_allocation_meets_the_sparsity_and_masks_keep_the_largest_weights(data) -> None:
    model = _lenet()
    result = search_sparsities(model, data, _config(sparsity=0.7), seed=0)
    limit = result["budget"]["kept_limit"]
    assert limit == int(0.3 * sum(result["sizes"]))
    assert all(sum(r["kept"]) <= limit and r["sparsity"] >= 0.7 for r in result["records"])
    space = SparsitySpace(model, levels=20)
    chosen = result["records"][result["chosen"]]
    assert sum(chosen["kept"]) > limit - max(result["sizes"]) / 20  # on the budget's boundary (within a level)
    for name, mask in space.masks(tuple(chosen["keep"])).items():
        w = model.get_submodule(name).weight.detach().abs()
        assert int(mask.sum()) == chosen["kept"][space.names.index(name)]
        if 0 < int(mask.sum()) < mask.numel():
            assert w[mask].min() >= w[~mask].max()
    start = max(result["records"][i]["accuracy"] for i in result["references"].values())
    assert chosen["accuracy"] >= start


def test_references_are_uniform_and_global_magnitude(data) -> None:
    space = SparsitySpace(_lenet(), levels=20)
    budget = space.budget(0.6)
    uniform = space.uniform_at(budget)
    assert len(set(uniform)) == 1 and space.fits(uniform, budget)
    glob = space.global_at(budget, random.Random(0))
    assert space.fits(glob, budget) and glob != uniform


def test_same_seed_same_records_in_fresh_processes(tmp_path) -> None:
    code = ("import json, torch; from evoprune.data import load_dataset; from evoprune.models import build_model;"
            "from evoprune.config import from_data; from evoprune.search.sparsity import SparsitySearchConfig, "
            "search_sparsities; torch.manual_seed(0); m = build_model('lenet5_d2l', in_channels=1, num_classes=4).eval();"
            "d = load_dataset('synthetic', num_samples=240, num_classes=4, image_size=28);"
            f"c = from_data(SparsitySearchConfig, {TINY!r});"
            "r = search_sparsities(m, d, c, seed=3); print(json.dumps([x['keep'] for x in r['records']]))")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(2)]
    assert runs[0] == runs[1] and len(json.loads(runs[0])) >= 3


def test_bad_settings_say_what_and_how(data) -> None:
    with pytest.raises(ConfigError, match="sparsity is the fraction"):
        SparsitySearchConfig(sparsity=1.5)
    with pytest.raises(ConfigError, match="cannot be met"):
        SparsitySpace(_lenet(), levels=20, min_keep=0.5).budget(0.9)


def test_cli_writes_results_and_the_chosen_masks(tmp_path, monkeypatch) -> None:
    from evoprune.cli import main
    from evoprune.search.masks import load_masks

    monkeypatch.chdir(tmp_path)
    assert main(["search", "--space", "sparsity", "--model", "lenet5_d2l", "--data", "synthetic", "--train-epochs", "1",
                 "--evaluations", "5", "--val-samples", "64", "--target-sparsity", "0.7", "--finetune-epochs", "1",
                 "--quiet", "--out", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    chosen = results["records"][results["chosen"]]
    masks = load_masks(tmp_path / "run" / "masks.pt")
    assert list(masks) == results["layers"] and [int(m.sum()) for m in masks.values()] == chosen["kept"]
    assert 1 - sum(chosen["kept"]) / sum(results["sizes"]) >= 0.7
    assert results["finetuned"]["chosen"]["epochs"] == 1


@pytest.mark.parametrize("argv,message", [
    (["--space", "sparsity", "--macs-target", "0.5"], "does not apply to --space sparsity"),
    (["--space", "channels", "--target-sparsity", "0.5"], "use --space sparsity"),
    (["--target-sparsity", "0.5"], "use --space sparsity"),
    (["--space", "sparsity", "--algorithm", "both"], "one algorithm"),
    (["--space", "sparsity", "--pareto"], "use --space channels"),
])
def test_cli_refuses_options_of_another_space(argv: list[str], message: str, capsys) -> None:
    from evoprune.cli import main

    assert main(["search", *argv, "--quiet"]) != 0
    captured = capsys.readouterr()
    assert message in captured.out + captured.err
