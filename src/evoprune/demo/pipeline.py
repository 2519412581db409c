"""``run_demo``: the whole story in one call — train, prune with three metrics, search masks with SA and GA,
evolve — then the summary, ``summary.json`` and ``report.md`` in the run directory."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from evoprune.atomic import write_json, write_text
from evoprune.demo.config import DemoConfig
from evoprune.demo.plots import plot_accuracy_macs, plot_convergence
from evoprune.demo.report import SummaryRow, markdown_report, summary_rows
from evoprune.demo.steps import (
    EVOLVE_DIR,
    SCHEDULE,
    SEARCH_ALGORITHMS,
    Pruned,
    Searched,
    Trained,
    evolve_step,
    prune_step,
    search_step,
    train_step,
)
from evoprune.device import describe_machine
from evoprune.errors import ConfigError


@dataclass
class DemoResult:
    """What the demo did (the step objects hold the library's own result types) and where it wrote it."""

    out: Path
    trained: Trained
    pruned: list[Pruned]
    searched: list[Searched]
    evolution: Any
    rows: list[SummaryRow]
    formula: dict[str, str]
    plots: dict[str, Path]
    report: Path
    summary: Path
    seconds: float


def _formula(prefix: str) -> dict[str, str]:
    from evoprune.expr import parse, to_infix, to_latex

    tree = parse(prefix)
    return {"prefix": prefix, "infix": to_infix(tree), "latex": to_latex(tree)}


def run_demo(
    out: str | Path,
    *,
    config: DemoConfig | None = None,
    seed: int = 0,
    device: str = "auto",
    threads: int | None = None,
    progress: bool = False,
    log: Callable[[str], None] = lambda text: None,
    evolve_view: Callable[[], AbstractContextManager[Any]] | None = None,
    command: str = "evoprune demo",
) -> DemoResult:
    """Run every step of the demo into ``out`` (re-running overwrites an earlier demo's files there).

    ``log`` receives one line as each step starts and ends; ``progress`` shows the library's progress bars;
    ``evolve_view`` makes the context manager whose value observes the evolution (see ``evolve_step``);
    ``threads`` sets torch's thread count here and the evolution's number of worker processes (one thread each).
    """
    config = config or DemoConfig()
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads must be ≥ 1, got {threads}")
        torch.set_num_threads(threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    n_steps = 2 + len(config.metrics) + len(SEARCH_ALGORITHMS)
    step_no = iter(range(1, n_steps + 1))

    def announce(text: str) -> None:
        log(f"[{next(step_no)}/{n_steps}] {text}")

    epochs = f", {config.train_epochs} epoch(s)" if config.train_epochs else ""
    announce(f"training LeNet-5 on MNIST-5k (lenet5 preset{epochs})")
    trained = train_step(config, out, seed=seed, device=device, progress=progress)
    log(f"      val acc {trained.val_accuracy:.4f}, test acc {trained.test_accuracy:.4f}, {trained.macs:,} MACs "
        f"({trained.seconds:.0f} s)")
    pruned = []
    for metric in config.metrics:
        announce(f"pruning with {metric} on the {SCHEDULE} schedule, fine-tuning after each step")
        p = prune_step(trained, metric, config, out, seed=seed, device=device, progress=progress)
        log(f"      val acc {p.result.after.val_accuracy:.4f}, test acc {p.result.after.test_accuracy:.4f}, "
            f"{p.result.macs_kept:.1%} of the MACs ({p.seconds:.0f} s)")
        pruned.append(p)
    searched = []
    for algorithm in SEARCH_ALGORITHMS:
        announce(f"{algorithm.upper()} weight-mask search (improved preset, small budget)")
        s = search_step(trained, algorithm, config, out, seed=seed, device=device, progress=progress)
        log(f"      test acc {s.result.reported['accuracy']:.4f} at {s.result.sparsity['global']:.1%} of the weights "
            f"pruned, {s.result.evaluations} evaluations ({s.seconds:.0f} s)")
        searched.append(s)
    announce(f"evolving pruning functions ({config.evolve_preset} preset)")
    evolve_start = time.perf_counter()
    evolution = evolve_step(config, out, seed=seed, device=device, threads=threads, progress=progress,
                            view=evolve_view)
    evolve_seconds = time.perf_counter() - evolve_start

    from evoprune.search.plots import plot_history, plot_layers

    plots = {
        "accuracy_macs": plot_accuracy_macs({p.metric: p.result for p in pruned}, out / "prune" / "accuracy_macs.png"),
        "convergence": plot_convergence({s.algorithm: s.result.history for s in searched},
                                        out / "search" / "convergence.png"),
        "layers": plot_layers({s.algorithm: s.result.layers for s in searched}, out / "search" / "layers.png"),
        "search": plot_history({s.algorithm: s.result.history for s in searched}, out / "search" / "search.png"),
        "fitness": out / EVOLVE_DIR / "fitness.png",
    }
    formula = _formula(evolution.best.formula)
    rows = summary_rows(trained, pruned, searched, evolution, evolve_seconds)
    seconds = time.perf_counter() - start
    report = out / "report.md"
    write_text(report, markdown_report(command=command, machine=describe_machine(), seed=seed, total_seconds=seconds,
                                       rows=rows, trained=trained, pruned=pruned, searched=searched,
                                       evolution=evolution, formula=formula, plots=plots, out=out))
    summary = out / "summary.json"
    write_json(summary, {
        "command": command, "seed": seed, "seconds": seconds, "rows": [asdict(r) for r in rows],
        "best_formula": {**formula, "fitness": evolution.best.fitness}, "config": asdict(config),
        "plots": {k: str(v.relative_to(out)) for k, v in plots.items()},
    }, default=str)
    return DemoResult(out, trained, pruned, searched, evolution, rows, formula, plots, report, summary, seconds)
