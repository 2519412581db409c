"""Parser for the prefix form, e.g. ``div(abs(sub(g_mean(P), g_mean(Q))), rho1(add(std(P), std(Q))))``.

Grammar (whitespace is free)::

    expr   := NAME '(' expr (',' expr)* ')'    a primitive call
            | NAME                             an operand
            | NUMBER                           a scalar constant (extension: 0.2, -1, 1e-4; ASCII digits;
                                               a literal float64 cannot hold is refused, not rounded to 0 or inf)

A hand-written recursive-descent parser: no ``eval``/``exec``. Every error is a :class:`FormulaError`
pointing at the column, saying what was expected, suggesting close names and checking arities; a
parsed tree is then type-checked (:func:`evoprune.expr.typecheck.infer`), so shape errors point at the
offending call too.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from dataclasses import dataclass

from evoprune.expr.errors import FormulaError, close_names
from evoprune.expr.nodes import Call, Const, Node, Var
from evoprune.expr.operands import OPERANDS
from evoprune.expr.primitives import PRIMITIVES

_TOKEN = re.compile(
    # [0-9], not \d: \d and float() also accept other scripts' digits ('٣' would silently be 3.0)
    r"\s*(?:(?P<num>[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<sym>[(),])|(?P<bad>\S))"
)
_NAME_SHOWN = 40  # characters of a bad name or number quoted in a message (the excerpt shows the rest)


def _cut(text: str) -> str:
    """A token cut to a readable length for a message (a generated name can be kilobytes long)."""
    return text if len(text) <= _NAME_SHOWN else text[:_NAME_SHOWN - 1] + "…"
MAX_DEPTH = 200  # deeper formulas are refused (recursion guard for untrusted input)


@dataclass(frozen=True)
class _Tok:
    kind: str  # "num" | "name" | "sym" | "end"
    text: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i = 0
    while i < len(text):
        m = _TOKEN.match(text, i)
        if m is None or m.end() == i:  # only trailing whitespace left
            break
        kind = m.lastgroup
        assert kind is not None
        start = m.start(kind)
        if kind == "bad":
            char = m.group(kind)
            expected = "a name, a number, '(', ',' or ')'"
            if char.isdigit() or unicodedata.category(char) == "Nd":
                expected = "a number written with the ASCII digits 0-9"
            raise FormulaError(f"unexpected character {char!r}", formula=text, pos=start, expected=expected)
        toks.append(_Tok(kind, m.group(kind), start))
        i = m.end()
    toks.append(_Tok("end", "", len(text.rstrip()) if text.strip() else 0))
    return toks


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def fail(self, reason: str, tok: _Tok, expected: str | None = None, suggestions=(), length=None) -> FormulaError:
        return FormulaError(reason, formula=self.text, pos=tok.pos, expected=expected, suggestions=suggestions,
                            length=length if length is not None else max(1, len(tok.text)))

    def describe(self, tok: _Tok) -> str:
        return "end of formula" if tok.kind == "end" else repr(_cut(tok.text))

    def number(self, tok: _Tok) -> float:
        """The literal's float64 value; a literal that float64 cannot hold is refused, not rounded to 0 or inf."""
        value = float(tok.text)
        if value in (float("inf"), float("-inf")):
            raise self.fail(f"number {_cut(tok.text)} overflows float64", tok,
                            expected=f"a value of at most {sys.float_info.max:.1e} in magnitude")
        mantissa = re.split("[eE]", tok.text)[0]
        if value == 0.0 and any(ch in "123456789" for ch in mantissa):
            raise self.fail(f"number {_cut(tok.text)} underflows float64 (it would be 0)", tok,
                            expected=f"0, or a value of at least {sys.float_info.min:.1e} in magnitude")
        return value

    def expr(self, depth: int) -> Node:
        tok = self.take()
        if depth > MAX_DEPTH:
            raise self.fail(f"formula nested deeper than {MAX_DEPTH} levels", tok)
        if tok.kind == "num":
            return Const(self.number(tok), pos=tok.pos)
        if tok.kind != "name":
            raise self.fail(f"unexpected {self.describe(tok)}", tok, expected="a function call, an operand or a number")
        is_call = self.peek().kind == "sym" and self.peek().text == "("
        if not is_call:
            if tok.text in OPERANDS:
                return Var(tok.text, pos=tok.pos)
            if tok.text in PRIMITIVES:
                spec = PRIMITIVES[tok.text]
                raise self.fail(f"function {tok.text!r} needs {spec.arity} argument{'s' * (spec.arity > 1)}",
                                tok, expected=f"'(' after {tok.text}")
            raise self.fail(f"unknown operand {_cut(tok.text)!r}", tok, expected="one of " + ", ".join(OPERANDS),
                            suggestions=close_names(tok.text, list(OPERANDS) + list(PRIMITIVES)))
        if tok.text not in PRIMITIVES:
            if tok.text in OPERANDS:
                raise self.fail(f"{tok.text!r} is an operand, not a function", tok,
                                expected=f"{tok.text} without arguments")
            raise self.fail(f"unknown function {_cut(tok.text)!r}", tok, expected="a primitive name",
                            suggestions=close_names(tok.text, PRIMITIVES))
        spec = PRIMITIVES[tok.text]
        self.take()  # '('
        args: list[Node] = []
        first_extra: _Tok | None = None
        plural = "s" * (spec.arity > 1)
        while True:
            nxt = self.peek()
            if nxt.kind == "sym" and nxt.text == ")" and not args:
                raise self.fail(f"{spec.name} takes {spec.arity} argument{plural}, got 0", nxt,
                                expected="an argument")
            if len(args) == spec.arity and first_extra is None:
                first_extra = nxt
            args.append(self.expr(depth + 1))
            sep = self.take()
            if sep.kind == "sym" and sep.text == ",":
                continue
            if sep.kind == "sym" and sep.text == ")":
                if first_extra is not None:
                    raise self.fail(f"{spec.name} takes {spec.arity} argument{plural}, got {len(args)}",
                                    first_extra, expected=f"')' after argument {spec.arity}")
                if len(args) < spec.arity:
                    raise self.fail(f"{spec.name} takes {spec.arity} argument{plural}, got {len(args)}", sep,
                                    expected="','")
                return Call(spec.name, tuple(args), pos=tok.pos)
            expected = "',' or ')'" if len(args) < spec.arity else "')'"
            raise self.fail(f"unexpected {self.describe(sep)} in the arguments of {spec.name}", sep,
                            expected=expected)

    def parse(self) -> Node:
        if self.peek().kind == "end":
            raise self.fail("empty formula", self.peek(), expected="a function call, an operand or a number")
        node = self.expr(0)
        rest = self.peek()
        if rest.kind != "end":
            raise self.fail(f"unexpected {self.describe(rest)} after the end of the formula", rest,
                            expected="end of formula")
        return node


def parse(text: str, *, check: bool = True) -> Node:
    """Parse a prefix formula into a tree; with ``check`` also type-check it (raises :class:`FormulaError`)."""
    if not isinstance(text, str):
        raise TypeError(f"formula must be a string, got {type(text).__name__}")
    tree = _Parser(text).parse()
    if check:
        from evoprune.expr.typecheck import infer

        try:
            infer(tree)
        except FormulaError as err:
            raise err.with_formula(text) from None
    return tree
