"""A finished run's outputs: ``results.json``, ``fitness.png`` (fitness per generation, best formula) and
``report.md``."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from evoprune.atomic import save_figure, write_text
from evoprune.evolve.rundir import write_json_atomic

if TYPE_CHECKING:
    from evoprune.evolve.engine import EvolutionResult



def plot_fitness(result: EvolutionResult, path: Path) -> Path:
    """Best, mean and median fitness per generation, the best seed function's fitness, and the best formula."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gens = [h["generation"] for h in result.history]
    fig, ax = plt.subplots(figsize=(8, 5.2))
    levels = result.config.fidelity.levels
    ax.plot(gens, [h["best"] for h in result.history], "o-", label="best of population")
    if len(levels) == 1:  # with several fidelities the hall of fame and the seeds may sit at another one
        ax.plot(gens, [h["hall_of_fame_best"] for h in result.history], "--", color="C0", alpha=0.5,
                label="best so far (hall of fame)")
    ax.plot(gens, [h["mean"] for h in result.history], "s-", label="mean")
    ax.plot(gens, [h["median"] for h in result.history], "^:", label="median")
    if result.seeds and len(levels) == 1:
        ax.axhline(result.seeds[0].fitness, color="gray", lw=1, ls="-.",
                   label=f"best seed function ({result.seeds[0].origin.removeprefix('seed:')})")
    ax.set_xlabel("generation")
    ax.set_ylabel("fitness (weighted geometric mean of validation accuracies)" if levels == ("finetune",)
                  else f"fitness at {levels[0]}, every member")
    ax.set_xticks(gens)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    title = f"evoprune evolve: {result.config.name} (seed {result.config.seed})"
    ax.set_title(title)
    best = "\n".join(textwrap.wrap(f"best: {result.best.infix}", 110))
    fig.text(0.01, 0.01, f"{best}\nfitness {result.best.fitness:.4f}", fontsize=7, family="monospace", va="bottom")
    fig.tight_layout(rect=(0, 0.06 + 0.02 * best.count("\n"), 1, 1))
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path


def markdown_report(result: EvolutionResult) -> str:
    cfg = result.config
    ev = cfg.evolution
    lines = [
        f"# Evolution run `{cfg.name}`",
        "",
        *([cfg.description.strip(), ""] if cfg.description.strip() else []),
        f"- seed {cfg.seed}; {len(result.history)} generation(s) of population {ev.population} "
        f"({ev.elites} elites, {ev.selection} selection, crossover {ev.crossover_prob}, mutation {ev.mutation_prob})",
        f"- {result.evaluations} task evaluations ({result.failures} failed) in {result.seconds:.1f} s of generation time; "
        f"executor: {result.executor}",
        f"- {cfg.selection_rule()}",
        "",
        "## Tasks",
        "",
        "| task | model | data | weight | schedule | pretrained val acc |",
        "| --- | --- | --- | ---: | --- | ---: |",
    ]
    for name, t in result.tasks.items():
        lines.append(f"| {name} | {t['model']} | {t['dataset']} | {t['weight']:.3g} | {t['schedule']} | "
                     f"{t['pretrained_val_accuracy']:.4f} |")
    names = list(result.tasks)
    header = " | ".join(names)
    lines += ["", "## Hall of fame", "", f"| # | fidelity | fitness | {header} | evals | formula |",
              "| ---: | --- | ---: | " + " | ".join("---:" for _ in names) + " | ---: | --- |"]
    for h in result.hall_of_fame:
        accs = " | ".join(f"{h.accuracies.get(n, 0.0):.4f}" for n in names)
        lines.append(f"| {h.rank} | {h.fidelity} | {h.fitness:.4f} | {accs} | {h.evaluations} | `{h.infix}` |")
    if result.seeds:
        lines += ["", "## Seed functions (generation 0)", "", f"| seed | fitness | {header} |",
                  "| --- | ---: | " + " | ".join("---:" for _ in names) + " |"]
        for s in result.seeds:
            accs = " | ".join(f"{s.accuracies.get(n, 0.0):.4f}" for n in names)
            lines.append(f"| {s.origin.removeprefix('seed:')} | {s.fitness:.4f} | {accs} |")
    lines += ["", "## Generations", "", "| gen | best | mean | median | unique | new | cache hits | failed | s |",
              "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    seconds = {t["generation"]: t["seconds"] for t in result.timing}
    for h in result.history:
        lines.append(f"| {h['generation']} | {h['best']:.4f} | {h['mean']:.4f} | {h['median']:.4f} | {h['unique']} | "
                     f"{h['evaluated']} | {h['cache_hits']} | {h['failed']} | {seconds.get(h['generation'], 0.0):.1f} |")
    lines += ["", "![fitness per generation](fitness.png)", ""]
    return "\n".join(lines)


def write_outputs(result: EvolutionResult, run_dir: Path) -> dict[str, Path]:
    """Write ``results.json`` (what the seed determines), ``fitness.png`` and ``report.md`` (with timings)."""
    run_dir = Path(run_dir)
    paths = {"results": run_dir / "results.json", "plot": run_dir / "fitness.png", "report": run_dir / "report.md"}
    write_json_atomic(paths["results"], result.to_dict())
    plot_fitness(result, paths["plot"])
    write_text(paths["report"], markdown_report(result))
    return paths
