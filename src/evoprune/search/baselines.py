"""Random and magnitude pruning at the sparsity a search reached: the bar a search has to beat (spec §8.11).

``*_layer`` kinds prune exactly as many weights in each layer as the reference masks; ``*_global`` kinds prune the
same total number of weights, chosen over all layers at once.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from evoprune.errors import ConfigError

BASELINE_KINDS: tuple[str, ...] = ("random_global", "random_layer", "magnitude_global", "magnitude_layer")


def _mask_from_flat(prune_idx: torch.Tensor, sizes: list[int], shapes: list[torch.Size], names: list[str]) -> dict[str, torch.Tensor]:
    flat = torch.ones(sum(sizes), dtype=torch.bool)
    flat[prune_idx] = False
    out, start = {}, 0
    for name, size, shape in zip(names, sizes, shapes):
        out[name] = flat[start:start + size].view(shape).clone()
        start += size
    return out


def baseline_masks(kind: str, weights: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor],
                   generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Masks of ``kind`` with the per-layer (``*_layer``) or total (``*_global``) pruned count of ``reference``.

    Magnitude pruning removes the smallest ``|w|`` (ties broken by position); random pruning draws positions
    uniformly from ``generator``.
    """
    if kind not in BASELINE_KINDS:
        raise ConfigError(f"unknown baseline {kind!r}; available: {', '.join(BASELINE_KINDS)}")
    names = list(reference)
    pruned = {n: int((~reference[n]).sum()) for n in names}
    if kind.endswith("_layer"):
        out = {}
        for name in names:
            w = weights[name].detach().abs().flatten().cpu()
            k = pruned[name]
            if kind.startswith("magnitude"):
                idx = w.argsort(stable=True)[:k]
            else:
                idx = torch.randperm(len(w), generator=generator)[:k]
            out.update(_mask_from_flat(idx, [len(w)], [reference[name].shape], [name]))
        return out
    flat = torch.cat([weights[n].detach().abs().flatten().cpu() for n in names])
    k = sum(pruned.values())
    idx = flat.argsort(stable=True)[:k] if kind.startswith("magnitude") else torch.randperm(len(flat), generator=generator)[:k]
    return _mask_from_flat(idx, [reference[n].numel() for n in names], [reference[n].shape for n in names], names)
