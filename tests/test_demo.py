"""`evoprune demo` end to end at tiny sizes: every step runs through the real library and the run directory holds
the report, its plots, the summary and each step's files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from evoprune.demo import DemoConfig, run_demo

# Every step shrunk to seconds: 1 training epoch, 1 fine-tuning epoch per prune step, a few search evaluations, and
# two generations of four candidates on the quick preset's two tasks with tiny pretraining, evaluated in-process.
TINY = DemoConfig(
    train_epochs=1,
    finetune_epochs=1,
    scoring_samples=100,
    search={"sa": {"iterations": 8, "joint_iterations": 3},
            "ga": {"generations": 2, "joint_generations": 1, "population": 4},
            "joint_rounds": 1, "finetune_between": 0, "finetune_epochs": 0, "baselines": False},
    evolve_overrides={
        "evaluation.executor": "serial",
        "evolution.population": 4,
        "evolution.generations": 2,
        "evolution.elites": 1,
        "evolution.seeds": ["WL1", "AbsSNR"],
        "evolution.random_init": 1,
        "tasks.lenet5-mnist5k.pretrain.epochs": 1,
        "tasks.lenet5-mnist5k.train_samples": 200,
        "tasks.lenet5-mnist5k.scoring_samples": 100,
        "tasks.vgg-digits.pretrain.epochs": 1,
        "tasks.vgg-digits.train_samples": 200,
        "tasks.vgg-digits.scoring_samples": 100,
    },
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path, list[str]]:
    out = tmp_path_factory.mktemp("demo")
    lines: list[str] = []
    return run_demo(out, config=TINY, seed=0, device="cpu", threads=1, log=lines.append), out, lines


def test_summary_has_one_row_per_step(demo: tuple[object, Path, list[str]]) -> None:
    result, out, _ = demo
    steps = [row["step"] for row in json.loads((out / "summary.json").read_text())["rows"]]
    assert steps == ["train lenet5", "prune eq3", "prune WL1", "prune random", "mask search SA", "mask search GA",
                     "evolve quick"]
    rows = {row.step: row for row in result.rows}
    for name in ("prune eq3", "prune WL1", "prune random"):
        # the paper's schedule keeps conv 5, conv 11, fc 40 channels: well under a tenth of the MACs
        assert 0 < rows[name].macs_kept < 0.1 and rows[name].macs < rows["train lenet5"].macs
        assert 0 <= rows[name].test_accuracy <= 1
    for name in ("mask search SA", "mask search GA"):
        assert rows[name].macs is None and 0 < rows[name].weights_kept <= 1
    assert 0 < rows["evolve quick"].val_accuracy <= 1


def test_report_embeds_existing_pngs_and_the_formula(demo: tuple[object, Path, list[str]]) -> None:
    result, out, _ = demo
    report = (out / "report.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert {"prune/accuracy_macs.png", "search/convergence.png", "search/layers.png", "search/search.png",
            "evolve/fitness.png"} <= set(images)
    for image in images:
        assert (out / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", image
    formula = result.formula
    assert formula["infix"] and formula["latex"] and formula["prefix"] == result.evolution.best.formula
    assert f"$$\n{formula['latex']}\n$$" in report and f"`{formula['infix']}`" in report
    for row in result.rows:
        assert f"| {row.step} |" in report


def test_each_step_writes_its_own_folder(demo: tuple[object, Path, list[str]]) -> None:
    _, out, lines = demo
    assert (out / "train" / "lenet5-mnist5k.pt").is_file()
    assert json.loads((out / "train" / "lenet5-mnist5k.json").read_text())["epochs"] == 1
    for metric in ("eq3", "WL1", "random"):
        saved = json.loads((out / "prune" / f"lenet5-{metric}.json").read_text())
        assert len(saved["steps"]) == 3 and (out / "prune" / f"lenet5-{metric}.pt").is_file()
    for algorithm in ("sa", "ga"):
        for name in ("results.json", "history.jsonl", "masks.pt"):
            assert (out / "search" / algorithm / name).is_file()
    for name in ("config.json", "results.json", "report.md", "fitness.png"):
        assert (out / "evolve" / name).is_file()
    assert [line[:5] for line in lines if line.startswith("[")] == [f"[{i}/7]" for i in range(1, 8)]


def test_cli_rejects_bad_threads(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from evoprune.cli import main

    assert main(["demo", "--threads", "0", "--out", str(tmp_path / "d")]) == 2
    assert "--threads must be ≥ 1" in capsys.readouterr().err
