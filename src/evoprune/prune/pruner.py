"""The pruning API: configure a :class:`ChannelPruner`, call :meth:`ChannelPruner.prune`, read the results.

Scikit-learn / Torch-Pruning style: the constructor only stores settings, ``prune(model, data)`` does the work and
returns the pruner, and the results live in attributes ending in ``_`` (``model_``, ``result_``,
``pruning_history_``, ``schedule_``). Every step scores all prunable layers once with the metric (through
:class:`MetricImportance`), removes the lowest-scoring channels through Torch-Pruning's dependency graph, checks
that the model still runs, and fine-tunes with :func:`evoprune.train.train` (selection on validation). Test
accuracy is measured once before and once after, never used for a decision.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from evoprune.data import DatasetSplits
from evoprune.device import resolve_device
from evoprune.prune.accounting import count_macs_params, measure_latency
from evoprune.prune.errors import PruningError
from evoprune.prune.graph import ChannelGroup, ModelGraph, matches
from evoprune.prune.importance import Coupling, MetricImportance, resolve_scorer
from evoprune.prune.schedule import PresetSchedule, PruneSchedule, ResolvedSchedule, get_preset, resolve
from evoprune.prune.selection import select_global, select_local
from evoprune.train import TrainConfig, TrainResult, evaluate, get_train_preset, train


@dataclass
class ModelStats:
    """Size, speed and accuracy of a model at one point (before or after pruning)."""

    macs: int
    params: int
    widths: dict[str, int]
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    latency_ms: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FinetuneRequest:
    """A pruned model that :meth:`ChannelPruner.prune_steps` needs fine-tuned (in place) before its next step."""

    model: nn.Module
    recipe: TrainConfig
    device: torch.device
    description: str


@dataclass
class StepRecord:
    """One prune step: what was removed and how the model did right after pruning and after fine-tuning."""

    step: int
    removed: dict[str, int]
    widths: dict[str, int]
    macs: int
    params: int
    val_accuracy_pruned: float
    val_accuracy: float
    finetune_epochs: int
    best_epoch: int
    seconds: float


@dataclass
class PruneResult:
    """Everything a report needs; ``to_dict`` gives JSON-ready data."""

    metric: str
    schedule: str
    before: ModelStats
    after: ModelStats
    steps: list[StepRecord]
    clamped: list[str]
    solved_ratio: float | None
    finetune: dict[str, Any] | None
    scoring_samples: int
    seconds: float

    @property
    def macs_kept(self) -> float:
        return self.after.macs / self.before.macs

    @property
    def params_kept(self) -> float:
        return self.after.params / self.before.params

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["macs_kept"], out["params_kept"] = self.macs_kept, self.params_kept
        for stats in (out["before"], out["after"]):
            stats["latency_ms"] = {str(k): v for k, v in stats["latency_ms"].items()}
        out["selection"] = "fine-tuning keeps the best-validation epoch; test measured once before and once after"
        return out


class ChannelPruner:
    """Structural channel pruner driven by any evoprune metric.

    Args:
        metric: metric name or formula (``"l1"``, ``"eq3"``, ``"div(...)"``), a metric object, or a callable
            ``(model, x, y, layers) -> {layer: scores}`` (see :class:`MetricImportance`).
        schedule: a :class:`PruneSchedule`, or a preset name (``"lenet5_paper"``, ``"vgg16_paper"``,
            ``"resnet56_paper"``) or :class:`PresetSchedule` (a preset with global ranking, ignored layers or a
            minimum width).
        scoring_samples: size of the class-balanced scoring set drawn from the training split.
        coupling: how the members of a coupled group combine (``"mean"``, ``"max"``, ``"params"``, ``"root"``,
            ``"last"``; defined in :mod:`evoprune.prune.importance`).
        finetune: a :class:`TrainConfig`, a training preset name (default ``"finetune"``), or None for none.
        seed: seed of the scoring-set draw and of fine-tuning.
        device: where scoring and fine-tuning run (``"auto"``, ``"cpu"``, ``"cuda"``).
        latency_batch_sizes: batch sizes for CPU latency before and after (empty: skip timing).
        latency_repeats: timed runs per batch size (the median is reported).
        evaluate_test: measure test accuracy once before and once after.
        evaluate_before: measure the unpruned model's accuracy and latency (skip when it is already known, e.g. when
            one trained model is pruned with many metrics).
        progress: show fine-tuning progress bars.
        copy: prune a copy and leave the given model untouched (default) or prune it in place.

    Attributes (after :meth:`prune`): ``model_`` (the pruned model), ``result_`` (:class:`PruneResult`),
    ``pruning_history_`` (Torch-Pruning history, including any given ``prior_history``), ``schedule_`` (the
    schedule applied, with a solved ratio if a MACs target was set), ``importance_`` (the importance object).
    """

    def __init__(
        self,
        metric: Any = "l1",
        *,
        schedule: PruneSchedule | PresetSchedule | str = PruneSchedule(ratio=0.3),
        scoring_samples: int = 1000,
        coupling: Coupling = "mean",
        finetune: TrainConfig | str | None = "finetune",
        seed: int = 0,
        device: str | torch.device = "auto",
        latency_batch_sizes: Sequence[int] = (1, 64),
        latency_repeats: int = 30,
        evaluate_test: bool = True,
        evaluate_before: bool = True,
        progress: bool = False,
        copy: bool = True,
    ) -> None:
        self.metric = metric
        self.schedule = schedule
        self.scoring_samples = scoring_samples
        self.coupling = coupling
        self.finetune = finetune
        self.seed = seed
        self.device = device
        self.latency_batch_sizes = latency_batch_sizes
        self.latency_repeats = latency_repeats
        self.evaluate_test = evaluate_test
        self.evaluate_before = evaluate_before
        self.progress = progress
        self.copy = copy

    # --- public ---------------------------------------------------------------------------------------------------

    def prune(self, model: nn.Module, data: DatasetSplits, *, prior_history: list[list[Any]] | None = None) -> ChannelPruner:
        """Prune ``model`` (a copy unless ``copy=False``) on ``data``; results in ``model_``, ``result_`` and co."""
        steps = self.prune_steps(model, data, prior_history=prior_history)
        request = next(steps, None)
        while request is not None:
            result = train(request.model, data, request.recipe, seed=self.seed, device=request.device,
                           progress=self.progress, description=request.description)
            try:
                request = steps.send(result)
            except StopIteration:
                break
        return self

    def prune_steps(self, model: nn.Module, data: DatasetSplits, *,
                    prior_history: list[list[Any]] | None = None) -> Generator[FinetuneRequest, TrainResult, None]:
        """:meth:`prune` with its fine-tuning handed out: yields a :class:`FinetuneRequest` whenever a step's pruned
        model needs ``train.train(request.model, data, request.recipe, seed=self.seed)`` and takes its TrainResult
        back (``throw`` a TrainingError into it to fail); the results are set when it is exhausted.

        Why: a caller pruning many models to one architecture in lockstep (population-batched fine-tuning in
        evolution) trains them together and feeds each its own result; :meth:`prune` simply trains each request.
        """
        start = time.perf_counter()
        scorer = resolve_scorer(self.metric)  # an unknown metric fails before any work
        device = resolve_device(self.device)
        finetune = self._finetune_config()
        model = (copy.deepcopy(model) if self.copy else model).to(device)
        example = data.train.x[:1].to(device)
        graph = ModelGraph(model, example)
        outputs = graph.module(graph.output_layer)
        n_out = outputs.out_features if isinstance(outputs, nn.Linear) else outputs.out_channels
        if n_out != data.num_classes:
            raise PruningError(f"the model gives {n_out} outputs but {data.name} has {data.num_classes} classes; "
                               "prune a model trained on this dataset")
        schedule = self._resolve_schedule(graph)
        if schedule.macs_target is not None and schedule.ratio:
            raise PruningError(f"macs_target solves for the ratio, so ratio {schedule.ratio:g} would be ignored; "
                               "give one of --ratio and --macs-target")
        groups = graph.prunable_groups(schedule.ignore)
        if not groups:
            raise PruningError("nothing to prune: every conv/linear layer is ignored or is the output layer")
        resolved = resolve(schedule, groups, graph.all_groups())  # bad tables and ratios fail before any work
        importance = MetricImportance(
            scorer, model, data.train.x, data.train.y, samples=self.scoring_samples, seed=self.seed,
            layers=[m for g in groups for m in g.members], coupling=self.coupling,
        )
        before = self._stats(model, data, example, groups, accuracy=self.evaluate_before, latency=self.evaluate_before)
        solved = None
        if schedule.macs_target is not None:
            solved = self._solve_ratio(graph, schedule, importance, example, before.macs)
            schedule = schedule.replace(ratio=solved)
            resolved = resolve(schedule, groups, graph.all_groups())
        steps = []
        for k in range(schedule.steps):
            steps.append((yield from self._step(k, graph, schedule, resolved, importance, data, finetune, device)))
        after = self._stats(model, data, example, graph.prunable_groups(schedule.ignore))
        self.model_ = model
        self.importance_ = importance
        self.schedule_ = schedule
        self.pruning_history_ = [list(e) for e in (prior_history or [])] + graph.pruning_history()
        self.result_ = PruneResult(
            metric=importance.label, schedule=schedule.describe(), before=before, after=after, steps=steps,
            clamped=list(resolved.clamped), solved_ratio=solved,
            finetune=finetune.to_dict() if finetune is not None else None,
            scoring_samples=len(importance.y), seconds=time.perf_counter() - start,
        )

    # --- steps ----------------------------------------------------------------------------------------------------

    def _step(
        self, k: int, graph: ModelGraph, schedule: PruneSchedule, resolved: ResolvedSchedule,
        importance: MetricImportance, data: DatasetSplits, finetune: TrainConfig | None, device: torch.device,
    ) -> Generator[FinetuneRequest, TrainResult, StepRecord]:
        start = time.perf_counter()
        groups = {g.name: g for g in graph.prunable_groups(schedule.ignore)}
        counts = {name: per_step[k] for name, per_step in resolved.removals.items()}
        plan = self._plan(graph, groups, counts, schedule, importance)
        for name, idxs in plan.items():
            graph.prune(groups[name], idxs)
        importance.reset()  # the model changes from here on (pruned, then fine-tuned): the next step rescores
        graph.check_runs()
        model = graph.model
        pruned_val = evaluate(model, data.val.x, data.val.y).accuracy
        val, epochs, best_epoch = pruned_val, 0, 0
        if finetune is not None and finetune.epochs > 0 and plan:
            result = yield FinetuneRequest(model, finetune, device, f"fine-tune step {k + 1}/{schedule.steps}")
            val, epochs, best_epoch = result.best_val_accuracy, finetune.epochs, result.best_epoch
        macs, params = count_macs_params(model, graph.example_inputs)
        return StepRecord(
            step=k + 1, removed={n: len(i) for n, i in plan.items()},
            widths={g.name: g.width for g in graph.prunable_groups(schedule.ignore)}, macs=macs, params=params,
            val_accuracy_pruned=pruned_val, val_accuracy=val, finetune_epochs=epochs, best_epoch=best_epoch,
            seconds=time.perf_counter() - start,
        )

    def _plan(
        self, graph: ModelGraph, groups: dict[str, ChannelGroup], counts: dict[str, int], schedule: PruneSchedule,
        importance: MetricImportance,
    ) -> dict[str, list[int]]:
        """Channels to remove per group this step (indices into each group's current channels)."""
        wanted = {n: c for n, c in counts.items() if c > 0}
        if not wanted:
            return {}
        if not schedule.global_ranking:
            scores = {n: self._scores(graph, groups[n], importance) for n in wanted}
            return select_local(scores, wanted)
        # Global ranking: every group the schedule prunes at all competes for this step's total budget.
        scope = [n for n in counts if n in groups]
        scores = {n: self._scores(graph, groups[n], importance) for n in scope}
        limits = {n: groups[n].width - schedule.min_channels for n in scope}
        return select_global(scores, sum(wanted.values()), limits)

    @staticmethod
    def _scores(graph: ModelGraph, group: ChannelGroup, importance: MetricImportance) -> torch.Tensor:
        scores = importance(graph.tp_group(group))
        if scores is None or len(scores) != group.width:
            raise PruningError(f"metric {importance.label!r} gave no usable scores for {group.label}")
        return scores

    # --- MACs target ----------------------------------------------------------------------------------------------

    def _solve_ratio(
        self, graph: ModelGraph, schedule: PruneSchedule, importance: MetricImportance, example: torch.Tensor,
        base_macs: int,
    ) -> float:
        """The uniform ratio whose one-shot pruning lands closest to ``macs_target`` (bisection on model copies).

        With per-layer ranking the final widths of a multi-step run equal the one-shot ones, so the target holds
        exactly as solved; with global ranking later steps rescore, so it holds approximately.
        """
        target = float(schedule.macs_target) * base_macs
        groups = graph.prunable_groups(schedule.ignore)
        all_groups = graph.all_groups()
        if schedule.ratios and all(any(_table_hits(schedule, m) for m in g.members) for g in groups):
            raise PruningError("macs_target solves for the uniform ratio, but every layer has a ratio-table entry")
        by_name = {g.name: g for g in groups}
        # Per-layer ranking: MACs depend on the widths only, so any channels will do and the metric is not run.
        # Global ranking: the widths depend on the scores (cached, and reused by the first step).
        scores = ({g.name: self._scores(graph, g, importance) for g in groups} if schedule.global_ranking
                  else {g.name: torch.zeros(g.width) for g in groups})

        measured: dict[tuple[tuple[str, tuple[int, ...]], ...], int] = {}

        def macs_at(ratio: float) -> int:
            one_shot = schedule.replace(ratio=ratio, steps=1, macs_target=None)
            resolved = resolve(one_shot, groups, all_groups)
            counts = {n: r[0] for n, r in resolved.removals.items()}
            if schedule.global_ranking:
                limits = {n: by_name[n].width - schedule.min_channels for n in counts}
                plan = select_global({n: scores[n] for n in counts}, sum(counts.values()), limits)
            else:
                plan = select_local(scores, counts)
            key = tuple(sorted((n, tuple(i)) for n, i in plan.items()))
            if key not in measured:  # many ratios floor to the same plan: prune and count each plan once
                measured[key] = _pruned_macs(graph, schedule, plan, example)
            return measured[key]

        lo, hi = 0.0, 1.0 - 1e-6
        lo_macs, hi_macs = base_macs, macs_at(hi)
        if hi_macs > target:
            raise PruningError(
                f"a MACs target of {schedule.macs_target:.1%} cannot be reached: pruning every prunable layer to "
                f"{schedule.min_channels} channel(s) still keeps {hi_macs / base_macs:.1%} (the ignored layers and "
                "the output layer are never pruned); raise the target or lower min_channels"
            )
        for _ in range(30):
            if hi - lo < 1e-3:
                break
            mid = (lo + hi) / 2
            mid_macs = macs_at(mid)
            if mid_macs > target:
                lo, lo_macs = mid, mid_macs
            else:
                hi, hi_macs = mid, mid_macs
        return lo if abs(lo_macs - target) < abs(hi_macs - target) else hi

    # --- helpers --------------------------------------------------------------------------------------------------

    def _resolve_schedule(self, graph: ModelGraph) -> PruneSchedule:
        if isinstance(self.schedule, PruneSchedule):
            return self.schedule
        preset = PresetSchedule(self.schedule) if isinstance(self.schedule, str) else self.schedule
        if isinstance(preset, PresetSchedule):
            get_preset(preset.name)  # an unknown name fails here, with suggestions
            return preset.build(graph.prunable_groups(preset.ignore))
        raise PruningError(f"schedule must be a PruneSchedule, a PresetSchedule or a preset name, got {self.schedule!r}")

    def _finetune_config(self) -> TrainConfig | None:
        if self.finetune is None:
            return None
        return get_train_preset(self.finetune) if isinstance(self.finetune, str) else self.finetune

    def _stats(
        self, model: nn.Module, data: DatasetSplits, example: torch.Tensor, groups: list[ChannelGroup],
        *, accuracy: bool = True, latency: bool = True,
    ) -> ModelStats:
        macs, params = count_macs_params(model, example)
        val = evaluate(model, data.val.x, data.val.y).accuracy if accuracy else None
        test = evaluate(model, data.test.x, data.test.y).accuracy if accuracy and self.evaluate_test else None
        timings = (measure_latency(model, tuple(data.train.x.shape[1:]), batch_sizes=self.latency_batch_sizes,
                                   repeats=self.latency_repeats) if latency and self.latency_batch_sizes else {})
        return ModelStats(macs=macs, params=params, widths={g.name: g.width for g in groups},
                          val_accuracy=val, test_accuracy=test, latency_ms=timings)

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise PruningError("call prune(model, data) first")


def _pruned_macs(graph: ModelGraph, schedule: PruneSchedule, plan: dict[str, list[int]], example: torch.Tensor) -> int:
    """MACs of a copy of ``graph.model`` with ``plan`` applied (the model itself is not touched)."""
    trial = copy.deepcopy(graph.model)
    trial_graph = ModelGraph(trial, example)
    trial_groups = {g.name: g for g in trial_graph.prunable_groups(schedule.ignore)}
    for name, idxs in plan.items():
        trial_graph.prune(trial_groups[name], idxs)
    return count_macs_params(trial, example)[0]


def _table_hits(schedule: PruneSchedule, name: str) -> bool:
    return any(matches(key, name) for key in schedule.ratios)
