"""The ``evoprune`` command: a thin layer that parses arguments, calls the API and prints.

Each subcommand lives in its own module of this package, exposing ``register(subparsers)`` (which adds its
parser and sets ``func=run``) and ``run(args) -> int``. Add a module's name to ``COMMANDS`` to enable it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from evoprune import __version__
from evoprune.errors import EvopruneError

COMMANDS: tuple[str, ...] = (
    "demo",
    "train",
    "metrics",
    "prune",
    "search",
    "evolve",
    "bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evoprune",
        description="Search-based neural-network pruning: evolved pruning functions and mask search.",
    )
    parser.add_argument("--version", action="version", version=f"evoprune {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"evoprune.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except EvopruneError as exc:
        print(f"evoprune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("evoprune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
