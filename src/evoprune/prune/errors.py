"""The error type of structural pruning; the command line prints it as one clean message."""

from __future__ import annotations

from evoprune.errors import EvopruneError


class PruningError(EvopruneError, ValueError):
    """A model, schedule or ratio table that cannot be pruned as asked; the message says why and how to fix it."""
