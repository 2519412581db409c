"""One error type for bad formulas, rendered with a caret under the offending column."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from evoprune.errors import EvopruneError

ECHO_WIDTH = 100  # characters of the formula echoed around the error column


class FormulaError(EvopruneError, ValueError):
    """A formula could not be parsed or type-checked, or is too large to evaluate on a layer.

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
            shown, column, carets = excerpt(self.formula, self.pos, self.length)
            lines.append("  " + shown)
            lines.append("  " + " " * column + "^" * carets)
        if self.expected:
            lines.append(f"expected {self.expected}")
        if self.suggestions:
            lines.append("did you mean: " + ", ".join(self.suggestions) + "?")
        return "\n".join(lines)

    def with_formula(self, formula: str) -> FormulaError:
        """The same error, re-rendered against the formula text."""
        return FormulaError(self.reason, formula=formula, pos=self.pos, length=self.length,
                             expected=self.expected, suggestions=self.suggestions)


def excerpt(text: str, pos: int, length: int = 1, width: int = ECHO_WIDTH) -> tuple[str, int, int]:
    """``(shown, column, carets)``: at most ``width`` characters of ``text`` around ``pos``, with ``…`` where cut.

    A generated or pasted formula can be tens of kilobytes: echoing all of it buries the caret. Whitespace
    (tabs, newlines) is shown as spaces so that the caret line stays under the right character.
    """
    flat = "".join(" " if ch.isspace() else ch for ch in text)
    if len(flat) <= width:
        return flat, pos, length
    start = max(0, min(pos - width // 3, len(flat) - width))  # the caret lands a third of the way in
    end = start + width
    shown = flat[start:end]
    if start > 0:
        shown = "…" + shown[1:]  # replaces a character, so the caret column does not move
    room = len(shown) - (pos - start)
    if end < len(flat):
        shown = shown[:-1] + "…"
        room -= 1
    return shown, pos - start, max(1, min(length, room))


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
