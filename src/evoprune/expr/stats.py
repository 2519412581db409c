"""Streaming per-(channel, class) sufficient statistics of one layer's feature maps.

Most pruning functions only need moments of ``P``, ``Q`` and ``X`` (spec §5.1, §9.6): per class c and
channel k the sample count n_c, the sum Σx and the sum of squares Σx² over samples and positions, and the
per-position sums (for the mean maps ``mX``, ``mP``, ``mQ``). They are accumulated batch by batch in float64,
so scoring never has to hold the raw feature maps. ``Q``'s statistics are totals minus ``P``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class ClassStats:
    """Sufficient statistics, class slot first: ``count[L]``, ``pos_sum[L, C, D]``, ``sq_sum[L, C]``.

    Slot ``i`` holds label ``i`` (``labels=None`` puts everything in slot 0). Use :meth:`present` to drop
    slots of labels that never occurred before evaluating label-aware trees.
    """

    count: Tensor
    pos_sum: Tensor
    sq_sum: Tensor
    classes: Tensor
    labelled: bool = False  # True once a batch came with labels (label-aware trees need it)

    @classmethod
    def empty(cls, channels: int, positions: int, num_classes: int = 1, *, device=None) -> "ClassStats":
        dt = torch.float64
        return cls(
            count=torch.zeros(num_classes, dtype=dt, device=device),
            pos_sum=torch.zeros(num_classes, channels, positions, dtype=dt, device=device),
            sq_sum=torch.zeros(num_classes, channels, dtype=dt, device=device),
            classes=torch.arange(num_classes, device=device),
        )

    @property
    def num_channels(self) -> int:
        return self.pos_sum.shape[1]

    @property
    def positions(self) -> int:
        return self.pos_sum.shape[2]

    @property
    def num_samples(self) -> int:
        return int(self.count.sum().item())

    def _grow(self, num_classes: int) -> None:
        extra = num_classes - self.count.shape[0]
        if extra <= 0:
            return
        z = self.pos_sum.new_zeros
        self.count = torch.cat([self.count, z(extra)])
        self.pos_sum = torch.cat([self.pos_sum, z(extra, self.num_channels, self.positions)])
        self.sq_sum = torch.cat([self.sq_sum, z(extra, self.num_channels)])
        self.classes = torch.arange(num_classes, device=self.count.device)

    @torch.no_grad()
    def update(self, features: Tensor, labels: Tensor | None = None) -> None:
        """Add a batch: ``features`` is ``[B, C, ...]`` (any spatial dims), ``labels`` is ``[B]`` int."""
        b = features.shape[0]
        f = features.detach().reshape(b, self.num_channels, -1)
        if f.shape[2] != self.positions:
            raise ValueError(f"expected {self.positions} positions per channel, got {f.shape[2]}")
        f = f.to(device=self.count.device, dtype=torch.float64)
        if labels is None:
            labels = torch.zeros(b, dtype=torch.long, device=f.device)
        else:
            self.labelled = True
        labels = labels.to(device=f.device, dtype=torch.long)
        if b == 0:
            return
        if int(labels.min()) < 0:
            raise ValueError("labels must be non-negative class indices")
        self._grow(int(labels.max()) + 1)
        onehot = torch.zeros(b, self.count.shape[0], dtype=f.dtype, device=f.device)
        onehot[torch.arange(b, device=f.device), labels] = 1.0
        self.count += onehot.sum(0)
        self.pos_sum += (onehot.T @ f.reshape(b, -1)).reshape(self.pos_sum.shape)
        self.sq_sum += onehot.T @ torch.einsum("bcd,bcd->bc", f, f)

    @classmethod
    def from_features(cls, features: Tensor, labels: Tensor | None = None, *, batch_size: int = 512) -> "ClassStats":
        """Statistics of a materialised ``[N, C, ...]`` feature tensor (processed in batches)."""
        n, c = features.shape[0], features.shape[1]
        d = features[0:1].reshape(1, c, -1).shape[2] if n else int(torch.tensor(features.shape[2:]).prod())
        num_classes = int(labels.max()) + 1 if labels is not None and labels.numel() else 1
        out = cls.empty(c, d, num_classes, device=features.device)
        for i in range(0, n, batch_size):
            out.update(features[i:i + batch_size], None if labels is None else labels[i:i + batch_size])
        return out

    def present(self) -> "ClassStats":
        """Only the class slots that saw at least one sample."""
        keep = self.count > 0
        return ClassStats(self.count[keep], self.pos_sum[keep], self.sq_sum[keep], self.classes[keep], self.labelled)

    def merge(self, other: "ClassStats") -> "ClassStats":
        """Sum of two statistics of the same layer (e.g. from two workers)."""
        b = other
        if b.pos_sum.shape[1:] != self.pos_sum.shape[1:]:
            raise ValueError("cannot merge statistics of layers with different shapes")
        a = ClassStats(self.count.clone(), self.pos_sum.clone(), self.sq_sum.clone(), self.classes,
                       self.labelled or b.labelled)
        a._grow(max(a.count.shape[0], b.count.shape[0]))
        n = b.count.shape[0]
        a.count[:n] += b.count
        a.pos_sum[:n] += b.pos_sum
        a.sq_sum[:n] += b.sq_sum
        return a
