"""One error type for bad formulas, rendered with a caret under the offending column."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from evoprune.errors import EvopruneError


class FormulaError(EvopruneError, ValueError):
    """A formula could not be parsed or type-checked.

    Attributes: ``formula`` (the text, if known), ``pos`` (0-based column or None), ``reason``,
    ``expected`` (what would have been accepted there), ``suggestions`` (close known names).
    """

    def __init__(
        self,
        reason: str,
        *,
        formula: str | None = None,
        pos: int | None = None,
        length: int = 1,
        expected: str | None = None,
        suggestions: Sequence[str] = (),
    ) -> None:
        self.reason = reason
        self.formula = formula
        self.pos = pos
        self.length = max(1, length)
        self.expected = expected
        self.suggestions = tuple(suggestions)
        super().__init__(self._render())

    def _render(self) -> str:
        head = self.reason
        if self.pos is not None:
            head += f" (column {self.pos + 1})"
        lines = [head]
        if self.formula is not None and self.pos is not None:
            lines.append("  " + self.formula)
            lines.append("  " + " " * self.pos + "^" * self.length)
        if self.expected:
            lines.append(f"expected {self.expected}")
        if self.suggestions:
            lines.append("did you mean: " + ", ".join(self.suggestions) + "?")
        return "\n".join(lines)

    def with_formula(self, formula: str) -> "FormulaError":
        """The same error, re-rendered against the formula text."""
        return FormulaError(self.reason, formula=formula, pos=self.pos, length=self.length,
                             expected=self.expected, suggestions=self.suggestions)


def close_names(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """Known names that look like ``name`` (case-insensitive; original spelling returned)."""
    known = list(known)
    by_lower: dict[str, str] = {}
    for k in known:
        by_lower.setdefault(k.lower(), k)
    hits = difflib.get_close_matches(name.lower(), list(by_lower), n=n, cutoff=0.6)
    if not hits:
        hits = [k for k in by_lower if k.startswith(name.lower()) or name.lower().startswith(k)][:n]
    return [by_lower[h] for h in hits]
