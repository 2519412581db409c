"""Population-batched fine-tuning equals one-by-one ``train.train``: weights, BN statistics, history, best epoch."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from evoprune.data import load_dataset
from evoprune.errors import ConfigError, TrainingError
from evoprune.evolve.batched import train_stacked
from evoprune.train import TrainConfig, TrainResult, train

# Seed 7 is avoided: with the SGD recipe and the BatchNorm net's third start, train.train itself lands 1e-2 apart
# depending only on the convolution kernel (contiguous vs channels-last memory), a near-tie flipping; elsewhere the
# two kernels agree to 2e-6.
SEEDS = [0, 1, 5]


@pytest.fixture(scope="module")
def tiny():
    return load_dataset("synthetic", num_samples=200, num_classes=4, image_size=12)


def cnn(batchnorm: bool, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    # No conv bias before BatchNorm: its true gradient is zero, so Adam turns rounding noise into ±lr steps and no
    # two implementations agree on it (nor on the running mean it shifts).
    norm = nn.BatchNorm2d if batchnorm else (lambda _c: nn.Identity())
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, bias=not batchnorm), norm(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, bias=not batchnorm), norm(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 3 * 3, 4),
    )


# Rates at which these runs are well conditioned: train.train itself with 1 and 2 threads agrees to 5e-7 here (at
# Adam 3e-2 it does not: 2e-3 apart after four epochs, so no batched run could match it closer).
RECIPES = {
    "sgd": TrainConfig(epochs=4, batch_size=32, optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True,
                       weight_decay=1e-3, schedule="cosine", augment="shift"),
    "adam": TrainConfig(epochs=4, batch_size=32, optimizer="adam", lr=2e-2, schedule="cosine", augment="shift"),
}


@pytest.mark.parametrize("batchnorm", [True, False], ids=["bn", "no-bn"])
@pytest.mark.parametrize("optimizer", list(RECIPES))
def test_batched_equals_one_by_one(tiny, batchnorm: bool, optimizer: str) -> None:
    recipe = RECIPES[optimizer]
    starts = [cnn(batchnorm, seed=10 + k) for k in range(len(SEEDS))]
    references = [copy.deepcopy(m) for m in starts]
    expected = [train(m, tiny, recipe, seed=s, progress=False) for m, s in zip(references, SEEDS)]
    results = train_stacked(starts, tiny, recipe, seeds=SEEDS)
    for model, reference, result, want in zip(starts, references, results, expected):
        assert isinstance(result, TrainResult)
        assert result.best_epoch == want.best_epoch and result.best_val_accuracy == want.best_val_accuracy
        assert [r["val_accuracy"] for r in result.history] == [r["val_accuracy"] for r in want.history]
        for key in ("val_loss", "train_loss", "train_accuracy", "lr"):
            assert [r[key] for r in result.history] == pytest.approx([r[key] for r in want.history], rel=1e-4), key
        got, ref = model.state_dict(), reference.state_dict()
        assert got.keys() == ref.keys()
        for name in ref:  # weights, and BatchNorm's running mean, variance and batch count
            assert torch.allclose(got[name], ref[name], rtol=1e-4, atol=1e-5), name
    # keep_best restores an earlier epoch for some member: the restore path is exercised, not only the last epoch
    assert any(r.best_epoch < recipe.epochs for r in expected)


def test_a_diverging_member_gets_train_errors_error_and_spares_the_others(tiny) -> None:
    recipe = RECIPES["adam"].with_overrides(epochs=2)
    starts = [cnn(True, seed=k) for k in range(3)]
    with torch.no_grad():
        starts[1][-1].weight.fill_(float("nan"))
    references = [copy.deepcopy(m) for m in starts]
    results = train_stacked(starts, tiny, recipe, seeds=SEEDS)
    with pytest.raises(TrainingError) as raised:
        train(references[1], tiny, recipe, seed=SEEDS[1], progress=False)
    assert isinstance(results[1], TrainingError) and str(results[1]) == str(raised.value)
    for k in (0, 2):
        want = train(references[k], tiny, recipe, seed=SEEDS[k], progress=False)
        assert results[k].best_epoch == want.best_epoch
        for p, q in zip(starts[k].parameters(), references[k].parameters()):
            assert torch.allclose(p, q, rtol=1e-4, atol=1e-5)


class Concat(nn.Module):
    """Joins feature maps by channel position: the stacked layout would mix members, which must be caught."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = nn.Conv2d(1, 2, 3), nn.Sequential(nn.Flatten(), nn.Linear(4 * 10 * 10, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        return self.head(torch.cat([h, h.relu()], 1))


class SpatialMean(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 2, 3), nn.Linear(2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


@pytest.mark.parametrize(("models", "message"), [
    ([cnn(True, 0), cnn(False, 0)], "same architecture"),
    ([nn.Sequential(nn.Flatten(), nn.Linear(144, 4)), nn.Sequential(nn.Flatten(), nn.Linear(144, 4, bias=False))],
     "same architecture"),
    ([nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(144, 4))] * 2, "dropout"),
    ([nn.Sequential(nn.Flatten(), nn.LayerNorm(144), nn.Linear(144, 4))] * 2, "no grouped form of LayerNorm"),
    ([Concat(), Concat()], "does not reproduce"),
    ([SpatialMean(), SpatialMean()], "does not run on stacked members"),
])
def test_what_does_not_stack_is_refused_before_training(tiny, models: list[nn.Module], message: str) -> None:
    before = [copy.deepcopy(m.state_dict()) for m in models]
    with pytest.raises(ConfigError, match=message):
        train_stacked(models, tiny, RECIPES["adam"], seeds=SEEDS[:len(models)])
    for model, state in zip(models, before):
        assert all(torch.equal(t, state[k]) for k, t in model.state_dict().items())


def test_one_seed_per_model(tiny) -> None:
    with pytest.raises(ConfigError, match="one seed per model"):
        train_stacked([cnn(True, 0)], tiny, RECIPES["adam"], seeds=[0, 1])


@pytest.mark.parametrize("batchnorm", [True, False], ids=["bn", "no-bn"])
def test_members_with_one_seed_share_each_batch_and_still_equal_one_by_one(tiny, batchnorm: bool) -> None:
    """Evolution's case (an evaluation's seed is the same for every candidate): the first convolution reads the one
    shared batch as a dense convolution; each member must still equal train.train with that seed."""
    recipe = RECIPES["adam"]
    starts = [cnn(batchnorm, seed=10 + k) for k in range(3)]  # (as above, starts where kernels agree to 2e-6)
    references = [copy.deepcopy(m) for m in starts]
    expected = [train(m, tiny, recipe, seed=1, progress=False) for m in references]
    results = train_stacked(starts, tiny, recipe, seeds=[1, 1, 1])
    for model, reference, result, want in zip(starts, references, results, expected):
        assert result.best_epoch == want.best_epoch
        assert [r["val_accuracy"] for r in result.history] == [r["val_accuracy"] for r in want.history]
        for name, tensor in reference.state_dict().items():
            assert torch.allclose(model.state_dict()[name], tensor, rtol=1e-4, atol=1e-5), name


def test_a_network_that_cannot_share_the_input_gets_a_copy_per_member(tiny) -> None:
    """A Flatten reading the images first cannot tell one input from K: the check falls back to copies."""
    starts = [nn.Sequential(nn.Flatten(), nn.Linear(144, 16), nn.ReLU(), nn.Linear(16, 4)) for _ in range(3)]
    for k, model in enumerate(starts):
        torch.manual_seed(k)
        model.apply(lambda m: m.reset_parameters() if isinstance(m, nn.Linear) else None)
    references = [copy.deepcopy(m) for m in starts]
    recipe = RECIPES["adam"].with_overrides(epochs=2)
    expected = [train(m, tiny, recipe, seed=1, progress=False) for m in references]
    results = train_stacked(starts, tiny, recipe, seeds=[1, 1, 1])
    for model, reference, result, want in zip(starts, references, results, expected):
        assert [r["val_accuracy"] for r in result.history] == [r["val_accuracy"] for r in want.history]
        for p, q in zip(model.parameters(), reference.parameters()):
            assert torch.allclose(p, q, rtol=1e-4, atol=1e-5)
