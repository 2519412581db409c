"""The demo's outputs: one summary (rows for the terminal table, ``summary.json`` and the report) and
``report.md``, which embeds the PNGs the steps wrote."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from evoprune.demo.steps import EVOLVE_DIR, MODEL, Pruned, Searched, Trained

CAPTION = ("val: the selection split; test: measured once. Mask search zeroes single weights (dense MACs stay). "
           "Evolve: the best function's fitness, the geometric mean of its tasks' val accuracies.")


@dataclass
class SummaryRow:
    """One line of the summary table."""

    step: str
    val_accuracy: float | None
    test_accuracy: float | None
    macs: int | None
    macs_kept: float | None
    weights_kept: float | None
    seconds: float


def summary_rows(trained: Trained, pruned: Sequence[Pruned], searched: Sequence[Searched], evolution: Any,
                 evolve_seconds: float) -> list[SummaryRow]:
    rows = [SummaryRow(f"train {MODEL}", trained.val_accuracy, trained.test_accuracy, trained.macs,
                       1.0, 1.0, trained.seconds)]
    for p in pruned:
        r = p.result
        rows.append(SummaryRow(f"prune {p.metric}", r.after.val_accuracy, r.after.test_accuracy, r.after.macs,
                               r.macs_kept, r.params_kept, p.seconds))
    for s in searched:
        r = s.result
        val = (r.finetuned or r.final).get("val", r.final["selection"])["accuracy"]
        rows.append(SummaryRow(f"mask search {s.algorithm.upper()}", val, r.reported["accuracy"], None, None,
                               1.0 - r.sparsity["global"], s.seconds))
    rows.append(SummaryRow(f"evolve {evolution.config.name}", evolution.best.fitness, None, None, None, None,
                           evolve_seconds))
    return rows


def _cells(row: SummaryRow) -> list[str]:
    def acc(v: float | None) -> str:
        return "—" if v is None else f"{v:.4f}"

    macs = "—" if row.macs is None else f"{row.macs:,}"
    if row.macs_kept not in (None, 1.0):
        macs += f" ({row.macs_kept:.1%})"
    kept = "—" if row.weights_kept is None else f"{row.weights_kept:.1%}"
    return [row.step, acc(row.val_accuracy), acc(row.test_accuracy), macs, kept, f"{row.seconds:.0f}"]


COLUMNS = ("step", "val acc", "test acc", "MACs", "weights kept", "time s")


def summary_table(rows: Sequence[SummaryRow], total_seconds: float) -> Table:
    table = Table(title=f"evoprune demo ({total_seconds / 60:.1f} min)", caption=CAPTION)
    for i, column in enumerate(COLUMNS):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*_cells(row))
    return table


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], right_from: int = 1) -> list[str]:
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |",
            *("| " + " | ".join(r) + " |" for r in rows)]


def markdown_report(*, command: str, machine: str, seed: int, total_seconds: float, rows: Sequence[SummaryRow],
                    trained: Trained, pruned: Sequence[Pruned], searched: Sequence[Searched], evolution: Any,
                    formula: dict[str, str], plots: dict[str, Path], out: Path) -> str:
    """``report.md``: the summary, then one section per step with its figures (paths relative to ``out``)."""
    def img(key: str, alt: str) -> str:
        return f"![{alt}]({plots[key].relative_to(out).as_posix()})"

    lines = ["# evoprune demo", "", f"`{command}` — seed {seed}, {machine}; {total_seconds / 60:.1f} min in all.", "",
             "## Summary", "", *_md_table(COLUMNS, [_cells(r) for r in rows]), CAPTION, ""]
    lines += _train_section(trained, out)
    lines += [*_prune_section(pruned), img("accuracy_macs", "validation accuracy against MACs for each metric"), ""]
    lines += [*_search_section(searched, out), img("convergence", "sparsity and cost against evaluations"), "",
              img("layers", "per-layer sparsity"), "", img("search", "cost, accuracy and loss against sparsity"), ""]
    lines += [*_evolve_section(evolution, formula), img("fitness", "fitness per generation"), ""]
    return "\n".join(lines)


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], right_from: int = 1) -> list[str]:
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |",
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def _train_section(trained: Trained, out: Path) -> list[str]:
    return ["## 1. Training", "",
            f"LeNet-5 (the paper's: conv 20, conv 50, fc 500) on MNIST-5k, {trained.epochs} epoch(s), best validation "
            f"epoch {trained.best_epoch} kept: validation accuracy {trained.val_accuracy:.4f}, test "
            f"{trained.test_accuracy:.4f}; {trained.macs:,} MACs, {trained.params:,} parameters. Checkpoint: "
            f"`{trained.checkpoint.relative_to(out).as_posix()}`.", ""]


def _prune_section(pruned: Sequence[Pruned]) -> list[str]:
    rows = []
    for p in pruned:
        r = p.result
        rows.append([p.metric, "0 (trained)", f"{r.before.macs:,}", f"{r.before.params:,}", "",
                     f"{r.before.val_accuracy:.4f}", f"{r.before.test_accuracy:.4f}"])
        for s in r.steps:
            last = s.step == len(r.steps)
            rows.append([p.metric, str(s.step), f"{s.macs:,}", f"{s.params:,}", f"{s.val_accuracy_pruned:.4f}",
                         f"{s.val_accuracy:.4f}", f"{r.after.test_accuracy:.4f}" if last else ""])
    return ["## 2. Structural pruning, the paper's LeNet-5 schedule", "",
            f"{pruned[0].result.schedule}; fine-tuning after every step keeps the best validation epoch. Pruned "
            "checkpoints and results: `prune/`.", "",
            *_md_table(("metric", "step", "MACs", "params", "val acc pruned", "val acc fine-tuned", "test acc"), rows,
                       right_from=2)]


def _search_section(searched: Sequence[Searched], out: Path) -> list[str]:
    rows = [[s.algorithm.upper(), f"{s.result.baseline['test']['accuracy']:.4f}",
             f"{s.result.reported['accuracy']:.4f}", f"{s.result.sparsity['global']:.4f}",
             f"{s.result.sparsity['mean_layer']:.4f}", str(s.result.evaluations), f"{s.result.search_seconds:.1f}"]
            for s in searched]
    lines = ["## 3. Mask search (SA and GA, `improved` preset, small budget)", "",
             _search_settings(searched[0].result.config.to_dict()) + " Runs (results, history, masks for "
             "`torch.nn.utils.prune`): " + ", ".join(f"`{s.run_dir.relative_to(out).as_posix()}/`" for s in searched)
             + ".", "",
             *_md_table(("algorithm", "unpruned test acc", "test acc", "sparsity (global)", "sparsity (mean layer)",
                         "evaluations", "search s"), rows)]
    if not any(s.result.baselines for s in searched):
        lines += ["Random and magnitude masks at the same sparsity are left out here to keep the demo short; "
                  "`evoprune search` adds them, and evoprune's `docs/benchmarks.md` compares them over seeds.", ""]
    return lines


def _search_settings(cfg: dict[str, Any]) -> str:
    """One sentence on what the search did, read from its saved config."""
    budget = (f"{cfg['budget'] * 100:g}-point validation-accuracy budget" if cfg.get("budget_metric") == "accuracy"
              else f"{cfg.get('budget', 0):g} relative validation-loss budget")
    rounds = cfg.get("joint_rounds", 1)
    text = f"Each layer is searched in turn under its share of a {budget}, then all layers together"
    text += f" in {rounds} rounds." if rounds > 1 else "."
    if cfg.get("finetune_between"):
        text += f" Between phases the network is fine-tuned {cfg['finetune_between']} epoch(s) with the masks fixed."
    if cfg.get("finetune_epochs"):
        text += f" The result is fine-tuned {cfg['finetune_epochs']} epoch(s)."
    return text


def _evolve_section(evolution: Any, formula: dict[str, str]) -> list[str]:
    tasks = ", ".join(f"{name} ({t['model']} on {t['dataset']})" for name, t in evolution.tasks.items())
    lines = [f"## 4. Evolution (`{evolution.config.name}` preset)", "",
             f"{len(evolution.history)} generations of population {evolution.config.evolution.population}, "
             f"{evolution.evaluations} task evaluations ({evolution.failures} failed) on {tasks}. Full run report: "
             f"`{EVOLVE_DIR}/report.md`.", "",
             f"Best evolved function (fitness {evolution.best.fitness:.4f}):", "",
             f"$$\n{formula['latex']}\n$$", "",
             f"infix: `{formula['infix']}`", "",
             f"prefix (for `evoprune prune --metric`): `{formula['prefix']}`", ""]
    if evolution.seeds:
        seed = evolution.seeds[0]
        lines += [f"Best seed function: {seed.origin.removeprefix('seed:')}, fitness {seed.fitness:.4f}.", ""]
    return lines
