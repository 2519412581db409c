"""Reader for the IDX format of MNIST and Fashion-MNIST (``train-images-idx3-ubyte[.gz]`` and friends).

The format: 2 zero bytes, a type code (0x08 = uint8), the number of dimensions, then one big-endian uint32 per
dimension, then the data. The reader reads the real files unchanged, gzip-compressed or not.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from evoprune.errors import DataError, DatasetNotFoundError, first_line

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def read_idx(path: str | Path, *, how_to_repair: str = "Replace it with an intact copy.") -> np.ndarray:
    """Read one IDX file (optionally ``.gz``) into a numpy array of its declared shape and type.

    A truncated, corrupt or inconsistent file raises :class:`DataError` naming the file, what is wrong and
    ``how_to_repair``.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; a cut gzip stream ends in EOFError
        raise DataError(f"{path} cannot be read ({first_line(exc)}). {how_to_repair}") from exc
    if data[:2] == b"\x1f\x8b" and path.suffix != ".gz":
        raise DataError(f"{path} is gzip-compressed but not named .gz: rename it to {path.name}.gz")
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path} is not an IDX file: it must start with two zero bytes. {how_to_repair}")
    type_code, ndim = data[2], data[3]
    if type_code not in _DTYPES:
        raise DataError(f"{path}: unknown IDX type code 0x{type_code:02x}. {how_to_repair}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: the file ends inside its header ({len(data)} of {header} bytes). {how_to_repair}")
    shape = tuple(int(v) for v in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_DTYPES[type_code])
    expected = math.prod(shape) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(f"{path}: header declares shape {shape} ({expected} bytes) but the file holds "
                        f"{len(data) - header}; it is truncated or corrupt. {how_to_repair}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def find_idx_file(folder: Path, stem: str) -> Path | None:
    """The file ``stem`` in ``folder``, as ``stem.gz`` or ``stem`` (also the ``stem`` with a dot before idx)."""
    for name in (stem, stem.replace("-idx", ".idx")):
        for candidate in (folder / f"{name}.gz", folder / name):
            if candidate.is_file():
                return candidate
    return None


def read_idx_folder(folder: Path, *, dataset: str, how_to_fix: str, how_to_repair: str,
                    num_classes: int) -> dict[str, np.ndarray]:
    """Read the four IDX files of an MNIST-format folder, or say exactly which are missing or damaged and the fix.

    Checked at load time, so a damaged file never reaches training: images N×H×W uint8, labels N integers in
    ``[0, num_classes)``, one label per image, train and test images of one size.
    """
    found = {key: find_idx_file(folder, stem) for key, stem in IDX_FILES.items()}
    missing = [IDX_FILES[key] for key, path in found.items() if path is None]
    if missing:
        raise DatasetNotFoundError(
            f"{dataset}: missing {', '.join(f + '[.gz]' for f in missing)} in {folder}. {how_to_fix}"
        )
    paths = {key: path for key, path in found.items() if path is not None}

    def refuse(problem: str) -> DataError:
        return DataError(f"{dataset}: {problem}; the files do not belong together or are damaged. {how_to_repair}")

    arrays = {key: read_idx(path, how_to_repair=how_to_repair) for key, path in paths.items()}
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        image_path, label_path = paths[f"{part}_images"], paths[f"{part}_labels"]
        if images.ndim != 3 or images.dtype != np.uint8 or 0 in images.shape:
            raise refuse(f"{image_path} must hold N×height×width uint8 images, found {images.dtype} of shape "
                         f"{images.shape}")
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise refuse(f"{label_path} must hold one integer label per image, found {labels.dtype} of shape "
                         f"{labels.shape}")
        if len(images) != len(labels):
            raise refuse(f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels")
        outside = labels[(labels < 0) | (labels >= num_classes)]
        if outside.size:
            raise refuse(f"{label_path} holds label {int(outside[0])} ({outside.size} of {len(labels)} labels outside "
                         f"0..{num_classes - 1}); {dataset} has {num_classes} classes")
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise refuse(f"train images are {arrays['train_images'].shape[1:]} pixels but test images "
                     f"{arrays['test_images'].shape[1:]} ({paths['train_images']}, {paths['test_images']})")
    return arrays
