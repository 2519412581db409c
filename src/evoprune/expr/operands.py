"""The nine operands of the design space (spec §2.1), with their symbolic shapes.

Feature-map operands describe channel k of the layer being scored; per-class operands (``P``, ``Q``, ``N``,
``mP``, ``mQ``) are re-bound for every class c, and the tree's value is summed over the classes.
Filter operands use the **PyTorch layout**: ``WI`` is channel k's filter flattened to K = C_in·kh·kw
values and ``W`` is the layer's weight as an F×K matrix (one row per output channel). The official code
used TensorFlow's kh×kw×C_in(×C_out) layout; only layout-dependent primitives (``num``, ``mean``,
``tran``, ``m_trace``, ``mmul``) of kernel operands can differ from it, norms and distances do not.
"""

from __future__ import annotations

from dataclasses import dataclass

from evoprune.expr.shapes import SCALAR, Shape, matrix, vector


@dataclass(frozen=True)
class OperandSpec:
    name: str
    shape: Shape
    per_class: bool  # re-bound for every class c (makes a tree label-aware)
    kind: str  # "map" (feature-map based) or "filter" (kernel based)
    latex: str
    doc: str


OPERANDS: dict[str, OperandSpec] = {
    o.name: o
    for o in (
        OperandSpec("P", matrix("n_P", "D"), True, "map", "P",
                    "feature maps of the samples of class c (n_c × D)"),
        OperandSpec("Q", matrix("n_Q", "D"), True, "map", "Q",
                    "feature maps of the samples not of class c ((N−n_c) × D)"),
        OperandSpec("N", SCALAR, True, "map", "n_c", "n_c, the number of samples of class c"),
        OperandSpec("X", matrix("n", "D"), False, "map", "X", "feature maps of all samples (N × D)"),
        OperandSpec("mX", vector("D"), False, "map", "m_X", "mean feature map over all samples (D)"),
        OperandSpec("mP", vector("D"), True, "map", "m_P", "mean feature map of class c (D)"),
        OperandSpec("mQ", vector("D"), True, "map", "m_Q", "mean feature map of the other classes (D)"),
        OperandSpec("WI", vector("K"), False, "filter", "W_I", "incoming filter of channel k, flattened (K)"),
        OperandSpec("W", matrix("F", "K"), False, "filter", "W", "the layer's whole kernel, one filter per row (F × K)"),
    )
}

#: Operands that are statistics of the feature maps (need the scoring set's activations).
MAP_OPERANDS = frozenset(n for n, o in OPERANDS.items() if o.kind == "map")
#: Operands re-bound per class (need labels).
CLASS_OPERANDS = frozenset(n for n, o in OPERANDS.items() if o.per_class)
#: Operands that are raw sample matrices.
SAMPLE_MATRICES = frozenset({"P", "Q", "X"})
