"""Which channels to remove, given scores (higher = keep) and how many each layer loses.

Ties are broken by channel index (stable sort), so a run is deterministic; ``-inf`` scores (non-finite metric
values) sort first, so such channels go before any finite one.
"""

from __future__ import annotations

import torch


def lowest(scores: torch.Tensor, k: int) -> list[int]:
    """Indices of the ``k`` lowest scores, ascending by index."""
    if k <= 0:
        return []
    order = torch.sort(scores.float(), stable=True).indices
    return sorted(order[:k].tolist())


def select_local(scores: dict[str, torch.Tensor], counts: dict[str, int]) -> dict[str, list[int]]:
    """Per-layer ranking: each layer loses its own ``counts[layer]`` lowest-scoring channels."""
    return {name: lowest(scores[name], k) for name, k in counts.items() if k > 0}


def select_global(scores: dict[str, torch.Tensor], budget: int, limits: dict[str, int]) -> dict[str, list[int]]:
    """Global ranking: the ``budget`` lowest-scoring channels across layers, at most ``limits[layer]`` per layer.

    The limits keep every layer at or above its minimum width; a channel over its layer's limit is skipped and the
    next lowest channel anywhere is taken instead.
    """
    names = [n for n in scores if limits.get(n, 0) > 0]
    if budget <= 0 or not names:
        return {}
    values = torch.cat([scores[n].float() for n in names])
    owner = torch.cat([torch.full((len(scores[n]),), i) for i, n in enumerate(names)])
    index = torch.cat([torch.arange(len(scores[n])) for n in names])
    order = torch.sort(values, stable=True).indices.tolist()
    taken: dict[str, list[int]] = {}
    left = budget
    for pos in order:
        name = names[int(owner[pos])]
        chosen = taken.setdefault(name, [])
        if len(chosen) < limits[name]:
            chosen.append(int(index[pos]))
            left -= 1
            if left == 0:
                break
    return {name: sorted(idx) for name, idx in taken.items() if idx}
