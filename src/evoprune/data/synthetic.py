"""A small synthetic image dataset for tests: class-dependent blob patterns plus noise, fully seeded.

Each class has a fixed random template (smooth, non-negative); a sample is its class template, randomly
shifted by up to one pixel, scaled, plus Gaussian noise, clipped to [0, 1]. It is learnable in a few epochs,
so tests can check that training improves accuracy without touching real data.
"""

from __future__ import annotations

import numpy as np


def make_synthetic(
    *,
    num_samples: int = 600,
    num_classes: int = 4,
    in_channels: int = 1,
    image_size: int = 12,
    noise: float = 0.15,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Return float32 images (N×C×S×S, in [0, 1]) and balanced int64 labels."""
    if num_samples < 3 * num_classes or num_classes < 2 or image_size < 4 or in_channels < 1:
        raise ValueError(
            "synthetic data needs num_samples ≥ 3·num_classes, num_classes ≥ 2, image_size ≥ 4, in_channels ≥ 1"
        )
    rng = np.random.default_rng(seed)
    coarse = rng.random((num_classes, in_channels, 4, 4))
    reps = -(-image_size // 4)
    templates = np.kron(coarse, np.ones((reps, reps)))[..., :image_size, :image_size]
    labels = np.arange(num_samples) % num_classes
    rng.shuffle(labels)
    shifts = rng.integers(-1, 2, size=(num_samples, 2))
    images = np.empty((num_samples, in_channels, image_size, image_size), dtype=np.float32)
    for i, (label, (dy, dx)) in enumerate(zip(labels, shifts)):
        images[i] = np.roll(templates[label], (dy, dx), axis=(1, 2))
    images *= rng.uniform(0.7, 1.0, size=(num_samples, 1, 1, 1))
    images += rng.normal(0.0, noise, size=images.shape)
    return np.clip(images, 0.0, 1.0).astype(np.float32), labels.astype(np.int64)
