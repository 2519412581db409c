"""Structural channel pruning with any evoprune metric, through Torch-Pruning's dependency graph.

>>> pruner = ChannelPruner("l1", schedule=PruneSchedule(ratio=0.3)).prune(model, data)
>>> pruner.result_.after.macs, pruner.model_
>>> save_checkpoint("pruned.pt", pruner.model_, arch="lenet5", arch_kwargs={...},
...                 pruning_history=pruner.pruning_history_)   # evoprune.checkpoint; load_checkpoint rebuilds it

Modules: ``graph`` (traced model and named channel groups), ``importance`` (the Torch-Pruning importance that
wraps a metric), ``schedule`` (per-step removal counts and the paper's presets), ``selection`` (which channels),
``pruner`` (the API), ``accounting`` (MACs, parameters, latency), ``history`` (the pruning record a checkpoint
carries, and its replay), ``export`` (ONNX), ``table`` (pruning tables on disk,
``evoprune prune --table``).
"""

from evoprune.prune.accounting import count_macs_params, measure_latency
from evoprune.prune.errors import PruningError
from evoprune.prune.export import export_onnx
from evoprune.prune.graph import ChannelGroup, ModelGraph
from evoprune.prune.history import replay_history
from evoprune.prune.importance import MetricImportance, balanced_scoring_set
from evoprune.prune.pruner import ChannelPruner, FinetuneRequest, ModelStats, PruneResult, StepRecord
from evoprune.prune.schedule import PRESETS, PresetSchedule, PruneSchedule, get_preset, resolve

__all__ = [
    "PRESETS",
    "ChannelGroup",
    "ChannelPruner",
    "FinetuneRequest",
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
    "measure_latency",
    "replay_history",
    "resolve",
]
