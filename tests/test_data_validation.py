"""Damaged dataset files end in one DataError at load time (file, what is wrong, how to fix), never a traceback.

Each case is an input of the adversarial audit (issue 10, item 6); the hypothesis tests keep it true for IDX
files of random bytes and truncations of a valid one.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evoprune.cli import main
from evoprune.data import load_dataset
from evoprune.data.idx import read_idx
from evoprune.errors import DataError, EvopruneError
from test_data import make_idx_folder, write_cifar10, write_idx

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"


def refused(name: str, root: Path, *fragments: str) -> str:
    """Load dataset ``name`` from ``root``; expect one DataError line holding every fragment; return it."""
    with pytest.raises(DataError) as info:
        load_dataset(name, root=root)
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def gz(folder: Path, stem: str) -> Path:
    return folder / f"{stem}.gz"


# --- IDX (MNIST, Fashion-MNIST) -------------------------------------------------------------------------------

def _truncate_gzip(folder: Path) -> None:
    path = gz(folder, TRAIN_IMAGES)
    path.write_bytes(path.read_bytes()[:200])


def _not_gzip(folder: Path) -> None:
    gz(folder, TRAIN_IMAGES).write_bytes(b"this is not gzip data at all")


def _bad_magic(folder: Path) -> None:
    with gzip.open(gz(folder, TRAIN_LABELS), "wb") as handle:
        handle.write(b"\x01\x02\x08\x01" + b"\x00" * 100)


def _truncated_payload(folder: Path) -> None:
    with gzip.open(gz(folder, TRAIN_IMAGES), "wb") as handle:
        handle.write(struct.pack(">BBBBIII", 0, 0, 0x08, 3, 100, 28, 28) + b"\x00" * 5000)


def _count_mismatch(folder: Path) -> None:
    write_idx(folder / TRAIN_LABELS, np.arange(99, dtype=np.uint8) % 10, compress=True)


def _label_200(folder: Path) -> None:
    labels = np.arange(30, dtype=np.uint8) % 10
    labels[7] = 200
    write_idx(folder / TEST_LABELS, labels, compress=True)


def _labels_as_images(folder: Path) -> None:
    write_idx(folder / TRAIN_LABELS, np.zeros((100, 2, 2), dtype=np.uint8), compress=True)


def _header_cut(folder: Path) -> None:
    with gzip.open(gz(folder, TRAIN_IMAGES), "wb") as handle:
        handle.write(struct.pack(">BBBBI", 0, 0, 0x08, 3, 100))


@pytest.mark.parametrize(("damage", "fragments"), [
    (_truncate_gzip, (TRAIN_IMAGES, "cannot be read (EOFError")),
    (_not_gzip, (TRAIN_IMAGES, "cannot be read (BadGzipFile")),
    (_bad_magic, (TRAIN_LABELS, "not an IDX file")),
    (_truncated_payload, (TRAIN_IMAGES, "declares shape (100, 28, 28)", "truncated")),
    (_header_cut, (TRAIN_IMAGES, "ends inside its header")),
    (_count_mismatch, ("holds 100 images but", "holds 99 labels")),
    (_label_200, (TEST_LABELS, "holds label 200", "outside 0..9", "10 classes")),
    (_labels_as_images, (TRAIN_LABELS, "one integer label per image")),
])
def test_damaged_idx_files_are_one_clear_error(tmp_path: Path, damage: Callable[[Path], None],
                                              fragments: tuple[str, ...]) -> None:
    make_idx_folder(tmp_path, compress=True)
    damage(tmp_path)
    refused("mnist", tmp_path, *fragments, "intact copy of the MNIST original")


def test_damaged_fashion_points_at_reinstalling_the_package(tmp_path: Path) -> None:
    make_idx_folder(tmp_path, compress=True)
    _truncate_gzip(tmp_path)
    refused("fashion", tmp_path, TRAIN_IMAGES, "apt-get install --reinstall dataset-fashion-mnist")


def test_uncompressed_gzip_file_is_told_to_be_renamed(tmp_path: Path) -> None:
    make_idx_folder(tmp_path, compress=True)
    gz(tmp_path, TRAIN_IMAGES).rename(tmp_path / TRAIN_IMAGES)
    refused("mnist", tmp_path, "gzip-compressed but not named .gz", f"rename it to {TRAIN_IMAGES}.gz")


def test_too_few_images_per_class_for_a_stratified_split(tmp_path: Path) -> None:
    make_idx_folder(tmp_path, compress=True, n_train=10)
    refused("mnist", tmp_path, "cannot carve a stratified validation split", "--val-fraction")


def test_damaged_data_is_one_line_and_exit_2_from_the_command_line(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    make_idx_folder(tmp_path / "data", compress=True)
    _label_200(tmp_path / "data")
    code = main(["train", "--model", "mlp", "--data", "mnist", "--data-dir", str(tmp_path / "data"), "--epochs", "1",
                 "--quiet", "--out", str(tmp_path / "m.pt")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("evoprune: error: mnist:") and "holds label 200" in err
    assert err.count("\n") == 1 and "Traceback" not in err


PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY
@given(data=st.binary(max_size=512), compressed=st.booleans())
def test_idx_of_random_bytes_raises_only_data_errors(tmp_path: Path, data: bytes, compressed: bool) -> None:
    path = tmp_path / ("random-idx1-ubyte.gz" if compressed else "random-idx1-ubyte")
    path.write_bytes(data)
    try:
        read_idx(path)
    except DataError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)


@pytest.fixture(scope="module")
def valid_idx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("idx")
    make_idx_folder(folder, compress=True, n_train=40, n_test=20)
    return {path.name: path.read_bytes() for path in folder.iterdir()}


@PROPERTY
@given(name=st.sampled_from([f"{s}.gz" for s in (TRAIN_IMAGES, TRAIN_LABELS, "t10k-images-idx3-ubyte", TEST_LABELS)]),
       cut=st.floats(0.0, 1.0, exclude_max=True), decompress=st.booleans())
def test_truncated_idx_files_raise_only_project_errors(tmp_path: Path, valid_idx: dict[str, bytes], name: str,
                                                       cut: float, decompress: bool) -> None:
    for stem, content in valid_idx.items():
        (tmp_path / stem).write_bytes(content)
    target = tmp_path / name
    if decompress:  # cut the IDX bytes themselves, not just the gzip stream around them
        raw = gzip.decompress(target.read_bytes())
        target.unlink()
        target.with_suffix("").write_bytes(raw[: int(cut * len(raw))])
    else:
        target.write_bytes(target.read_bytes()[: int(cut * len(valid_idx[name]))])
    with pytest.raises(EvopruneError) as info:
        load_dataset("mnist", root=tmp_path)
    assert isinstance(info.value, DataError) and "\n" not in str(info.value)


# --- CIFAR python pickles -------------------------------------------------------------------------------------

def _rewrite(path: Path, batch: object) -> None:
    with open(path, "wb") as handle:
        pickle.dump(batch, handle, protocol=2)


def _batch(n: int = 20, **changes: object) -> dict[bytes, object]:
    batch: dict[bytes, object] = {b"data": np.zeros((n, 3072), dtype=np.uint8), b"labels": [i % 10 for i in range(n)]}
    batch.update({k.encode(): v for k, v in changes.items()})
    return batch


@pytest.mark.parametrize(("name", "content", "fragments"), [
    ("data_batch_2", b"", ("data_batch_2 cannot be read as a CIFAR batch (EOFError",)),
    ("data_batch_2", "truncate", ("data_batch_2 cannot be read as a CIFAR batch",)),
    ("data_batch_3", [1, 2, 3], ("data_batch_3 is not a CIFAR batch: expected a dict, found list",)),
    ("data_batch_4", {b"labels": [0]}, ("expected keys 'data' and 'labels'",)),
    ("test_batch", _batch(data=np.zeros((20, 3000), dtype=np.uint8)), ("'data' must be an N×3072 integer array",)),
    ("test_batch", _batch(data=np.full((20, 3072), np.nan)), ("'data' must be an N×3072 integer array", "float64")),
    ("test_batch", _batch(data="pixels"), ("'data' must be an N×3072 integer array, found str",)),
    ("test_batch", _batch(data=np.full((20, 3072), 300)), ("pixel values outside 0..255",)),
    ("test_batch", _batch(labels=[0] * 19), ("'labels' must hold one integer per image (20)",)),
    ("test_batch", _batch(labels=["cat"] * 20), ("'labels' must hold one integer per image",)),
    ("test_batch", _batch(labels=[[0], [1, 2]] * 10), ("'labels' is not a flat list of integers",)),
    ("test_batch", _batch(labels=[200] * 20), ("holds label 200", "outside 0..9")),
    ("batches.meta", b"\x80\x02}q", ("batches.meta cannot be read",)),
])
def test_damaged_cifar_batches_are_one_clear_error(tmp_path: Path, name: str, content: object,
                                                   fragments: tuple[str, ...]) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    path = folder / name
    if content == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        _rewrite(path, content)
    refused("cifar10", tmp_path, *fragments, "Extract the python version (cifar-10-batches-py/) again")


@PROPERTY
@given(data=st.binary(max_size=512))
def test_cifar_batch_of_random_bytes_raises_only_data_errors(tmp_path: Path, data: bytes) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    if not folder.is_dir():
        write_cifar10(folder)
    (folder / "data_batch_1").write_bytes(data)
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", root=tmp_path)
    assert "\n" not in str(info.value) and "data_batch_1" in str(info.value)
