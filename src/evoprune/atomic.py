"""Atomic file writes: a file is either its old complete self or its new complete self, never half written.

Checkpoints, masks and run files are written to a temporary file in the same folder, flushed to disk, then
renamed over the target, so a job killed at any moment (SIGKILL, power loss) leaves nothing corrupt behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

_UMASK = os.umask(0)
os.umask(_UMASK)


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(handle)`` on a temporary binary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def check_output(path: str | Path, *, option: str, directory: bool = False) -> Path:
    """Fail before any work starts when ``path`` cannot be written, naming ``option`` and the fix.

    A long run that can only save its result at the end must not discover then that ``--out`` is a folder, lies
    under a file, or sits in a read-only place. Nothing is created: the nearest existing ancestor folder is probed
    with a temporary file (``os.access`` says yes to root even on a read-only mount).
    """
    from evoprune.errors import OutputPathError

    path = Path(path)
    if path.exists():
        if directory and not path.is_dir():
            raise OutputPathError(f"{option} {path}: is a file, not a folder; give a folder path or remove the file")
        if not directory and path.is_dir():
            raise OutputPathError(f"{option} {path}: is a folder; give a file path such as {path / 'out'}")
    ancestor = path if directory and path.is_dir() else path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputPathError(f"{option} {path}: {ancestor} is a file, so nothing can be written under it; "
                              "choose another path")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as exc:
        raise OutputPathError(f"{option} {path}: cannot write in {ancestor} ({exc.strerror or exc}); "
                              "choose a writable location") from None
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    data = text.encode("utf-8")
    return write_atomic(path, lambda handle: handle.write(data))


def write_json(path: str | Path, payload: Any, *, indent: int = 2, **dumps: Any) -> Path:
    """Write ``payload`` as JSON (one trailing newline) atomically; ``dumps`` go to :func:`json.dumps`."""
    return write_text(path, json.dumps(payload, indent=indent, **dumps) + "\n")


def save_figure(figure: Any, path: str | Path, *, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically."""
    return write_atomic(path, lambda handle: figure.savefig(handle, format="png", dpi=dpi))
