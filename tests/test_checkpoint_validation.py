"""Damaged or hand-edited checkpoints end in one CheckpointError naming the file and the field, never a traceback.

Each case below is an input of the adversarial audit (issue 10, item 3); the hypothesis tests keep it true for
random bytes, truncations and fields replaced by values of the wrong type.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evoprune.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from evoprune.errors import CheckpointError
from evoprune.models import build_model
from evoprune.prune.history import example_input, replay_history

KWARGS = {"in_channels": 1, "num_classes": 4, "image_size": (28, 28)}
HISTORY = [["conv1", True, [0, 3]], ["conv2", True, [1, 2, 5]], ["fc1", True, [7]]]


def plain_payload() -> dict[str, Any]:
    torch.manual_seed(0)
    model = build_model("lenet5", **KWARGS)
    return {"format": "evoprune.checkpoint/1", "arch": "lenet5", "arch_kwargs": dict(KWARGS),
            "meta": {"dataset": "mnist5k", "seed": 0, "normalize": False},
            "state_dict": {k: v.clone() for k, v in model.state_dict().items()}}


def pruned_payload(tmp_path: Path) -> dict[str, Any]:
    torch.manual_seed(0)
    model = replay_history(build_model("lenet5", **KWARGS), HISTORY, example_input(KWARGS))
    path = save_checkpoint(tmp_path / "pruned.pt", model, arch="lenet5", arch_kwargs=KWARGS, pruning_history=HISTORY,
                       meta={"dataset": "mnist5k"})
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def payloads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    return {"plain": plain_payload(), "pruned": pruned_payload(tmp_path_factory.mktemp("pruned"))}


def refused(path: Path, *fragments: str) -> str:
    """Load ``path``, expect one CheckpointError line naming the file and every fragment; return the message."""
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def write(path: Path, payload: object) -> Path:
    torch.save(payload, path)
    return path


def test_valid_checkpoints_load(tmp_path: Path, payloads: dict[str, dict[str, Any]]) -> None:
    model, _ = load_checkpoint(write(tmp_path / "plain.pt", payloads["plain"]))
    assert model.fc1.out_features == 500
    model, payload = load_checkpoint(write(tmp_path / "pruned.pt", payloads["pruned"]))
    assert model.conv1.out_channels == 18 and model.conv2.out_channels == 47
    assert model.fc1.weight.shape == (model.fc1.out_features, model.fc1.in_features) == (499, 47 * 4 * 4)
    assert payload["meta"]["dataset"] == "mnist5k"


def test_empty_file_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty.pt").write_bytes(b"")
    message = refused(tmp_path / "empty.pt", "empty (0 bytes)", "evoprune train")
    with pytest.raises(CheckpointError, match="empty"):
        read_checkpoint(tmp_path / "empty.pt")
    assert "IndexError" not in message


def test_exception_without_message_reads_as_its_type(tmp_path: Path) -> None:
    path = tmp_path / "eof.pt"
    path.write_bytes(b"\x80")  # a pickle protocol opcode with nothing after it: EOFError with an empty message
    refused(path, "cannot be read", "truncated")


def _edited(tmp_path: Path, payload: dict[str, Any], field: str, value: object) -> Path:
    """``payload`` with the dotted ``field`` set to ``value``, saved."""
    edited = copy.deepcopy(payload)
    head, _, weight = field.partition(".")
    *parents, last = [head, weight] if head == "state_dict" and weight else field.split(".")
    target = edited
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return write(tmp_path / "edited.pt", edited)


@pytest.mark.parametrize(("field", "value", "fragments"), [
    ("meta", "a string", ("field 'meta' must be a dict",)),
    ("meta", [1, 2], ("field 'meta' must be a dict",)),
    ("meta.dataset", 123, ("field 'meta.dataset'", "int 123")),
    ("meta.seed", -1, ("field 'meta.seed'",)),
    ("meta.seed", True, ("field 'meta.seed'",)),
    ("meta.normalize", "yes", ("field 'meta.normalize'",)),
    ("arch", 5, ("field 'arch'",)),
    ("arch", "no_such_model", ("'arch'/'arch_kwargs'", "no_such_model")),
    ("arch_kwargs", [1], ("field 'arch_kwargs'",)),
    ("arch_kwargs.num_classes", -3, ("'arch'/'arch_kwargs'", "num_classes")),
    ("arch_kwargs.num_classes", 10**9, ("'fc2.weight' has shape [4, 500], the model needs [1000000000, 500]",)),
    ("state_dict", [1, 2], ("field 'state_dict' must be a non-empty dict",)),
    ("state_dict", {}, ("field 'state_dict' must be a non-empty dict",)),
    ("state_dict.fc1.bias", [0.0] * 500, ("entry str 'fc1.bias' is list",)),
    ("state_dict.fc1.bias", torch.zeros(499), ("does not match architecture 'lenet5'", "'fc1.bias' has shape [499]")),
    ("state_dict.fc1.bias", torch.zeros(500, dtype=torch.int64), ("'fc1.bias' holds torch.int64",)),
])
def test_malformed_plain_fields(tmp_path: Path, payloads: dict[str, dict[str, Any]], field: str, value: object,
                                fragments: tuple[str, ...]) -> None:
    refused(_edited(tmp_path, payloads["plain"], field, value), *fragments)


def test_missing_and_unexpected_weights(tmp_path: Path, payloads: dict[str, dict[str, Any]]) -> None:
    payload = copy.deepcopy(payloads["plain"])
    payload["state_dict"]["extra.weight"] = payload["state_dict"].pop("fc2.weight")
    refused(write(tmp_path / "keys.pt", payload), "missing 'fc2.weight'", "unexpected 'extra.weight'")


@pytest.mark.parametrize(("field", "value", "fragments"), [
    ("meta.pruning", "oops", ("field 'meta.pruning' must be a dict",)),
    ("meta.pruning.format", "v0", ("field 'meta.pruning.format'",)),
    ("meta.pruning.input_shape", [1, -28, 28], ("field 'meta.pruning.input_shape'", "positive")),
    ("meta.pruning.input_shape", [3, 32, 32], ("field 'meta.pruning.input_shape'", "[1, 28, 28]")),
    ("meta.pruning.history", {"a": 1}, ("field 'meta.pruning.history' must be a list",)),
    ("meta.pruning.history.0", ["conv1", "yes", [0]], ("field 'meta.pruning.history[0]'",)),
    ("meta.pruning.history.0", ["conv1", True, [-1]], ("field 'meta.pruning.history[0]'",)),
    ("meta.pruning.history.2", ["fc1", True, [99999]], ("[99999] are outside 0..499", "step 2")),
    ("meta.pruning.history.2", ["fc1", True, [4, 4]], ("indices repeat",)),
    ("meta.pruning.history.0", ["conv1", True, list(range(20))], ("removes all 20 channels",)),
    ("meta.pruning.history.0", ["nope", True, [0]], ("('nope', output channels): LeNet5 has no such layer",)),
    ("meta.pruning.history.0", ["relu", True, [0]], ("('relu', output channels): a ReLU is not a prunable layer",)),
    ("meta.pruning.history.2", ["fc2", True, [0]], ("output layer",)),
    ("arch_kwargs.num_classes", 10**9, ("'arch'/'arch_kwargs'", "more than 1000 times")),
])
def test_malformed_pruning_records(tmp_path: Path, payloads: dict[str, dict[str, Any]], field: str, value: object,
                                   fragments: tuple[str, ...]) -> None:
    refused(_edited(tmp_path, payloads["pruned"], field, value), *fragments)


def test_history_index_99999_never_loads_an_inconsistent_model(tmp_path: Path,
                                                               payloads: dict[str, dict[str, Any]]) -> None:
    """The audit's case: the weights were saved for fc1 at 256 rows, the history claims index 99999."""
    payload = copy.deepcopy(payloads["pruned"])
    payload["meta"]["pruning"]["history"][-1] = ["fc1", True, [99999]]
    refused(write(tmp_path / "idx.pt", payload), "field 'meta.pruning.history'", "outside")


# --- properties: nothing but CheckpointError, whatever the bytes or the field values ------------------------------

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def only_checkpoint_errors(path: Path) -> None:
    """Reading and loading either succeed or raise CheckpointError (a one-line message naming the file)."""
    for load in (read_checkpoint, load_checkpoint):
        try:
            load(path)
        except CheckpointError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc)


@PROPERTY
@given(data=st.binary(max_size=2048))
def test_random_bytes_raise_only_checkpoint_errors(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "random.pt"
    path.write_bytes(data)
    only_checkpoint_errors(path)


@pytest.fixture(scope="module")
def valid_bytes(tmp_path_factory: pytest.TempPathFactory, payloads: dict[str, dict[str, Any]]) -> bytes:
    folder = tmp_path_factory.mktemp("valid")
    path = save_checkpoint(folder / "small.pt", build_model("mlp", hidden=(8,), **KWARGS), arch="mlp",
                           arch_kwargs={**KWARGS, "hidden": (8,)}, meta={"dataset": "mnist5k"})
    return path.read_bytes()


@PROPERTY
@given(cut=st.floats(0.0, 1.0, exclude_max=True))
def test_truncations_raise_only_checkpoint_errors(tmp_path: Path, valid_bytes: bytes, cut: float) -> None:
    path = tmp_path / "truncated.pt"
    path.write_bytes(valid_bytes[: int(cut * len(valid_bytes))])
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    only_checkpoint_errors(path)


WRONG_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8), st.lists(st.integers(-3, 3), max_size=4), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from([torch.zeros(3), torch.ones(2, 2, dtype=torch.int64), torch.tensor(math.nan)]),
)
FIELDS = [
    "format", "arch", "arch_kwargs", "arch_kwargs.num_classes", "arch_kwargs.image_size", "arch_kwargs.in_channels",
    "meta", "meta.dataset", "meta.seed", "meta.normalize", "meta.pruning", "meta.pruning.format",
    "meta.pruning.input_shape", "meta.pruning.history", "meta.pruning.history.0", "meta.pruning.history.1.0",
    "meta.pruning.history.1.1", "meta.pruning.history.1.2", "meta.pruning.history.2.2.0", "state_dict",
    "state_dict.conv1.weight", "state_dict.fc1.bias",
]


@PROPERTY
@given(field=st.sampled_from(FIELDS), value=WRONG_VALUES)
def test_wrongly_typed_fields_raise_only_checkpoint_errors(tmp_path: Path, payloads: dict[str, dict[str, Any]],
                                                          field: str, value: object) -> None:
    only_checkpoint_errors(_edited(tmp_path, payloads["pruned"], field, value))
