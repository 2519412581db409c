"""Reader for the CIFAR-10 / CIFAR-100 "python version" folders (``cifar-10-batches-py``, ``cifar-100-python``).

Those files are Python pickles of dicts holding numpy arrays. They are read with a restricted unpickler that
can rebuild numpy arrays and nothing else, so a tampered file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from evoprune.errors import DataError, DatasetNotFoundError, first_line

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}

CIFAR_LAYOUT = {
    "cifar10": {"folder": "cifar-10-batches-py", "train": [f"data_batch_{i}" for i in range(1, 6)],
                "test": ["test_batch"], "meta": "batches.meta", "labels": "labels", "names": "label_names"},
    "cifar100": {"folder": "cifar-100-python", "train": ["train"], "test": ["test"], "meta": "meta",
                 "labels": "fine_labels", "names": "fine_label_names"},
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR file holds only numpy arrays")
        return super().find_class(module, name)


def load_pickle(path: Path, *, how_to_repair: str = "Replace it with an intact copy.") -> dict[str, Any]:
    """Load one CIFAR pickle with byte or str keys, returned with str keys.

    Anything but a dict of numpy arrays, lists and strings (a truncated file, a refused global, another type)
    raises :class:`DataError` naming the file and ``how_to_repair``.
    """
    try:
        with open(path, "rb") as handle:
            raw = _NumpyOnlyUnpickler(handle, encoding="bytes").load()
    except Exception as exc:  # truncated or tampered pickles raise many types; none of them runs code
        raise DataError(f"{path} cannot be read as a CIFAR batch ({first_line(exc)}). {how_to_repair}") from exc
    if not isinstance(raw, dict):
        raise DataError(f"{path} is not a CIFAR batch: expected a dict, found {type(raw).__name__}. {how_to_repair}")
    return {k.decode(errors="replace") if isinstance(k, bytes) else str(k): v for k, v in raw.items()}


def _batch_arrays(path: Path, batch: dict[str, Any], labels_key: str, num_classes: int,
                  how_to_repair: str) -> tuple[np.ndarray, np.ndarray]:
    """A batch's images (N×3×32×32 uint8) and labels (N int64), checked against the CIFAR layout."""
    def refuse(problem: str) -> DataError:
        return DataError(f"{path}: {problem}; the file is damaged or not a CIFAR batch. {how_to_repair}")

    data, labels = batch.get("data"), batch.get(labels_key)
    if data is None or labels is None:
        raise refuse(f"expected keys 'data' and '{labels_key}', found {sorted(batch)[:8]}")
    if not (isinstance(data, np.ndarray) and data.ndim == 2 and data.shape[1] == 3 * 32 * 32
            and np.issubdtype(data.dtype, np.integer)):
        shape = getattr(data, "shape", None)
        raise refuse(f"'data' must be an N×3072 integer array, found {type(data).__name__} {getattr(data, 'dtype', '')} "
                     f"of shape {shape}")
    if data.size and (data.min() < 0 or data.max() > 255):
        raise refuse(f"'data' holds pixel values outside 0..255 ({data.min()}..{data.max()})")
    try:
        y = np.asarray(labels)
    except ValueError as exc:  # ragged nested lists
        raise refuse(f"'{labels_key}' is not a flat list of integers ({first_line(exc)})") from exc
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or len(y) != len(data):
        raise refuse(f"'{labels_key}' must hold one integer per image ({len(data)}), found {y.dtype} of shape {y.shape}")
    outside = y[(y < 0) | (y >= num_classes)]
    if outside.size:
        raise refuse(f"'{labels_key}' holds label {int(outside[0])} ({outside.size} of {len(y)} labels outside "
                     f"0..{num_classes - 1})")
    return data.astype(np.uint8).reshape(-1, 3, 32, 32), y.astype(np.int64)


def resolve_cifar_folder(root: Path, variant: str) -> Path:
    """Accept either the extracted folder itself or its parent."""
    layout = CIFAR_LAYOUT[variant]
    return root / layout["folder"] if (root / layout["folder"]).is_dir() else root


def read_cifar(root: Path, variant: str, *, how_to_fix: str) -> dict[str, Any]:
    """Read train and test arrays (N×3×32×32 uint8) and class names of CIFAR-10 or CIFAR-100.

    Missing files raise :class:`DatasetNotFoundError` with ``how_to_fix``; damaged ones :class:`DataError`.
    """
    layout = CIFAR_LAYOUT[variant]
    folder = resolve_cifar_folder(root, variant)
    wanted = layout["train"] + layout["test"]
    missing = [name for name in wanted if not (folder / name).is_file()]
    if missing:
        raise DatasetNotFoundError(f"{variant}: missing {', '.join(missing)} in {folder}. {how_to_fix}")
    repair = f"Extract the python version ({layout['folder']}/) again from the original archive."
    num_classes = 10 if variant == "cifar10" else 100
    out: dict[str, Any] = {}
    for part in ("train", "test"):
        xs, ys = [], []
        for name in layout[part]:
            x, y = _batch_arrays(folder / name, load_pickle(folder / name, how_to_repair=repair), layout["labels"],
                                 num_classes, repair)
            xs.append(x)
            ys.append(y)
        out[f"{part}_images"], out[f"{part}_labels"] = np.concatenate(xs), np.concatenate(ys)
    names: list[str] = [str(i) for i in range(num_classes)]
    if (folder / layout["meta"]).is_file():
        raw_names = load_pickle(folder / layout["meta"], how_to_repair=repair).get(layout["names"])
        if isinstance(raw_names, list) and len(raw_names) == num_classes:
            names = [n.decode(errors="replace") if isinstance(n, bytes) else str(n) for n in raw_names]
    out["class_names"] = names
    return out
