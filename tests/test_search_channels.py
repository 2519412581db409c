"""Layer-budget (channel) search: exact budgets, tables that `evoprune prune --table` reproduces, a non-dominated
NSGA-II front, determinism, clear errors."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from evoprune.checkpoint import load_checkpoint
from evoprune.cli import main
from evoprune.criteria import group_scores
from evoprune.data import load_dataset
from evoprune.errors import ConfigError, EvopruneError
from evoprune.models import build_model
from evoprune.prune import PruningError, count_macs_params
from evoprune.search.channels import ChannelSearchConfig, ChannelSpace, search_channels, write_channel_run

# Tiny settings: a handful of allocations, 64 validation images, two small recalibration batches, no fine-tune.
TINY = {"evaluations": 6, "val_samples": 64, "recalibration_batches": 2, "recalibration_batch_size": 16,
        "scoring_samples": 64, "finetune": {"preset": "finetune", "epochs": 0}}


def _config(**changes: object) -> ChannelSearchConfig:
    from evoprune.config import from_data

    return from_data(ChannelSearchConfig, {**TINY, **changes})


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", num_samples=240, num_classes=4, image_size=12)


def _net(name: str, **kwargs: object) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(name, in_channels=1, num_classes=4, image_size=(12, 12), **kwargs)
    g = torch.Generator().manual_seed(1)
    for m in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    return _net("resnet_cifar", depth=8, width=0.5)


@pytest.mark.parametrize("name,kwargs", [("resnet_cifar", {"depth": 8, "width": 0.5}),
                                         ("mobilenetv2", {"width": 0.25}), ("vgg", {"depth": 11, "width": 0.125})])
def test_cost_model_is_the_counter(data, name: str, kwargs: dict) -> None:
    model = _net(name, **kwargs)
    scores = group_scores(model, "l1", data, samples=32)
    space = ChannelSpace(model, scores, data.train.x[:1], min_keep=0.1, check_samples=0)
    rng = random.Random(3)
    for _ in range(4):  # random allocations: the learnt polynomial gives the counter's MACs and parameters
        allocation = tuple(rng.randint(lo, w) for lo, w in zip(space.lower, space.widths))
        assert space.costs.cost(allocation) == count_macs_params(space.costs.prune(allocation), data.train.x[:1])


@pytest.mark.parametrize("algorithm", ["sa", "ga"])
def test_budget_met_exactly_as_reported(data, resnet, algorithm: str, tmp_path: Path) -> None:
    result = search_channels(resnet, data, _config(algorithm=algorithm, macs_target=0.5), seed=0)
    limit = result.budget["limit"]
    assert limit == int(0.5 * result.base["macs"])
    assert len([r for r in result.records if r["origin"] == "search"]) <= TINY["evaluations"]
    assert all(r["macs"] <= limit for r in result.records)
    chosen = result.record("chosen")
    assert chosen is not None and chosen["accuracy"] == max(r["accuracy"] for r in result.records)
    pruned = ChannelSpace(resnet, group_scores(resnet, "eq3", data, samples=64), data.train.x[:1]).costs.prune(
        tuple(chosen["keep"]))
    assert count_macs_params(pruned, data.train.x[:1]) == (chosen["macs"], chosen["params"])
    # repair puts every searched allocation on the boundary: no group can take one more channel
    paths = write_channel_run(result, tmp_path)
    assert {"results", "table_chosen", "table_uniform", "table_global", "front_plot", "keep_plot"} <= set(paths)
    assert json.loads(paths["results"].read_text())["records"][chosen["index"]]["keep"] == chosen["keep"]


def test_params_target_and_loss_objective(data, resnet) -> None:
    result = search_channels(resnet, data, _config(macs_target=None, params_target=0.4, objective="loss"), seed=1)
    assert result.budget["kind"] == "params"
    assert all(r["params"] <= result.budget["limit"] for r in result.records)
    assert result.record("chosen")["loss"] == min(r["loss"] for r in result.records)


def test_nsga2_front_is_non_dominated(data, resnet, tmp_path: Path) -> None:
    result = search_channels(resnet, data, _config(algorithm="nsga2", macs_target=None, evaluations=14,
                                                   nsga2={"population": 6}), seed=0)
    front = [result.records[i] for i in result.front]
    assert front and result.chosen is None
    for r in front:
        assert not any(o["accuracy"] >= r["accuracy"] and o["macs_kept"] <= r["macs_kept"]
                       and (o["accuracy"] > r["accuracy"] or o["macs_kept"] < r["macs_kept"]) for o in result.records)
    write_channel_run(result, tmp_path)
    assert len(list((tmp_path / "tables").glob("front-*.json"))) == len(front)


def test_bad_input_errors(data, resnet, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="give --macs-target"):
        _config(macs_target=None)
    with pytest.raises(ConfigError, match="not both"):
        _config(params_target=0.5)
    with pytest.raises(ConfigError, match="macs_target"):
        _config(macs_target=1.5)
    with pytest.raises(PruningError, match="cannot be met"):
        search_channels(resnet, data, _config(macs_target=0.001, min_keep=0.5), seed=0)
    with pytest.raises(EvopruneError):
        search_channels(resnet, data, _config(metric="no_such_metric"), seed=0)
    with pytest.raises(PruningError, match="unknown group"):
        search_channels(resnet, data, _config(), seed=0, references={"mine": {"no_such_layer": 3}})
    for argv, message in (
        (["search", "--space", "channels", "--preset", "improved"], "--preset does not apply"),
        (["search", "--space", "channels", "--algorithm", "both"], "one algorithm"),
        (["search", "--space", "channels", "--pareto", "--algorithm", "sa"], "--pareto runs NSGA-II"),
        (["search", "--algorithm", "nsga2"], "add --space channels"),
        (["search", "--macs-target", "0.5"], "does not apply to --space weights"),
    ):
        assert main([*argv, "--quiet"]) != 0, argv
        captured = capsys.readouterr()
        assert message in captured.out + captured.err, argv


def _cli_search(tmp: Path, out: str, *extra: str) -> dict:
    code = main(["search", "--space", "channels", "--model", "resnet_cifar", "--data", "synthetic", "--train-epochs",
                 "1", "--evaluations", "5", "--val-samples", "64", "--set", "recalibration_batches=2",
                 "--set", "scoring_samples=64", "--finetune-epochs", "1", "--quiet", "--out", str(tmp / out), *extra])
    assert code == 0
    return json.loads((tmp / out / "results.json").read_text())


def test_cli_table_reproduces_the_network_through_prune(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    results = _cli_search(tmp_path, "run", "--macs-target", "0.6", "--metric", "l1")
    chosen = results["records"][results["chosen"]]
    assert results["finetuned"]["chosen"]["test_accuracy"] is not None and chosen["macs"] <= results["budget"]["limit"]
    checkpoint = results["machine"]["checkpoint"]
    assert main(["prune", "--checkpoint", checkpoint, "--metric", "l1", "--table", str(tmp_path / "run/tables/chosen.json"),
                 "--finetune-epochs", "0", "--no-latency", "--quiet", "--out", str(tmp_path / "p.pt")]) == 0
    report = json.loads((tmp_path / "p.json").read_text())
    widths = [g["width"] for g in results["groups"]]
    assert report["after"]["macs"] == chosen["macs"] and report["after"]["params"] == chosen["params"]
    assert [report["after"]["widths"][g["name"]] for g in results["groups"]] == chosen["keep"]
    assert any(k < w for k, w in zip(chosen["keep"], widths))
    model, _ = load_checkpoint(tmp_path / "p.pt")
    assert sum(p.numel() for p in model.parameters()) == chosen["params"]
    # the table refuses another network, and prune refuses a table with other "what to remove" options
    assert main(["prune", "--model", "vgg", "--model-arg", "depth=11", "--data", "synthetic", "--table",
                 str(tmp_path / "run/tables/chosen.json"), "--quiet", "--out", str(tmp_path / "q.pt")]) != 0
    assert main(["prune", "--checkpoint", checkpoint, "--ratio", "0.2", "--table",
                 str(tmp_path / "run/tables/chosen.json"), "--quiet", "--out", str(tmp_path / "r.pt")]) != 0


@pytest.mark.slow
def test_same_seed_same_allocations_in_fresh_processes(tmp_path: Path) -> None:
    script = (
        "import json, sys, torch\n"
        "from evoprune.data import load_dataset\nfrom evoprune.models import build_model\n"
        "from evoprune.config import from_data\n"
        "from evoprune.search.channels import ChannelSearchConfig, search_channels\n"
        "torch.manual_seed(0)\n"
        "data = load_dataset('synthetic', num_samples=240, num_classes=4, image_size=12)\n"
        "model = build_model('resnet_cifar', in_channels=1, num_classes=4, image_size=(12, 12), depth=8, width=0.5)\n"
        f"config = from_data(ChannelSearchConfig, {{**{TINY!r}, 'algorithm': 'ga', 'ga': {{'population': 4}}}})\n"
        "r = search_channels(model.eval(), data, config, seed=5)\n"
        "print(json.dumps([[x['keep'], x['macs'], x['loss'], x['accuracy']] for x in r.records] + [r.chosen]))\n"
    )
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
            for _ in range(2)]
    assert runs[0] == runs[1] and len(json.loads(runs[0])) > 3
