"""Reader for the CIFAR-10 / CIFAR-100 "python version" folders (``cifar-10-batches-py``, ``cifar-100-python``).

Those files are Python pickles of dicts holding numpy arrays. They are read with a restricted unpickler that
can rebuild numpy arrays and nothing else, so a tampered file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from evoprune.errors import DatasetNotFoundError

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


def load_pickle(path: Path) -> dict[str, Any]:
    """Load one CIFAR pickle with byte or str keys, returned with str keys."""
    with open(path, "rb") as handle:
        raw = _NumpyOnlyUnpickler(handle, encoding="bytes").load()
    if not isinstance(raw, dict):
        raise ValueError(f"{path} is not a CIFAR batch: expected a dict, found {type(raw).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}


def resolve_cifar_folder(root: Path, variant: str) -> Path:
    """Accept either the extracted folder itself or its parent."""
    layout = CIFAR_LAYOUT[variant]
    return root / layout["folder"] if (root / layout["folder"]).is_dir() else root


def read_cifar(root: Path, variant: str, *, how_to_fix: str) -> dict[str, Any]:
    """Read train and test arrays (N×3×32×32 uint8) and class names of CIFAR-10 or CIFAR-100."""
    layout = CIFAR_LAYOUT[variant]
    folder = resolve_cifar_folder(root, variant)
    wanted = layout["train"] + layout["test"]
    missing = [name for name in wanted if not (folder / name).is_file()]
    if missing:
        raise DatasetNotFoundError(f"{variant}: missing {', '.join(missing)} in {folder}. {how_to_fix}")
    out: dict[str, Any] = {}
    for part in ("train", "test"):
        xs, ys = [], []
        for name in layout[part]:
            batch = load_pickle(folder / name)
            if "data" not in batch or layout["labels"] not in batch:
                raise ValueError(f"{folder / name}: expected keys 'data' and '{layout['labels']}', found {sorted(batch)}")
            data = np.asarray(batch["data"], dtype=np.uint8)
            xs.append(data.reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch[layout["labels"]], dtype=np.int64))
        out[f"{part}_images"], out[f"{part}_labels"] = np.concatenate(xs), np.concatenate(ys)
    num_classes = 10 if variant == "cifar10" else 100
    names: list[str] = [str(i) for i in range(num_classes)]
    if (folder / layout["meta"]).is_file():
        meta = load_pickle(folder / layout["meta"])
        raw_names = meta.get(layout["names"])
        if raw_names is not None and len(raw_names) == num_classes:
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in raw_names]
    out["class_names"] = names
    return out
