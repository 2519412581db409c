"""Masks go through torch.nn.utils.prune and round-trip through files that load without unpickling code."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from evoprune.errors import ConfigError
from evoprune.search import (
    apply_masks,
    baseline_masks,
    evaluate_masked,
    layer_stats,
    load_masks,
    masks_from_model,
    save_masks,
)


def tiny() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5)).eval()


def some_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {"0": torch.rand(model[0].weight.shape, generator=gen) < 0.5,
            "3": torch.rand(model[3].weight.shape, generator=gen) < 0.3}


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_saved_masks_round_trip_through_torch_prune(tmp_path, suffix: str) -> None:
    model = tiny()
    masks = some_masks(model)
    x, y = torch.rand(16, 1, 6, 6), torch.randint(0, 5, (16,))
    expected = evaluate_masked(model, masks, x, y)
    path = save_masks(tmp_path / f"masks{suffix}", masks)
    if suffix == ".pt":
        raw = torch.load(path, weights_only=True)  # plain tensors only: loads with the safe unpickler
        assert set(raw) == {"0", "3"}
    loaded = load_masks(path)
    assert all(torch.equal(loaded[k], masks[k]) and loaded[k].dtype == torch.bool for k in masks)

    pruned = apply_masks(tiny(), loaded)
    assert prune.is_pruned(pruned)
    assert hasattr(pruned[0], "weight_orig") and hasattr(pruned[0], "weight_mask")
    assert bool(((pruned[3].weight == 0) | loaded["3"]).all())  # every masked weight reads as zero
    with torch.no_grad():
        logits = pruned(x)
    assert torch.nn.functional.cross_entropy(logits, y).item() == pytest.approx(expected.loss, rel=1e-5)
    recovered = masks_from_model(pruned)
    assert all(torch.equal(recovered[k], masks[k]) for k in masks)

    for name in loaded:
        prune.remove(pruned.get_submodule(name), "weight")  # bake the zeros in
    assert not prune.is_pruned(pruned)
    assert int((pruned[0].weight == 0).sum()) >= int((~masks["0"]).sum())
    with torch.no_grad():
        assert torch.allclose(pruned(x), logits)


def test_bad_masks_are_clear_errors(tmp_path) -> None:
    model = tiny()
    with pytest.raises(ConfigError, match="shape"):
        apply_masks(model, {"0": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(ConfigError, match="unknown layer"):
        apply_masks(model, {"fc9": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(ConfigError, match="bool"):
        apply_masks(model, {"0": torch.ones(model[0].weight.shape)})
    with pytest.raises(ConfigError, match="does not exist"):
        load_masks(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="cannot read"):
        load_masks(tmp_path / "junk.pt")
    torch.save({"0": torch.ones(3)}, tmp_path / "float.pt")
    with pytest.raises(ConfigError, match="not boolean"):
        load_masks(tmp_path / "float.pt")


def test_layer_stats() -> None:
    stats = layer_stats({"a": torch.tensor([True, False, False, True])})
    assert stats == [{"layer": "a", "size": 4, "pruned": 2, "kept": 2, "sparsity": 0.5}]


@pytest.mark.parametrize("kind", ["random_global", "random_layer", "magnitude_global", "magnitude_layer"])
def test_baselines_match_the_reference_sparsity(kind: str) -> None:
    torch.manual_seed(1)
    weights = {"a": torch.randn(10, 10), "b": torch.randn(50) * 0.1}
    reference = {"a": torch.arange(100).view(10, 10) % 3 != 0, "b": torch.arange(50) % 5 != 0}
    masks = baseline_masks(kind, weights, reference, torch.Generator().manual_seed(0))
    total = sum(int((~m).sum()) for m in masks.values())
    assert total == sum(int((~m).sum()) for m in reference.values())
    if kind.endswith("layer"):
        assert all(int((~masks[n]).sum()) == int((~reference[n]).sum()) for n in reference)
    if kind.startswith("magnitude"):
        kept = torch.cat([weights[n][masks[n]].abs().flatten() for n in masks])
        dropped = torch.cat([weights[n][~masks[n]].abs().flatten() for n in masks])
        if kind == "magnitude_global":
            assert dropped.max() <= kept.min()
        else:
            assert weights["a"][~masks["a"]].abs().max() <= weights["a"][masks["a"]].abs().min()
    if kind == "magnitude_global":
        # The small-valued layer "b" absorbs most of the pruning under a global threshold.
        assert int((~masks["b"]).sum()) > int((~reference["b"]).sum())
