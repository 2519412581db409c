"""Parser, printers and canonical form."""

from __future__ import annotations

import pytest

from evoprune.errors import EvopruneError
from evoprune.expr import (
    Call,
    Const,
    FormulaError,
    Var,
    canonical,
    canonical_key,
    height,
    parse,
    size,
    to_infix,
    to_latex,
    to_prefix,
)
from evoprune.metrics import list_metrics

FORMULAS = [m.formula for m in list_metrics() if m.formula is not None]


@pytest.mark.parametrize("formula", FORMULAS)
def test_named_formulas_round_trip_exactly(formula):
    tree = parse(formula)
    assert to_prefix(tree) == formula
    assert parse(to_prefix(tree)) == tree


def test_seed_sizes_and_heights_match_deap():
    # spec §2.3 lists DEAP's height / node counts of the seeds
    expected = {"AbsSNR": (4, 13), "FDR": (4, 13), "SymDiv": (5, 27), "Tstats": (6, 20), "WL1": (2, 3),
                "WL2": (3, 4), "GeoMedian": (5, 7), "GA_Func2": (8, 35)}
    by_name = {m.name: m for m in list_metrics()}
    for name, (h, n) in expected.items():
        assert (height(by_name[name].tree), size(by_name[name].tree)) == (h, n), name


def test_whitespace_and_constants():
    t = parse("  add( P ,\n mul( -1.5 , N ) ) ")
    assert t == Call("add", (Var("P"), Call("mul", (Const(-1.5), Var("N")))))
    assert to_prefix(t) == "add(P, mul(-1.5, N))"
    assert parse("1e-05") == Const(1e-05)
    assert parse(to_prefix(Const(0.1 + 0.2))) == Const(0.1 + 0.2)  # repr round-trips exactly


def test_positions_are_recorded_but_ignored_by_equality():
    t = parse("abs(sub(mP, mQ))")
    assert t.pos == 0 and t.args[0].pos == 4 and t.args[0].args[1].pos == 12
    assert t == parse("abs( sub( mP,mQ ) )")


def test_infix_and_latex():
    abs_snr = parse("div(abs(sub(g_mean(P), g_mean(Q))), rho1(add(std(P), std(Q))))")
    assert to_infix(abs_snr) == "|mean(P) - mean(Q)| / (std(P) + std(Q) + 1e-4)"
    assert to_latex(abs_snr) == r"\frac{\left|\mu_{P} - \mu_{Q}\right|}{\sigma_{P} + \sigma_{Q} + 10^{-4}}"
    assert to_infix(parse("sub(P, sub(mP, mQ))")) == "P - (mP - mQ)"
    assert to_infix(parse("sub(sub(P, mP), mQ)")) == "P - mP - mQ"
    assert to_infix(parse("div(N, mul(N, N))")) == "N / (N * N)"
    assert to_infix(parse("pow2(add(N, N))")) == "(N + N)^2"
    assert to_infix(parse("tran(mmul(tran(P), P))")) == "(P^T @ P)^T"
    assert to_latex(parse("var(mX)")) == r"\sigma_{m_X}^{2}"
    assert to_latex(parse("num(P)")) == "n_{P}"
    assert to_latex(parse("mul(N, 1e-05)")) == r"n_c \cdot 10^{-5}"


# (formula, reason fragment, 1-based column, a suggestion that must be offered or None)
ERRORS = [
    ("g_maen(P)", "unknown function 'g_maen'", 1, "g_mean"),
    ("add(P, mx)", "unknown operand 'mx'", 8, "mX"),
    ("div(abs(P), sqrtt(Q))", "unknown function 'sqrtt'", 13, "sqrt"),
    ("add(P)", "add takes 2 arguments, got 1", 6, None),
    ("add(P, Q, X)", "add takes 2 arguments, got 3", 11, None),
    ("abs(P, Q)", "abs takes 1 argument, got 2", 8, None),
    ("abs()", "abs takes 1 argument, got 0", 5, None),
    ("abs", "function 'abs' needs 1 argument", 1, None),
    ("P(X)", "'P' is an operand, not a function", 1, None),
    ("div(P, mX", "unexpected end of formula", 10, None),
    ("add(P,,Q)", "unexpected ','", 7, None),
    ("sum(P) x", "after the end of the formula", 8, None),
    ("sum(P))", "after the end of the formula", 7, None),
    ("", "empty formula", 1, None),
    ("sum(P; Q)", "unexpected character ';'", 6, None),
    ("__import__('os')", "unexpected character", 12, None),
    ("add(P, Q)", "type error in add(matrix[n_P×D], matrix[n_Q×D])", 1, None),
    ("div(g_mean(P), add(P, Q))", "type error in add", 16, None),
    ("mean(mX)", "mean (column mean) needs a matrix", 1, None),
    ("num(N)", "num (number of rows) needs a vector or matrix", 1, None),
    ("geo_median(P)", "geo_median needs a kernel matrix", 1, None),
]


@pytest.mark.parametrize("text,reason,column,suggestion", ERRORS)
def test_errors_point_at_the_offending_column(text, reason, column, suggestion):
    with pytest.raises(FormulaError) as info:
        parse(text)
    err = info.value
    assert reason in err.reason
    assert err.pos == column - 1
    message = str(err)
    lines = message.splitlines()
    assert lines[1] == "  " + text
    assert lines[2].index("^") == 2 + column - 1
    if suggestion is not None:
        assert suggestion in err.suggestions
        assert f"did you mean: {suggestion}" in message or suggestion in message.splitlines()[-1]


def test_error_says_what_was_expected():
    with pytest.raises(FormulaError) as info:
        parse("add(P, Q, X)")
    assert info.value.expected == "')' after argument 2"
    with pytest.raises(FormulaError, match="expected one of P, Q, N, X, mX, mP, mQ, WI, W"):
        parse("foo")


def test_formula_error_is_a_user_error():
    with pytest.raises(EvopruneError):
        parse("nope(")
    with pytest.raises(ValueError):
        parse("nope(")


def test_deeply_nested_input_is_refused_cleanly():
    with pytest.raises(FormulaError, match="nested deeper"):
        parse("abs(" * 400 + "P" + ")" * 400)
    assert height(parse("abs(" * 150 + "P" + ")" * 150)) == 150


def test_literals_float64_cannot_hold_are_refused_not_rounded():
    with pytest.raises(FormulaError, match="number 1e999 overflows float64") as info:
        parse("add(N, 1e999)")
    assert info.value.pos == 7 and "1.8e+308" in info.value.expected
    with pytest.raises(FormulaError, match=r"number 1e-400 underflows float64 \(it would be 0\)") as info:
        parse("1e-400")
    assert info.value.pos == 0 and info.value.expected == "0, or a value of at least 2.2e-308 in magnitude"
    with pytest.raises(FormulaError, match="number -1e-400 underflows"):
        parse("add(N, -1e-400)")
    assert parse("add(N, 0.0e-400)") == Call("add", (Var("N"), Const(0.0)))  # a zero is a zero
    assert parse("add(N, 5e-324)") == Call("add", (Var("N"), Const(5e-324)))  # subnormal, but not 0


# Arabic-Indic 3, Devanagari 3, fullwidth 3, mathematical bold 3
@pytest.mark.parametrize("digit", ["\u0663", "\u0969", "\uff13", "\U0001d7d1"])
def test_only_ascii_digits_make_numbers(digit):
    text = f"sum({digit})"
    with pytest.raises(FormulaError) as info:
        parse(text)
    assert info.value.reason == f"unexpected character {digit!r}"
    assert info.value.pos == 4
    assert info.value.expected == "a number written with the ASCII digits 0-9"
    assert str(info.value).splitlines()[2] == "  " + " " * 4 + "^"


def test_error_for_a_huge_formula_echoes_a_window_around_the_column():
    text = "abs(" * 10_000 + "X" + ")" * 10_000  # 50 KB, refused at nesting level 201
    with pytest.raises(FormulaError) as info:
        parse(text)
    err = info.value
    assert err.pos == 4 * 201
    lines = str(err).splitlines()
    assert len(str(err)) < 400
    shown, carets = lines[1][2:], lines[2][2:]
    assert len(shown) <= 100 and shown.startswith("…") and shown.endswith("…")
    column = carets.index("^")
    assert shown[column:column + 3] == "abs" and carets.strip() == "^^^"
    # the window holds the text around the column, in place
    start = err.pos - column
    assert shown[1:-1] == text[start + 1:start + len(shown) - 1]


def test_error_for_a_huge_name_quotes_it_shortly():
    with pytest.raises(FormulaError) as info:
        parse("add(N, " + "x" * 50_000 + ")")
    assert info.value.reason == "unknown operand '" + "x" * 39 + "…'"
    assert len(str(info.value)) < 500


def test_error_caret_stays_aligned_across_newlines_and_tabs():
    with pytest.raises(FormulaError) as info:
        parse("add(N,\n\tfoo)")
    lines = str(info.value).splitlines()
    assert lines[1] == "  add(N,  foo)"
    assert lines[2] == "  " + " " * 8 + "^^^"


def test_unchecked_parse_skips_typing():
    assert parse("add(P, Q)", check=False) == Call("add", (Var("P"), Var("Q")))


# ----------------------------------------------------------------------------- canonical form


@pytest.mark.parametrize("a,b", [
    ("add(var(P), var(Q))", "add(var(Q), var(P))"),
    ("add(add(N, mX), mP)", "add(mP, add(mX, N))"),
    ("mul(mul(N, var(P)), mX)", "mul(mX, mul(var(P), N))"),
    ("mmul(N, mX)", "mul(mX, N)"),
    ("tran(mX)", "mX"),
    ("tran(tran(P))", "P"),
    ("abs(pow2(mX))", "pow2(mX)"),
    ("abs(abs(mX))", "abs(mX)"),
    ("abs(std(P))", "std(P)"),
    ("sum(var(P))", "var(P)"),
    ("abs(-2.0)", "2.0"),
])
def test_equivalent_trees_share_a_canonical_key(a, b):
    assert canonical_key(parse(a)) == canonical_key(parse(b))


@pytest.mark.parametrize("a,b", [
    ("sub(var(P), var(Q))", "sub(var(Q), var(P))"),
    ("div(N, var(P))", "div(var(P), N)"),
    ("mmul(tran(P), P)", "mmul(P, tran(P))"),
    ("abs(mX)", "mX"),
])
def test_different_trees_keep_different_keys(a, b):
    assert canonical_key(parse(a)) != canonical_key(parse(b))


@pytest.mark.parametrize("formula", FORMULAS)
def test_canonical_is_idempotent_and_well_typed(formula):
    c = canonical(parse(formula))
    assert canonical(c) == c
    parse(to_prefix(c))  # still a valid formula
