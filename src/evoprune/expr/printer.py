"""Printers: prefix (the parser's input language, round-trips exactly), readable infix, and LaTeX."""

from __future__ import annotations

from evoprune.expr.nodes import Const, Node, Var
from evoprune.expr.operands import OPERANDS

_ATOM, _POSTFIX, _UNARY, _MUL, _ADD = 5, 4, 3, 2, 1
_ASSOCIATIVE = {"add", "mul"}


def to_prefix(node: Node) -> str:
    """``name(arg, arg)`` form; ``parse(to_prefix(t)) == t`` for every tree."""
    if isinstance(node, Var):
        return node.name
    if isinstance(node, Const):
        return repr(float(node.value))
    return f"{node.op}({', '.join(to_prefix(a) for a in node.args)})"


def _num(value: float) -> str:
    return format(float(value), ".6g")


# ---------------------------------------------------------------- infix

_INFIX_BINARY = {"add": ("+", _ADD), "sub": ("-", _ADD), "mul": ("*", _MUL), "div": ("/", _MUL), "mmul": ("@", _MUL)}
_INFIX_FUNC = {
    "g_mean": "mean", "mean": "colmean", "sum": "sum", "std": "std", "var": "var", "num": "num",
    "sqrt": "sqrt", "m_trace": "tr", "m_inv": "inv", "geo_median": "geomedian", "out_dot": "outer",
}
_RIDGES = {"rho1": "1e-4", "rho5": "0.05"}


def _infix(node: Node) -> tuple[str, int]:
    if isinstance(node, Var):
        return node.name, _ATOM
    if isinstance(node, Const):
        text = _num(node.value)
        return text, (_UNARY if text.startswith("-") else _ATOM)
    op, args = node.op, node.args
    if op in _INFIX_BINARY:
        sym, prec = _INFIX_BINARY[op]
        (a, pa), (b, pb) = _infix(args[0]), _infix(args[1])
        if pa < prec:
            a = f"({a})"
        if pb < prec or (pb == prec and op not in _ASSOCIATIVE):
            b = f"({b})"
        return f"{a} {sym} {b}", prec
    if op in _RIDGES:
        a, _pa = _infix(args[0])
        return f"{a} + {_RIDGES[op]}", _ADD
    if op in ("pow2", "tran"):
        a, pa = _infix(args[0])
        if pa < _ATOM:
            a = f"({a})"
        return a + ("^2" if op == "pow2" else "^T"), _POSTFIX
    if op == "abs":
        return f"|{_infix(args[0])[0]}|", _ATOM
    name = _INFIX_FUNC[op]
    return f"{name}({', '.join(_infix(a)[0] for a in args)})", _ATOM


def to_infix(node: Node) -> str:
    """Readable infix, e.g. ``|mean(P) - mean(Q)| / (std(P) + std(Q) + 1e-4)``."""
    return _infix(node)[0]


# ---------------------------------------------------------------- LaTeX

_LATEX_FUNC = {
    "mean": r"\operatorname{colmean}", "sum": r"\operatorname{sum}", "num": r"\operatorname{num}",
    "m_trace": r"\operatorname{tr}", "geo_median": r"\operatorname{GM}",
}
_STAT_SYMBOL = {"g_mean": r"\mu", "std": r"\sigma", "var": r"\sigma^{2}"}
_LATEX_RIDGES = {"rho1": r"10^{-4}", "rho5": "0.05"}


def _latex(node: Node) -> tuple[str, int]:
    if isinstance(node, Var):
        return OPERANDS[node.name].latex, _ATOM
    if isinstance(node, Const):
        text = _num(node.value)
        if "e" in text:
            mant, exp = text.split("e")
            text = (f"{mant} \\cdot " if mant not in ("1", "-1") else ("-" if mant == "-1" else "")) + \
                f"10^{{{int(exp)}}}"
        return text, (_UNARY if text.startswith("-") else _ATOM)
    op, args = node.op, node.args
    if op == "div":
        return rf"\frac{{{_latex(args[0])[0]}}}{{{_latex(args[1])[0]}}}", _ATOM
    if op in ("add", "sub", "mul", "mmul", "out_dot"):
        sym, prec = {"add": ("+", _ADD), "sub": ("-", _ADD), "mul": (r"\cdot", _MUL),
                     "mmul": (r"\,", _MUL), "out_dot": (r"\otimes", _MUL)}[op]
        (a, pa), (b, pb) = _latex(args[0]), _latex(args[1])
        if pa < prec:
            a = rf"\left({a}\right)"
        if pb < prec or (pb == prec and op not in _ASSOCIATIVE):
            b = rf"\left({b}\right)"
        return f"{a} {sym} {b}", prec
    if op in _LATEX_RIDGES:
        return f"{_latex(args[0])[0]} + {_LATEX_RIDGES[op]}", _ADD
    if op in ("pow2", "tran", "m_inv"):
        a, pa = _latex(args[0])
        if pa < _ATOM:
            a = rf"\left({a}\right)"
        sup = {"pow2": "2", "tran": r"\top", "m_inv": "-1"}[op]
        return f"{{{a}}}^{{{sup}}}", _POSTFIX
    if op == "abs":
        return rf"\left|{_latex(args[0])[0]}\right|", _ATOM
    if op == "sqrt":
        return rf"\sqrt{{{_latex(args[0])[0]}}}", _ATOM
    if op in _STAT_SYMBOL:
        arg = args[0]
        if isinstance(arg, Var):
            sub = OPERANDS[arg.name].latex
            return (rf"\sigma_{{{sub}}}^{{2}}" if op == "var" else rf"{_STAT_SYMBOL[op]}_{{{sub}}}"), _ATOM
        return rf"{_STAT_SYMBOL[op]}\left({_latex(arg)[0]}\right)", _ATOM
    if op == "num" and isinstance(args[0], Var) and args[0].name in ("P", "Q", "X"):
        return f"n_{{{args[0].name}}}", _ATOM
    name = _LATEX_FUNC[op]
    return rf"{name}\left({', '.join(_latex(a)[0] for a in args)}\right)", _ATOM


def to_latex(node: Node) -> str:
    r"""LaTeX (math mode, no delimiters), e.g. ``\frac{\left|\mu_{P} - \mu_{Q}\right|}{...}``."""
    return _latex(node)[0]
