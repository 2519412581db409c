"""Size and speed of a model: MACs and parameters (one counting tool for all), and CPU latency.

MACs and parameters come from Torch-Pruning's ``tp.utils.count_ops_and_params`` for every model, before and after
pruning, so the two numbers are always comparable. Latency is the median wall time of repeated forward passes on
the CPU in inference mode, at batch 1 and a larger batch; the median resists the noise of a shared machine.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Sequence

import torch
import torch_pruning as tp
from torch import nn


def count_macs_params(model: nn.Module, example_inputs: torch.Tensor) -> tuple[int, int]:
    """``(MACs, parameters)`` of one forward pass on ``example_inputs`` (use batch 1)."""
    was_training = model.training
    try:
        with torch.no_grad():
            macs, params = tp.utils.count_ops_and_params(model, example_inputs)
    finally:
        model.train(was_training)
    return int(macs), int(params)


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    batch_sizes: Sequence[int] = (1, 64),
    repeats: int = 30,
    warmup: int = 3,
) -> dict[int, float]:
    """Median CPU latency in milliseconds per forward pass, for each batch size (a CPU copy of ``model`` is timed)."""
    cpu = copy.deepcopy(model).cpu().eval()
    out: dict[int, float] = {}
    with torch.inference_mode():
        for batch in batch_sizes:
            x = torch.rand(batch, *input_shape)
            for _ in range(warmup):
                cpu(x)
            times = []
            for _ in range(max(1, repeats)):
                start = time.perf_counter()
                cpu(x)
                times.append(time.perf_counter() - start)
            out[int(batch)] = 1000.0 * statistics.median(times)
    return out
