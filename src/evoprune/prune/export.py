"""ONNX export of a (pruned) model, for deployment and latency measurement outside PyTorch."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from evoprune.prune.errors import PruningError


def export_onnx(model: nn.Module, path: str | Path, example_inputs: torch.Tensor, *, opset: int = 17) -> Path:
    """Export ``model`` to ONNX with a dynamic batch axis (input ``input``, output ``logits``).

    Uses PyTorch's TorchScript-based exporter, which needs no extra package to write the file; checking or
    running the file needs ``onnx`` (``pip install 'evoprune[onnx]'``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu = model.cpu().eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        try:
            torch.onnx.export(
                cpu, (example_inputs.cpu(),), str(path), dynamo=False, opset_version=opset,
                input_names=["input"], output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            )
        except Exception as exc:
            raise PruningError(f"ONNX export of {type(model).__name__} failed ({type(exc).__name__}: {str(exc)[:300]})") from exc
    return path
