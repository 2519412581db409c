"""Local-search weight-mask pruning (mask-search seed): simulated annealing and a genetic algorithm search one
boolean mask per conv/linear weight, layer by layer, under a loss (or accuracy) cap.

>>> result = search_masks(model, data, algorithm="sa", config="seed")       # or "improved"
>>> write_run(result, "runs/sa-seed")                                       # JSON, history, masks, plots
>>> apply_masks(model, result.masks)                                        # torch.nn.utils.prune masks

``search_channels`` (``search.channels``, issue 14) searches the other space: how many channels each prunable
group keeps, under a MACs or parameter budget (SA, GA) or along the accuracy-vs-MACs front (NSGA-II)::

>>> result = search_channels(model, data, ChannelSearchConfig(macs_target=0.5), seed=0)
>>> write_channel_run(result, "runs/channels")          # tables/chosen.json for `evoprune prune --table`

``search_sparsities`` (``search.sparsity``) searches per-layer weight sparsities at a global sparsity, magnitude
choosing the weights inside each layer (the allocation the mask search's masks mostly amount to)::

>>> result = search_sparsities(model, data, SparsitySearchConfig(sparsity=0.85), seed=0)

Speed comes from ``MaskEvaluator``: the activations entering the searched layer are computed once per layer, only
the rest of the model runs per candidate, and a GA population is scored in one ``vmap``-batched forward.
"""

from evoprune.search.baselines import BASELINE_KINDS, baseline_masks
from evoprune.search.channels import ChannelSearchConfig, ChannelSearchResult, search_channels, write_channel_run
from evoprune.search.config import PRESETS, GAConfig, SAConfig, SearchConfig, preset
from evoprune.search.evaluator import MaskEvaluator, Metrics, evaluate_masked
from evoprune.search.graph import LayerGraph, PrunableLayer
from evoprune.search.masks import apply_masks, check_masks, layer_stats, load_masks, masks_from_model, save_masks
from evoprune.search.objective import Constraint, Objective, Score, mask_sparsity, sparsity_from_counts
from evoprune.search.result import SearchResult, write_run
from evoprune.search.runner import search_masks
from evoprune.search.schedules import (
    budget_shares,
    calibrated_temperature,
    geometric_temperature,
    linear_rate,
    log_temperature,
    seed_loss_caps,
)
from evoprune.search.sparsity import SparsitySearchConfig, search_sparsities

__all__ = [
    "BASELINE_KINDS",
    "ChannelSearchConfig",
    "ChannelSearchResult",
    "SparsitySearchConfig",
    "PRESETS",
    "Constraint",
    "GAConfig",
    "LayerGraph",
    "MaskEvaluator",
    "Metrics",
    "Objective",
    "PrunableLayer",
    "SAConfig",
    "Score",
    "SearchConfig",
    "SearchResult",
    "apply_masks",
    "baseline_masks",
    "budget_shares",
    "calibrated_temperature",
    "check_masks",
    "evaluate_masked",
    "geometric_temperature",
    "layer_stats",
    "linear_rate",
    "load_masks",
    "log_temperature",
    "mask_sparsity",
    "masks_from_model",
    "preset",
    "save_masks",
    "search_channels",
    "search_masks",
    "search_sparsities",
    "seed_loss_caps",
    "sparsity_from_counts",
    "write_channel_run",
    "write_run",
]
