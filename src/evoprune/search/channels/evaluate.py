"""The objective of a channel search: prune a copy of the trained network to an allocation, recalibrate its
BatchNorm statistics, measure it on a validation subset; cached by allocation.

Each channel's score is computed once on the unpruned network (:class:`~evoprune.search.channels.space.ChannelSpace`
holds them), so pruning to an allocation is a top-k per group. Torch-Pruning on a deep copy takes tens of
milliseconds here, recalibration and evaluation (forward passes over ~1,000 images each) most of the rest; the
evaluator times the three so a run can say what dominated. Every pruned copy is also counted by the project's
counter and checked against the cost model, so the MACs and parameters in a record are the counter's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from evoprune.criteria import recalibrate_batchnorm
from evoprune.prune import count_macs_params
from evoprune.search.channels.space import Allocation, ChannelSpace
from evoprune.train import evaluate

Record = dict[str, Any]


class AllocationEvaluator:
    """Validation loss and accuracy of allocations after BN recalibration, each allocation measured once.

    ``records`` lists every distinct allocation in the order it was first measured, with its MACs, parameters,
    ``loss``/``accuracy`` on ``(val_x, val_y)`` and ``origin`` (who asked first); ``seconds`` sums the time spent
    pruning, counting, recalibrating and evaluating.
    """

    def __init__(self, space: ChannelSpace, recal_x: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor, *,
                 recalibration_batches: int, recalibration_batch_size: int,
                 on_record: Callable[[Record], None] | None = None) -> None:
        self.space = space
        self.recal_x, self.val_x, self.val_y = recal_x, val_x, val_y
        self.recalibration_batches = recalibration_batches
        self.recalibration_batch_size = recalibration_batch_size
        self.records: list[Record] = []
        self.seconds = {"prune": 0.0, "count": 0.0, "recalibrate": 0.0, "evaluate": 0.0}
        self._cache: dict[Allocation, Record] = {}
        self._on_record = on_record

    def __contains__(self, allocation: Allocation) -> bool:
        return allocation in self._cache

    def __call__(self, allocation: Allocation, origin: str = "search") -> Record:
        """The record of ``allocation`` (measured now unless it was before)."""
        if allocation in self._cache:
            return self._cache[allocation]
        start = time.perf_counter()
        model = self.space.costs.prune(allocation)
        pruned = time.perf_counter()
        macs, params = self.space.check_cost(allocation, count_macs_params(model, self.val_x[:1]))
        counted = time.perf_counter()
        model.to(memory_format=torch.channels_last)  # same numbers, faster CPU convolutions
        recalibrate_batchnorm(model, self.recal_x, batches=self.recalibration_batches,
                              batch_size=self.recalibration_batch_size)
        recalibrated = time.perf_counter()
        result = evaluate(model, self.val_x, self.val_y)
        done = time.perf_counter()
        for key, (a, b) in {"prune": (start, pruned), "count": (pruned, counted),
                            "recalibrate": (counted, recalibrated), "evaluate": (recalibrated, done)}.items():
            self.seconds[key] += b - a
        base_macs, base_params = self.space.costs.base
        record = {"index": len(self.records), "origin": origin, "keep": list(allocation), "macs": macs,
                  "params": params, "macs_kept": macs / base_macs, "params_kept": params / base_params,
                  "loss": result.loss, "accuracy": result.accuracy, "seconds": done - start}
        self._cache[allocation] = record
        self.records.append(record)
        if self._on_record is not None:
            self._on_record(record)
        return record
