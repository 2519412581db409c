"""GP variation on DEAP's tree operators, over our strongly-typed primitive set, with bounded retries.

Individuals are plain ``deap.gp.PrimitiveTree`` objects built by :func:`evoprune.expr.build_primitive_set`: no
``creator`` classes (no global state, nothing to re-create in workers) and no ``gp.compile`` (no ``eval``). A tree
is scored through our interpreter from its formula (:func:`evoprune.expr.from_deap`).

Operators: :func:`one_point_crossover` (typed one-point crossover, our own: see there why), ``gp.mutUniform`` with
``gp.genFull`` / ``genGrow`` / ``genHalfAndHalf`` subtrees, ``genHalfAndHalf`` for random initial trees. A child is *valid* when it is within the
height and size limits (the check DEAP's ``staticLimit`` makes), type-checks, and gives finite scores for every
channel of two synthetic layers (a conv-like and a linear-like one). An invalid child is retried from the original
parents; after ``max_retries`` failed attempts the parents are kept, so a generation always finishes.

DEAP's operators draw from the global :mod:`random` module. :func:`rng_scope` swaps a run's own
:class:`random.Random` state in for the duration of an operator and out again, so evolution randomness is one
serialisable stream (checkpointed each generation) and nothing else in the process disturbs it. Every draw is
from a list in a fixed order (the primitive set's lists, tree positions, types sorted by name), never from a set
or dict whose order follows hashes or object addresses, so a seed gives the same trees in every process.
"""

from __future__ import annotations

import contextlib
import copy
import random
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property

import torch
from deap import gp

from evoprune.evolve.config import OperatorConfig
from evoprune.evolve.cost import LayerDims, affordable
from evoprune.expr import (
    FormulaError,
    Node,
    build_primitive_set,
    canonical_key,
    evaluate,
    from_deap,
    parse,
    to_deap,
    to_prefix,
)

Tree = gp.PrimitiveTree


@contextlib.contextmanager
def rng_scope(rng: random.Random) -> Iterator[None]:
    """Make the global :mod:`random` (which DEAP uses) follow ``rng`` inside the block, then restore it."""
    outside = random.getstate()
    random.setstate(rng.getstate())
    try:
        yield
    finally:
        rng.setstate(random.getstate())
        random.setstate(outside)


def _type_name(type_: type) -> str:
    return f"{type_.__module__}.{type_.__qualname__}"


def one_point_crossover(a: Tree, b: Tree, rng: random.Random) -> bool:
    """Swap, in place, a random subtree of ``a`` with a random subtree of ``b`` of the same type.

    The type is drawn uniformly among the result types found below both roots, then a node of that type uniformly
    in each tree (the distribution of DEAP's ``cxOnePoint``). The types are ordered by name before the draw:
    ``cxOnePoint`` draws from a ``set`` of type classes, whose order follows their addresses, so the same seed gave
    different children in different processes. Returns False (trees untouched) when there is no common type.
    """
    positions: list[dict[str, list[int]]] = []
    for tree in (a, b):
        by_type: dict[str, list[int]] = defaultdict(list)
        for index in range(1, len(tree)):
            by_type[_type_name(tree[index].ret)].append(index)
        positions.append(by_type)
    common = sorted(positions[0].keys() & positions[1].keys())
    if not common:
        return False
    type_ = rng.choice(common)
    slice_a = a.searchSubtree(rng.choice(positions[0][type_]))
    slice_b = b.searchSubtree(rng.choice(positions[1][type_]))
    a[slice_a], b[slice_b] = b[slice_b], a[slice_a]
    return True


@dataclass(frozen=True)
class SyntheticLayer:
    """A fixed, seeded stand-in for a real layer, used to reject trees that cannot score one."""

    features: torch.Tensor  # [N, C, D]
    labels: torch.Tensor  # [N]
    weight: torch.Tensor  # [C, K]

    @staticmethod
    def make(samples: int, channels: int, positions: int, fan_in: int, classes: int, seed: int) -> SyntheticLayer:
        g = torch.Generator().manual_seed(seed)
        feats = torch.relu(torch.randn(samples, channels, positions, generator=g, dtype=torch.float64))
        feats[:, 0] = 0.0  # a dead channel (all zeros), as ReLU layers have
        labels = torch.arange(samples) % classes
        weight = torch.randn(channels, fan_in, generator=g, dtype=torch.float64) * 0.1
        return SyntheticLayer(feats, labels, weight)


def default_test_layers() -> tuple[SyntheticLayer, ...]:
    """A conv-like layer (9 positions) and a linear-like one (1 position), three classes each."""
    return (SyntheticLayer.make(60, 6, 9, 18, 3, seed=1), SyntheticLayer.make(45, 5, 1, 12, 3, seed=2))


def scores_are_finite(tree: Node, layers: tuple[SyntheticLayer, ...]) -> bool:
    """True when ``tree`` gives a finite score to every channel of every test layer."""
    for layer in layers:
        try:
            scores = evaluate(tree, features=layer.features, labels=layer.labels, weight=layer.weight)
        except Exception:  # any failure makes the tree invalid
            return False
        if scores.ndim != 1 or not bool(torch.isfinite(scores).all()):
            return False
    return True


@dataclass
class VariationStats:
    """Counts of what the operators did in one generation (reported per generation)."""

    crossovers: int = 0
    mutations: int = 0
    invalid: int = 0
    gave_up: int = 0
    duplicates_retried: int = 0
    duplicates_kept: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class Variation:
    """The tree operators of a run, bound to its primitive set and limits."""

    config: OperatorConfig
    test_layers: tuple[SyntheticLayer, ...] = field(default_factory=default_test_layers)
    real_layers: list[LayerDims] = field(default_factory=list)  # the tasks' layers, for the cost limits
    _valid_cache: dict[str, bool] = field(default_factory=dict)

    def set_real_layers(self, layers: list[LayerDims]) -> None:
        """Check children against these layers' sizes from now on (forgets earlier verdicts)."""
        self.real_layers = list(layers)
        self._valid_cache.clear()

    @cached_property
    def pset(self) -> gp.PrimitiveSetTyped:
        return build_primitive_set(constants=self.config.constants, exclude=self.config.exclude)

    # --- conversions ------------------------------------------------------------------------------------------

    def from_formula(self, formula: str) -> Tree:
        """A DEAP tree of this primitive set from a formula (raises :class:`FormulaError` if outside it)."""
        return to_deap(parse(formula), self.pset)

    @staticmethod
    def formula(tree: Tree) -> str:
        return to_prefix(from_deap(tree))

    @staticmethod
    def key(tree: Tree) -> str:
        """Canonical form: equal keys are the same function (the fitness-cache key)."""
        return canonical_key(from_deap(tree))

    # --- validity ---------------------------------------------------------------------------------------------

    def within_limits(self, tree: Tree) -> bool:
        return tree.height <= self.config.max_height and len(tree) <= self.config.max_size

    def is_valid(self, tree: Tree) -> bool:
        """Within limits, type-correct, affordable on the tasks' layers and finite on the synthetic test layers
        (memoised by formula)."""
        if not self.within_limits(tree):
            return False
        try:
            node = from_deap(tree)
            text = to_prefix(node)
        except FormulaError:
            return False
        hit = self._valid_cache.get(text)
        if hit is None:
            cost_ok = affordable(node, self.real_layers, self.config.max_elements, self.config.max_operations) is None
            hit = self._valid_cache[text] = cost_ok and scores_are_finite(node, self.test_layers)
        return hit

    # --- generators -------------------------------------------------------------------------------------------

    def _subtree(self, pset: gp.PrimitiveSetTyped, type_: type) -> list:
        lo, hi = self.config.mutation_min_height, self.config.mutation_max_height
        gen: Callable[..., list] = {"full": gp.genFull, "grow": gp.genGrow, "half": gp.genHalfAndHalf}[
            self.config.mutation_generator]
        return gen(pset, lo, hi, type_)

    def random_tree(self, rng: random.Random, stats: VariationStats | None = None) -> Tree | None:
        """A valid random tree (``genHalfAndHalf``), or None after ``max_retries`` invalid attempts."""
        with rng_scope(rng):
            for _ in range(self.config.max_retries):
                try:
                    tree = Tree(gp.genHalfAndHalf(self.pset, self.config.init_min_height, self.config.init_max_height))
                except (IndexError, TypeError):
                    tree = None
                if tree is not None and self.is_valid(tree):
                    return tree
                if stats is not None:
                    stats.invalid += 1
        if stats is not None:
            stats.gave_up += 1
        return None

    # --- operators --------------------------------------------------------------------------------------------

    def crossover(self, a: Tree, b: Tree, rng: random.Random, stats: VariationStats) -> tuple[Tree, Tree, bool]:
        """Typed one-point crossover of copies of ``a`` and ``b``, retried until both children are valid.

        Returns ``(child_a, child_b, changed)``; on giving up, copies of the parents and ``changed=False``.
        """
        stats.crossovers += 1
        for _ in range(self.config.max_retries):
            c1, c2 = copy.deepcopy(a), copy.deepcopy(b)
            if not one_point_crossover(c1, c2, rng):
                break  # no common type: no attempt can succeed
            if self.is_valid(c1) and self.is_valid(c2):
                return c1, c2, True
            stats.invalid += 1
        stats.gave_up += 1
        return copy.deepcopy(a), copy.deepcopy(b), False

    def mutate(self, tree: Tree, rng: random.Random, stats: VariationStats,
               accept: Callable[[Tree], bool] | None = None) -> tuple[Tree, bool]:
        """Uniform subtree mutation of a copy of ``tree``, retried until the child is valid (and ``accept``-ed).

        Returns ``(child, changed)``; on giving up, a copy of ``tree`` and ``changed=False``.
        """
        stats.mutations += 1
        with rng_scope(rng):
            for _ in range(self.config.max_retries):
                child = copy.deepcopy(tree)
                try:
                    (child,) = gp.mutUniform(child, expr=self._subtree, pset=self.pset)
                except (IndexError, TypeError):
                    stats.invalid += 1
                    continue
                if not self.is_valid(child):
                    stats.invalid += 1
                    continue
                if accept is not None and not accept(child):
                    stats.duplicates_retried += 1
                    continue
                return child, True
        stats.gave_up += 1
        return copy.deepcopy(tree), False
