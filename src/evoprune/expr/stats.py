"""Streaming per-(channel, class) sufficient statistics of one layer's feature maps.

Most pruning functions only need moments of ``P``, ``Q`` and ``X`` (spec §5.1, §9.6): per class c and
channel k the sample count n_c, the sum Σx and the sum of squares Σx² over samples and positions, and the
per-position sums (for the mean maps ``mX``, ``mP``, ``mQ``). They are accumulated batch by batch, so
scoring never has to hold the raw feature maps. ``Q``'s statistics are totals minus ``P``'s.

Arithmetic is float64 throughout, so scores agree with a float64 reference to ~1e-12 even where class
means nearly coincide (as in untrained networks). Two backends give the same sums up to the order of
float64 additions:

* **native** (CPU tensors, float32/float64): the optional C extension ``evoprune.expr._moments``, built at
  install time, reads each value once and accumulates in double (AVX2 where the CPU has it);
* **torch** (any device, and wherever the extension was not built): cache blocking, each batch is
  converted and summed a few rows at a time (about 2 MB per block), so the float64 copy never leaves the
  CPU cache and the features are read from memory once, but in three passes (convert, index_add_, norm).

:data:`NATIVE` says which one CPU tensors get.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

try:  # built by `pip install` when a C compiler is available (pyproject: optional ext-module)
    from evoprune.expr import _moments as _native
except ImportError:  # no compiler at install time: the torch path does the same work
    _native = None

NATIVE: str | None = _native.set_simd(True) if _native is not None else None  # "avx2", "plain" or None
BLOCK_BYTES = 2 << 20  # float64 rows converted and summed per step (two such blocks fit in L2/L3)
PER_POSITION_SQUARES_BELOW = 16  # D below which squares are accumulated per position


@dataclass
class ClassStats:
    """Sufficient statistics, class slot first, all float64: ``count[L]``, ``pos_sum[L, C, D]`` (Σx per
    position) and ``sq_parts[L, C, k]``, partial sums of x² whose sum over the last axis is ``sq_sum[L, C]``
    (Σx² over samples and positions; k = D for small D, where per-position squares are cheaper to
    accumulate, else 1).

    Slot ``i`` holds label ``i`` (``labels=None`` puts everything in slot 0). Use :meth:`present` to drop
    slots of labels that never occurred before evaluating label-aware trees.
    """

    count: Tensor
    pos_sum: Tensor
    sq_parts: Tensor
    classes: Tensor
    labelled: bool = False  # True once a batch came with labels (label-aware trees need it)
    _work: Tensor | None = field(default=None, repr=False, compare=False)  # reused float64 block buffers

    @classmethod
    def empty(cls, channels: int, positions: int, num_classes: int = 1, *, device=None) -> ClassStats:
        dt = torch.float64
        return cls(
            count=torch.zeros(num_classes, dtype=dt, device=device),
            pos_sum=torch.zeros(num_classes, channels, positions, dtype=dt, device=device),
            sq_parts=torch.zeros(num_classes, channels, positions if positions < PER_POSITION_SQUARES_BELOW else 1,
                                 dtype=dt, device=device),
            classes=torch.arange(num_classes, device=device),
        )

    @property
    def num_channels(self) -> int:
        return self.pos_sum.shape[1]

    @property
    def positions(self) -> int:
        return self.pos_sum.shape[2]

    @property
    def sq_sum(self) -> Tensor:
        """``[L, C]``: Σx² over samples and positions."""
        return self.sq_parts.sum(-1)

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
        self.sq_parts = torch.cat([self.sq_parts, z((extra,) + tuple(self.sq_parts.shape[1:]))])
        self.classes = torch.arange(num_classes, device=self.count.device)

    @torch.no_grad()
    def update(self, features: Tensor, labels: Tensor | None = None) -> None:
        """Add a batch: ``features`` is ``[B, C, ...]`` (any spatial dims), ``labels`` is ``[B]`` int."""
        b = features.shape[0]
        f = features.detach().reshape(b, self.num_channels, -1)
        if f.shape[2] != self.positions:
            raise ValueError(f"expected {self.positions} positions per channel, got {f.shape[2]}")
        f = f.to(self.count.device)
        if labels is None:
            labels = torch.zeros(b, dtype=torch.long, device=f.device)
        else:
            self.labelled = True
        labels = labels.to(device=f.device, dtype=torch.long)
        if labels.shape != (b,):
            raise ValueError(f"expected {b} labels, got shape {tuple(labels.shape)}")
        if b == 0:
            return
        if int(labels.min()) < 0:
            raise ValueError("labels must be non-negative class indices")
        self._grow(int(labels.max()) + 1)
        self.count += torch.bincount(labels, minlength=self.count.shape[0]).to(self.count.dtype)
        if (_native is not None and f.device.type == "cpu" and f.dtype in (torch.float32, torch.float64)
                and self.pos_sum.is_contiguous() and self.sq_parts.is_contiguous()):
            _native.accumulate(f.contiguous().numpy(), labels.contiguous().numpy(), self.pos_sum.numpy(),
                               self.sq_parts.numpy(), 0, self.num_channels)
            return
        rows = max(1, BLOCK_BYTES // (8 * self.num_channels * self.positions))
        if self._work is None or self._work.shape[1] < min(rows, b) or self._work.device != f.device:
            self._work = torch.empty((2, min(rows, b), self.num_channels, self.positions), dtype=torch.float64,
                                     device=f.device)
        for start in range(0, b, rows):
            block = f[start:start + rows]
            n = block.shape[0]
            x = self._work[0, :n]
            x.copy_(block)
            lab = labels[start:start + rows]
            self.pos_sum.index_add_(0, lab, x)
            if self.sq_parts.shape[2] == 1:  # a vectorised norm over D positions per (sample, channel)
                self.sq_parts.index_add_(0, lab, torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_())
            else:  # tiny D: inner reductions are slow, square per position instead
                x2 = torch.mul(x, x, out=self._work[1, :n])
                self.sq_parts.index_add_(0, lab, x2)

    def release(self) -> None:
        """Free the block buffer (when streaming is over)."""
        self._work = None

    @classmethod
    def from_features(cls, features: Tensor, labels: Tensor | None = None, *, batch_size: int = 1024) -> ClassStats:
        """Statistics of a materialised ``[N, C, ...]`` feature tensor."""
        n, c = features.shape[0], features.shape[1]
        d = features[0:1].reshape(1, c, -1).shape[2] if n else int(torch.tensor(features.shape[2:]).prod())
        num_classes = int(labels.max()) + 1 if labels is not None and labels.numel() else 1
        out = cls.empty(c, d, num_classes, device=features.device)
        for i in range(0, n, batch_size):
            out.update(features[i:i + batch_size], None if labels is None else labels[i:i + batch_size])
        out.release()
        return out

    def present(self) -> ClassStats:
        """Only the class slots that saw at least one sample (``self`` itself when every slot did: read only)."""
        keep = self.count > 0
        if bool(keep.all()):  # the usual case: no copies
            return self
        return ClassStats(self.count[keep], self.pos_sum[keep], self.sq_parts[keep], self.classes[keep], self.labelled)

    def merge(self, other: ClassStats) -> ClassStats:
        """Sum of two statistics of the same layer (e.g. from two workers)."""
        if other.pos_sum.shape[1:] != self.pos_sum.shape[1:]:
            raise ValueError("cannot merge statistics of layers with different shapes")
        a = ClassStats(self.count.clone(), self.pos_sum.clone(), self.sq_parts.clone(), self.classes,
                       self.labelled or other.labelled)
        a._grow(max(a.count.shape[0], other.count.shape[0]))
        n = other.count.shape[0]
        a.count[:n] += other.count
        a.pos_sum[:n] += other.pos_sum
        a.sq_parts[:n] += other.sq_parts
        return a
