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
