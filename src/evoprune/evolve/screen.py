"""The cheap fidelities: ``oracle`` (agreement with the task's oracle) and ``recal`` (one cut + BN recalibration).

Both score a formula on the task's *unpruned* model, from layer data collected once per worker process and task
(:class:`Screen`): the class-balanced scoring set of ``scoring_samples`` training images drawn with the task's
screen seed and its per-class moments at every prunable layer; for formulas whose simplified form reads raw
feature maps, the maps of a class-balanced subset of ``fidelity.feature_samples`` of those images (a bounded
fallback: such trees cost ten to a hundred times more per image), kept only while they fit
``operators.max_elements``, otherwise collected again per candidate. A candidate then costs the tree's interpretation per layer, the coupling of Torch-Pruning
groups (:class:`~evoprune.prune.MetricImportance`, as pruning itself combines scores), and:

- ``oracle``: the Spearman correlation with the oracle's loss increases per group, averaged over groups
  (:func:`evoprune.criteria.stats.rank_correlations`' rule: non-finite scores rank lowest, a constant vector
  correlates 0): no forward pass at all;
- ``recal``: each group's lowest-scoring channels removed in one cut to the schedule's final widths (or to each
  of ``fidelity.recal_ratios``, averaged), BatchNorm statistics re-estimated on ``recal_batches`` fixed training
  batches (:func:`evoprune.criteria.recalibrate_batchnorm`), then the validation accuracy; no gradient step.

Both are deterministic for a (formula, task): the job's seed is not used.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from evoprune.criteria import recalibrate_batchnorm
from evoprune.criteria.curves import prune_uniform
from evoprune.criteria.stats import rank_scores
from evoprune.device import resolve_device
from evoprune.errors import ConfigError
from evoprune.evolve.cost import affordable
from evoprune.evolve.fitness import CandidateError, FitnessJob, TaskBundle, checked_metric, visible_device
from evoprune.expr import parse
from evoprune.metrics import LayerData, Needs, collect_layer_data, scoring_set
from evoprune.prune import MetricImportance, ModelGraph, PruneSchedule, get_preset, resolve
from evoprune.train import evaluate


class _CachedScores:
    """The layer scorer of the screen's importance: hands back the candidate's scores set just before."""

    def __init__(self) -> None:
        self.scores: dict[str, torch.Tensor] = {}

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        return self.scores


class Screen:
    """One task's unpruned model, graph, scoring set and layer data, built once per process (the bundle keeps it)."""

    def __init__(self, bundle: TaskBundle) -> None:
        model, splits = bundle.materialise()
        self.device = resolve_device(visible_device(bundle.device))
        self.model = copy.deepcopy(model).to(self.device).eval()
        self.example = splits.train.x[:1].to(self.device)
        self.graph = ModelGraph(self.model, self.example)
        self.groups = self.graph.prunable_groups()
        self.layers = [m for g in self.groups for m in g.members]
        self.scorer = _CachedScores()
        self.importance = MetricImportance(("candidate", self.scorer), self.model, splits.train.x, splits.train.y,
                                           samples=bundle.scoring_samples, seed=bundle.screen_seed,
                                           layers=self.layers, coupling=bundle.coupling)  # type: ignore[arg-type]
        self.x, self.y = self.importance.x.to(self.device), self.importance.y.to(self.device)
        self.stats = collect_layer_data(self.model, self.layers, self.x, self.y,
                                        needs=Needs(stats=True, labels=True, weight=True))
        # Raw maps: a class-balanced subset of the scoring set, kept for every layer at once while they fit the run's
        # memory limit for one tree's values (otherwise collected again per candidate).
        if bundle.fidelity.feature_samples < len(self.y):
            self.feature_x, self.feature_y = scoring_set(self.x, self.y, size=bundle.fidelity.feature_samples,
                                                         seed=bundle.screen_seed)
        else:
            self.feature_x, self.feature_y = self.x, self.y
        feature_elements = sum(len(self.feature_y) * d.channels * d.positions for d in bundle.layers)
        self.keep_features = feature_elements <= bundle.max_elements
        self._features: dict[str, LayerData] | None = None
        self.tp_groups = [self.graph.tp_group(group) for group in self.groups]  # read-only, reused per candidate
        fid = bundle.fidelity
        order = torch.randperm(len(splits.train.y), generator=torch.Generator().manual_seed(bundle.screen_seed))
        self.recal_x = splits.train.x[order[:fid.recal_batches * fid.recal_batch_size]]
        self.val = splits.val
        self._counts: dict[str, int] | None = None
        self._schedule = bundle.schedule

    @staticmethod
    def of(bundle: TaskBundle) -> Screen:
        """The bundle's screen in this process (built on first use)."""
        screen = bundle.worker_state.get("screen")
        if screen is None:
            screen = bundle.worker_state["screen"] = Screen(bundle)
        return screen

    def features(self) -> dict[str, LayerData]:
        data = self._features
        if data is None:
            data = collect_layer_data(self.model, self.layers, self.feature_x, self.feature_y,
                                      needs=Needs(features=True, labels=True))
            if self.keep_features:
                self._features = data
        return data

    def group_scores(self, formula: str, bundle: TaskBundle) -> dict[str, torch.Tensor]:
        """Per prunable group, the candidate's channel scores combined as pruning combines them (higher = keep)."""
        too_costly = affordable(parse(formula), bundle.layers, bundle.max_elements, bundle.max_operations)
        if too_costly is not None:
            raise CandidateError(f"not evaluated: the formula {too_costly}")
        metric = checked_metric(formula, bundle.nonfinite, getattr(torch, bundle.fidelity.screen_dtype))
        data = self.features() if metric.needs.features else self.stats
        self.scorer.scores = {name: metric.score(data[name]) for name in self.layers}
        self.importance.reset()
        out = {}
        for group, tp_group in zip(self.groups, self.tp_groups):
            scores = self.importance(tp_group)
            if scores is None or len(scores) != group.width:
                raise CandidateError(f"no usable scores for {group.label}")
            out[group.name] = scores.float()
        return out

    def schedule_counts(self) -> dict[str, int]:
        """Channels the task's schedule removes from each group over all its steps (one cut to its final widths)."""
        if self._counts is None:
            schedule = self._schedule
            if isinstance(schedule, str):
                schedule = get_preset(schedule).build(self.groups)
            if not isinstance(schedule, PruneSchedule) or schedule.global_ranking or schedule.macs_target is not None:
                raise ConfigError("the recal fidelity cuts each layer to the schedule's final width; this schedule "
                                  "ranks globally or solves a MACs target: set fidelity.recal_ratios instead")
            groups = self.graph.prunable_groups(schedule.ignore)
            removals = resolve(schedule, groups, self.graph.all_groups()).removals
            self._counts = {name: sum(steps) for name, steps in removals.items()}
        return self._counts

    def recalibrated_accuracy(self, pruned: nn.Module, bundle: TaskBundle) -> float:
        pruned.to(memory_format=torch.channels_last)  # same numbers, faster CPU convolutions
        recalibrate_batchnorm(pruned, self.recal_x.to(self.device), batches=bundle.fidelity.recal_batches,
                              batch_size=bundle.fidelity.recal_batch_size)
        return float(evaluate(pruned, self.val.x, self.val.y).accuracy)


def _prune_counts(model: nn.Module, scores: dict[str, torch.Tensor], counts: dict[str, int],
                  example: torch.Tensor) -> nn.Module:
    """A copy of ``model`` without each group's ``counts[group]`` lowest-scoring channels (ties by index)."""
    pruned = copy.deepcopy(model)
    graph = ModelGraph(pruned, example)
    for group in graph.prunable_groups():
        count = counts.get(group.name, 0)
        if count:
            graph.prune(group, sorted(torch.sort(scores[group.name], stable=True).indices[:count].tolist()))
    graph.check_runs()
    return pruned


def spearman(scores: np.ndarray, oracle: np.ndarray) -> float:
    """Spearman ρ on :func:`~evoprune.criteria.stats.rank_scores` ranks; 0 for a constant vector (no ranking)."""
    x, y = rank_scores(scores), rank_scores(oracle)
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def run_oracle_job(job: FitnessJob, bundle: TaskBundle) -> dict[str, Any]:
    """The ``oracle`` fidelity: mean over groups of the Spearman correlation with the task's oracle."""
    start = time.perf_counter()
    if bundle.oracle is None:
        raise ConfigError(f"task {bundle.name} has no oracle (the run did not compute it)")
    scores = Screen.of(bundle).group_scores(job.formula, bundle)
    per_group = {name: spearman(scores[name].numpy(), oracle) for name, oracle in bundle.oracle.items()}
    worst = min(per_group, key=lambda name: (per_group[name], name))
    return {"score": statistics.fmean(per_group.values()), "worst_group": worst,
            "worst_spearman": per_group[worst], "seconds": time.perf_counter() - start}


def run_recal_job(job: FitnessJob, bundle: TaskBundle) -> dict[str, Any]:
    """The ``recal`` fidelity: validation accuracy after one cut and BatchNorm recalibration (no gradient step)."""
    start = time.perf_counter()
    screen = Screen.of(bundle)
    scores = screen.group_scores(job.formula, bundle)
    ratios = bundle.fidelity.recal_ratios
    if ratios:
        pruned_models = [prune_uniform(screen.model, scores, ratio, screen.example) for ratio in ratios]
    else:
        pruned_models = [_prune_counts(screen.model, scores, screen.schedule_counts(), screen.example)]
    accuracies = [screen.recalibrated_accuracy(pruned, bundle) for pruned in pruned_models]
    accuracy = statistics.fmean(accuracies)
    if not math.isfinite(accuracy):
        raise CandidateError(f"validation accuracy is not finite ({accuracy})")
    return {"score": accuracy, "accuracies": accuracies, "seconds": time.perf_counter() - start}
