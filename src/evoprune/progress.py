"""One look for every long job's progress bar, and a switch to turn it off (tests, ``--quiet``, pipes)."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


def make_progress(enabled: bool = True) -> Progress:
    """A rich progress display on stderr; disabled (and silent) when ``enabled`` is false."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        disable=not enabled,
        transient=not sys.stderr.isatty(),
    )
