"""`--set KEY=VALUE`: one override syntax for every command that has a config, checked with one error style."""

from __future__ import annotations

import json

import pytest

from evoprune.cli import build_parser, main
from evoprune.cli.search import _config as search_config


def test_search_set_overrides_any_setting_after_the_options() -> None:
    args = build_parser().parse_args(["search", "--preset", "improved", "--iterations", "9", "--finetune-lr", "0.01",
                                      "--set", "sa.cooling=log", "--set", "finetune.optimizer=sgd",
                                      "--set", "finetune.lr=0.02"])
    config = search_config(args)
    assert config.sa.iterations == 9 and config.sa.cooling == "log"
    assert config.finetune.optimizer == "sgd" and config.finetune.lr == 0.02
    assert config.finetune.schedule == "cosine"  # the rest of the preset's recipe stays


@pytest.mark.parametrize(("setting", "message"), [
    ("sa.coolng=log", "unknown setting 'sa.coolng'. Did you mean 'cooling'?"),
    ("finetune.lr=fast", "finetune.lr must be a number, got 'fast'"),
    ("budget", "expected KEY=VALUE"),
])
def test_search_set_errors_are_one_line(setting: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "--quiet", "--set", setting]) == 2
    err = capsys.readouterr().err
    assert err.startswith("evoprune: error:") and message in err and len(err.strip().splitlines()) == 1


def test_prune_set_reaches_the_fine_tuning_recipe(tmp_path) -> None:
    out = tmp_path / "p.pt"
    assert main(["prune", "--model", "mlp", "--model-arg", "hidden=16", "--data", "digits", "--ratio", "0.25",
                 "--no-latency", "--quiet", "--finetune-epochs", "1", "--lr", "0.05", "--set", "finetune.optimizer=sgd",
                 "--set", "finetune.momentum=0.9", "--out", str(out)]) == 0
    finetune = json.loads(out.with_suffix(".json").read_text())["finetune"]
    assert (finetune["optimizer"], finetune["momentum"], finetune["lr"], finetune["epochs"]) == ("sgd", 0.9, 0.05, 1)


def test_prune_set_names_what_it_reaches(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prune", "--model", "mlp", "--data", "digits", "--ratio", "0.25", "--quiet",
                 "--set", "schedule.ratio=0.5"]) == 2
    assert "unknown setting 'schedule'" in capsys.readouterr().err
