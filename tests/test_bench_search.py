"""``evoprune bench search``: a small protocol end to end, resume, rendering from JSON, and clear errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from evoprune.bench import RunOptions, get_target
from evoprune.bench.search import PRESETS, TINY, render_file, run
from evoprune.cli import main
from evoprune.errors import ConfigError

SMALL = replace(PRESETS["smoke"], train=PRESETS["smoke"].train.with_overrides(epochs=3),
                variants={"seed": ("seed", {"sa": {"iterations": 6}}),
                          "improved": ("improved", {**TINY, "sa": {"iterations": 6, "joint_iterations": 2},
                                                    "finetune_between": 0})},
                algorithms=("sa",))


def options(out: Path, existing: str = "error") -> RunOptions:
    return RunOptions(out=out, name="search-small", existing=existing, progress=False, command="test", log=lambda _: None)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench-search")
    report = run(SMALL, options(out))
    assert report.runs_done == 2 and report.runs_skipped == 0
    return out


def test_writes_markdown_and_json_that_render_the_same(small_run: Path) -> None:
    payload = json.loads((small_run / "search-small.json").read_text())
    markdown = (small_run / "search-small.md").read_text()
    assert [(r["variant"], r["algorithm"], r["seed"]) for r in payload["runs"]] == [("seed", "sa", 0), ("improved", "sa", 0)]
    improved = payload["runs"][1]
    assert improved["finetuned"] is not None and {b["kind"] for b in improved["baselines"]} >= {"random_global", "magnitude_global"}
    assert "| mode | algorithm | seeds | evaluations |" in markdown and "| improved | SA | 0 |" in markdown
    assert "SA: improved / seed trade-off" in markdown
    assert render_file(small_run / "search-small.json") == markdown
    assert list((small_run / "baselines").glob("lenet5_d2l-mnist5k-*.pt"))


def test_resume_skips_finished_searches(small_run: Path, tmp_path: Path) -> None:
    payload = json.loads((small_run / "search-small.json").read_text())
    payload["runs"] = payload["runs"][:1]  # as if killed after the first search
    (tmp_path / "search-small.json").write_text(json.dumps(payload))
    with pytest.raises(ConfigError, match="--resume"):
        run(SMALL, options(tmp_path))
    report = run(SMALL, replace(options(tmp_path, "resume"), cache=small_run / "baselines"))
    assert report.runs_done == 1 and report.runs_skipped == 1


def test_target_is_registered_and_bad_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert set(get_target("search").presets) == {"mnist5k", "fashion", "smoke"}
    assert main(["bench", "search", "--preset", "mnist5kk", "--out", str(tmp_path)]) == 2
    assert "Did you mean mnist5k" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text("{}")
    assert main(["bench", "search", "--render", str(tmp_path / "broken.json")]) == 2
    assert "not a results file of bench search" in capsys.readouterr().err
