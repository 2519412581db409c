"""Shared fixtures: small real and synthetic data, and the Fashion-MNIST guard."""

from __future__ import annotations

import os

import pytest
import torch

from evoprune.data import FASHION_SYSTEM_DIR


def fashion_available() -> bool:
    root = os.environ.get("EVOPRUNE_FASHION_DIR", str(FASHION_SYSTEM_DIR))
    return os.path.isdir(root) and any(name.startswith("t10k-images") for name in os.listdir(root))


@pytest.fixture
def require_fashion() -> None:
    """Skip when Fashion-MNIST is absent, except where EVOPRUNE_REQUIRE_FASHION=1 (CI) makes that a failure."""
    if not fashion_available():
        if os.environ.get("EVOPRUNE_REQUIRE_FASHION") == "1":
            pytest.fail("Fashion-MNIST is required here: apt-get install dataset-fashion-mnist")
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    """Tests run on 2-core machines; one thread per test keeps them predictable."""
    torch.set_num_threads(1)
