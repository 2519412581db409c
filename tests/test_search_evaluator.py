"""Cached and batched evaluation must give what a plain full forward gives (the correctness reference)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from evoprune.errors import ConfigError
from evoprune.models import build_model
from evoprune.search import LayerGraph, MaskEvaluator, evaluate_masked


def tiny_chain() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.Sigmoid(), nn.AvgPool2d(2),
        nn.Conv2d(4, 6, 3), nn.Sigmoid(), nn.Flatten(),
        nn.Linear(6 * 4 * 4, 16), nn.Sigmoid(), nn.Linear(16, 4),
    ).eval()


class TinyResidual(nn.Module):
    """A skip connection around conv2 and an early size query: the cut has to carry two values."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 12 * 12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.size(0)
        h = torch.relu(self.conv1(x))
        h = h + torch.tanh(self.conv2(h))
        return self.fc(h.view(n, -1))


def random_masks(graph: LayerGraph, seed: int, keep: float = 0.6) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {layer.name: torch.rand(layer.shape, generator=gen) < keep for layer in graph.layers}


@pytest.mark.parametrize(("make", "side"), [
    (tiny_chain, 12), (TinyResidual, 12), (lambda: build_model("lenet5_d2l", image_size=(16, 16)), 16),
])
def test_cached_and_batched_evaluation_equal_a_full_forward(make, side: int) -> None:
    model = make().eval()
    graph = LayerGraph(model)
    x = torch.rand(70, 1, side, side)
    y = torch.randint(0, 3, (70,))
    evaluator = MaskEvaluator(graph, x, y, batch_size=32, population_batch_size=50)
    committed = random_masks(graph, 1)
    candidates = random_masks(graph, 2, keep=0.4)
    for layer in graph.layers:
        evaluator.focus([layer.name])
        got = evaluator.evaluate({layer.name: candidates[layer.name]})
        reference = evaluate_masked(model, {**evaluator.masks, layer.name: candidates[layer.name]}, x, y)
        assert got.loss == pytest.approx(reference.loss, rel=1e-5, abs=1e-6)
        assert got.accuracy == reference.accuracy
        population = torch.stack([candidates[layer.name], committed[layer.name], ~candidates[layer.name]])
        batched = evaluator.evaluate_many({layer.name: population})
        for mask, result in zip(population, batched):
            ref = evaluate_masked(model, {**evaluator.masks, layer.name: mask}, x, y)
            assert result.loss == pytest.approx(ref.loss, rel=1e-5, abs=1e-6)
            assert result.accuracy == ref.accuracy
        evaluator.set_mask(layer.name, committed[layer.name])  # later layers see this layer pruned
    assert evaluator.evaluations == 4 * len(graph.layers)


def test_joint_focus_changes_several_layers_at_once() -> None:
    model = tiny_chain()
    graph = LayerGraph(model)
    x, y = torch.rand(40, 1, 12, 12), torch.randint(0, 4, (40,))
    evaluator = MaskEvaluator(graph, x, y, batch_size=16)
    names = [layer.name for layer in graph.layers]
    evaluator.focus(names[1:])
    candidates = random_masks(graph, 3)
    got = evaluator.evaluate({n: candidates[n] for n in names[1:]})
    reference = evaluate_masked(model, {**evaluator.masks, **{n: candidates[n] for n in names[1:]}}, x, y)
    assert got.loss == pytest.approx(reference.loss, rel=1e-5)


def test_head_is_recomputed_only_when_an_upstream_mask_changes() -> None:
    graph = LayerGraph(tiny_chain())
    x, y = torch.rand(20, 1, 12, 12), torch.randint(0, 4, (20,))
    evaluator = MaskEvaluator(graph, x, y)
    first, second, third = (layer.name for layer in graph.layers[:3])
    evaluator.focus([third])
    evaluator.focus([third])
    assert evaluator.head_forwards == 1
    evaluator.set_mask(third, torch.zeros(graph.layer(third).shape, dtype=torch.bool))  # downstream: no effect
    evaluator.focus([third])
    assert evaluator.head_forwards == 1
    evaluator.set_mask(first, torch.zeros(graph.layer(first).shape, dtype=torch.bool))
    evaluator.focus([third])
    assert evaluator.head_forwards == 2


def test_population_modes_agree_and_count_evaluations() -> None:
    graph = LayerGraph(tiny_chain())
    x, y = torch.rand(30, 1, 12, 12), torch.randint(0, 4, (30,))
    name = graph.layers[0].name
    stack = torch.stack([m for m in (random_masks(graph, s)[name] for s in range(5))])
    results = {}
    for mode in ("vmap", "loop"):
        evaluator = MaskEvaluator(graph, x, y, population_mode=mode)
        evaluator.focus([name])
        results[mode] = evaluator.evaluate_many({name: stack})
        assert evaluator.evaluations == 5
    for a, b in zip(results["vmap"], results["loop"]):
        assert a.loss == pytest.approx(b.loss, rel=1e-5)
        assert a.accuracy == b.accuracy


def test_bad_masks_and_layers_are_clear_errors() -> None:
    graph = LayerGraph(tiny_chain())
    evaluator = MaskEvaluator(graph, torch.rand(4, 1, 12, 12), torch.zeros(4, dtype=torch.long))
    name = graph.layers[0].name
    evaluator.focus([name])
    with pytest.raises(ConfigError, match="shape"):
        evaluator.evaluate({name: torch.ones(3, 3, dtype=torch.bool)})
    with pytest.raises(ConfigError, match="bool"):
        evaluator.evaluate({name: torch.ones(graph.layers[0].shape)})
    with pytest.raises(ConfigError, match="outside the focus"):
        evaluator.evaluate({graph.layers[1].name: torch.ones(graph.layers[1].shape, dtype=torch.bool)})
    with pytest.raises(ConfigError, match="unknown layer"):
        evaluator.focus(["nope"])
    with pytest.raises(ConfigError, match="unknown layer.*prunable layers of this model are"):
        LayerGraph(tiny_chain(), ["0", "conv9"])


def test_untraceable_model_is_a_clear_error() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
                return self.fc(x)
            return -self.fc(x)

    with pytest.raises(ConfigError, match="torch.fx"):
        LayerGraph(Branchy())


def test_early_stop_bounds_the_metrics_of_a_violating_candidate() -> None:
    from evoprune.search import Constraint

    model = tiny_chain()
    graph = LayerGraph(model)
    x, y = torch.rand(64, 1, 12, 12), torch.randint(0, 4, (64,))
    evaluator = MaskEvaluator(graph, x, y, batch_size=8)
    name = graph.layers[0].name
    evaluator.focus([name])
    mask = torch.zeros(graph.layers[0].shape, dtype=torch.bool)
    exact = evaluator.evaluate({name: mask})
    cap = Constraint("loss", exact.loss / 2)
    early = evaluator.evaluate({name: mask}, stop_if_violating=cap)
    assert not early.complete and cap.violated(early.loss, early.accuracy)
    assert early.loss <= exact.loss and early.accuracy >= exact.accuracy
    assert evaluator.images < 2 * 64
    loose = evaluator.evaluate({name: mask}, stop_if_violating=Constraint("loss", exact.loss * 2))
    assert loose.complete and loose.loss == pytest.approx(exact.loss)
    floor = Constraint("accuracy", exact.accuracy + 0.5)
    assert not evaluator.evaluate({name: mask}, stop_if_violating=floor).complete


@pytest.mark.parametrize(("kernel", "size"), [(2, (28, 28)), (2, (7, 9)), (3, (10, 11)), ((2, 3), (8, 9))])
def test_fast_average_pooling_equals_torch(kernel, size) -> None:
    from evoprune.search.graph import fast_avg_pool2d

    x = torch.randn(3, 4, *size)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    expected = torch.nn.functional.avg_pool2d(x, (kh, kw))
    assert torch.allclose(fast_avg_pool2d(x, kh, kw), expected, atol=1e-6)
    assert LayerGraph(tiny_chain()).fast_ops == 1  # the chain's AvgPool2d(2) is swapped in the evaluation graph
    assert LayerGraph(tiny_chain(), fast_ops=False).fast_ops == 0
