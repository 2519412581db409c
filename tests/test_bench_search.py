"""``evoprune bench search``: a small protocol end to end, resume, rendering from JSON, and clear errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from evoprune.bench import RunOptions, get_target
from evoprune.bench.search import PRESETS, TINY, Variant, render_file, run
from evoprune.cli import main
from evoprune.config import with_overrides
from evoprune.errors import ConfigError

SMALL = replace(PRESETS["smoke"], train=PRESETS["smoke"].train.with_overrides(epochs=3),
                variants=(Variant("seed", "seed", {"sa": {"iterations": 6}}),
                          Variant("improved", "improved", {**TINY, "sa": {"iterations": 6, "joint_iterations": 2},
                                                           "finetune_between": 0})),
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


def test_set_changes_a_variant_and_the_fingerprint_follows() -> None:
    fashion = PRESETS["fashion"]
    changed = with_overrides(fashion, ["variants.improved, magnitude-biased.overrides.budget=0.01", "algorithms=[\"ga\"]"])
    assert changed.variants[0].overrides == {"magnitude_bias": 1.0, "budget": 0.01} and changed.algorithms == ("ga",)
    assert changed.run_hash(changed.variants[0]) != fashion.run_hash(fashion.variants[0])
    # seeds, algorithms and other variants do not invalidate a finished search
    mnist = PRESETS["mnist5k"]
    narrowed = with_overrides(mnist, {"seeds": [0], "algorithms": ["sa"], "device": "cuda"})
    assert [narrowed.run_hash(v) for v in narrowed.variants] == [mnist.run_hash(v) for v in mnist.variants]
    assert len({mnist.run_hash(v) for v in mnist.variants}) == 3
    with pytest.raises(ConfigError, match="no entry 'improve'"):
        with_overrides(mnist, ["variants.improve.overrides.budget=0.01"])
    with pytest.raises(ConfigError, match=r"algorithms\[1\] must be one of 'sa', 'ga', got 'pso'"):
        with_overrides(mnist, {"algorithms": ["sa", "pso"]})


def test_a_bad_search_override_fails_before_the_baseline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "search", "--preset", "smoke", "--set", "variants.seed.overrides.budgett=0.1", "--out",
                 str(tmp_path), "--quiet"])
    assert code == 2
    assert "budgett" in capsys.readouterr().err
    assert not (tmp_path / "baselines").exists()
