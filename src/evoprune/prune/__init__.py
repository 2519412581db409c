"""Structural channel pruning with any evoprune metric, through Torch-Pruning's dependency graph.

>>> pruner = ChannelPruner("l1", schedule=PruneSchedule(ratio=0.3)).prune(model, data)
>>> pruner.result_.after.macs, pruner.model_
>>> pruner.save("pruned.pt", arch="lenet5", arch_kwargs={...}); model, _ = load_pruned("pruned.pt")

Modules: ``graph`` (traced model and named channel groups), ``importance`` (the Torch-Pruning importance that
wraps a metric), ``schedule`` (per-step removal counts and the paper's presets), ``selection`` (which channels),
``pruner`` (the API), ``accounting`` (MACs, parameters, latency), ``io`` (save, load, ONNX).
"""

from evoprune.prune.accounting import count_macs_params, measure_latency
from evoprune.prune.errors import PruningError
from evoprune.prune.graph import ChannelGroup, ModelGraph
from evoprune.prune.importance import MetricImportance, balanced_scoring_set
from evoprune.prune.io import export_onnx, load_pruned, pruning_history_of, replay_history, save_pruned
from evoprune.prune.pruner import ChannelPruner, ModelStats, PruneResult, StepRecord
from evoprune.prune.schedule import PRESETS, PresetSchedule, PruneSchedule, get_preset, resolve

__all__ = [
    "PRESETS",
    "ChannelGroup",
    "ChannelPruner",
    "MetricImportance",
    "ModelGraph",
    "ModelStats",
    "PresetSchedule",
    "PruneResult",
    "PruneSchedule",
    "PruningError",
    "StepRecord",
    "balanced_scoring_set",
    "count_macs_params",
    "export_onnx",
    "get_preset",
    "load_pruned",
    "measure_latency",
    "pruning_history_of",
    "replay_history",
    "resolve",
    "save_pruned",
]
