"""``evoprune evolve``: GP co-evolution of pruning functions, with a live view and a hall-of-fame table."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from evoprune.errors import ConfigError
from evoprune.evolve import Observer, available_presets
from evoprune.progress import make_progress

# Options that only change how a run executes: allowed (and the only ones allowed) with --resume.
_RUNTIME_OPTIONS = ("generations", "executor", "workers", "address", "timeout", "gpus_per_task")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evolve",
        help="evolve pruning functions by genetic programming (checkpointed, resumable, parallel)",
        description="Evolve channel-pruning functions by GP co-evolution over fitness tasks (pretrained model + "
        "dataset + pruning schedule + fine-tuning). Fitness is validation accuracy after pruning and fine-tuning. "
        f"Presets: {', '.join(available_presets())} (or a TOML file). Every generation is checkpointed; "
        "continue a killed run with --resume RUN_DIR.",
    )
    p.add_argument("--preset", default=None, help="preset name or TOML file (default quick)")
    p.add_argument("--out", type=Path, default=None, help="run directory (default runs/evolve-<preset>-s<seed>)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR with its own settings (only --generations, to extend it, and "
                   "executor options may be given)")
    p.add_argument("--overwrite", action="store_true", help="start over in an --out folder that already holds a run")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. evolution.population=8 or tasks.NAME.finetune.epochs=2")
    p.add_argument("--seed", type=int, default=None, help="run seed (derives every other seed)")
    p.add_argument("--generations", type=int, default=None,
                   help="generations, counting generation 0 (with --resume: more extends the run)")
    p.add_argument("--population", type=int, default=None, help="population size")
    p.add_argument("--executor", choices=["serial", "process", "ray"], default=None,
                   help="where candidates are evaluated (default: the preset's)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (0 = one per core) or Ray tasks in flight")
    p.add_argument("--address", default=None, help="Ray cluster address (e.g. auto or ray://head:10001)")
    p.add_argument("--timeout", type=float, default=None, help="per-evaluation time limit in seconds (0 = none)")
    p.add_argument("--gpus-per-task", type=float, default=None, help="Ray: GPUs per evaluation (0 = one if present)")
    p.add_argument("--device", default=None, help="device of every evaluation: cpu, cuda, auto")
    p.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from evoprune.config import parse_assignment

    out: dict[str, Any] = dict(parse_assignment(text) for text in args.overrides)
    simple = {"seed": args.seed, "evolution.generations": args.generations, "evolution.population": args.population,
              "evaluation.executor": args.executor, "evaluation.workers": args.workers,
              "evaluation.address": args.address, "evaluation.timeout": args.timeout,
              "evaluation.gpus_per_task": args.gpus_per_task, "evaluation.device": args.device}
    out.update({k: v for k, v in simple.items() if v is not None})
    return out


def _resume_config(args: argparse.Namespace) -> Any:
    from evoprune.evolve import with_overrides
    from evoprune.evolve.rundir import RunDir

    given = [f"--{name}" for name in ("preset", "out", "seed", "population", "device") if getattr(args, name) is not None]
    given += ["--set"] * bool(args.overrides) + ["--overwrite"] * args.overwrite
    if given:
        raise ConfigError(f"--resume {args.resume} continues that run with its own settings, so {', '.join(given)} "
                          f"cannot be given with it (only {', '.join('--' + o.replace('_', '-') for o in _RUNTIME_OPTIONS)}"
                          " may); leave them out, or start a new run with --out")
    return with_overrides(RunDir(args.resume).load_config(), _overrides(args))


def _presets_table() -> Table:
    from evoprune.evolve import load_config

    table = Table(title="evolution presets")
    for col in ("preset", "tasks", "population", "generations", "description"):
        table.add_column(col)
    for name in available_presets():
        cfg = load_config(name)
        tasks = ", ".join(f"{t.model}/{t.dataset}" for t in cfg.tasks)
        table.add_row(name, tasks, str(cfg.evolution.population), str(cfg.evolution.generations), cfg.description)
    return table


def run(args: argparse.Namespace) -> int:
    from evoprune.evolve import evolve, load_config

    console = Console()
    if args.list_presets:
        console.print(_presets_table())
        return 0
    if args.resume is not None:
        config = _resume_config(args)
        run_dir = args.resume
    else:
        config = load_config(args.preset or "quick", _overrides(args))
        run_dir = args.out or Path("runs") / f"evolve-{config.name}-s{config.seed}"
    view = LiveView(console, progress=not args.quiet)
    with view:
        result = evolve(config, run_dir, resume=args.resume is not None, overwrite=args.overwrite, observer=view,
                        progress=not args.quiet)
    console.print(hall_of_fame_table(result))
    best = result.best
    console.print(f"best: [bold]{escape(best.infix)}[/]  fitness {best.fitness:.4f}")
    console.print(f"      prefix (for --metric / get_metric): {escape(best.formula)}")
    if result.seeds:
        s = result.seeds[0]
        gain = best.fitness - s.fitness
        versus = (f"{'+' if gain >= 0 else ''}{gain:.4f} for the best evolved one" if s.fidelity == best.fidelity
                  else f"at {s.fidelity}; the best evolved one is at {best.fidelity}")
        console.print(f"best seed function: {s.origin.removeprefix('seed:')} {s.fitness:.4f} ({versus})")
    console.print(f"{result.evaluations} task evaluations ({result.failures} failed), {result.seconds:.1f} s; "
                  f"results, plot and report in {result.run_dir}")
    return 0


def hall_of_fame_table(result: Any) -> Table:
    """The hall of fame as infix formulas, with per-task validation accuracies."""
    names = list(result.tasks)
    levels = result.config.fidelity.levels
    caption = ("fitness: weighted geometric mean of validation accuracies after pruning + fine-tuning"
               if levels == ("finetune",) else
               "ranked by the fidelity reached, then fitness there (oracle: mean Spearman with the oracle; recal and "
               "finetune: geometric mean of validation accuracies)")
    table = Table(title=f"hall of fame ({result.config.name}, seed {result.config.seed})", caption=caption)
    table.add_column("#", justify="right")
    if len(levels) > 1:
        table.add_column("fidelity")
    table.add_column("fitness", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("evals", justify="right")
    table.add_column("size", justify="right")
    table.add_column("origin")
    table.add_column("formula", overflow="fold")
    for h in result.hall_of_fame:
        table.add_row(str(h.rank), *([str(h.fidelity)] if len(levels) > 1 else []), f"{h.fitness:.4f}",
                      *(f"{h.accuracies.get(n, 0.0):.4f}" for n in names),
                      str(h.evaluations), str(h.size), f"g{h.first_generation} {h.origin}", escape(h.infix))
    return table


class LiveView(Observer):
    """Per-generation progress (evaluations done), best fitness and best formula, on stderr."""

    def __init__(self, console: Console, *, progress: bool) -> None:
        self.console = console
        self.progress = make_progress(progress)
        self.task: Any = None
        self.status = ""
        self.generations = 0

    def __enter__(self) -> LiveView:
        return self  # the display starts at run_started, after evolve's checks: a refusal stays one line

    def __exit__(self, *exc: object) -> None:
        if self.progress.live.is_started:
            self.progress.__exit__(*exc)

    def _print(self, text: str) -> None:
        self.progress.console.print(text) if self.progress.live.is_started else self.console.print(text)

    def run_started(self, info: dict[str, Any]) -> None:
        self.progress.__enter__()
        cfg = info["config"]
        ev = cfg.evolution
        tasks = "; ".join(f"{t.name} ({t.model} on {t.dataset}, weight {w:.2g})"
                          for t, w in zip(cfg.tasks, cfg.task_weights().values()))
        start = info["resume_from"]
        verb = f"resuming at generation {start}" if start else "starting"
        self._print(f"[bold]evolve {escape(cfg.name)}[/] {verb}: population {ev.population}, {ev.generations} "
                    f"generations, seed {cfg.seed}; executor {escape(info['executor'])}")
        self._print(f"tasks: {escape(tasks)}")
        self._print(f"run directory: {escape(info['run_dir'])}")
        self.generations = ev.generations

    def message(self, text: str) -> None:
        self._print(escape(text))

    def generation_started(self, generation: int, generations: int, jobs: int) -> None:
        if self.task is not None:  # the generation's previous fidelity
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(f"generation {generation}/{generations - 1}", total=max(jobs, 1),
                                           status=self.status)
        if jobs == 0:
            self.progress.update(self.task, completed=1)

    def evaluation_done(self, record: dict[str, Any]) -> None:
        if self.task is not None:
            self.progress.advance(self.task)
        if record["status"] != "ok":
            self._print(f"[yellow]candidate failed on {escape(record['task'])} ({record['status']}): "
                        f"{escape(str(record['error']))[:300]}[/]")

    def generation_done(self, stats: dict[str, Any], hall_of_fame: list[Any]) -> None:
        best = hall_of_fame[0]
        self.status = f"best {best.fitness:.4f}"
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        from evoprune.expr import parse, to_infix

        self._print(
            f"gen {stats['generation']:>2}  best {stats['best']:.4f}  mean {stats['mean']:.4f}  "
            f"new {stats['evaluated']:>2}  cached {stats['cache_hits']:>2}  failed {stats['failed']}  "
            f"{stats['seconds']:.1f} s  | best so far {best.fitness:.4f}: {escape(to_infix(parse(best.key)))}"
        )
