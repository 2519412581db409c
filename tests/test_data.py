"""Dataset loaders: shapes, dtypes, deterministic splits, real file formats, and the missing-data errors."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from evoprune.data import Split, load_dataset
from evoprune.data.idx import read_idx
from evoprune.errors import ConfigError, DataError, DatasetNotFoundError


def row_hashes(split: Split) -> set[str]:
    return {hashlib.sha1(row.numpy().tobytes()).hexdigest() for row in split.x}


def check_splits(data, *, channels: int, size: tuple[int, int], classes: int) -> None:
    for split in (data.train, data.val, data.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape[1:] == (channels, *size)
        assert 0.0 <= float(split.x.min()) and float(split.x.max()) <= 1.0
        assert set(split.y.unique().tolist()) == set(range(classes))
    assert data.num_classes == classes == len(data.class_names)
    assert data.in_channels == channels and data.image_size == size


@pytest.mark.parametrize("name,channels,size,total", [("digits", 1, (8, 8), 1797), ("mnist5k", 1, (28, 28), 5000)])
def test_embedded_datasets(name: str, channels: int, size: tuple[int, int], total: int) -> None:
    data = load_dataset(name, seed=3)
    check_splits(data, channels=channels, size=size, classes=10)
    assert sum(data.sizes().values()) == total
    assert len(data.test) == pytest.approx(0.2 * total, abs=1)
    assert len(data.val) == pytest.approx(0.2 * (total - len(data.test)), abs=1)
    # Disjoint splits (mnist5k and digits hold a handful of exact duplicates at most).
    train, val, test = row_hashes(data.train), row_hashes(data.val), row_hashes(data.test)
    assert len(train & test) <= 3 and len(val & test) <= 3 and len(train & val) <= 3
    # Stratified: every class within one sample of its share.
    counts = torch.bincount(data.val.y, minlength=10)
    assert int(counts.max() - counts.min()) <= max(2, len(data.val) // 100)


def test_splits_are_deterministic_and_test_is_fixed_across_seeds() -> None:
    a, b, c = load_dataset("mnist5k", seed=1), load_dataset("mnist5k", seed=1), load_dataset("mnist5k", seed=2)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.y, b.val.y)
    assert not torch.equal(a.val.x, c.val.x)  # the seed moves the train/val boundary
    assert torch.equal(a.test.x, c.test.x)  # but every seed reports on the same test images


def test_mnist5k_is_shuffled_not_sorted_by_class() -> None:
    y = load_dataset("mnist5k").train.y
    assert (y[1:] != y[:-1]).float().mean() > 0.8


def test_normalize_uses_train_statistics() -> None:
    data = load_dataset("digits", normalize=True)
    assert abs(float(data.train.x.mean())) < 1e-4 and abs(float(data.train.x.std()) - 1.0) < 1e-2
    assert data.mean is not None and data.std is not None


def test_synthetic_dataset_options_and_determinism() -> None:
    data = load_dataset("synthetic", num_samples=200, num_classes=5, in_channels=3, image_size=10)
    check_splits(data, channels=3, size=(10, 10), classes=5)
    again = load_dataset("synthetic", num_samples=200, num_classes=5, in_channels=3, image_size=10)
    assert torch.equal(data.train.x, again.train.x)
    with pytest.raises(ConfigError, match="takes no options"):
        load_dataset("digits", num_samples=5)


def test_unknown_dataset_suggests_close_names() -> None:
    with pytest.raises(ConfigError, match="Did you mean mnist5k"):
        load_dataset("mnist5")


def test_bad_val_fraction() -> None:
    with pytest.raises(ConfigError, match="val_fraction"):
        load_dataset("digits", val_fraction=1.5)


# --- IDX (MNIST format), written by the test in the real format -------------------------------------------------

def write_idx(path: Path, array: np.ndarray, *, compress: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


def make_idx_folder(folder: Path, *, compress: bool, n_train: int = 100, n_test: int = 30) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        write_idx(folder / name, array, compress=compress)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_idx_reader_on_real_format(tmp_path: Path, compress: bool) -> None:
    arrays = make_idx_folder(tmp_path, compress=compress)
    data = load_dataset("mnist", root=tmp_path, seed=0)
    check_splits(data, channels=1, size=(28, 28), classes=10)
    assert data.sizes() == {"train": 80, "val": 20, "test": 30}
    expected_test = torch.from_numpy(arrays["t10k-images-idx3-ubyte"]).float().div(255).unsqueeze(1)
    assert torch.equal(data.test.x, expected_test)  # official test split, unchanged order
    assert torch.equal(data.test.y, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]).long())


def test_mnist_from_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_idx_folder(tmp_path / "mnist", compress=True)
    monkeypatch.setenv("EVOPRUNE_DATA_DIR", str(tmp_path))
    assert len(load_dataset("mnist").test) == 30


def test_missing_mnist_names_files_places_and_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVOPRUNE_MNIST_DIR", raising=False)
    monkeypatch.delenv("EVOPRUNE_DATA_DIR", raising=False)
    make_idx_folder(tmp_path, compress=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", root=tmp_path)
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte" in message and "train-images" not in message.split("in ")[0]
    assert str(tmp_path) in message and "--data-dir" in message


def test_corrupt_idx_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(struct.pack(">BBBBI", 0, 0, 0x08, 1, 50) + b"\x00" * 10)
    with pytest.raises(DataError, match="declares shape"):
        read_idx(path)
    path.write_bytes(b"PK\x03\x04junk")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(path)


def test_fashion_mnist(require_fashion: None) -> None:
    data = load_dataset("fashion", seed=0)
    check_splits(data, channels=1, size=(28, 28), classes=10)
    assert data.sizes() == {"train": 48000, "val": 12000, "test": 10000}
    assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"
    # Pixels and labels line up: a nearest-centroid classifier gets about 0.67 (datasets.md).
    x_tr, y_tr = data.train.x.flatten(1), data.train.y
    centroids = torch.stack([x_tr[y_tr == c].mean(0) for c in range(10)])
    predicted = torch.cdist(data.test.x.flatten(1), centroids).argmin(1)
    assert 0.62 < float((predicted == data.test.y).float().mean()) < 0.72


def test_missing_fashion_points_at_the_package(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion", root=tmp_path)


# --- CIFAR python pickles, written by the test in the real format ---------------------------------------------

def write_cifar10(folder: Path, per_batch: int = 20) -> np.ndarray:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    all_data = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [i % 10 for i in range(per_batch)]
        with open(folder / name, "wb") as handle:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data}, handle, protocol=2)
        all_data.append(data)
    with open(folder / "batches.meta", "wb") as handle:
        names = [n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")]
        pickle.dump({b"label_names": names, b"num_vis": 3072}, handle, protocol=2)
    return all_data[-1]


def test_cifar10_reader_on_real_format(tmp_path: Path) -> None:
    test_rows = write_cifar10(tmp_path / "cifar-10-batches-py")
    data = load_dataset("cifar10", root=tmp_path, seed=0)
    assert data.sizes() == {"train": 80, "val": 20, "test": 20}
    check_splits(data, channels=3, size=(32, 32), classes=10)
    assert data.class_names[0] == "airplane"
    # Row layout is 1024 red, 1024 green, 1024 blue values, row-major.
    assert torch.equal(data.test.x[3, 1, 0, :5], torch.from_numpy(test_rows[3, 1024:1029]).float() / 255)


def test_cifar100_reader_on_real_format(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for name, n in (("train", 300), ("test", 100)):
        with open(folder / name, "wb") as handle:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"fine_labels": [i % 100 for i in range(n)], b"coarse_labels": [i % 20 for i in range(n)]},
                        handle, protocol=2)
    data = load_dataset("cifar100", root=folder, val_fraction=1 / 3)
    assert data.num_classes == 100 and data.sizes() == {"train": 200, "val": 100, "test": 100}


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_cifar_reader_refuses_code_in_pickles(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    with open(folder / "data_batch_1", "wb") as handle:
        pickle.dump({b"data": _Exploit(), b"labels": [0]}, handle, protocol=2)
    with pytest.raises(DataError, match="data_batch_1 cannot be read as a CIFAR batch .UnpicklingError: refusing to load"):
        load_dataset("cifar10", root=tmp_path)


def test_missing_cifar_is_explained(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="data_batch_1.*cifar-10-batches-py"):
        load_dataset("cifar10", root=tmp_path)
