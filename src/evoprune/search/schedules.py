"""Schedules of the search: mutation rate, temperature, and the loss-cap warm-up over layers (spec §3.2–§4)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from evoprune.errors import ConfigError


def linear_rate(rate0: float, step: int, total: int) -> float:
    """Seed's decaying mutation rate ``rate0 · (1 − step / total)``, restarted in every layer (§3.3)."""
    return rate0 * (1.0 - step / total)


def log_temperature(t0: float, step: int) -> float:
    """Seed's logarithmic cooling ``T0 / (1 + ln(1 + step))`` (§4.1)."""
    return t0 / (1.0 + math.log1p(step))


def geometric_temperature(t0: float, step: int, total: int, final_ratio: float) -> float:
    """``T0 · final_ratio^(step / (total − 1))``: from T0 at the first step down to ``T0 · final_ratio`` at the last."""
    if total <= 1:
        return t0
    return t0 * final_ratio ** (step / (total - 1))


def calibrated_temperature(worse_deltas: Sequence[float], acceptance: float) -> float | None:
    """Initial temperature at which a worse move of mean size is accepted with probability ``acceptance``:
    ``T0 = −mean(ΔE⁺) / ln(acceptance)``. ``None`` when no worse, valid move was sampled."""
    positive = [d for d in worse_deltas if d > 0 and math.isfinite(d)]
    if not positive:
        return None
    return -(sum(positive) / len(positive)) / math.log(acceptance)


def seed_loss_caps(ref_indices: Sequence[int], total_layers: int, loss_to_warmup: float = 1.0,
                   scale: float = 1.0) -> list[float]:
    """Absolute loss caps ``loss_to_warmup · (index + 1) / total_layers`` (times ``scale``), one per layer.

    With the seed's Keras indices [0, 2, 5, 6, 7] of 8 layers this gives 0.125, 0.375, 0.75, 0.875, 1.0. ``scale``
    lets a dataset whose baseline loss is far from MNIST's keep the seed's caps-to-baseline ratios.
    """
    if total_layers < 1:
        raise ConfigError(f"total_layers must be ≥ 1, got {total_layers}")
    bad = [i for i in ref_indices if not 0 <= i < total_layers]
    if bad:
        raise ConfigError(f"layer indices {bad} are outside 0..{total_layers - 1}")
    return [loss_to_warmup * (i + 1) / total_layers * scale for i in ref_indices]


def budget_shares(sizes: Sequence[int], warmup: str) -> list[float]:
    """Share of the total budget each successive layer may use, ending at 1 for the last layer.

    ``linear``: ``(k + 1) / K``; ``weights``: cumulative share of the weights searched so far, so a tiny first
    layer cannot spend the budget the big ones need; ``none``: the whole budget from the first layer.
    """
    count = len(sizes)
    if warmup == "linear":
        return [(k + 1) / count for k in range(count)]
    if warmup == "weights":
        total = sum(sizes)
        running, shares = 0, []
        for size in sizes:
            running += size
            shares.append(running / total)
        return shares
    if warmup == "none":
        return [1.0] * count
    raise ConfigError(f"warmup must be 'linear', 'weights' or 'none', got {warmup!r}")
