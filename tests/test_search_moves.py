"""Proposal, mutation and crossover operators on boolean masks."""

from __future__ import annotations

import pytest
import torch

from evoprune.search.moves import (
    magnitude_quantiles,
    prune_only,
    prune_restore,
    resample_mutation,
    single_point_crossover,
    uniform_crossover,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_prune_only_drops_kept_weights_at_the_rate_and_never_restores() -> None:
    mask = torch.rand(200, 100, generator=gen(1)) < 0.5
    out = prune_only(mask, 0.2, gen())
    assert not bool((out & ~mask).any())
    dropped = int((mask & ~out).sum())
    assert dropped == pytest.approx(0.2 * int(mask.sum()), rel=0.1)


def test_prune_restore_restores_the_ratio_of_what_it_drops() -> None:
    mask = torch.rand(200, 100, generator=gen(1)) < 0.5
    out = prune_restore(mask, 0.1, 0.5, gen())
    dropped, restored = int((mask & ~out).sum()), int((out & ~mask).sum())
    assert dropped == pytest.approx(0.1 * int(mask.sum()), rel=0.1)
    assert restored == pytest.approx(0.5 * 0.1 * int(mask.sum()), rel=0.15)


def test_magnitude_bias_prunes_small_weights_first_and_keeps_the_mean_rate() -> None:
    weight = torch.randn(100, 100, generator=gen(2))
    mask = torch.ones_like(weight, dtype=torch.bool)
    quantiles = magnitude_quantiles(weight)
    assert quantiles.min() == 0 and quantiles.max() == 1
    assert quantiles.flatten()[weight.abs().flatten().argmin()] == 0
    out = prune_only(mask, 0.1, gen(), quantiles=quantiles, bias=1.0)
    dropped = ~out
    assert int(dropped.sum()) == pytest.approx(1000, rel=0.1)
    assert weight[dropped].abs().mean() < 0.6 * weight.abs().mean()


def test_resample_mutation_transition_rates() -> None:
    ones = torch.ones(400, 400, dtype=torch.bool)
    out = resample_mutation(ones, 0.15, gen())
    assert float((~out).float().mean()) == pytest.approx(0.15 * 0.85, abs=0.005)  # P(→0) = r(1 − r)
    zeros = torch.zeros(400, 400, dtype=torch.bool)
    out = resample_mutation(zeros, 0.15, gen())
    assert float(out.float().mean()) == pytest.approx(0.15 ** 2, abs=0.003)  # P(→1) = r²


@pytest.mark.parametrize("op", [single_point_crossover, uniform_crossover])
def test_crossover_children_take_each_gene_from_one_parent(op) -> None:
    a = torch.rand(6, 5, 3, generator=gen(3)) < 0.5
    b = ~a
    c1, c2 = op(a, b, gen())
    assert c1.shape == a.shape and c2.shape == a.shape
    assert torch.equal(c1 ^ c2, torch.ones_like(a))  # complementary where the parents differ everywhere
    assert bool(((c1 == a) | (c1 == b)).all())


def test_single_point_crossover_is_a_cut_of_the_flattened_masks() -> None:
    a, b = torch.ones(10, dtype=torch.bool), torch.zeros(10, dtype=torch.bool)
    for seed in range(20):
        c1, _ = single_point_crossover(a, b, gen(seed))
        cut = int(c1.sum())
        assert torch.equal(c1, torch.arange(10) < cut) and 0 <= cut <= 8  # cut in {0, …, n − 2}
