"""The ``evoprune`` command: a thin layer that parses arguments, calls the API and prints.

Each subcommand lives in its own module of this package, exposing ``register(subparsers)`` (which adds its
parser and sets ``func=run``) and ``run(args) -> int``. Add a module's name to ``COMMANDS`` to enable it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

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
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of any error (also EVOPRUNE_DEBUG=1)")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"evoprune.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. Errors end as one line on stderr: exit 2 for bad input, 1 for a bug (traceback logged)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    debug = args.debug or os.environ.get("EVOPRUNE_DEBUG", "") not in ("", "0")
    try:
        _check_runtime_options(args)
        return int(args.func(args) or 0)
    except EvopruneError as exc:
        if debug:
            raise
        print(f"evoprune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("evoprune: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: one line here, the traceback in a log file
        if debug:
            raise
        log = _write_traceback(exc)
        where = f"the full traceback is in {log}" if log else "the traceback could not be saved"
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else "(no message)"
        print(f"evoprune: internal error: {type(exc).__name__}: {first}\n  {where}; rerun with --debug to print it, "
              "and please report it", file=sys.stderr)
        return 1


def _check_runtime_options(args: argparse.Namespace) -> None:
    """Refuse a bad --device or --threads before any work starts, whatever the command."""
    from evoprune.cli.common import apply_threads
    from evoprune.device import resolve_device

    if getattr(args, "device", None) is not None:
        resolve_device(args.device)
    apply_threads(getattr(args, "threads", None))


def _write_traceback(exc: BaseException) -> Path | None:
    """Save the traceback of an unexpected error under the system's temporary folder; None if that fails."""
    folder = Path(os.environ.get("EVOPRUNE_LOG_DIR") or Path(tempfile.gettempdir()) / "evoprune")
    path = folder / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(f"evoprune {__version__}: {' '.join(sys.argv)}\n\n"
                        + "".join(traceback.format_exception(exc)), encoding="utf-8")
    except OSError:
        return None
    return path


if __name__ == "__main__":
    sys.exit(main())
