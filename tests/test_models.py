"""Model zoo: registry behaviour, shapes, exact parameter counts, init, Torch-Pruning tracing."""

from __future__ import annotations

import pytest
import torch
import torch_pruning as tp
from torch import nn

from evoprune.errors import ConfigError
from evoprune.models import available_models, build_model, get_builder, prunable_weights, register_model

torch.set_num_threads(1)

CONTRACT_MODELS = {"lenet5", "lenet5_d2l", "vgg", "resnet_cifar", "mlp", "mobilenetv2"}
# Smallest square input each model accepts (others work down to 1x1).
MIN_SIZE = {"lenet5": 16, "lenet5_d2l": 12}
SHAPES = [(1, 28, 28), (3, 32, 32), (1, 8, 8)]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv_bn(cin: int, cout: int, k: int = 3, bias: bool = False) -> int:
    """Parameters of a k x k conv followed by BatchNorm (weight + bias)."""
    return cin * cout * k * k + (cout if bias else 0) + 2 * cout


def linear(fin: int, fout: int) -> int:
    return fin * fout + fout


# ---------------------------------------------------------------- registry


def test_registry_has_contract_models() -> None:
    assert CONTRACT_MODELS <= set(available_models())
    assert available_models() == sorted(available_models())


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("lenet", "'lenet5'"),
        ("lenet5d2l", "'lenet5_d2l'"),
        ("resnet", "'resnet_cifar'"),
        ("vgg16", "'vgg' with depth=16"),
        ("resnet56", "'resnet_cifar' with depth=56"),
    ],
)
def test_unknown_name_suggests_closest_and_lists_known(name: str, expected: str) -> None:
    with pytest.raises(ValueError) as err:
        build_model(name)
    msg = str(err.value)
    assert f"Did you mean {expected}?" in msg
    for known in available_models():
        assert known in msg


def test_unknown_name_without_close_match_still_lists_known() -> None:
    with pytest.raises(ValueError, match="Known models: lenet5, lenet5_d2l") as err:
        build_model("transformer_xxl")
    assert "Did you mean" not in str(err.value)


def test_name_lookup_ignores_case_and_hyphens() -> None:
    assert get_builder("LeNet5-D2L") is get_builder("lenet5_d2l")


def test_unknown_kwarg_lists_accepted_ones() -> None:
    with pytest.raises(ConfigError, match="unexpected argument.*dept.*accepts: depth, width"):
        build_model("resnet_cifar", dept=20)


def test_register_rejects_duplicates_and_bad_signatures() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("mlp")(lambda *, in_channels, num_classes, image_size: nn.Identity())
    with pytest.raises(TypeError, match="image_size"):
        register_model("test_bad_builder")(lambda *, in_channels, num_classes: nn.Identity())
    assert "test_bad_builder" not in available_models()


@pytest.mark.parametrize("bad", [{"in_channels": 0}, {"num_classes": -1}, {"image_size": (28,)}, {"image_size": 2.5}])
def test_bad_common_arguments(bad: dict) -> None:
    with pytest.raises(ValueError):
        build_model("mlp", **bad)


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", available_models())
def test_forward_shape_or_clear_error(name: str, shape: tuple[int, int, int]) -> None:
    c, h, w = shape
    if h < MIN_SIZE.get(name, 1):
        with pytest.raises(ValueError, match=f"at least.*got {h}x{w}.*use 'mlp'"):
            build_model(name, in_channels=c, num_classes=7, image_size=(h, w))
        return
    model = build_model(name, in_channels=c, num_classes=7, image_size=(h, w))
    out = model(torch.rand(2, c, h, w))  # batch 2 so BatchNorm works in training mode
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(("name", "size"), sorted(MIN_SIZE.items()))
def test_lenets_work_at_minimum_size_and_fail_below(name: str, size: int) -> None:
    assert build_model(name, image_size=size)(torch.rand(1, 1, size, size)).shape == (1, 10)
    with pytest.raises(ValueError):
        build_model(name, image_size=(size, size - 1))


def test_non_square_input() -> None:
    for name in available_models():
        assert build_model(name, image_size=(20, 36))(torch.rand(2, 1, 20, 36)).shape == (2, 10)


# ---------------------------------------------------------------- parameter counts


def test_lenet5_parameter_count_by_hand() -> None:
    model = build_model("lenet5")
    # conv1 1*20*5*5+20 = 520; conv2 20*50*25+50 = 25,050; fc1 800*500+500 = 400,500;
    # fc2 500*10+10 = 5,010; total 431,080.
    assert [n_params(m) for m in (model.conv1, model.conv2, model.fc1, model.fc2)] == [520, 25_050, 400_500, 5_010]
    assert n_params(model) == 431_080
    assert model.fc1.in_features == 800
    # 3x32x32: (32-4)//2 = 14, (14-4)//2 = 5 → 50*5*5 = 1250 flatten features
    assert build_model("lenet5", in_channels=3, image_size=32).fc1.in_features == 1250


def test_lenet5_d2l_weight_count_and_prunable_order() -> None:
    model = build_model("lenet5_d2l")
    weights = prunable_weights(model)
    assert [n for n, _ in weights] == ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight", "fc3.weight"]
    assert [p.numel() for _, p in weights] == [150, 2_400, 48_000, 10_080, 840]
    assert sum(p.numel() for _, p in weights) == 61_470
    assert n_params(model) == 61_706
    assert all(p is getattr(model, n.split(".")[0]).weight for n, p in weights)


VGG16_LAYERS = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def vgg_expected(layers: list, in_channels: int, num_classes: int) -> int:
    """Conv(3x3, with bias) + BN per conv, then one linear layer on the last width."""
    total, cin = 0, in_channels
    for v in layers:
        if v != "M":
            total += conv_bn(cin, v, bias=True)
            cin = v
    return total + linear(cin, num_classes)


def test_vgg16_standard_parameter_count() -> None:
    model = build_model("vgg", in_channels=3, num_classes=10, image_size=(32, 32), depth=16)
    # The usual CIFAR VGG-16-BN with one linear classifier has 14,728,266 parameters.
    assert vgg_expected(VGG16_LAYERS, 3, 10) == 14_728_266
    assert n_params(model) == 14_728_266
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 13
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 5


def test_vgg_other_depths_width_and_hidden_classifier() -> None:
    vgg11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
    assert n_params(build_model("vgg", in_channels=3, image_size=32, depth=11)) == vgg_expected(vgg11, 3, 10)
    half = [v if v == "M" else v // 2 for v in VGG16_LAYERS]
    assert n_params(build_model("vgg", depth=16, width=0.5, num_classes=100)) == vgg_expected(half, 1, 100)
    with_hidden = build_model("vgg", in_channels=3, image_size=32, classifier_hidden=512)
    assert n_params(with_hidden) == 14_728_266 - linear(512, 10) + linear(512, 512) + linear(512, 10)
    # The paper's VGG-16 weight count (conv + fc kernels only) is 14,977,728.
    kernels = sum(p.numel() for n, p in with_hidden.named_parameters() if n.endswith("weight") and p.dim() > 1)
    assert kernels == 14_977_728
    tiny = build_model("vgg", width=0.001)
    assert all(m.out_channels == 1 for m in tiny.modules() if isinstance(m, nn.Conv2d))
    with pytest.raises(ValueError, match="depth"):
        build_model("vgg", depth=15)


@pytest.mark.parametrize(("size", "pools"), [(32, 5), (28, 4), (8, 3), (64, 5)])
def test_vgg_pools_only_while_spatial_size_allows(size: int, pools: int) -> None:
    model = build_model("vgg", image_size=size, width=0.125)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == pools
    assert model(torch.rand(2, 1, size, size)).shape == (2, 10)


def resnet_expected(depth: int, in_channels: int, num_classes: int, widths=(16, 32, 64), projection=True) -> int:
    n = (depth - 2) // 6
    total = conv_bn(in_channels, widths[0])
    cin = widths[0]
    for stage, w in enumerate(widths):
        for block in range(n):
            total += conv_bn(cin, w) + conv_bn(w, w)
            if projection and (cin != w or (stage > 0 and block == 0)):
                total += conv_bn(cin, w, k=1)
            cin = w
    return total + linear(cin, num_classes)


def test_resnet20_parameter_count() -> None:
    model = build_model("resnet_cifar", in_channels=3, num_classes=10, image_size=32, depth=20)
    # Option A (paper, parameter-free shortcuts) is the familiar 0.27 M: 269,722.
    assert resnet_expected(20, 3, 10, projection=False) == 269_722
    # Two 1x1 projections (16→32: 512+64, 32→64: 2048+128) add 2,752.
    assert resnet_expected(20, 3, 10) == 272_474
    assert n_params(model) == 272_474
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 19 + 2


@pytest.mark.parametrize("depth", [32, 56, 110])
def test_resnet_deeper_counts(depth: int) -> None:
    model = build_model("resnet_cifar", in_channels=3, num_classes=100, depth=depth)
    assert n_params(model) == resnet_expected(depth, 3, 100)


def test_resnet_width_and_depth_validation() -> None:
    model = build_model("resnet_cifar", width=0.5)
    assert n_params(model) == resnet_expected(20, 1, 10, widths=(8, 16, 32))
    for bad in (18, 2, 21):
        with pytest.raises(ValueError, match="6n\\+2"):
            build_model("resnet_cifar", depth=bad)


def test_mlp_counts() -> None:
    assert n_params(build_model("mlp")) == linear(784, 256) + linear(256, 128) + linear(128, 10) == 235_146
    assert n_params(build_model("mlp", image_size=8, hidden=(32,))) == linear(64, 32) + linear(32, 10)
    assert n_params(build_model("mlp", hidden=())) == linear(784, 10)


# ---------------------------------------------------------------- initialisation


@pytest.mark.parametrize("name", available_models())
def test_init_is_deterministic_under_manual_seed(name: str) -> None:
    def state(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return build_model(name, width=0.25).state_dict() if name in {"vgg", "resnet_cifar"} else build_model(
            name
        ).state_dict()

    a, b, c = state(0), state(0), state(1)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_lenet5_paper_init() -> None:
    torch.manual_seed(0)
    model = build_model("lenet5", init="paper")
    for layer in (model.conv1, model.conv2, model.fc1, model.fc2):
        assert layer.weight.abs().max() <= 0.2
        assert torch.count_nonzero(layer.bias) == 0
    # Normal(0, 0.1) truncated at ±2σ has std 0.1 * 0.8796 ≈ 0.088.
    assert 0.085 < model.fc1.weight.std().item() < 0.091
    default = build_model("lenet5")
    assert default.fc1.weight.abs().max() < 0.04  # PyTorch default: U(±1/sqrt(800))
    with pytest.raises(ValueError, match="init"):
        build_model("lenet5", init="xavier")


def test_lenet5_d2l_keras_init() -> None:
    torch.manual_seed(0)
    model = build_model("lenet5_d2l")
    for layer, fan_in, fan_out in [(model.conv1, 25, 150), (model.fc1, 400, 120), (model.fc3, 84, 10)]:
        bound = (6 / (fan_in + fan_out)) ** 0.5
        assert torch.count_nonzero(layer.bias) == 0
        assert layer.weight.abs().max() <= bound
        assert layer.weight.abs().max() > 0.9 * bound
    assert torch.count_nonzero(build_model("lenet5_d2l", init="pytorch").fc1.bias) > 0


# ---------------------------------------------------------------- prunable_weights


def test_prunable_weights_forward_order_with_example_inputs() -> None:
    class OutOfOrder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(8, 3)
            self.unused = nn.Linear(2, 2)
            self.stem = nn.Conv2d(1, 2, 3)
            self.bn = nn.BatchNorm2d(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.bn(self.stem(x)).flatten(1))

    model = OutOfOrder()
    assert [n for n, _ in prunable_weights(model)] == ["head.weight", "unused.weight", "stem.weight"]
    names = [n for n, _ in prunable_weights(model, example_inputs=torch.rand(1, 1, 4, 4))]
    assert names == ["stem.weight", "head.weight", "unused.weight"]
    assert model.training  # mode restored


@pytest.mark.parametrize("name", available_models())
def test_prunable_weights_registration_order_is_forward_order(name: str) -> None:
    model = build_model(name)
    x = torch.rand(1, 1, 28, 28)
    assert [n for n, _ in prunable_weights(model)] == [n for n, _ in prunable_weights(model, example_inputs=x)]
    assert all(n.endswith(".weight") for n, _ in prunable_weights(model))


# ---------------------------------------------------------------- Torch-Pruning


TP_CASES = [(name, (1, 28, 28), {}) for name in sorted(CONTRACT_MODELS)] + [
    ("vgg", (3, 32, 32), {"depth": 16}),
    ("resnet_cifar", (3, 32, 32), {"depth": 20}),
    ("vgg", (1, 8, 8), {"depth": 11}),
    ("resnet_cifar", (1, 8, 8), {"depth": 20}),
    ("mobilenetv2", (3, 32, 32), {"depth": 17, "width": 0.5}),
    ("mobilenetv2", (1, 8, 8), {"depth": 10}),
]


@pytest.mark.parametrize(("name", "shape", "kwargs"), TP_CASES, ids=lambda v: str(v))
def test_torch_pruning_traces_and_prunes(name: str, shape: tuple[int, int, int], kwargs: dict) -> None:
    c, h, w = shape
    model = build_model(name, in_channels=c, image_size=(h, w), **kwargs).eval()
    x = torch.rand(1, c, h, w)
    before = n_params(model)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if convs:
        targets, fn, size = [convs[0], convs[-1]], tp.prune_conv_out_channels, "out_channels"
    else:  # MLP: prune the first hidden layer instead
        targets, fn, size = [model.features[1]], tp.prune_linear_out_channels, "out_features"
    for layer in targets:
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=x)
        width = getattr(layer, size)
        group = graph.get_pruning_group(layer, fn, idxs=list(range(width // 4)))
        assert graph.check_pruning_group(group)
        group.prune()
        assert getattr(layer, size) == width - width // 4
        assert model(x).shape == (1, 10)
    assert n_params(model) < before
    if name == "lenet5":
        assert model.fc1.in_features == model.conv2.out_channels * 16


def test_bad_model_argument_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot be built with width='wide'.*accepts: depth, width"):
        build_model("vgg", width="wide")
