"""``evoprune bench``: the smoke preset end to end, resume, rendering from JSON, and clear errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from evoprune.bench import RunOptions, get_target, split_list
from evoprune.bench.metrics import run
from evoprune.bench.metrics_report import render_file, summarise
from evoprune.bench.metrics_settings import PRESETS, MetricsBenchSettings
from evoprune.cli import main
from evoprune.errors import ConfigError

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
    with pytest.raises(ConfigError, match="unknown bench target .serch.; choose from metrics"):
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
