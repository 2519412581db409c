"""SA and GA behaviour on a tiny trained network: caps are hard, elitism keeps the best, seeds repeat runs, and
every reported loss is that of ``W0 ⊙ mask`` under a plain full forward."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from evoprune.data import load_dataset
from evoprune.search import LayerGraph, MaskEvaluator, evaluate_masked, preset, search_masks
from evoprune.search.ga import tournament
from evoprune.search.objective import Objective, Score
from evoprune.search.runner import _adapt
from evoprune.search.sa import propose
from evoprune.search.state import SearchState
from evoprune.train import TrainConfig, evaluate, train


@functools.lru_cache(maxsize=1)
def _trained() -> tuple[dict[str, torch.Tensor], object]:
    data = load_dataset("synthetic", seed=0, noise=0.8, num_samples=800)  # hard enough that pruning costs accuracy
    torch.manual_seed(0)
    model = tiny_model()
    train(model, data, TrainConfig(epochs=6, optimizer="adam", lr=1e-2, batch_size=32), progress=False, device="cpu")
    return {k: v.clone() for k, v in model.state_dict().items()}, data


def tiny_model() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(4, 6, 3), nn.Tanh(), nn.Flatten(),
        nn.Linear(6 * 4 * 4, 16), nn.Tanh(), nn.Linear(16, 4),
    )


# The improved preset without its fine-tuning (between phases and at the end) and with one joint pass: the search alone.
PURE_SEARCH = {"finetune_between": 0, "finetune_epochs": 0, "joint_rounds": 1}


def trained_model_and_data() -> tuple[nn.Sequential, object]:
    state, data = _trained()
    model = tiny_model()
    model.load_state_dict(state)
    return model.eval(), data


def loss_budget_config(**overrides):
    """Seed-style search (prune-only moves, T0 = 1, log cooling) under binding loss caps relative to the baseline."""
    base = dict(caps="budget", budget_metric="loss", budget=0.3, warmup="linear", sa={"iterations": 25},
                ga={"generations": 4}, baselines=False)
    base.update(overrides)
    return preset("seed", **base)


def phase_limits(result) -> dict[str, float]:
    return {p["phase"]: p["limit"] for p in result.phases}


def test_sa_never_accepts_a_cap_violation_and_only_prunes() -> None:
    model, data = trained_model_and_data()
    result = search_masks(model, data, algorithm="sa", config=loss_budget_config(), device="cpu")
    limits = phase_limits(result)
    proposals = [r for r in result.history if r["kind"] == "propose"]
    assert any(r["violated"] for r in proposals), "the caps should bind in this setting"
    accepted = [r for r in proposals if r["accepted"]]
    assert accepted
    for record in accepted:
        assert not record["violated"]
        assert record["loss"] < limits[record["phase"]]
    # Sparsity along the accepted path never decreases with prune-only moves (within a phase and across phases).
    path = [r["sparsity"] for r in result.history if r["accepted"]]
    assert path == sorted(path)
    # The delivered masks respect the last cap under the plain full-forward reference.
    final = evaluate_masked(model, result.masks, data.test.x, data.test.y)
    assert final.loss < limits[result.phases[-1]["phase"]]
    assert final.loss == pytest.approx(result.phases[-1]["end_loss"], rel=1e-5)
    assert result.evaluations == len(result.phases) * (1 + 25)


def test_sa_improved_mode_restores_weights_and_respects_the_accuracy_budget() -> None:
    model, data = trained_model_and_data()
    config = preset("improved", sa={"iterations": 30, "joint_iterations": 30}, baselines=False, budget=0.05,
                    **PURE_SEARCH)
    result = search_masks(model, data, algorithm="sa", config=config, device="cpu")
    assert [p["phase"] for p in result.phases][-1] == "joint"
    floor = result.baseline["selection"]["accuracy"] - 0.05
    assert result.final["val"]["accuracy"] >= floor
    accepted = [r for r in result.history if r["accepted"] and r["kind"] == "propose"]
    assert all(not r["violated"] for r in accepted)
    # Moves can restore weights: some proposals are less sparse than the state they were drawn from.
    current, restoring = None, 0
    for record in result.history:
        if record["kind"] == "start":
            current = record["sparsity"]
        elif record["kind"] == "propose":
            restoring += record["sparsity"] < current
            if record["accepted"]:
                current = record["sparsity"]
    assert restoring > 0
    assert result.evaluations == len(result.phases) * (1 + 30)


def test_ga_elitism_keeps_the_best_and_children_are_scored_on_pristine_weights() -> None:
    model, data = trained_model_and_data()
    result = search_masks(model, data, algorithm="ga", config=loss_budget_config(), device="cpu")
    for phase in result.phases:
        costs = [r["cost"] for r in result.history if r["phase"] == phase["phase"]]
        assert len(costs) == 1 + 4  # initial population + 4 generations
        assert all(b <= a for a, b in zip(costs, costs[1:])), f"best cost rose in {phase['phase']}: {costs}"
    final = evaluate_masked(model, result.masks, data.test.x, data.test.y)
    assert final.loss == pytest.approx(result.phases[-1]["end_loss"], rel=1e-5)
    assert final.loss < result.phases[-1]["limit"]


def test_ga_evaluation_count_and_joint_phase() -> None:
    model, data = trained_model_and_data()
    config = preset("improved", ga={"generations": 2, "joint_generations": 3, "population": 6, "elite": 1},
                    baselines=False, **PURE_SEARCH)
    result = search_masks(model, data, algorithm="ga", config=config, device="cpu")
    layers = len(result.layers)
    assert result.evaluations == layers * (6 + 2 * 5) + (6 + 3 * 5)
    assert result.final["val"]["accuracy"] >= result.baseline["selection"]["accuracy"] - 0.01


@pytest.mark.parametrize("algorithm", ["sa", "ga"])
def test_a_fixed_seed_repeats_a_run_exactly(algorithm: str) -> None:
    model, data = trained_model_and_data()
    config = loss_budget_config(sa={"iterations": 10}, ga={"generations": 2})
    runs = [search_masks(model, data, algorithm=algorithm, config=config, seed=s, device="cpu") for s in (3, 3, 4)]
    first, again, other = runs
    assert first.history == again.history
    assert all(torch.equal(first.masks[n], again.masks[n]) for n in first.masks)
    assert first.history != other.history


def test_tournament_picks_the_lowest_cost_of_its_draw() -> None:
    scores = [Score(cost=c, loss=0.0, accuracy=0.0, sparsity=0.0, violated=False) for c in (5.0, 1.0, 3.0, 0.5)]
    gen = torch.Generator().manual_seed(0)
    assert tournament(scores, 4, gen) == 3  # whole population drawn: the global best
    assert tournament(scores, 10, gen) == 3
    draws = {tournament(scores, 1, gen) for _ in range(50)}
    assert draws == {0, 1, 2, 3}  # size 1 is a uniform pick


def test_ga_batched_and_member_by_member_population_scoring_agree() -> None:
    model, data = trained_model_and_data()
    runs = {mode: search_masks(model, data, algorithm="ga", device="cpu",
                               config=loss_budget_config(ga={"generations": 3}, population_mode=mode))
            for mode in ("vmap", "loop")}
    for a, b in zip(runs["vmap"].history, runs["loop"].history):
        assert a["cost"] == pytest.approx(b["cost"], rel=1e-6)
    assert all(torch.equal(runs["vmap"].masks[n], runs["loop"].masks[n]) for n in runs["loop"].masks)


@pytest.mark.parametrize("algorithm", ["sa", "ga"])
def test_early_stopping_changes_no_decision_and_reads_fewer_images(algorithm: str) -> None:
    model, data = trained_model_and_data()
    runs = {flag: search_masks(model, data, algorithm=algorithm, device="cpu",
                               config=loss_budget_config(batch_size=16, early_stop=flag, budget=0.05, sa={"iterations": 15},
                                                         ga={"generations": 2}))
            for flag in (True, False)}
    fast, full = runs[True], runs[False]
    assert [r["cost"] for r in fast.history] == [r["cost"] for r in full.history]
    assert [r.get("accepted") for r in fast.history] == [r.get("accepted") for r in full.history]
    assert all(torch.equal(fast.masks[n], full.masks[n]) for n in full.masks)
    assert fast.evaluations == full.evaluations
    assert fast.images < full.images == full.evaluations * len(data.test.y)
    stopped = [r for r in fast.history if not r["complete"]]  # SA logs every proposal, GA each generation's best
    assert all(r["violated"] for r in stopped) and (stopped or algorithm == "ga")


def test_magnitude_bias_steers_pruning_to_small_weights() -> None:
    model, data = trained_model_and_data()

    def pruned_magnitude(bias: float) -> float:
        config = preset("improved", sa={"iterations": 30, "joint_iterations": 0}, baselines=False, magnitude_bias=bias,
                        **PURE_SEARCH)
        result = search_masks(model, data, algorithm="sa", config=config, device="cpu")
        ratios = []
        for name, mask in result.masks.items():
            w = model.get_submodule(name).weight.detach().abs()
            if (~mask).any():
                ratios.append(float(w[~mask].mean() / w.mean()))
        return sum(ratios) / len(ratios)

    assert pruned_magnitude(1.0) < 0.8 * pruned_magnitude(0.0)


def test_iterative_mode_finetunes_between_phases_and_measures_the_loss_from_the_adapted_network() -> None:
    model, data = trained_model_and_data()
    config = preset("improved", sa={"iterations": 12, "joint_iterations": 8}, joint_rounds=2, finetune_between=1,
                    finetune_epochs=0, baselines=False)
    result = search_masks(model, data, algorithm="sa", config=config, device="cpu")
    assert [p["phase"] for p in result.phases][-2:] == ["joint 1", "joint 2"]
    assert all("finetuned_loss" in p for p in result.phases[:-1]) and "finetuned_loss" not in result.phases[-1]
    starts = [r for r in result.history if r["kind"] == "start"]
    for report, start in zip(result.phases[:-1], starts[1:]):
        # Each phase starts on the adapted network, and its loss term is measured from that network's loss.
        assert start["loss"] == pytest.approx(report["finetuned_loss"], rel=1e-5)
        penalty = config.penalty if start["violated"] else 0.0
        assert start["cost"] == pytest.approx(penalty + 1 / (start["sparsity"] + config.eps), rel=1e-6)
    assert not all(start["violated"] for start in starts[1:])
    # The delivered weights are the adapted network's: with the masks they give the reported final metrics.
    assert result.state_dict is not None
    fresh = tiny_model()
    result.apply_to(fresh)
    assert evaluate(fresh, data.test.x, data.test.y).loss == pytest.approx(result.final["test"]["loss"], rel=1e-5)


def test_adapting_between_phases_keeps_pruned_weights_for_restore_moves() -> None:
    model, data = trained_model_and_data()
    gen = torch.Generator().manual_seed(0)
    layers = [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    masks = {name: torch.rand(model.get_submodule(name).weight.shape, generator=gen) > 0.5 for name in layers}
    tuned = _adapt(model, masks, data, preset("improved", finetune_between=1), 0, torch.device("cpu"))
    assert not prune.is_pruned(tuned)
    for name, mask in masks.items():
        before, after = model.get_submodule(name).weight, tuned.get_submodule(name).weight
        assert torch.equal(after[~mask], before[~mask])
        assert not torch.equal(after[mask], before[mask])


def test_one_layer_moves_change_a_single_layer_drawn_by_kept_weights() -> None:
    model, data = trained_model_and_data()
    evaluator = MaskEvaluator(LayerGraph(model), data.test.x, data.test.y)
    state = SearchState(evaluator, Objective(0.1), "global", torch.Generator().manual_seed(0))
    genome = dict(evaluator.masks)
    config = preset("improved", joint_moves="one_layer")
    changed = []
    for _ in range(200):
        candidate = propose(state, genome, 0.2, config)
        changed.append([n for n in genome if not torch.equal(candidate[n], genome[n])])
    assert all(len(c) == 1 for c in changed)
    counts = {n: sum(c == [n] for c in changed) for n in genome}
    largest = max(genome, key=lambda n: genome[n].numel())
    assert counts[largest] == max(counts.values())
    every = propose(state, genome, 0.2, preset("improved", joint_moves="all"))
    assert all(not torch.equal(every[n], genome[n]) for n in genome)
