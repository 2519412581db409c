"""The mask-search cost, constraint and schedules against values worked out by hand from the spec (§3–§5)."""

from __future__ import annotations

import math

import pytest
import torch

from evoprune.models import build_model
from evoprune.search import (
    Constraint,
    LayerGraph,
    Objective,
    budget_shares,
    calibrated_temperature,
    geometric_temperature,
    linear_rate,
    log_temperature,
    mask_sparsity,
    seed_loss_caps,
    sparsity_from_counts,
)

# Per-layer pruned counts of the seed's SA run (spec §7.2) and the LeNet-5 layer sizes.
SIZES = [150, 2400, 48000, 10080, 840]
SA_ZEROS = [100, 1433, 26154, 1858, 167]


def test_cost_reproduces_the_seeds_logged_final_costs() -> None:
    # SA: (L_b − 0.992316)² + 1/0.438352 = 3.096421 (spec §3.1); the baseline losses are quoted to 4 digits
    # (0.0895, 0.0867), which moves the cost by < 1e-4.
    sa = Objective(baseline_loss=0.0895).cost(0.992316, 0.438352, violated=False)
    assert sa == pytest.approx(3.096421, abs=1e-4)
    ga = Objective(baseline_loss=0.0867).cost(0.944230, 0.413345, violated=False)
    assert ga == pytest.approx(3.154657, abs=1e-4)
    # Solved exactly for the logged baseline loss 0.089459: (0.089459 − 0.992316)² + 1/0.438352.
    assert Objective(baseline_loss=0.089459).cost(0.992316, 0.438352, False) == pytest.approx(3.096421, abs=2e-6)


def test_cost_penalty_and_epsilon() -> None:
    objective = Objective(baseline_loss=0.1, eps=1e-8, penalty=1e8)
    assert objective.cost(5.0, 0.5, violated=True) == pytest.approx(1e8 + 2.0)
    # With nothing pruned the sparsity term alone is 1/ε = 1e8.
    assert objective.cost(0.1, 0.0, violated=False) == pytest.approx(1e8)
    # The squared term is symmetric: a lower loss than the baseline is charged as well.
    assert objective.cost(0.0, 1.0, False) == pytest.approx(objective.cost(0.2, 1.0, False))


def test_loss_cap_is_violated_when_the_loss_reaches_it() -> None:
    cap = Constraint("loss", 0.125)
    assert not cap.violated(0.124985, 0.9)  # the highest loss the seed's SA accepted on Conv1
    assert cap.violated(0.125, 0.9)
    assert cap.violated(float("nan"), 0.9)
    floor = Constraint("accuracy", 0.96)
    assert not floor.violated(1.0, 0.96)
    assert floor.violated(0.0, 0.9599)


def test_sparsity_mean_of_layer_fractions_vs_global() -> None:
    mean = sparsity_from_counts(SA_ZEROS, SIZES, "mean_layer")
    expected_mean = (100 / 150 + 1433 / 2400 + 26154 / 48000 + 1858 / 10080 + 167 / 840) / 5
    assert mean == pytest.approx(expected_mean)
    assert mean == pytest.approx(0.4384, abs=5e-4)  # the seed's reported SA sparsity
    assert sparsity_from_counts(SA_ZEROS, SIZES, "global") == pytest.approx(29712 / 61470)
    # One pruned Conv1 weight is worth 1/750 of mean-of-layers sparsity (the logged values are multiples of it).
    assert sparsity_from_counts([1, 0, 0, 0, 0], SIZES, "mean_layer") == pytest.approx(1 / 750)
    masks = {"a": torch.tensor([True, False, False, False]), "b": torch.ones(6, dtype=torch.bool)}
    assert mask_sparsity(masks, "mean_layer") == pytest.approx(0.375)
    assert mask_sparsity(masks, "global") == pytest.approx(0.3)


def test_seed_caps_from_keras_indices() -> None:
    caps = seed_loss_caps([0, 2, 5, 6, 7], 8)
    assert caps == pytest.approx([0.125, 0.375, 0.75, 0.875, 1.0])
    assert seed_loss_caps([0, 7], 8, scale=2.0) == pytest.approx([0.25, 2.0])


def test_lenet5_d2l_layers_get_the_seeds_keras_indices() -> None:
    graph = LayerGraph(build_model("lenet5_d2l"))
    assert [layer.name for layer in graph.layers] == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    assert [layer.ref_index for layer in graph.layers] == [0, 2, 5, 6, 7]
    assert graph.total_ref_layers == 8
    assert [layer.numel for layer in graph.layers] == SIZES


def test_mutation_rate_and_temperatures() -> None:
    assert linear_rate(0.15, 1, 200) == pytest.approx(0.14925)  # SA log, step 1
    assert linear_rate(0.15, 199, 200) == pytest.approx(0.00075)
    assert linear_rate(0.15, 1, 20) == pytest.approx(0.1425)  # GA log, generation 1
    assert log_temperature(1.0, 0) == 1.0
    assert log_temperature(1.0, 1) == pytest.approx(1 / (1 + math.log(2)))  # 0.5906
    assert log_temperature(1.0, 199) == pytest.approx(0.1588, abs=5e-5)
    assert geometric_temperature(2.0, 0, 11, 0.01) == 2.0
    assert geometric_temperature(2.0, 10, 11, 0.01) == pytest.approx(0.02)
    assert geometric_temperature(2.0, 5, 11, 0.01) == pytest.approx(0.2)


def test_calibrated_temperature_accepts_mean_worse_move_with_the_target_probability() -> None:
    t0 = calibrated_temperature([0.1, 0.3, -0.5, float("inf")], 0.5)
    assert t0 == pytest.approx(0.2 / math.log(2))
    assert math.exp(-0.2 / t0) == pytest.approx(0.5)
    assert calibrated_temperature([-0.1], 0.5) is None


def test_budget_shares() -> None:
    assert budget_shares([1, 1, 2], "linear") == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert budget_shares([1, 1, 2], "weights") == pytest.approx([0.25, 0.5, 1.0])
    assert budget_shares([1, 1, 2], "none") == [1.0, 1.0, 1.0]


def test_layer_steps_share_the_same_total_by_weight_count() -> None:
    from evoprune.search.runner import layer_steps

    assert layer_steps(SIZES, 200, "uniform") == [200] * 5
    steps = layer_steps(SIZES, 140, "weights")
    assert sum(steps) == 700 and min(steps) >= 14
    assert steps[2] == max(steps) and steps[0] == min(steps)
    # Above the floor of 14 each, the rest (630) goes by weight share: FC1 holds 48,000 / 61,470 of it.
    assert steps[2] == pytest.approx(14 + 630 * 48000 / 61470, abs=1)
