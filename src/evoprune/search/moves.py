"""Random changes to boolean masks (True = weight kept): SA neighbours, GA mutation and crossover, initial masks.

All randomness comes from one ``torch.Generator`` on the CPU, so a seed repeats a run exactly on any device.
Magnitude bias (off by default: the seed searches without importance assumptions) tilts the per-weight
probabilities by magnitude rank while keeping their mean, so the expected number of changes stays the same.
"""

from __future__ import annotations

import torch


def _rand(shape: torch.Size | tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=generator).to(device)


def magnitude_quantiles(weight: torch.Tensor) -> torch.Tensor:
    """Each weight's rank of ``|w|`` in its layer, scaled to [0, 1] (0 = smallest)."""
    flat = weight.detach().abs().flatten()
    ranks = torch.empty_like(flat)
    ranks[flat.argsort(stable=True)] = torch.arange(len(flat), dtype=flat.dtype, device=flat.device)
    return (ranks / max(len(flat) - 1, 1)).view_as(weight)


def _tilted(rate: float, among: torch.Tensor, quantiles: torch.Tensor | None, bias: float, small_first: bool) -> torch.Tensor:
    """Per-weight probabilities with mean ``rate`` over ``among``; with bias, tilted linearly by magnitude rank."""
    if quantiles is None or bias <= 0:
        return torch.full(among.shape, rate, device=among.device)
    q = (1.0 - quantiles) if small_first else quantiles
    weight = (1.0 - bias) + bias * 2.0 * q
    mean = weight[among].mean() if bool(among.any()) else weight.new_tensor(1.0)
    return (rate * weight / mean.clamp_min(1e-12)).clamp(max=1.0)


def prune_only(mask: torch.Tensor, rate: float, generator: torch.Generator, *,
               quantiles: torch.Tensor | None = None, bias: float = 0.0) -> torch.Tensor:
    """Seed's SA neighbour: each kept weight is dropped with probability ``rate``; pruned ones stay pruned."""
    probs = _tilted(rate, mask, quantiles, bias, small_first=True)
    drop = _rand(mask.shape, generator, mask.device) < probs
    return mask & ~drop


def prune_restore(mask: torch.Tensor, rate: float, restore_ratio: float, generator: torch.Generator, *,
                  quantiles: torch.Tensor | None = None, bias: float = 0.0) -> torch.Tensor:
    """Drop each kept weight with probability ``rate`` and restore pruned weights, ``restore_ratio`` of the number
    dropped on average, so the search can undo earlier choices (improved mode)."""
    kept = int(mask.sum())
    pruned = mask.numel() - kept
    drop_p = _tilted(rate, mask, quantiles, bias, small_first=True)
    u = _rand(mask.shape, generator, mask.device)
    v = _rand(mask.shape, generator, mask.device)
    out = mask & ~(u < drop_p)
    if restore_ratio > 0 and pruned > 0:
        restore_rate = min(1.0, restore_ratio * rate * kept / pruned)
        restore_p = _tilted(restore_rate, ~mask, quantiles, bias, small_first=False)
        out = out | (~mask & (v < restore_p))
    return out


def resample_mutation(mask: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Seed's GA mutation (§5.5): with probability ``rate`` a gene is redrawn, as 1 with probability ``rate``
    (else 0); net P(→0) = rate·(1 − rate), P(→1) = rate²."""
    pick = _rand(mask.shape, generator, mask.device) < rate
    value = _rand(mask.shape, generator, mask.device) < rate
    return torch.where(pick, value, mask)


def single_point_crossover(a: torch.Tensor, b: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Seed's crossover (§5.4) on the flattened mask: cut ``c`` uniform in {0, …, n−2};
    children ``a[:c] ++ b[c:]`` and ``b[:c] ++ a[c:]``."""
    n = a.numel()
    cut = int(torch.randint(0, max(n - 1, 1), (1,), generator=generator))
    fa, fb = a.flatten(), b.flatten()
    c1 = torch.cat([fa[:cut], fb[cut:]]).view_as(a)
    c2 = torch.cat([fb[:cut], fa[cut:]]).view_as(a)
    return c1, c2


def uniform_crossover(a: torch.Tensor, b: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Each gene comes from either parent with probability 1/2 (position-free, unlike a cut on a flattened kernel)."""
    swap = _rand(a.shape, generator, a.device) < 0.5
    return torch.where(swap, b, a), torch.where(swap, a, b)

