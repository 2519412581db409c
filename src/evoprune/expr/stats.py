"""Streaming per-(channel, class) sufficient statistics of one layer's feature maps.

Most pruning functions only need moments of ``P``, ``Q`` and ``X`` (spec §5.1, §9.6): per class c and
channel k the sample count n_c, the sum Σx and the sum of squares Σx² over samples and positions, and the
per-position sums (for the mean maps ``mX``, ``mP``, ``mQ``). They are accumulated batch by batch (float64
across batches), so scoring never has to hold the raw feature maps. ``Q``'s statistics are totals minus ``P``'s.

Precision. With ``precision="float64"`` (the default) every batch is converted to float64 before it is
summed, so scores agree with a float64 reference to ~1e-12 even where class means nearly coincide (random
networks). ``precision="float32"`` sums each batch in float32 (about 2-3x faster on CPU): the sums are then
of ``x − shift[k]`` with a per-channel shift fixed at the first batch (its mean), so E[(x−s)²] − E[x−s]²
does not cancel, and class blocks are summed with torch's cascade summation; differences of class means
far below the spread (≲1e-3 σ) then carry relative errors of order 1e-5.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class ClassStats:
    """Sufficient statistics, class slot first: ``count[L]``, ``pos_sum[L, C, D]``, ``sq_sum[L, C]`` (sums of
    ``x − shift`` and of its square), ``shift[C]``.

    Slot ``i`` holds label ``i`` (``labels=None`` puts everything in slot 0). Use :meth:`present` to drop
    slots of labels that never occurred before evaluating label-aware trees.
    """

    count: Tensor
    pos_sum: Tensor
    sq_sum: Tensor
    classes: Tensor
    shift: Tensor | None = None  # [C] float64, set by the first batch (float32 precision only)
    precision: str = "float64"  # arithmetic within a batch: "float64" or "float32"
    labelled: bool = False  # True once a batch came with labels (label-aware trees need it)
    _work: Tensor | None = field(default=None, repr=False, compare=False)  # reused batch buffer

    @classmethod
    def empty(cls, channels: int, positions: int, num_classes: int = 1, *, device=None,
              precision: str = "float64") -> "ClassStats":
        if precision not in ("float64", "float32"):
            raise ValueError(f"precision must be 'float64' or 'float32', got {precision!r}")
        dt = torch.float64
        return cls(
            count=torch.zeros(num_classes, dtype=dt, device=device),
            pos_sum=torch.zeros(num_classes, channels, positions, dtype=dt, device=device),
            sq_sum=torch.zeros(num_classes, channels, dtype=dt, device=device),
            classes=torch.arange(num_classes, device=device),
            precision=precision,
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
        """Add a batch: ``features`` is ``[B, C, ...]`` (any spatial dims), ``labels`` is ``[B]`` int.

        Across batches sums accumulate in float64; within a batch see the module docstring (precision). A
        reused work buffer avoids allocating a batch-sized tensor per call.
        """
        b = features.shape[0]
        f = features.detach().reshape(b, self.num_channels, -1)
        if f.shape[2] != self.positions:
            raise ValueError(f"expected {self.positions} positions per channel, got {f.shape[2]}")
        f = f.to(self.count.device)
        if not f.is_floating_point():
            f = f.float()
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
        if self.precision == "float64":
            self._update_float64(f, labels)
        else:
            self._update_float32(f, labels)

    def release(self) -> None:
        """Free the batch work buffer (call when streaming is over)."""
        self._work = None

    def _work_buffer(self, f: Tensor, dtype: torch.dtype) -> Tensor:
        b = f.shape[0]
        w = self._work
        if w is None or w.shape[0] < b or w.shape[1:] != f.shape[1:] or w.dtype != dtype or w.device != f.device:
            w = self._work = torch.empty(f.shape, dtype=dtype, device=f.device)  # allocating per batch costs more
        return w[:b]                                                              # than the arithmetic

    def _update_float64(self, f: Tensor, labels: Tensor) -> None:
        x = self._work_buffer(f, torch.float64)
        x.copy_(f)
        self.count += torch.bincount(labels, minlength=self.count.shape[0]).to(self.count.dtype)
        self.pos_sum.index_add_(0, labels, x)
        rows = x.reshape(-1, 1, x.shape[2])
        sq = torch.bmm(rows, rows.transpose(1, 2)).reshape(f.shape[0], self.num_channels)  # Σ_d x², per sample
        self.sq_sum.index_add_(0, labels, sq)

    def _update_float32(self, f: Tensor, labels: Tensor) -> None:
        if self.shift is None:
            self.shift = f.mean((0, 2)).to(torch.float64)
        # samples sorted by class, so each class is a contiguous block summed with torch's cascade sum
        order = torch.argsort(labels, stable=True)
        x = torch.index_select(f, 0, order, out=self._work_buffer(f, f.dtype))
        x.sub_(self.shift.to(f.dtype)[None, :, None])
        sorted_labels = labels[order]
        counts = torch.bincount(sorted_labels, minlength=self.count.shape[0])
        self.count += counts.to(self.count.dtype)
        start = 0
        for cls, n in enumerate(counts.tolist()):
            if n:
                self.pos_sum[cls] += x[start:start + n].sum(0)
                start += n
        rows = x.reshape(-1, 1, x.shape[2])
        sq = torch.bmm(rows, rows.transpose(1, 2)).reshape(f.shape[0], self.num_channels)  # Σ_d (x − s)²
        self.sq_sum.index_add_(0, sorted_labels, sq.to(self.sq_sum.dtype))

    @classmethod
    def from_features(cls, features: Tensor, labels: Tensor | None = None, *, batch_size: int = 256,
                      precision: str = "float64") -> "ClassStats":
        """Statistics of a materialised ``[N, C, ...]`` feature tensor (processed in batches)."""
        n, c = features.shape[0], features.shape[1]
        d = features[0:1].reshape(1, c, -1).shape[2] if n else int(torch.tensor(features.shape[2:]).prod())
        num_classes = int(labels.max()) + 1 if labels is not None and labels.numel() else 1
        out = cls.empty(c, d, num_classes, device=features.device, precision=precision)
        for i in range(0, n, batch_size):
            out.update(features[i:i + batch_size], None if labels is None else labels[i:i + batch_size])
        out.release()
        return out

    def present(self) -> "ClassStats":
        """Only the class slots that saw at least one sample."""
        keep = self.count > 0
        return ClassStats(self.count[keep], self.pos_sum[keep], self.sq_sum[keep], self.classes[keep], self.shift,
                          self.precision, self.labelled)

    def shift_or_zero(self) -> Tensor:
        if self.shift is not None:
            return self.shift
        return torch.zeros(self.num_channels, dtype=torch.float64, device=self.count.device)

    def merge(self, other: "ClassStats") -> "ClassStats":
        """Sum of two statistics of the same layer (e.g. from two workers)."""
        b = other
        if b.pos_sum.shape[1:] != self.pos_sum.shape[1:]:
            raise ValueError("cannot merge statistics of layers with different shapes")
        shift = self.shift_or_zero()
        a = ClassStats(self.count.clone(), self.pos_sum.clone(), self.sq_sum.clone(), self.classes, shift,
                       self.precision, self.labelled or b.labelled)
        a._grow(max(a.count.shape[0], b.count.shape[0]))
        n = b.count.shape[0]
        # re-centre b's sums on a's shift: x − s_a = (x − s_b) + δ with δ = s_b − s_a
        delta = (b.shift_or_zero() - shift)[None, :]  # [1, C]
        d = b.positions
        b_sum = b.pos_sum.sum(-1)  # [L, C]
        a.count[:n] += b.count
        a.pos_sum[:n] += b.pos_sum + b.count[:, None, None] * delta[:, :, None]
        a.sq_sum[:n] += b.sq_sum + 2 * delta * b_sum + b.count[:, None] * d * delta**2
        return a
