"""``evoprune bench criteria``: the smoke preset end to end (JSON, Markdown, plots), resume, render, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evoprune.bench.criteria_report import render_file
from evoprune.bench.criteria_settings import PRESETS, CriteriaBenchSettings
from evoprune.cli import main
from evoprune.config import with_overrides
from evoprune.errors import ConfigError


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke preset through the command line, shared by the tests below (under a minute on 2 cores)."""
    out = tmp_path_factory.mktemp("criteria")
    assert main(["bench", "criteria", "--preset", "smoke", "--threads", "1", "--out", str(out), "--quiet"]) == 0
    return out


def test_smoke_writes_json_markdown_and_plots(smoke_run: Path) -> None:
    results = json.loads((smoke_run / "criteria-smoke.json").read_text())
    settings = PRESETS["smoke"]
    rows = {*settings.metrics, *settings.references}
    assert {(r["network"], r["seed"], r["metric"]) for r in results["records"]} == {
        (n, s, m) for n in settings.models for s in settings.seeds for m in rows}
    for record in results["records"]:
        assert [p["ratio"] for p in record["curve"]] == list(settings.ratios)
        assert -1.0 <= record["correlations"]["spearman_mean"] <= 1.0
        assert all(0.0 <= p["accuracy_recalibrated"] <= 1.0 for p in record["curve"])
        assert len(record["finetuned"]) == (len(settings.finetune_ratios) if record["seed"] in settings.finetune_seeds
                                            else 0)
    # the same architecture per ratio for every metric: only which channels go differs
    for net in settings.models:
        macs = {tuple(p["macs"] for p in r["curve"]) for r in results["records"] if r["network"] == net and r["seed"] == 0}
        assert len(macs) == 1
    # the oracle ranks channels exactly as itself
    oracle = [r for r in results["records"] if r["metric"] == "oracle" and r["network"] == "resnet20"]
    assert all(r["correlations"]["spearman_mean"] > 0.99 for r in oracle)
    markdown = (smoke_run / "criteria-smoke.md").read_text()
    for heading in ("## Correlation with the oracle", "## Accuracy against MACs", "## Mean rank and paired",
                    "**Reading**", "## After a short fine-tune"):
        assert heading in markdown
    for png in ("criteria-smoke-resnet20.png", "criteria-smoke-vgg16.png", "criteria-smoke-mobilenetv2.png",
                "criteria-smoke-win-rates.png"):
        assert (smoke_run / png).stat().st_size > 10_000
    assert render_file(smoke_run / "criteria-smoke.json") == markdown


def test_resume_skips_finished_measurements(smoke_run: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    results = json.loads((smoke_run / "criteria-smoke.json").read_text())
    results["records"] = [r for r in results["records"] if not (r["network"] == "vgg16" and r["metric"] == "eq3"
                                                                and r["seed"] == 1)]
    (tmp_path / "criteria-smoke.json").write_text(json.dumps(results))
    assert main(["bench", "criteria", "--preset", "smoke", "--threads", "1", "--out", str(tmp_path), "--quiet",
                 "--cache", str(smoke_run / "baselines"), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "1 runs done" in out and "29 skipped" in out
    assert sorted(p.name for p in (smoke_run / "baselines" / "oracle").iterdir()) == sorted(
        p.with_suffix(".pt").name for p in (smoke_run / "baselines").glob("*.pt"))  # one oracle per baseline
    resumed = json.loads((tmp_path / "criteria-smoke.json").read_text())["cells"]
    assert resumed["vgg16/1"]["oracle_baseline_loss"] == results["cells"]["vgg16/1"]["oracle_baseline_loss"]


@pytest.mark.parametrize(("override", "message"), [
    ("ratios=[0.2, 1.5]", "ratios must be fractions"),
    ("finetune_ratios=[0.3]", "not among ratios"),
    ("references=[\"oracle\", \"magic\"]", "choose from oracle"),
    ("models=[\"resnet56\"]", "choose one or more of"),
])
def test_bad_settings_are_one_clear_error(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        with_overrides(PRESETS["smoke"], [override])


def test_seeds_narrow_the_fine_tuned_seeds_too() -> None:
    narrowed = with_overrides(PRESETS["cpu"], {"seeds": (2, 4)})
    assert narrowed.tuned_seeds == (2,) and "(fine-tuned: 2)" in narrowed.summary()
    assert "(fine-tuned: none)" in with_overrides(PRESETS["cpu"], {"seeds": (4,)}).summary()


def test_presets_are_sized_as_the_issue_asks() -> None:
    cpu = PRESETS["cpu"]
    assert cpu.data == "fashion" and len(cpu.seeds) >= 5 and len(cpu.finetune_seeds) >= 3
    assert set(cpu.models) == {"resnet20", "vgg16", "mobilenetv2"} and cpu.oracle_samples >= 1000
    assert PRESETS["full"].train_samples is None
    assert CriteriaBenchSettings.from_dict(cpu.to_dict()) == cpu
