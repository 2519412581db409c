"""``evoprune bench``: the smoke preset end to end, resume, rendering from JSON, and clear errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from evoprune.bench import RunOptions, get_target, split_list
from evoprune.bench.metrics import run
from evoprune.bench.metrics_report import render_file, summarise
from evoprune.bench.metrics_settings import FINETUNE_RECIPE, PRESETS, TRAIN_RECIPE, MetricsBenchSettings
from evoprune.cli import main
from evoprune.config import to_data, with_overrides
from evoprune.errors import ConfigError
from evoprune.train import TrainConfig

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One smoke run through the command line (one seed, two metrics), shared by the tests below."""
    out = tmp_path_factory.mktemp("bench")
    code = main(["bench", "metrics", "--preset", "smoke", "--seeds", "0", "--metrics", "random,eq3", "--threads", "1",
                 "--out", str(out), "--quiet"])
    assert code == 0
    return out


def test_smoke_writes_markdown_and_json(smoke_run: Path) -> None:
    payload = json.loads((smoke_run / "metrics-smoke.json").read_text())
    markdown = (smoke_run / "metrics-smoke.md").read_text()
    assert {(r["model"], r["metric"], r["seed"]) for r in payload["runs"]} == {
        (m, k, 0) for m in ("resnet20", "vgg16") for k in ("random", "eq3")}
    assert payload["settings"]["seeds"] == [0] and payload["settings"]["name"] == "smoke"
    assert payload["command"] == "evoprune bench metrics --preset smoke --seeds 0 --metrics random,eq3 --threads 1"
    for r in payload["runs"]:
        assert 0.0 <= r["test_accuracy"] <= 1.0 and 0.3 < r["macs_kept"] < 0.6
    # every metric of one model gets the same architecture (one uniform ratio)
    widths = [r["widths"] for r in payload["runs"] if r["model"] == "resnet20"]
    assert widths[0] == widths[1]
    assert set(payload["baselines"]) == {"resnet20/0", "vgg16/0"}
    assert "| metric | resnet20 test | resnet20 val pruned | vgg16 test | vgg16 val pruned |" in markdown
    assert "| eq3 (GA_Func2) |" in markdown and "| random |" in markdown
    assert render_file(smoke_run / "metrics-smoke.json") == markdown
    assert list((smoke_run / "baselines").glob("*.pt"))


def test_existing_results_need_resume_or_fresh(smoke_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "metrics", "--preset", "smoke", "--seeds", "0", "--out", str(smoke_run), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "already holds 4 finished runs" in err and "--resume" in err and "--fresh" in err


def test_resume_skips_finished_runs(smoke_run: Path, tmp_path: Path) -> None:
    # A copy of the finished run with one pruning run and one baseline record "lost" (as if killed).
    path = tmp_path / "metrics-smoke.json"
    payload = json.loads((smoke_run / "metrics-smoke.json").read_text())
    lost = payload["runs"].pop()
    payload["baselines"].pop(f"{lost['model']}/0")
    path.write_text(json.dumps(payload))
    settings = replace(PRESETS["smoke"], seeds=(0,), metrics=("random", "eq3"))
    lines: list[str] = []
    report = run(settings, RunOptions(out=tmp_path, name="metrics-smoke", existing="resume", cache=smoke_run / "baselines",
                                      progress=False, command="test", log=lines.append))
    assert (report.runs_done, report.runs_skipped) == (1, 3)
    assert not any("training the baseline" in line for line in lines)  # came from the checkpoint cache
    after = json.loads(path.read_text())
    assert len(after["runs"]) == 4
    redone = next(r for r in after["runs"] if (r["model"], r["metric"]) == (lost["model"], lost["metric"]))
    assert redone["test_accuracy"] == pytest.approx(lost["test_accuracy"])  # deterministic on the CPU
    # nothing left to do: no data is loaded, no model is touched
    again = run(settings, RunOptions(out=tmp_path, name="metrics-smoke", existing="resume", cache=tmp_path / "none",
                                     progress=False, log=lines.append))
    assert (again.runs_done, again.runs_skipped) == (0, 4)
    assert not (tmp_path / "none").exists()


def test_render_reproduces_the_committed_transfer_table() -> None:
    """The Markdown of docs/benchmarks.md's transfer table comes back, byte for byte, from its results JSON."""
    payload = json.loads((RESULTS / "transfer.json").read_text())
    assert render_file(RESULTS / "transfer.json") == (RESULTS / "transfer.md").read_text()
    settings = MetricsBenchSettings.from_dict(payload["settings"])
    table = json.loads(json.dumps(summarise(payload["runs"], payload["baselines"], settings)))
    assert table == payload["table"]


def test_reduced_preset_is_the_protocol_of_the_committed_table() -> None:
    payload = json.loads((RESULTS / "transfer.json").read_text())
    reduced = PRESETS["reduced"]
    assert {r["settings"] for r in payload["runs"]} == {reduced.run_hash()}
    assert set(payload["settings"]["metrics"].split(",")) == set(reduced.metrics)
    assert payload["settings"]["seeds"] == ",".join(map(str, reduced.seeds))


def test_cli_renders_a_results_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "metrics", "--render", str(RESULTS / "transfer.json")]) == 0
    assert "| eq3 (GA_Func2) | 82.22 ± 0.78 |" in capsys.readouterr().out


def test_bad_target_preset_and_settings_are_clear_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["bench", "serch", "--preset", "smoke"])
    assert info.value.code == 2
    assert "invalid choice: 'serch'" in capsys.readouterr().err
    assert main(["bench", "metrics", "--preset", "fast"]) == 2
    assert "unknown preset 'fast' for bench metrics; choose from smoke, reduced, full" in capsys.readouterr().err
    assert main(["bench", "metrics"]) == 2
    assert "--preset" in capsys.readouterr().err
    assert main(["bench", "metrics", "--preset", "smoke", "--models", "resnet56"]) == 2
    assert "choose one or more of resnet20, vgg16" in capsys.readouterr().err
    assert main(["bench", "metrics", "--preset", "smoke", "--set", "finetune.lr=fast"]) == 2
    assert "finetune.lr must be a number, got 'fast'" in capsys.readouterr().err
    assert main(["bench", "metrics", "--preset", "smoke", "--set", "finetun.epochs=2"]) == 2
    assert "unknown setting 'finetun'. Did you mean 'finetune'?" in capsys.readouterr().err
    assert main(["bench", "metrics", "--preset", "smoke", "--set", "train.epochs=0"]) == 2
    assert "train.epochs must be ≥ 1, got 0" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown bench target .serch.; choose from criteria, metrics, search"):
        get_target("serch")
    with pytest.raises(ConfigError, match="unknown preset 'redcued'.*Did you mean reduced"):
        get_target("metrics").preset("redcued")


def test_unknown_metric_fails_before_any_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "metrics", "--preset", "smoke", "--metrics", "eq3,eqq3", "--out", str(tmp_path), "--quiet"])
    assert code == 2
    assert "eqq3" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_metric_lists_keep_formulas_whole() -> None:
    assert split_list("eq3, div(abs(P), add(Q, N)),WL1") == ("eq3", "div(abs(P), add(Q, N))", "WL1")


def test_set_reaches_the_recipes_and_the_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--set finetune.lr=...`` is the recipe every pruned model is fine-tuned with, and it is in the results."""
    import evoprune.bench.metrics as bench_metrics

    recipes: list[TrainConfig] = []
    real = bench_metrics.ChannelPruner

    def spy(*args: object, finetune: TrainConfig, **kwargs: object) -> object:
        recipes.append(finetune)
        return real(*args, finetune=finetune, **kwargs)

    monkeypatch.setattr(bench_metrics, "ChannelPruner", spy)
    code = main(["bench", "metrics", "--preset", "smoke", "--seeds", "0", "--metrics", "WL1", "--models", "resnet20",
                 "--set", "finetune.lr=0.02", "--set", "finetune.momentum=0.5", "--threads", "1", "--out",
                 str(tmp_path), "--quiet"])
    assert code == 0
    assert recipes == [FINETUNE_RECIPE.with_overrides(epochs=1, lr=0.02, momentum=0.5)]
    payload = json.loads((tmp_path / "metrics-smoke.json").read_text())
    assert payload["settings"]["finetune"]["lr"] == 0.02 and payload["settings"]["train"] == to_data(
        TRAIN_RECIPE.with_overrides(epochs=1))
    assert payload["command"].endswith("--threads 1 --set finetune.lr=0.02 --set finetune.momentum=0.5")
    changed = with_overrides(PRESETS["smoke"], {"finetune.lr": 0.02, "finetune.momentum": 0.5})
    assert {r["settings"] for r in payload["runs"]} == {changed.run_hash()} != {PRESETS["smoke"].run_hash()}
    assert "(SGD lr 0.02, cosine)" in (tmp_path / "metrics-smoke.md").read_text()


def test_fingerprints_of_the_presets_did_not_move() -> None:
    """The recipes became settings without changing what the presets hash to, so cached baselines and the
    committed results stay valid; any changed recipe field changes the fingerprint."""
    assert [(p.run_hash(), p.baseline_hash()) for p in PRESETS.values()] == [
        ("e448289afa", "78a8668031"), ("94c82277dd", "4c7b0c9a05"), ("ef67eb9edc", "f8ada58ed2")]
    base = PRESETS["reduced"]
    changes = [{"train.lr": 0.1}, {"train.augment": "none"}, {"train.nesterov": False}, {"finetune.lr": 0.02},
               {"finetune.weight_decay": 0.0}, {"finetune.optimizer": "adam", "finetune.nesterov": False},
               {"finetune.epochs": 2}, {"macs_target": 0.4}]
    hashes = {with_overrides(base, change).run_hash() for change in changes}
    assert len(hashes) == len(changes) and base.run_hash() not in hashes
    assert with_overrides(base, {"finetune.lr": 0.02}).baseline_hash() == base.baseline_hash()
    assert with_overrides(base, {"train.weight_decay": 0.0}).baseline_hash() != base.baseline_hash()
    assert with_overrides(base, {"seeds": [5], "metrics": ["eq3"], "device": "cpu"}).run_hash() == base.run_hash()


def test_committed_settings_read_back_as_the_reduced_preset() -> None:
    """The results file written by the former script (flat epochs and lr, comma lists, its own flags) reads as the
    ``reduced`` preset's settings."""
    old = MetricsBenchSettings.from_dict(json.loads((RESULTS / "transfer.json").read_text())["settings"])
    assert replace(old, name="reduced", description=PRESETS["reduced"].description) == PRESETS["reduced"]
    assert MetricsBenchSettings.from_dict(PRESETS["reduced"].to_dict()) == PRESETS["reduced"]
    with pytest.raises(ConfigError, match="settings.finetune.lr must be a number"):
        MetricsBenchSettings.from_dict({**PRESETS["reduced"].to_dict(), "finetune": {"lr": "x"}})
