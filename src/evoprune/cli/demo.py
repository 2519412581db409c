"""``evoprune demo``: the whole story on embedded data in minutes — train a LeNet-5 on MNIST-5k, prune it with the
paper's evolved function and human metrics, search weight masks with SA and GA, run a short evolution — then one
summary table and a run directory with a Markdown report and PNG plots."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from evoprune.atomic import check_output
from evoprune.cli.common import add_runtime_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="the whole story in minutes on embedded data",
        description="Train LeNet-5 on MNIST-5k; prune it on the paper's schedule with eq3, WL1 (L1) and random, "
        "fine-tuning each step; search weight masks with SA and GA (improved preset, small budget); run the quick "
        "evolution. Prints one summary table and writes train/, prune/, search/, evolve/, report.md and "
        "summary.json into the run directory. --threads N also sets the evolution's worker processes (default: one "
        "per core). About 2 minutes on an idle 2-core CPU.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"),
                   help="run directory (default runs/demo; running again overwrites the demo's files there)")
    add_runtime_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from evoprune.cli.evolve import LiveView
    from evoprune.demo import run_demo, summary_table

    check_output(args.out, option="--out", directory=True)
    console = Console()
    result = run_demo(
        args.out, seed=args.seed, device=args.device, threads=args.threads, progress=not args.quiet,
        log=lambda text: console.print(escape(text)), evolve_view=lambda: LiveView(console, progress=not args.quiet),
        command=_command(args),
    )
    console.print(summary_table(result.rows, result.seconds))
    console.print(f"best evolved function: [bold]{escape(result.formula['infix'])}[/]")
    console.print(f"  LaTeX: {escape(result.formula['latex'])}")
    console.print(f"report: {result.report}  (plots and each step's files under {result.out}/)")
    return 0


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run, for the report."""
    parts = ["evoprune", "demo"]
    if args.out != Path("runs/demo"):
        parts += ["--out", str(args.out)]
    for option, value, default in (("--seed", args.seed, 0), ("--device", args.device, "auto"),
                                   ("--threads", args.threads, None)):
        if value != default:
            parts += [option, str(value)]
    return " ".join(shlex.quote(p) for p in parts + (["--quiet"] if args.quiet else []))
