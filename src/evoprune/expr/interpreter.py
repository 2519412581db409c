"""Evaluate a pruning-function tree for **all channels of a layer at once** (spec §2.1).

    score(k) = Σ_c sum( f(P_c, Q_c, n_c, X, m_X, m_P,c, m_Q,c, W_k, W) )

for every channel k, as one tensor ``[C]``. Two strategies, chosen per tree:

* **moments** – when ``P``, ``Q`` and ``X`` only appear directly under ``g_mean``, ``sum``, ``var``,
  ``std``, ``num`` or ``mean`` (and everything else is built from ``N``, mean maps, kernels and constants),
  the tree is computed from :class:`~evoprune.expr.stats.ClassStats`, vectorised over channels *and*
  classes, with no raw feature maps. All seven seeds and the evolved functions are of this kind.
* **materialised** – otherwise ``X`` (``[N, C, D]``, one layer) is needed; the tree is vectorised over
  channels and loops over classes, computing class-independent subtrees only once.

The tree is simplified first (:mod:`evoprune.expr.simplify`: exact rules, the same scores), so dead weight such
as a zero term that does matrix work on ``P`` neither costs time nor forces the materialised strategy; the score's
final sum over the root's entries is written as ``sum(root)`` first, so the rules take scalar factors out of it.
Costly subtrees of the kernel ``W`` alone (``geo_median(W)``) are kept per weight tensor while it is unchanged
(:class:`_KernelValues`): evolution scores thousands of candidates on the same layers.

Trees that use no per-class operand (``P``, ``Q``, ``N``, ``mP``, ``mQ``) are evaluated once, without the
class sum: it would only multiply every channel's score by the number of classes. Identical subtrees
are computed once. The raw result may contain NaN/inf; :func:`sanitize_scores` maps those to −inf.

Channels are scored independently (only ``W`` spans them all), so both strategies evaluate them in blocks sized
by :mod:`evoprune.expr.memory` from the tree's symbolic shapes and the layer's sizes: memory stays within
``EVOPRUNE_EVAL_MEMORY_GB``, and a formula too large for even one channel is refused before allocating.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache

import torch
from torch import Tensor

from evoprune.expr.errors import FormulaError
from evoprune.expr.memory import LIMIT_ENV, footprint, memory_limit
from evoprune.expr.nodes import Call, Const, Node, Var, walk
from evoprune.expr.operands import CLASS_OPERANDS, MAP_OPERANDS, SAMPLE_MATRICES
from evoprune.expr.primitives import MOMENT_REDUCERS, PRIMITIVES
from evoprune.expr.printer import to_prefix
from evoprune.expr.shapes import Shape
from evoprune.expr.simplify import simplify as simplified
from evoprune.expr.stats import ClassStats
from evoprune.expr.typecheck import infer_all


@dataclass(frozen=True)
class TreeInfo:
    """What a tree needs in order to be evaluated."""

    shape: Shape  # shape of the tree's value before the final sum
    label_aware: bool  # uses P, Q, N, mP or mQ
    uses_maps: bool  # uses any feature-map operand
    uses_weight: bool  # uses WI or W
    needs_features: bool  # applies a non-moment operation to P, Q or X (needs raw feature maps)
    kernel_only: frozenset[Node] = frozenset()  # costly subtrees of W and constants alone (see _KernelValues)


@lru_cache(maxsize=512)
def _prepared(tree: Node, simplify: bool) -> tuple[Node, dict[Node, Shape], TreeInfo]:
    """The tree to evaluate, its shapes and needs, worked out once per distinct tree (scoring evaluates one tree
    per layer, evolution the same candidate on many layers)."""
    shapes = infer_all(tree)  # positioned errors refer to the tree as written
    if simplify:
        tree = simplified(tree)
        if infer_all(tree)[tree].rank > 0:  # the score sums the root's entries: said as sum(), the rules take
            tree = simplified(Call("sum", (tree,)))  # scalar factors and sums of terms out of that final sum too
        shapes = infer_all(tree)
    return tree, shapes, _analyse(tree, shapes)


def analyse(tree: Node, *, simplify: bool = False) -> TreeInfo:
    """What evaluating ``tree`` needs: as written, or with ``simplify`` as :func:`evaluate` scores it."""
    return _prepared(tree, simplify)[2]


def _analyse(tree: Node, shapes: dict[Node, Shape]) -> TreeInfo:
    names = {n.name for n in walk(tree) if isinstance(n, Var)}
    raw = False
    for n in walk(tree):
        if isinstance(n, Call):
            for a in n.args:
                if isinstance(a, Var) and a.name in SAMPLE_MATRICES and n.op not in MOMENT_REDUCERS:
                    raw = True
    if isinstance(tree, Var) and tree.name in SAMPLE_MATRICES:
        raw = True
    kernel_only = frozenset(
        n for n in walk(tree) if isinstance(n, Call) and any(isinstance(m, Call) and m.op in _COSTLY for m in walk(n))
        and {v.name for v in walk(n) if isinstance(v, Var)} == {"W"})
    return TreeInfo(
        shape=shapes[tree],
        label_aware=bool(names & CLASS_OPERANDS),
        uses_maps=bool(names & MAP_OPERANDS),
        uses_weight=bool(names & {"WI", "W"}),
        needs_features=raw,
        kernel_only=kernel_only,
    )


#: Primitives whose value on the whole kernel costs far more than reading it (``geo_median``: all pairwise
#: distances between the filters; products and inverses of kernel matrices).
_COSTLY = frozenset({"geo_median", "mmul", "out_dot", "m_inv"})


class _KernelValues:
    """Values of costly subtrees of the kernel ``W`` alone, kept per weight tensor while it lives and is unchanged.

    Why: such a value is the same for every channel block, class and candidate that scores the layer, and
    evolution scores thousands of candidates on the same unchanged layers (``geo_median(W)`` alone was a third of
    its children's scoring time). Entries are keyed by the tensor object (weakly: a freed tensor drops them) and
    dropped when its in-place version counter moves (fine-tuning), so a changed weight is never read stale.
    """

    _stores: dict[int, tuple[weakref.ref, tuple[int, torch.dtype, str], dict[Node, Tensor]]] = {}
    MAX_ENTRIES = 32  # per weight tensor, oldest dropped first; a value is kept only if it is no larger than W

    @classmethod
    def of(cls, weight: Tensor, dtype: torch.dtype, device) -> dict[Node, Tensor]:
        key = (weight._version, dtype, str(device))
        entry = cls._stores.get(id(weight))
        if entry is None or entry[0]() is not weight or entry[1] != key:
            entry = cls._stores[id(weight)] = (weakref.ref(weight, cls._forget(id(weight))), key, {})
        return entry[2]

    @classmethod
    def _forget(cls, ident: int) -> Callable[[weakref.ref], None]:
        def forget(ref: weakref.ref) -> None:  # only this tensor's entry: its id may have been reused since
            if cls._stores.get(ident, (None,))[0] is ref:
                del cls._stores[ident]
        return forget


BLOCK_ELEMENTS = 1 << 16  # float64 elements of a [channels, classes, D] value per evaluation block (512 KiB)


def sanitize_scores(scores: Tensor) -> Tensor:
    """Map NaN and ±inf to −inf, so a non-finite channel is never ranked ahead of a finite one."""
    return torch.where(torch.isfinite(scores), scores, torch.full_like(scores, float("-inf")))


class _Moments:
    """Moment view of P, Q or X for channels × classes: n [1,Bl], s1/s2 [Bc,Bl] (Σx, Σx²), pos [Bc,Bl,D].

    ``pos`` (the per-position sums, as large as all the rest together) is built on first use only: most
    trees never read the mean maps of P or Q.
    """

    def __init__(self, n: Tensor, s1: Tensor, s2: Tensor, positions: int, pos: Callable[[], Tensor]) -> None:
        self.n, self.s1, self.s2, self.d = n, s1, s2, positions
        self._pos = pos

    @cached_property
    def pos(self) -> Tensor:
        return self._pos()

    def reduce(self, op: str) -> Tensor:
        if op == "num":
            return self.n
        if op == "mean":
            return self.pos / self.n.unsqueeze(-1)
        return _streamed(op, self.n * self.d, self.s1, self.s2)


class _LazyEnv(dict):
    """Operand values, each computed from its factory on first lookup (unused operands cost nothing)."""

    def __init__(self, values: dict[str, object], factories: dict[str, Callable[[], object]]) -> None:
        super().__init__(values)
        self.factories = factories

    def __missing__(self, name: str) -> object:
        value = self[name] = self.factories[name]()
        return value


class _Evaluator:
    """Evaluates a tree bottom-up, computing each distinct subtree once.

    With ``release``, a subtree's value is dropped from the memo after its last use, so a wide layer holds
    two or three ``[C, L, D]`` temporaries instead of one per node (fresh memory costs page faults).
    """

    def __init__(self, shapes: dict[Node, Shape], env: dict[str, object], dtype, device, *,
                 release: bool = False, kernel: tuple[frozenset[Node], dict[Node, Tensor], int] | None = None) -> None:
        self.shapes = shapes
        self.env = env
        self.dtype = dtype
        self.device = device
        self.kernel = kernel  # (cacheable nodes, the weight's store, the weight's size) or None
        self.memo: dict[Node, object] = {}
        self.uses: dict[Node, int] | None = None
        if release:  # parent references per distinct subtree (each distinct parent is computed once)
            self.uses = {}
            for parent in shapes:
                if isinstance(parent, Call):
                    for a in parent.args:
                        self.uses[a] = self.uses.get(a, 0) + 1

    def _used(self, args: tuple[Node, ...]) -> None:
        if self.uses is None:
            return
        for a in args:
            self.uses[a] -= 1
            if self.uses[a] == 0:
                self.memo.pop(a, None)

    def value(self, node: Node) -> object:
        hit = self.memo.get(node)
        if hit is not None:
            return hit
        if isinstance(node, Var):
            out = self.env[node.name]
        elif isinstance(node, Const):
            out = torch.full((1, 1), float(node.value), dtype=self.dtype, device=self.device)
        else:
            if node.op in MOMENT_REDUCERS and isinstance(node.args[0], Var):
                arg = self.value(node.args[0])
                if isinstance(arg, _Moments):
                    out = arg.reduce(node.op)
                    self.memo[node] = out
                    self._used(node.args)
                    return out
            kept = self.kernel[1].get(node) if self.kernel is not None and node in self.kernel[0] else None
            if kept is not None:
                self.memo[node] = kept
                return kept
            args = [self.value(a) for a in node.args]
            spec = PRIMITIVES[node.op]
            out = spec.apply(args, [self.shapes[a] for a in node.args], self.shapes[node])
            del args
            self._used(node.args)
            if self.kernel is not None and node in self.kernel[0] and out.numel() <= self.kernel[2]:
                store = self.kernel[1]
                if len(store) >= _KernelValues.MAX_ENTRIES:
                    del store[next(iter(store))]
                store[node] = out
        self.memo[node] = out
        return out


def _channels(stats: ClassStats | None, features: Tensor | None, weight: Tensor | None) -> int:
    for c in (stats.num_channels if stats is not None else None,
              features.shape[1] if features is not None else None,
              weight.shape[0] if weight is not None else None):
        if c is not None:
            return int(c)
    raise ValueError("nothing to score: give stats, features or weight")


def _reduce(value: Tensor, shape: Shape) -> Tensor:
    """[Bc, Bl, *dims] -> [Bc, Bl] by summing the value's own dims (the paper's final np.sum)."""
    return value.reshape(tuple(value.shape[:2]) + (-1,)).sum(-1) if shape.rank else value


def evaluate(
    tree: Node,
    *,
    stats: ClassStats | None = None,
    features: Tensor | None = None,
    labels: Tensor | None = None,
    weight: Tensor | None = None,
    dtype: torch.dtype = torch.float64,
    strategy: str = "auto",
    layer: str | None = None,
    simplify: bool = True,
) -> Tensor:
    """Raw per-channel scores ``[C]`` (higher = more important; may be non-finite).

    ``stats``: sufficient statistics of the layer's feature maps; ``features``: raw maps ``[N, C, ...]``
    (needed only by trees that do matrix work on P/Q/X; also accepted instead of ``stats``);
    ``labels``: ``[N]`` class indices for ``features``; ``weight``: the layer weight ``[C_out, ...]``;
    ``strategy``: "auto", or force "moments" / "materialised" (tests compare the two); ``layer``: the
    layer's name, for messages; ``simplify``: evaluate the simplified tree (the default: same scores, see
    :mod:`evoprune.expr.simplify` for the one convention on overflowing dead terms) or the tree as written.

    Channels are evaluated in blocks whose values fit :func:`~evoprune.expr.memory.memory_limit`; a formula
    whose values for a single channel do not fit raises :class:`FormulaError` before anything is allocated.
    Where a linear-algebra routine fails on a degenerate input, that block's channels score NaN (ranked as
    non-finite scores are) instead of aborting the whole scoring.
    """
    if strategy not in ("auto", "moments", "materialised"):
        raise ValueError(f"strategy must be auto, moments or materialised, got {strategy!r}")
    tree, shapes, info = _prepared(tree, simplify)
    if strategy == "moments" and info.needs_features:
        raise ValueError("this formula applies matrix operations to P/Q/X: it cannot use moments only")
    c = _channels(stats, features, weight)
    device = stats.count.device if stats is not None else (features if features is not None else weight).device
    env: dict[str, object] = {}
    fan_in = 1
    if info.uses_weight:
        if weight is None:
            raise ValueError("this formula uses WI/W: the layer weight is required")
        w = weight.detach().to(device=device, dtype=dtype).reshape(weight.shape[0], -1)
        if w.shape[0] != c:
            raise ValueError(f"weight has {w.shape[0]} output channels, the feature maps have {c}")
        env["WI"] = w[:, None, :]
        env["W"] = w[None, None]
        fan_in = w.shape[1]
    budget = _Budget(tree, shapes, info, c, fan_in, dtype, layer)
    kernel = None
    if info.kernel_only and weight is not None:
        kernel = (info.kernel_only, _KernelValues.of(weight, dtype, device), weight.numel())
    if not info.uses_maps:
        step = budget.block(samples=1, positions=1, classes=1, materialised=False)
        return _in_blocks(c, step, lambda sl: _evaluate_weights(tree, shapes, info, _sliced(env, sl), sl, dtype,
                                                                device, kernel), dtype, device)
    materialise = info.needs_features or strategy == "materialised"
    if materialise and features is None:
        raise ValueError("this formula applies matrix operations to P/Q/X: the layer's raw feature maps "
                         "are required (collect with needs.features)")
    if info.label_aware and labels is None and not (stats is not None and stats.labelled and not materialise):
        raise ValueError("this formula is label-aware (uses P, Q, N, mP or mQ): labels are required")
    if materialise:
        n = features.shape[0]
        flat = features.detach().reshape(n, c, -1)
        step = budget.block(samples=n, positions=flat.shape[2], classes=1, materialised=True)
        return _in_blocks(c, step, lambda sl: _evaluate_materialised(
            tree, shapes, info, _sliced(env, sl), flat[:, sl], labels, dtype, device, kernel), dtype, device)
    if stats is None:
        if features is None:
            raise ValueError("this formula uses feature maps: give stats or features")
        stats = ClassStats.from_features(features, labels if info.label_aware else None)
    return _evaluate_moments(tree, shapes, info, env, stats, dtype, c, budget, kernel)


class _Budget:
    """The memory limit applied to one tree on one layer: how many channels to evaluate together."""

    def __init__(self, tree: Node, shapes: dict[Node, Shape], info: TreeInfo, channels: int, fan_in: int,
                 dtype: torch.dtype, layer: str | None) -> None:
        self.tree, self.shapes, self.info = tree, shapes, info
        self.channels, self.fan_in, self.layer = channels, fan_in, layer
        self.itemsize = torch.empty((), dtype=dtype).element_size()

    def block(self, *, samples: int, positions: int, classes: int, materialised: bool) -> int:
        """Channels per block; raises :class:`FormulaError` if a single channel does not fit the limit."""
        sizes = {"n": samples, "D": positions, "K": self.fan_in, "F": self.channels}
        fp = footprint(self.shapes, sizes, classes=classes, materialised=materialised,
                       label_aware=self.info.label_aware)
        limit = memory_limit()
        step = fp.block(self.channels, limit, self.itemsize)
        if step == 0:
            need = fp.bytes(1, self.itemsize)
            formula = to_prefix(self.tree)
            if len(formula) > 80:
                formula = formula[:79] + "…"
            where = f"layer {self.layer!r}" if self.layer is not None else "this layer"
            used = {d for shape in self.shapes.values() for d in shape.dims}
            described = {"n": f"{samples} samples", "D": f"{positions} positions per map",
                         "K": f"fan-in {self.fan_in}", "F": f"{self.channels} filters"}
            dims = [text for d, text in described.items() if d in used or (d == "n" and used & {"n_P", "n_Q"})]
            raise FormulaError(
                f"formula {formula} needs about {need / 1e9:.3g} GB of intermediate values for a single channel "
                f"of {where} ({', '.join(dims)}), over the limit of {limit / 1e9:.3g} GB: score on fewer samples, "
                f"simplify the formula, or raise the limit (e.g. {LIMIT_ENV}={max(1, math.ceil(need / 1e9))})")
        return step


def _sliced(env: dict[str, object], sl: slice) -> dict[str, object]:
    """The operands for a block of channels (only WI differs per channel; W is the whole kernel)."""
    return dict(env, WI=env["WI"][sl]) if "WI" in env else dict(env)


def _in_blocks(c: int, step: int, run: Callable[[slice], Tensor], dtype: torch.dtype, device) -> Tensor:
    """``run`` over consecutive channel blocks of size ``step``, concatenated; a failed LAPACK call gives NaN."""
    out = []
    for c0 in range(0, c, step):
        sl = slice(c0, min(c, c0 + step))
        try:
            out.append(run(sl))
        except torch.linalg.LinAlgError:  # e.g. an SVD that does not converge on a finite but degenerate matrix
            out.append(torch.full((sl.stop - c0,), math.nan, dtype=dtype, device=device))
    return out[0] if len(out) == 1 else torch.cat(out)


def _evaluate_weights(tree, shapes, info: TreeInfo, env, sl: slice, dtype, device, kernel) -> Tensor:
    ev = _Evaluator(shapes, env, dtype, device, kernel=kernel)
    return _reduce(ev.value(tree), info.shape).sum(1).expand(sl.stop - sl.start).clone()


def _evaluate_moments(tree, shapes, info: TreeInfo, env, stats: ClassStats, dtype, c: int, budget: _Budget,
                      kernel) -> Tensor:
    st = stats.present()
    d, classes = st.positions, st.count.shape[0]
    cnt = st.count.to(dtype)[None, :]  # [1, L]
    # [C, L], contiguous: a transposed view would give every [C, L, D] result a layout that mixes badly
    # with the mean maps (strided element-wise loops, several times slower on wide layers)
    s1 = st.pos_sum.sum(-1).T.to(dtype).contiguous()
    s2 = st.sq_sum.T.to(dtype).contiguous()
    pos = st.pos_sum.permute(1, 0, 2).to(dtype)  # [C, L, D] (a view for float64)
    # Channels are scored independently (only W spans them all): evaluate a block of channels at a time so
    # that a [channels, L, D] temporary stays near BLOCK_ELEMENTS (cache-sized, and reused by the allocator
    # instead of fresh pages for every node), and the whole block within the memory limit.
    step = min(max(1, BLOCK_ELEMENTS // (classes * d)),
               budget.block(samples=int(st.count.sum()), positions=d, classes=classes, materialised=False))
    return _in_blocks(c, step, lambda sl: _moments_block(tree, shapes, info, _sliced(env, sl), cnt, s1[sl], s2[sl],
                                                         pos[sl], d, sl.stop - sl.start, kernel), dtype, cnt.device)


def _moments_block(tree, shapes, info: TreeInfo, env, cnt, s1, s2, pos, d: int, c: int, kernel) -> Tensor:
    xm = _Moments(cnt.sum(1, keepdim=True), s1.sum(1, keepdim=True), s2.sum(1, keepdim=True), d,
                  lambda: pos.sum(1, keepdim=True))
    factories: dict[str, Callable[[], object]] = {"X": lambda: xm, "mX": lambda: xm.reduce("mean")}
    if info.label_aware:
        pm = _Moments(cnt, s1, s2, d, lambda: pos)
        qm = _Moments(xm.n - cnt, xm.s1 - s1, xm.s2 - s2, d, lambda: xm.pos - pos)
        factories.update(P=lambda: pm, Q=lambda: qm, N=lambda: cnt, mP=lambda: pm.reduce("mean"),
                         mQ=lambda: qm.reduce("mean"))
    ev = _Evaluator(shapes, _LazyEnv(env, factories), cnt.dtype, cnt.device, release=True, kernel=kernel)
    out = ev.value(tree)
    if isinstance(out, _Moments):  # impossible for a typed tree: a bare P/Q/X is "needs_features"
        raise FormulaError("internal: a moment view reached the root")
    per_class = _reduce(out, info.shape)
    if info.label_aware:  # a value may have lost its class axis (e.g. num(mP)): it still counts per class
        per_class = per_class.expand(per_class.shape[0], cnt.shape[1])
    return per_class.sum(1).expand(c).clone()


def _evaluate_materialised(tree, shapes, info: TreeInfo, env, features: Tensor, labels, dtype, device,
                           kernel) -> Tensor:
    """``features``: ``[N, c, D]``, the block's channels.

    Per class the raw maps of P and Q are sliced only when a node needs them raw; ``g_mean``/``sum``/``var``/``std``
    of P or Q come from per-class sums computed once for all classes (as on the moments path), so a tree that
    reads P raw somewhere does not also recompute the moments of Q (most of the samples) from raw maps per class.
    """
    c = features.shape[1]
    x = features.to(device=device, dtype=dtype).transpose(0, 1)  # [c, N, D]
    env["X"] = x[:, None]
    env["mX"] = x.mean(1)[:, None]
    class_nodes = {node for node in walk(tree) if any(isinstance(v, Var) and v.name in CLASS_OPERANDS
                                                         for v in walk(node))}
    if not info.label_aware:
        ev = _Evaluator(shapes, env, dtype, device, kernel=kernel)
        return _reduce(ev.value(tree), info.shape).sum(1).expand(c).clone()
    y = labels.to(device)
    classes = torch.unique(y)
    streamed = [node for node in class_nodes if isinstance(node, Call) and node.op in _STREAMED_REDUCERS
                and isinstance(node.args[0], Var) and node.args[0].name in ("P", "Q")]
    if streamed:
        onehot = (y[None, :] == classes[:, None]).to(dtype)  # [L, N]
        row_sum, row_sq = x.sum(-1), (x * x).sum(-1)  # [c, N]
        cls_sum, cls_sq = row_sum @ onehot.T, row_sq @ onehot.T  # [c, L]
        all_sum, all_sq = row_sum.sum(1, keepdim=True), row_sq.sum(1, keepdim=True)
        counts, d = onehot.sum(1), x.shape[2]
    lazy = _LazyEnv(env, {})
    ev = _Evaluator(shapes, lazy, dtype, device, kernel=kernel)
    total = torch.zeros(c, dtype=dtype, device=device)
    for i, cls in enumerate(classes):
        mask = y == cls
        for name in ("P", "Q", "mP", "mQ"):
            lazy.pop(name, None)
        lazy.factories = {"P": lambda m=mask: x[:, m][:, None], "Q": lambda m=mask: x[:, ~m][:, None],
                          "mP": lambda: lazy["P"].mean(2), "mQ": lambda: lazy["Q"].mean(2)}
        n_p = int(mask.sum())
        lazy["N"] = torch.full((1, 1), float(n_p), dtype=dtype, device=device)
        for node in class_nodes:
            ev.memo.pop(node, None)
        for node in streamed:
            if node.args[0].name == "P":
                ev.memo[node] = _streamed(node.op, counts[i] * d, cls_sum[:, i:i + 1], cls_sq[:, i:i + 1])
            else:
                ev.memo[node] = _streamed(node.op, (len(y) - counts[i]) * d, all_sum - cls_sum[:, i:i + 1],
                                          all_sq - cls_sq[:, i:i + 1])
        total = total + _reduce(ev.value(tree), info.shape).sum(1).expand(c)
    return total


_STREAMED_REDUCERS = frozenset({"g_mean", "sum", "var", "std"})


#: A variance from moments below this fraction of the mean square is rounding (E[x²] − E[x]² cancels), not spread
#: (in float32, below 64 units of its rounding instead).
_MOMENT_VAR_RTOL = 1e-10


def _streamed(op: str, entries: Tensor, s1: Tensor, s2: Tensor) -> Tensor:
    """``op`` (sum, g_mean, var or std) over ``entries`` values from their sum ``s1`` and sum of squares ``s2``
    (population moments). A constant channel gets a variance of exactly 0, as a two-pass variance gives it, not
    the cancellation residue (≈ 1e-15 of its mean square) that a protected division would blow up."""
    if op == "sum":
        return s1
    mu = s1 / entries
    if op == "g_mean":
        return mu
    mean_sq = s2 / entries
    var = mean_sq - mu * mu
    var = var.masked_fill(var <= max(_MOMENT_VAR_RTOL, 64 * torch.finfo(var.dtype).eps) * mean_sq, 0.0)
    return var if op == "var" else var.sqrt()
