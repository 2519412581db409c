"""The design space of pruning functions: operands, primitives, typed trees, parser, printers, interpreter.

Quick use::

    from evoprune.expr import parse, simplify, to_infix, evaluate
    tree = parse("div(abs(sub(g_mean(P), g_mean(Q))), rho1(add(std(P), std(Q))))")
    to_infix(tree)                          # '|mean(P) - mean(Q)| / (std(P) + std(Q) + 1e-4)'
    simplify(tree)                          # the same scores from a tree without dead weight (here: itself)
    scores = evaluate(tree, features=f, labels=y)   # f: [N, C, H, W] -> scores [C]
"""

from evoprune.expr.canonical import canonical, canonical_key
from evoprune.expr.deap_bridge import (
    DEFAULT_UNIVERSE,
    ValueType,
    build_primitive_set,
    deap_type,
    from_deap,
    signatures,
    to_deap,
)
from evoprune.expr.errors import FormulaError
from evoprune.expr.interpreter import TreeInfo, analyse, evaluate, sanitize_scores
from evoprune.expr.nodes import Call, Const, Node, Var, height, operands, size, walk
from evoprune.expr.operands import OPERANDS, OperandSpec
from evoprune.expr.parser import parse
from evoprune.expr.primitives import PRIMITIVES, PrimitiveSpec
from evoprune.expr.printer import to_infix, to_latex, to_prefix
from evoprune.expr.shapes import SCALAR, Shape, ShapeError
from evoprune.expr.simplify import simplify
from evoprune.expr.stats import ClassStats
from evoprune.expr.typecheck import infer, infer_all, is_valid

__all__ = [
    "Call", "ClassStats", "Const", "DEFAULT_UNIVERSE", "FormulaError", "Node", "OPERANDS", "OperandSpec",
    "PRIMITIVES", "PrimitiveSpec", "SCALAR", "Shape", "ShapeError", "TreeInfo", "ValueType", "Var", "analyse",
    "build_primitive_set", "canonical", "canonical_key", "deap_type", "evaluate", "from_deap", "height",
    "infer", "infer_all", "is_valid", "operands", "parse", "sanitize_scores", "signatures", "simplify", "size",
    "to_deap", "to_infix", "to_latex", "to_prefix", "walk",
]
