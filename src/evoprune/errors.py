"""Error types. Every user-facing error says what went wrong, where, and how to fix it."""

from __future__ import annotations


class EvopruneError(Exception):
    """Base class for errors the command line reports as one clean message (no traceback)."""


class DatasetNotFoundError(EvopruneError, FileNotFoundError):
    """A dataset's files are not where we looked. The message names the files, the places and the fix."""


class CheckpointError(EvopruneError, ValueError):
    """A checkpoint file is missing, corrupt or does not match the architecture it claims."""


class ConfigError(EvopruneError, ValueError):
    """A setting is out of range or of the wrong kind."""


class TrainingError(EvopruneError, RuntimeError):
    """Training diverged (the loss became NaN or infinite): the message names the run and the setting to change."""


class OutputPathError(EvopruneError, OSError):
    """An output location (``--out``, ``--json``, ...) cannot be written: checked before any work starts."""


class DataError(EvopruneError, ValueError):
    """A dataset file exists but is truncated, corrupt or inconsistent; the message names the file and the fix."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message`` of an exception, for one-line errors (also when the message is empty)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:limit]}" if lines else type(exc).__name__


def describe(value: object, limit: int = 60) -> str:
    """``type repr`` of a value read from a file, on one line and cut to ``limit`` characters, for error messages."""
    text = " ".join(repr(value).split())
    return f"{type(value).__name__} {text[:limit]}{'...' if len(text) > limit else ''}"
