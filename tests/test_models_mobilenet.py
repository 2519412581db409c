"""The MobileNetV2-style zoo model: shapes, exact sizes, Torch-Pruning groups, pruning, checkpoint reload, training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from evoprune.checkpoint import load_checkpoint, save_checkpoint
from evoprune.data import load_dataset
from evoprune.errors import ConfigError
from evoprune.models import InvertedResidual, build_model
from evoprune.models.mobilenetv2 import DEPTHS, STAGES, round_channels
from evoprune.prune import ChannelPruner, PruneSchedule
from evoprune.prune.graph import ModelGraph
from evoprune.train import TRAIN_PRESETS, evaluate, train

torch.set_num_threads(1)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def expected_params(in_channels: int, num_classes: int, width: float = 1.0, depth: int = 10, expansion: int = 6,
                    features: int = 1280) -> int:
    """Count by hand: conv (no bias) + BN (2 per channel) per layer, a depthwise conv has 9 weights per channel."""
    cin = round_channels(32 * width)
    total = in_channels * cin * 9 + 2 * cin
    for (factor, base, _), blocks in zip(STAGES, DEPTHS[depth], strict=True):
        out = round_channels(base * width)
        for _ in range(blocks):
            t = expansion if factor != 1 else 1
            hidden = cin * t
            if t != 1:
                total += cin * hidden + 2 * hidden  # expand
            total += hidden * 9 + 2 * hidden + hidden * out + 2 * out  # depthwise, projection
            cin = out
    return total + cin * features + 2 * features + features * num_classes + num_classes


@pytest.mark.parametrize("size", [8, 28, 32])
@pytest.mark.parametrize("channels", [1, 3])
def test_forward_shapes(channels: int, size: int) -> None:
    model = build_model("mobilenetv2", in_channels=channels, num_classes=7, image_size=size, width=0.25)
    x = torch.rand(2, channels, size, size)
    assert model(x).shape == (2, 7)
    out = model.eval()(x[:1])
    assert out.shape == (1, 7) and torch.isfinite(out).all()


@pytest.mark.parametrize(("downsamplings", "expected"), [(4, [(2, 2), (2, 2), (1, 1)]), (3, [(4, 4), (4, 4), (1, 1)]),
                                                        (5, [(1, 1), (1, 1), (1, 1)])])
def test_downsamplings(downsamplings: int, expected: list) -> None:
    kwargs = {"width": 0.25, "features": 16} | ({} if downsamplings == 4 else {"downsamplings": downsamplings})
    model = build_model("mobilenetv2", **kwargs)
    sizes = []
    model.head.register_forward_hook(lambda _m, _i, out: sizes.append(tuple(out.shape[-2:])))
    for side in (32, 28, 8):
        model(torch.rand(2, 1, side, side))
    assert sizes == expected


@pytest.mark.parametrize(("width", "depth", "expansion"), [(1.0, 10, 6), (0.5, 10, 6), (1.0, 17, 6), (0.5, 7, 4),
                                                           (1.5, 10, 6)])
def test_parameter_count_by_hand(width: float, depth: int, expansion: int) -> None:
    model = build_model("mobilenetv2", in_channels=3, num_classes=10, image_size=32, width=width, depth=depth,
                        expansion=expansion)
    features = 1280 if width <= 1 else round_channels(1280 * width)
    assert n_params(model) == expected_params(3, 10, width, depth, expansion, features)
    assert sum(isinstance(m, InvertedResidual) for m in model.modules()) == depth


def test_widths_round_to_eight() -> None:
    assert [round_channels(c * 0.5) for c in (32, 16, 24, 32, 64, 96, 160, 320)] == [16, 8, 16, 16, 32, 48, 80, 160]
    assert [round_channels(c * 0.1) for c in (32, 320)] == [8, 32]
    assert round_channels(1280 * 1.5) == 1920
    model = build_model("mobilenetv2", width=0.5, features=256)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.out_channels % 8 == 0 for m in convs)
    assert model.head[0].out_channels == 256 and model.fc.in_features == 256
    # 1280 features: 1x28x28 at width 1 and depth 10 has 1,236,170 parameters (the docstring's figure)
    assert n_params(build_model("mobilenetv2")) == 1_236_170


@pytest.mark.parametrize("bad", [{"depth": 12}, {"depth": True}, {"width": 0}, {"expansion": 0}, {"features": -1},
                                 {"downsamplings": 2}])
def test_bad_arguments(bad: dict) -> None:
    with pytest.raises(ConfigError):
        build_model("mobilenetv2", **bad)


def test_torch_pruning_groups_couple_depthwise_and_residual_projections() -> None:
    model = build_model("mobilenetv2", width=0.5, depth=17)
    groups = {g.name: g.members for g in ModelGraph(model, torch.rand(1, 1, 28, 28)).prunable_groups()}
    blocks = [b for b in model.blocks if isinstance(b, InvertedResidual)]
    # stem → first block (no expansion): the depthwise conv's channels are the stem's
    assert groups["stem.0"] == ("stem.0", "blocks.0.depthwise.0")
    for i, block in enumerate(blocks[1:], start=1):  # every expand conv with its depthwise conv
        assert groups[f"blocks.{i}.expand.0"] == (f"blocks.{i}.expand.0", f"blocks.{i}.depthwise.0")
        assert not block.use_residual or f"blocks.{i}.project.0" not in groups
    # the projections writing into one residual stream (one stage) are one group
    first = 0
    for blocks_in_stage in DEPTHS[17]:
        members = tuple(f"blocks.{i}.project.0" for i in range(first, first + blocks_in_stage))
        assert groups[members[0]] == members
        first += blocks_in_stage
    assert groups["head.0"] == ("head.0",)
    assert len(groups) == 1 + 16 + len(DEPTHS[17]) + 1  # stem, expands, stages, head (the classifier is the output)


@pytest.mark.parametrize("metric", ["WL1", "eq3"])
def test_prune_30_percent_and_reload(tmp_path: Path, metric: str) -> None:
    data = load_dataset("synthetic", num_samples=120, num_classes=4, image_size=12)
    kwargs = {"in_channels": 1, "num_classes": 4, "image_size": (12, 12), "width": 0.5, "features": 64}
    torch.manual_seed(0)
    model = build_model("mobilenetv2", **kwargs)
    pruner = ChannelPruner(metric, schedule=PruneSchedule(ratio=0.3), finetune=None, latency_batch_sizes=(),
                           scoring_samples=40).prune(model, data)
    pruned = pruner.model_
    assert pruned.blocks[1].expand[0].out_channels == pruned.blocks[1].depthwise[0].out_channels < 48
    assert pruned.blocks[1].project[0].out_channels == pruned.blocks[2].project[0].out_channels < 16
    assert pruner.result_.after.macs < 0.75 * pruner.result_.before.macs
    path = save_checkpoint(tmp_path / "p.pt", pruned, arch="mobilenetv2", arch_kwargs=kwargs,
                           pruning_history=pruner.pruning_history_)
    loaded, _ = load_checkpoint(path)
    x = data.test.x[:5]
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), pruned.eval()(x))
    assert n_params(loaded) == pruner.result_.after.params


def test_short_training_lowers_the_loss() -> None:
    data = load_dataset("synthetic", num_samples=160, num_classes=4, image_size=12)
    torch.manual_seed(0)
    # 12x12 blobs learn fastest with larger final maps (downsamplings=3: 3x3 before the pool)
    model = build_model("mobilenetv2", num_classes=4, image_size=12, width=0.25, depth=7, features=64,
                        downsamplings=3)
    before = evaluate(model, data.train.x, data.train.y)
    # 65 steps: fewer leave BatchNorm's running statistics (momentum 0.1) too far behind for eval mode to gain
    recipe = TRAIN_PRESETS["lenet5"].with_overrides(epochs=5, batch_size=8, augment="none", keep_best=False)
    history = train(model, data, recipe, progress=False).history
    assert history[-1]["train_loss"] < 0.6 * history[0]["train_loss"]
    after = evaluate(model, data.train.x, data.train.y)
    assert after.loss < 0.8 * before.loss and after.accuracy > 0.6
