"""``evoprune bench``: what every target shares (targets, presets, ``--set``, existing results, clear errors).

The end-to-end runs of each target are in ``test_bench_criteria.py`` and ``test_bench_search.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import evoprune.bench.criteria as bench_criteria
from evoprune.bench import available_targets, get_target, split_list
from evoprune.bench.criteria_settings import FINETUNE_RECIPE, PRESETS
from evoprune.cli import main
from evoprune.config import with_overrides
from evoprune.errors import ConfigError
from evoprune.train import TrainConfig

# One network, one metric, the oracle, one seed, one ratio: the cheapest run of the criteria pipeline.
TINY = ["--preset", "smoke", "--seeds", "0", "--metrics", "WL1", "--models", "resnet20", "--set", 'references=["oracle"]',
        "--set", "ratios=[0.5]", "--set", "finetune_ratios=[0.5]", "--set", "finetune_seeds=[0]", "--threads", "1",
        "--quiet"]


def test_the_targets_are_criteria_search_and_budget() -> None:
    """``bench metrics`` (one cut at ≈50% MACs, a table that could not tell metrics apart) is gone: one transfer
    benchmark, ``criteria``."""
    assert available_targets() == ["criteria", "search", "budget"]


def test_bad_target_preset_and_settings_are_clear_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["bench", "metrics", "--preset", "reduced"])
    assert info.value.code == 2
    assert "invalid choice: 'metrics'" in capsys.readouterr().err
    assert main(["bench", "criteria", "--preset", "fast"]) == 2
    assert "unknown preset 'fast' for bench criteria; choose from smoke, cpu, full" in capsys.readouterr().err
    assert main(["bench", "criteria"]) == 2
    assert "--preset" in capsys.readouterr().err
    assert main(["bench", "criteria", "--preset", "smoke", "--models", "resnet56"]) == 2
    assert "choose one or more of resnet20, vgg16, mobilenetv2" in capsys.readouterr().err
    assert main(["bench", "criteria", "--preset", "smoke", "--set", "finetune.lr=fast"]) == 2
    assert "finetune.lr must be a number, got 'fast'" in capsys.readouterr().err
    assert main(["bench", "criteria", "--preset", "smoke", "--set", "finetun.epochs=2"]) == 2
    assert "unknown setting 'finetun'. Did you mean 'finetune'?" in capsys.readouterr().err
    assert main(["bench", "criteria", "--preset", "smoke", "--set", "train.epochs=0"]) == 2
    assert "train.epochs must be ≥ 1 (the baselines are trained), got 0" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown bench target .serch.; choose from criteria, search, budget. Did you mean"):
        get_target("serch")
    with pytest.raises(ConfigError, match="unknown preset 'cpuu'.*Did you mean cpu"):
        get_target("criteria").preset("cpuu")


def test_unknown_metric_fails_before_any_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "criteria", "--preset", "smoke", "--metrics", "eq3,eqq3", "--out", str(tmp_path), "--quiet"])
    assert code == 2
    assert "eqq3" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_metric_lists_keep_formulas_whole() -> None:
    assert split_list("eq3, div(abs(P), add(Q, N)),WL1") == ("eq3", "div(abs(P), add(Q, N))", "WL1")


def test_set_reaches_the_recipe_and_the_results_and_a_second_run_needs_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``--set finetune.lr=...`` is the recipe every pruned model is fine-tuned with and is in the results; a
    results file that holds runs is never overwritten without ``--resume`` or ``--fresh``."""
    recipes: list[TrainConfig] = []
    real = bench_criteria.train

    def spy(*args: object, **kwargs: object) -> object:
        recipes.append(args[2])  # train(model, data, recipe, ...)
        return real(*args, **kwargs)

    monkeypatch.setattr(bench_criteria, "train", spy)
    command = ["bench", "criteria", *TINY, "--set", "finetune.lr=0.02", "--set", "finetune.momentum=0.5", "--out",
               str(tmp_path)]
    assert main(command) == 0
    assert recipes == [FINETUNE_RECIPE.with_overrides(epochs=1, lr=0.02, momentum=0.5)] * 2  # WL1 and the oracle
    results = json.loads((tmp_path / "criteria-smoke.json").read_text())
    assert results["settings"]["finetune"]["lr"] == 0.02
    assert results["command"].endswith("--set finetune.lr=0.02 --set finetune.momentum=0.5")
    changed = with_overrides(PRESETS["smoke"], ["ratios=[0.5]", "finetune_ratios=[0.5]", "finetune.lr=0.02",
                                                "finetune.momentum=0.5"])
    assert {r["settings"] for r in results["records"]} == {changed.cell_hash("resnet20")}
    assert changed.cell_hash("resnet20") != with_overrides(changed, ["finetune.lr=0.01"]).cell_hash("resnet20")
    capsys.readouterr()
    before = (tmp_path / "criteria-smoke.json").read_bytes()
    assert main(command) == 2
    err = capsys.readouterr().err
    assert "already holds 2 finished runs" in err and "--resume" in err and "--fresh" in err
    assert (tmp_path / "criteria-smoke.json").read_bytes() == before
