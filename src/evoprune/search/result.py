"""The outcome of a search, and the run directory it is written to (results JSON, history JSON lines, masks,
plots)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evoprune.atomic import write_atomic, write_json, write_text
from evoprune.search.config import SearchConfig
from evoprune.search.masks import apply_masks, save_masks


@dataclass
class SearchResult:
    """Masks found by one search and everything measured about them.

    ``baseline``/``final``/``finetuned`` map a split name (``selection``, ``val``, ``test``) to ``{"loss",
    "accuracy"}``; ``final`` is the pruned model at the end of the search (with the original weights, or those
    fine-tuned between phases), ``finetuned`` (if any) after the final training with the masks fixed.
    ``state_dict`` holds the weights (masks baked in) whenever fine-tuning changed them.
    """

    algorithm: str
    config: SearchConfig
    seed: int
    masks: dict[str, torch.Tensor]
    selection_split: str
    baseline: dict[str, dict[str, float]]
    final: dict[str, dict[str, float]]
    sparsity: dict[str, float]
    layers: list[dict[str, Any]]
    phases: list[dict[str, Any]]
    evaluations: int
    images: int
    head_forwards: int
    search_seconds: float
    wall_time_s: float
    history: list[dict[str, Any]]
    finetuned: dict[str, dict[str, float]] | None = None
    baselines: list[dict[str, Any]] = field(default_factory=list)
    state_dict: dict[str, torch.Tensor] | None = None
    machine: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def reported(self) -> dict[str, float]:
        """Test metrics of the delivered model (after fine-tuning if there was one)."""
        return (self.finetuned or self.final)["test"]

    def trade_off(self, mode: str | None = None) -> float:
        """``sparsity · accuracy / baseline accuracy`` on the test split (spec §6); sparsity in ``mode`` (default:
        the one the search optimised)."""
        sparsity = self.sparsity[mode or self.config.sparsity]
        base = self.baseline["test"]["accuracy"]
        return sparsity * self.reported["accuracy"] / base if base > 0 else math.nan

    def apply_to(self, model: nn.Module) -> nn.Module:
        """Load the fine-tuned weights (if any) into ``model`` and attach the masks with ``torch.nn.utils.prune``."""
        if self.state_dict is not None:
            model.load_state_dict(self.state_dict)
        return apply_masks(model, self.masks)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the masks, history and weights, as JSON-ready values."""
        return {
            "algorithm": self.algorithm,
            "preset": self.config.preset,
            "seed": self.seed,
            "selection_split": self.selection_split,
            "baseline": self.baseline,
            "final": self.final,
            "finetuned": self.finetuned,
            "accuracy": self.reported["accuracy"],
            "loss": self.reported["loss"],
            "sparsity": self.sparsity,
            "trade_off": self.trade_off(),
            "trade_off_global": self.trade_off("global"),
            "trade_off_mean_layer": self.trade_off("mean_layer"),
            "layers": self.layers,
            "phases": self.phases,
            "evaluations": self.evaluations,
            "images_evaluated": self.images,
            "head_forwards": self.head_forwards,
            "search_seconds": self.search_seconds,
            "wall_time_s": self.wall_time_s,
            "baselines": self.baselines,
            "config": self.config.to_dict(),
            "machine": self.machine,
            "warnings": self.warnings,
        }


def _json_safe(value: Any) -> Any:
    """NaN/inf are not JSON: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_run(result: SearchResult, out_dir: str | Path, *, plots: bool = True) -> dict[str, Path]:
    """Write ``results.json``, ``history.jsonl``, ``masks.pt`` (and ``weights.pt`` after fine-tuning) and the PNG
    plots into ``out_dir``; return the paths by kind."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"results": out / "results.json", "history": out / "history.jsonl", "masks": out / "masks.pt"}
    write_json(paths["results"], _json_safe(result.to_dict()))
    write_text(paths["history"], "".join(json.dumps(_json_safe(record)) + "\n" for record in result.history))
    save_masks(paths["masks"], result.masks)
    if result.state_dict is not None:
        paths["weights"] = out / "weights.pt"
        weights = {k: v.detach().cpu() for k, v in result.state_dict.items()}
        write_atomic(paths["weights"], lambda handle: torch.save(weights, handle))
    if plots:
        from evoprune.search.plots import plot_history, plot_layers

        paths["history_plot"] = plot_history({result.algorithm: result.history}, out / "search.png")
        paths["layers_plot"] = plot_layers({result.algorithm: result.layers}, out / "layers.png")
    return paths
