"""A search over per-layer weight sparsities: how many weights each layer keeps, magnitude choosing which.

The mask search (``--space weights``) chooses every weight, and its benchmarks found that what its masks add is
mostly their per-layer sparsity: magnitude pruning at the searched layers' sparsities, fine-tuned as long, does as
well. This space searches only that allocation, as the channel search does for channels: one *keep level* per
conv/linear layer (``levels`` steps of its weights; level ``a`` keeps ``round(a / levels · n)`` of the layer's
``n`` weights, those of largest magnitude), the network measured on validation with the masks applied; SA and GA
from :mod:`evoprune.search.channels.algorithms`, under a global sparsity target that every compared allocation
meets exactly (counted in weights). References at the same sparsity: uniform (every layer at the same level) and
global magnitude pruning (one threshold over all layers, rounded down onto the level grid, then repaired).
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from evoprune.config import to_data
from evoprune.data import DatasetSplits, Split
from evoprune.errors import ConfigError
from evoprune.progress import make_progress
from evoprune.search.channels.algorithms import Search, fitness, run_ga, run_sa
from evoprune.search.channels.config import ChannelGAConfig, ChannelSAConfig
from evoprune.search.channels.space import Allocation, BoundedAllocations, Budget
from evoprune.search.evaluator import evaluate_masked
from evoprune.search.graph import PRUNABLE_TYPES
from evoprune.search.masks import apply_masks
from evoprune.train import TRAIN_PRESETS, TrainConfig, evaluate, train

Record = dict[str, Any]


@dataclass(frozen=True)
class SparsitySearchConfig:
    """A per-layer sparsity search: prune ``sparsity`` of the conv/linear weights (global fraction), compare
    ``evaluations`` allocations on ``val_samples`` validation images (accuracy, or loss with ``objective``), fine-tune
    the chosen one (and, with ``finetune_references``, uniform and global) with ``finetune`` with the masks fixed."""

    algorithm: Literal["sa", "ga"] = "sa"
    sparsity: float = 0.8
    evaluations: int = 300
    levels: int = 100
    min_keep: float = 0.01
    move_groups: int = 2
    move_size: float = 0.1
    objective: Literal["accuracy", "loss"] = "accuracy"
    val_samples: int | None = 1000
    finetune: TrainConfig = field(default_factory=lambda: TRAIN_PRESETS["finetune"])
    finetune_references: bool = False
    sa: ChannelSAConfig = field(default_factory=ChannelSAConfig)
    ga: ChannelGAConfig = field(default_factory=ChannelGAConfig)

    def __post_init__(self) -> None:
        checks = [(self.algorithm in ("sa", "ga"), f"algorithm must be sa or ga, got {self.algorithm!r}"),
                  (0 < self.sparsity < 1, f"sparsity is the fraction of weights to prune, in (0, 1); got {self.sparsity}"),
                  (self.evaluations >= 1, f"evaluations must be ≥ 1, got {self.evaluations}"),
                  (self.levels >= 2, f"levels must be ≥ 2, got {self.levels}"),
                  (0 < self.min_keep <= 1, f"min_keep must be in (0, 1], got {self.min_keep}"),
                  (self.move_groups >= 1, f"move_groups must be ≥ 1, got {self.move_groups}"),
                  (0 < self.move_size <= 1, f"move_size must be in (0, 1], got {self.move_size}"),
                  (self.objective in ("accuracy", "loss"), f"objective must be accuracy or loss, got {self.objective!r}"),
                  (self.val_samples is None or self.val_samples >= 1, f"val_samples must be ≥ 1, got {self.val_samples}")]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


class SparsitySpace(BoundedAllocations):
    """The prunable layers of a network, their weights ranked by magnitude once, and keep levels per layer."""

    def __init__(self, model: nn.Module, *, levels: int = 100, min_keep: float = 0.01) -> None:
        self.names = [n for n, m in model.named_modules()
                      if isinstance(m, PRUNABLE_TYPES) and isinstance(getattr(m, "weight", None), torch.Tensor)]
        if not self.names:
            raise ConfigError(f"{type(model).__name__} has no conv or linear layer to prune")
        weights = [model.get_submodule(n).weight.detach().cpu() for n in self.names]
        self.shapes = [w.shape for w in weights]
        self.sizes = [w.numel() for w in weights]
        self.total = sum(self.sizes)
        self.levels = levels
        self.widths: Allocation = tuple(levels for _ in self.names)
        self.lower: Allocation = tuple(max(1, math.ceil(min_keep * levels - 1e-9)) for _ in self.names)
        # largest |w| first; ties by position, so the same level always keeps the same weights
        self._order = [w.abs().flatten().argsort(descending=True, stable=True) for w in weights]
        self._magnitudes = torch.cat([w.abs().flatten() for w in weights])

    def kept(self, allocation: Allocation) -> list[int]:
        """Weights kept per layer at ``allocation``."""
        return [round(a * n / self.levels) for a, n in zip(allocation, self.sizes)]

    def budget(self, sparsity: float) -> Budget:
        """Keep at most ``floor((1 − sparsity) · total)`` weights; an error when ``min_keep`` alone exceeds it."""
        budget = Budget("weights", 1.0 - sparsity, math.floor((1.0 - sparsity) * self.total + 1e-9))
        if not self.fits(self.lower, budget):
            raise ConfigError(f"a sparsity of {sparsity:.1%} cannot be met: keeping min_keep of every layer already "
                              f"keeps {sum(self.kept(self.lower)) / self.total:.1%} of the weights")
        return budget

    def fits(self, allocation: Allocation, budget: Budget) -> bool:
        return sum(self.kept(allocation)) <= budget.limit

    def uniform(self, ratio: float) -> Allocation:
        return tuple(max(lo, w - math.floor(ratio * w + 1e-9)) for lo, w in zip(self.lower, self.widths))

    def global_at(self, budget: Budget, rng: random.Random) -> Allocation:
        """Global magnitude pruning at ``budget`` (one threshold over all layers), rounded down onto the grid and
        repaired onto the budget's boundary."""
        keep = self._magnitudes.argsort(descending=True, stable=True)[:budget.limit]
        layer_of = torch.repeat_interleave(torch.arange(len(self.sizes)), torch.tensor(self.sizes))
        counts = torch.bincount(layer_of[keep], minlength=len(self.sizes)).tolist()
        return self.repair([math.floor(c * self.levels / n) for c, n in zip(counts, self.sizes)], budget, rng)

    def masks(self, allocation: Allocation) -> dict[str, torch.Tensor]:
        """``{layer: bool mask}`` keeping each layer's ``kept`` largest-magnitude weights."""
        out = {}
        for name, order, shape, k in zip(self.names, self._order, self.shapes, self.kept(allocation)):
            flat = torch.zeros(order.numel(), dtype=torch.bool)
            flat[order[:k]] = True
            out[name] = flat.view(shape)
        return out


class SparsityEvaluator:
    """Validation loss and accuracy of allocations (masks applied for the call), each allocation measured once;
    ``records`` in the order first measured, as the channel search's evaluator keeps them."""

    def __init__(self, space: SparsitySpace, model: nn.Module, val: Split,
                 on_record: Callable[[Record], None] | None = None) -> None:
        self.space, self.model, self.val, self.on_record = space, model, val, on_record
        self.records: list[Record] = []
        self._cache: dict[Allocation, Record] = {}
        self.seconds = 0.0

    def __call__(self, allocation: Allocation, origin: str = "search") -> Record:
        if allocation in self._cache:
            return self._cache[allocation]
        tick = time.perf_counter()
        result = evaluate_masked(self.model, self.space.masks(allocation), self.val.x, self.val.y)
        kept = self.space.kept(allocation)
        record = {"index": len(self.records), "origin": origin, "keep": list(allocation), "kept": kept,
                  "sparsity": 1.0 - sum(kept) / self.space.total, "loss": result.loss, "accuracy": result.accuracy}
        self.seconds += time.perf_counter() - tick
        self._cache[allocation] = record
        self.records.append(record)
        if self.on_record is not None:
            self.on_record(record)
        return record


def chosen_masks(model: nn.Module, result: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The masks of ``result``'s chosen allocation on ``model`` (the network it searched)."""
    space = SparsitySpace(model, levels=result["config"]["levels"], min_keep=result["config"]["min_keep"])
    return space.masks(tuple(result["records"][result["chosen"]]["keep"]))


def search_sparsities(model: nn.Module, data: DatasetSplits, config: SparsitySearchConfig | None = None, *,
                      seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Search per-layer sparsities of a trained ``model`` (not modified); returns the results as a JSON-ready dict:
    every record, the references, the chosen allocation (best on validation) with its masks' layer sparsities and,
    when ``config.finetune.epochs`` > 0, validation and test (once) after fine-tuning with the masks fixed."""
    config = config or SparsitySearchConfig()
    start = time.perf_counter()
    base = copy.deepcopy(model).cpu().eval()
    space = SparsitySpace(base, levels=config.levels, min_keep=config.min_keep)
    budget = space.budget(config.sparsity)
    rng = random.Random(seed)
    val = data.val
    if config.val_samples is not None and config.val_samples < len(val):
        val = val.subset(torch.randperm(len(val), generator=torch.Generator().manual_seed(seed))[:config.val_samples])
    with make_progress(progress) as bar:
        task = bar.add_task(f"{config.algorithm} sparsity search", total=config.evaluations + 2, status="")
        evaluator = SparsityEvaluator(space, base, val, on_record=lambda r: bar.update(
            task, advance=1, status=f"val acc {r['accuracy']:.4f}"))
        named = {"uniform": space.uniform_at(budget), "global": space.global_at(budget, rng)}
        for name, allocation in named.items():
            evaluator(allocation, origin=name)
        search = Search(space, budget, evaluator, config, rng)  # type: ignore[arg-type]  # duck-typed space, config
        best = max(named.values(), key=lambda a: fitness(evaluator(a), config.objective))
        tick = time.perf_counter()
        (run_sa if config.algorithm == "sa" else run_ga)(search, search.fit(best))
        search_seconds = time.perf_counter() - tick
    records = evaluator.records
    chosen = max(records, key=lambda r: (fitness(r, config.objective), -r["index"]))
    tuned = {"chosen": chosen}
    if config.finetune_references:
        tuned.update({name: evaluator(a) for name, a in named.items()})
    finetuned = {}
    if config.finetune.epochs > 0:
        for name, record in tuned.items():
            finetuned[name] = _finetune(base, space.masks(tuple(record["keep"])), data, config.finetune, seed,
                                        progress)
    return {"space": "sparsity", "config": to_data(config), "seed": seed, "layers": space.names,
            "sizes": space.sizes, "budget": {"sparsity": config.sparsity, "kept_limit": budget.limit},
            "references": {n: evaluator(a)["index"] for n, a in named.items()}, "chosen": chosen["index"],
            "finetuned": finetuned, "seconds": {"search": search_seconds, "evaluation": evaluator.seconds,
                                                 "total": time.perf_counter() - start},
            "history": search.history, "records": records}


def _finetune(model: nn.Module, masks: dict[str, torch.Tensor], data: DatasetSplits, recipe: TrainConfig,
              seed: int, progress: bool) -> dict[str, Any]:
    tuned = apply_masks(copy.deepcopy(model), masks)
    result = train(tuned, data, recipe, seed=seed, progress=progress, description="fine-tune")
    test = evaluate(tuned, data.test.x, data.test.y)
    return {"val_accuracy": result.best_val_accuracy, "best_epoch": result.best_epoch, "epochs": recipe.epochs,
            "test_accuracy": test.accuracy, "test_loss": test.loss}


