"""Adaptive BatchNorm (EagleEye, ECCV 2020): re-estimate running statistics after pruning, no gradient step.

Right after channels are removed, every BatchNorm downstream still normalises with the statistics of the unpruned
network, so accuracy right after pruning mostly measures that mismatch. Re-estimating the running mean and
variance on a few training batches removes it for the price of forward passes, and the accuracy that follows
predicts the fine-tuned result far better. Only BatchNorm layers switch to training mode for the pass (dropout and
the rest stay in eval mode, so the pass is deterministic); the statistics are the cumulative average over exactly
the batches given (``momentum=None``), so they do not depend on the old values.
"""

from __future__ import annotations

import torch
from torch import nn

from evoprune.errors import ConfigError, DataError


def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, *, batches: int = 20, batch_size: int = 64) -> int:
    """Re-estimate every BatchNorm's running mean/var on the first ``batches`` batches of ``x`` (in order).

    Pass shuffled training images: each batch of ``batch_size`` (the last may be smaller) counts equally, as in
    torch's cumulative average. Each module's momentum and the model's train/eval mode are restored afterwards.
    Returns how many BatchNorm layers were recalibrated (0, and nothing changed, for a net without BatchNorm).
    """
    if batches < 1 or batch_size < 1:
        raise ConfigError(f"BN recalibration needs batches ≥ 1 and batch_size ≥ 1, got {batches} and {batch_size}")
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    if len(x) == 0:
        raise DataError("cannot recalibrate BatchNorm statistics on an empty set of images")
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in norms}
    param = next(model.parameters(), None)
    device = param.device if param is not None else x.device
    model.eval()
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: every batch weighs the same
            m.train()
        with torch.no_grad():
            for start in range(0, min(len(x), batches * batch_size), batch_size):
                model(x[start:start + batch_size].to(device, non_blocking=True))
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
        for m, training in modes.items():
            m.training = training
    return len(norms)
