"""Reader for the IDX format of MNIST and Fashion-MNIST (``train-images-idx3-ubyte[.gz]`` and friends).

The format: 2 zero bytes, a type code (0x08 = uint8), the number of dimensions, then one big-endian uint32 per
dimension, then the data. The reader reads the real files unchanged, gzip-compressed or not.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from evoprune.errors import DatasetNotFoundError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (optionally ``.gz``) into a numpy array of its declared shape and type."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file: it must start with two zero bytes")
    type_code, ndim = data[2], data[3]
    if type_code not in _DTYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{type_code:02x}")
    header = 4 + 4 * ndim
    shape = tuple(int(v) for v in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_DTYPES[type_code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(f"{path}: header declares shape {shape} ({expected} bytes) but the file holds {len(data) - header}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def find_idx_file(folder: Path, stem: str) -> Path | None:
    """The file ``stem`` in ``folder``, as ``stem.gz`` or ``stem`` (also the ``stem`` with a dot before idx)."""
    for name in (stem, stem.replace("-idx", ".idx")):
        for candidate in (folder / f"{name}.gz", folder / name):
            if candidate.is_file():
                return candidate
    return None


def read_idx_folder(folder: Path, *, dataset: str, how_to_fix: str) -> dict[str, np.ndarray]:
    """Read the four IDX files of an MNIST-format folder, or say exactly which are missing and how to fix it."""
    found = {key: find_idx_file(folder, stem) for key, stem in IDX_FILES.items()}
    missing = [IDX_FILES[key] for key, path in found.items() if path is None]
    if missing:
        raise DatasetNotFoundError(
            f"{dataset}: missing {', '.join(f + '[.gz]' for f in missing)} in {folder}. {how_to_fix}"
        )
    arrays = {key: read_idx(path) for key, path in found.items() if path is not None}
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"{dataset} in {folder}: {part} images {images.shape} and labels {labels.shape} do not match"
            )
    return arrays
