"""Expression-tree nodes: immutable, hashable, comparable (positions are ignored by equality)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Var:
    """An operand (terminal) such as ``P`` or ``mX``."""

    name: str
    pos: int | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Const:
    """A numeric constant (scalar). The paper has none; we allow them as an extension."""

    value: float
    pos: int | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Call:
    """A primitive applied to arguments, e.g. ``div(a, b)``."""

    op: str
    args: tuple[Node, ...]
    pos: int | None = field(default=None, compare=False, repr=False)
    _hash: int = field(init=False, default=0, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Nodes key the evaluator's memo and shape tables: hashing a subtree once, not on every lookup,
        # keeps those lookups O(1) instead of O(subtree size).
        object.__setattr__(self, "_hash", hash((self.op, self.args)))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple:
        # Rebuild through __init__ when unpickled: string hashes differ between processes.
        return (Call, (self.op, self.args, self.pos))


Node = Var | Const | Call


def walk(node: Node) -> Iterator[Node]:
    """Pre-order traversal (the order of the prefix form)."""
    stack: list[Node] = [node]
    while stack:
        n = stack.pop()
        yield n
        if isinstance(n, Call):
            stack.extend(reversed(n.args))


def size(node: Node) -> int:
    """Number of nodes (DEAP's ``len(tree)``)."""
    return sum(1 for _ in walk(node))


def height(node: Node) -> int:
    """Height with a leaf at 0 (DEAP's ``tree.height``)."""
    if isinstance(node, Call):
        return 1 + max(height(a) for a in node.args)
    return 0


def operands(node: Node) -> frozenset[str]:
    """Names of all operands used."""
    return frozenset(n.name for n in walk(node) if isinstance(n, Var))
