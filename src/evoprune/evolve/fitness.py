"""Fitness tasks: prepare each task once (data, pretrained model), then score a formula on it in any worker.

A task is a pretrained model + a dataset + a pruning schedule + a fine-tuning budget. Evaluating a candidate on a
task prunes a copy of the model with the candidate as the channel-importance metric (through
:class:`evoprune.prune.ChannelPruner`, i.e. Torch-Pruning), fine-tunes it, and returns its **validation**
accuracy. Several tasks combine by a weighted geometric mean (the paper's co-evolution, spec §4.3).

What travels to workers is a :class:`TaskBundle`: the model's weights and the train/validation tensors as numpy
arrays (plain data, pickled by value; never the test split), so a worker on another machine needs no files. The
bundle builds its model and splits once per worker process and keeps them.

Determinism: an evaluation's result depends only on (formula, task, seed): the seed fixes the scoring-set draw
and the fine-tuning order, and executors run every evaluation with the same torch thread count.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evoprune.baseline import BaselineSpec, DataSpec, get_baseline
from evoprune.data import DatasetSplits, Split
from evoprune.errors import ConfigError, EvopruneError
from evoprune.evolve.config import EvolutionConfig, FidelityConfig, TaskConfig
from evoprune.evolve.cost import affordable, layer_dims
from evoprune.expr import evaluate, parse
from evoprune.parallel import short_error, torch_threads
from evoprune.prune import PruneSchedule
from evoprune.train import TrainConfig

WORST_FITNESS = 0.0


class CandidateError(EvopruneError, ValueError):
    """A candidate cannot prune a real layer (e.g. its scores are not finite there)."""


def derive_seed(seed: int, *parts: object) -> int:
    """A 31-bit seed from the run seed and labels, stable across processes and Python versions."""
    text = json.dumps([seed, *[str(p) for p in parts]])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


def worst_fitness(fidelity: str) -> float:
    """The lowest value a fidelity's score can take: a correlation of −1 at ``oracle``, an accuracy of 0 otherwise."""
    return -1.0 if fidelity == "oracle" else WORST_FITNESS


def combine_fitness(fidelity: str, scores: dict[str, float], weights: dict[str, float]) -> float:
    """Tasks' scores into one fitness: a weighted arithmetic mean of Spearman correlations at ``oracle`` (they can be
    negative), the weighted geometric mean of accuracies (the paper's co-evolution) at ``recal`` and ``finetune``."""
    if fidelity != "oracle":
        return weighted_geometric_mean(scores, weights)
    total = sum(weights[k] for k in scores)
    if not scores or total <= 0 or not all(math.isfinite(v) for v in scores.values()):
        return worst_fitness(fidelity)
    return sum(weights[k] * v for k, v in scores.items()) / total


def weighted_geometric_mean(values: dict[str, float], weights: dict[str, float]) -> float:
    """Π vᵢ^wᵢ with weights normalised to sum 1; 0 if any value is 0; the worst fitness if any is not finite."""
    total = sum(weights[k] for k in values)
    if not values or total <= 0:
        return WORST_FITNESS
    log_sum = 0.0
    for name, value in values.items():
        if not math.isfinite(value) or value < 0:
            return WORST_FITNESS
        if value == 0:
            return 0.0
        log_sum += weights[name] / total * math.log(value)
    return math.exp(log_sum)


# ------------------------------------------------------------------------------------------------ bundles


def _split_arrays(split: Split) -> tuple[np.ndarray, np.ndarray]:
    return split.x.numpy(), split.y.numpy()


def _subset(split: Split, limit: int, seed: int) -> Split:
    """A fixed, seeded random subset of ``limit`` samples (the whole split if ``limit`` is 0 or larger)."""
    if limit <= 0 or limit >= len(split):
        return split
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(split), generator=g)[:limit].sort().values
    return split.subset(idx)


@dataclass
class TaskBundle:
    """Everything a worker needs to evaluate candidates on one task (plain data, no file paths)."""

    name: str
    arch: str
    arch_kwargs: dict[str, Any]
    state: dict[str, np.ndarray]
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]
    schedule: str | PruneSchedule
    finetune: TrainConfig
    scoring_samples: int
    coupling: str
    device: str
    nonfinite: str
    layers: list[Any]  # LayerDims of the prunable layers, for the cost limits
    max_elements: float
    max_operations: float
    fidelity: FidelityConfig = field(default_factory=FidelityConfig)
    screen_seed: int = 0  # the scoring-set and recalibration draws of the oracle and recal fidelities
    oracle: dict[str, np.ndarray] | None = None  # group name -> loss increase per channel (oracle fidelity)
    _built: tuple[torch.nn.Module, DatasetSplits] | None = field(default=None, repr=False, compare=False)
    # Per-process caches the fidelity functions build from the bundle (cached layer statistics, graphs).
    worker_state: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_built"] = None  # never ship the worker-side caches
        state["worker_state"] = {}
        return state

    def materialise(self) -> tuple[torch.nn.Module, DatasetSplits]:
        """The pretrained model and the train/validation splits, built once per process and then reused."""
        if self._built is None:
            from evoprune.models import build_model

            model = build_model(self.arch, **self.arch_kwargs)
            model.load_state_dict({k: torch.tensor(v) for k, v in self.state.items()})
            model.eval()
            empty = Split(torch.empty((0, *self.val_x.shape[1:])), torch.empty(0, dtype=torch.long))
            splits = DatasetSplits(
                name=self.name, train=Split(torch.tensor(self.train_x), torch.tensor(self.train_y)),
                val=Split(torch.tensor(self.val_x), torch.tensor(self.val_y)), test=empty,
                num_classes=self.num_classes, class_names=self.class_names, source=f"task {self.name}",
            )
            self._built = (model, splits)
        return self._built


@dataclass(frozen=True)
class PreparedTask:
    """A task ready to evaluate: its bundle and what the run reports about it."""

    config: TaskConfig
    bundle: TaskBundle
    checkpoint: Path
    pretrained_val_accuracy: float
    data_sizes: dict[str, int]


def pretrain_spec(task: TaskConfig, seed: int) -> BaselineSpec:
    """The task's pretrained model as a baseline: its data split by the run seed, trained with a seed derived from
    it, so ``evoprune search --checkpoint RUN_DIR/models/<task>.pt`` splits the data the same way."""
    data = DataSpec(task.dataset, split_seed=seed, val_fraction=task.val_fraction, normalize=task.normalize,
                    data_dir=task.data_dir)
    return BaselineSpec(task.model, data, task.pretrain, seed=derive_seed(seed, "pretrain", task.name),
                        model_args=dict(task.model_args))


def prepare_task(task: TaskConfig, config: EvolutionConfig, models_dir: Path, *, progress: bool = False,
                 log: Any = None, oracle_dir: Path | None = None) -> PreparedTask:
    """Load the task's data; load its pretrained model from ``models_dir`` or train it there once; with the
    ``oracle`` fidelity, load the task's oracle from ``oracle_dir`` or compute it there once.

    Pretraining runs in this process with ``evaluation.threads`` torch threads (deterministic for the seed), and
    the checkpoint is reused on resume and by later runs in the same directory while its baseline key matches.
    """
    from evoprune.train import evaluate as evaluate_model

    seed = config.seed
    baseline = get_baseline(
        pretrain_spec(task, seed), out=models_dir / f"{task.name}.pt", device=config.evaluation.device,
        threads=config.evaluation.threads, progress=progress,
        log=None if log is None else (lambda line: log("pretrain", task=task.name, message=line)),
    )
    model, data, path, arch_kwargs = baseline.model, baseline.data, baseline.checkpoint, baseline.arch_kwargs
    if log is not None:
        log("pretrained_reused" if baseline.reused else "pretrain_done", task=task.name,
            val_accuracy=baseline.meta["val_accuracy"], path=str(path))
    model.eval()
    val_acc = evaluate_model(model, data.val.x, data.val.y).accuracy
    train_split = _subset(data.train, task.train_samples, derive_seed(seed, "train_subset", task.name))
    val_split = _subset(data.val, task.val_samples, derive_seed(seed, "val_subset", task.name))
    tx, ty = _split_arrays(train_split)
    vx, vy = _split_arrays(val_split)
    dims = layer_dims(model, data.train.x, data.train.y, task.scoring_samples)
    bundle = TaskBundle(
        name=task.name, arch=task.model, arch_kwargs=dict(arch_kwargs),
        state={k: v.detach().cpu().numpy() for k, v in model.state_dict().items()},
        train_x=tx, train_y=ty, val_x=vx, val_y=vy, num_classes=data.num_classes,
        class_names=tuple(data.class_names), schedule=task.schedule, finetune=task.finetune,
        scoring_samples=task.scoring_samples, coupling=task.coupling, device=config.evaluation.device,
        nonfinite=config.evaluation.nonfinite, layers=dims, max_elements=config.operators.max_elements,
        max_operations=config.operators.max_operations, fidelity=config.fidelity,
        screen_seed=derive_seed(seed, "screen", task.name),
    )
    if "oracle" in config.fidelity.levels:
        if oracle_dir is None:
            raise EvopruneError("the oracle fidelity needs a folder to cache each task's oracle in")
        with torch_threads(config.evaluation.threads):
            bundle.oracle = task_oracle(model, val_split, config.fidelity, derive_seed(seed, "oracle", task.name),
                                        oracle_dir / f"{task.name}.pt", device=config.evaluation.device, log=log)
    return PreparedTask(task, bundle, path, val_acc, {"train": len(train_split), "val": len(val_split)})


def task_oracle(model: torch.nn.Module, val: Split, fidelity: FidelityConfig, seed: int, path: Path, *,
                device: str = "cpu", log: Any = None) -> dict[str, np.ndarray]:
    """The task's oracle importance per prunable group (validation-loss increase per removed channel), on
    ``fidelity.oracle_samples`` class-balanced validation images: computed once and saved to ``path`` by
    :func:`evoprune.criteria.oracle_cache.cached_oracle`, which recomputes it whenever the weights, the images or
    the settings differ from the file's, so a resumed or overwritten run never reads an oracle of another model."""
    from evoprune.criteria import cached_oracle

    result = cached_oracle(model, val.x, val.y, path, samples=fidelity.oracle_samples, seed=seed,
                           ablations=fidelity.oracle_ablations, device=device)
    if log is not None and not result.reused:
        log("oracle_done", groups=len(result.increase), samples=result.samples, seconds=result.seconds,
            path=str(path))
    return {name: t.numpy() for name, t in result.increase.items()}


# ------------------------------------------------------------------------------------------------ evaluation


@dataclass(frozen=True)
class FitnessJob:
    """One evaluation: a formula on one task at one fidelity with one seed (``index`` counts a candidate's
    evaluations at that fidelity)."""

    formula: str
    task: str
    index: int
    seed: int
    fidelity: str = "finetune"


def checked_metric(formula: str, nonfinite: str, dtype: torch.dtype = torch.float64) -> Any:
    """The candidate as a metric, evaluated in ``dtype``; with ``nonfinite="fail"`` a NaN/inf score on a real layer
    fails it."""
    from evoprune.metrics import Metric

    tree = parse(formula)
    if nonfinite == "allow" and dtype == torch.float64:
        return Metric.from_formula(tree, name="candidate")

    def checked(data: Any) -> torch.Tensor:
        scores = evaluate(tree, stats=data.stats, features=data.features, labels=data.labels, weight=data.weight,
                          dtype=dtype, layer=data.name)
        bad = ~torch.isfinite(scores)
        if nonfinite == "fail" and bool(bad.any()):
            raise CandidateError(f"non-finite scores for {int(bad.sum())} of {scores.numel()} channels of layer "
                                 f"{data.name!r}")
        return scores

    return Metric.from_formula(tree, name="candidate", fn=checked)


def visible_device(device: str) -> str:
    """``cuda:N`` as seen from a worker pinned to one GPU (where that GPU is ``cuda:0``)."""
    if device.startswith("cuda:") and torch.cuda.is_available() and int(device[5:]) >= torch.cuda.device_count():
        return "cuda"
    return device


@dataclass(frozen=True)
class FitnessBatch:
    """``finetune`` evaluations of several formulas on one task with one seed (one evaluation round), run as one job
    so that the candidates that prune to one architecture are fine-tuned together (population-batched)."""

    formulas: tuple[str, ...]
    task: str
    index: int
    seed: int
    fidelity: str = "finetune"


def run_fitness_job(job: FitnessJob, bundle: TaskBundle) -> dict[str, Any]:
    """The ``finetune`` fidelity: prune and fine-tune the task's model with the job's formula; returns the validation
    accuracy as ``score``, and details.

    Runs in a worker (any executor); raises on failure (the executor turns that into the worst fitness).
    """
    member = _evaluate_members([job.formula], bundle, job.seed)[0]
    if isinstance(member, BaseException):
        raise member
    return member


def run_finetune_job(job: FitnessJob | FitnessBatch, bundle: TaskBundle) -> dict[str, Any]:
    """The evolution loop's ``finetune`` job: one formula (:func:`run_fitness_job`) or a batch."""
    return run_fitness_batch(job, bundle) if isinstance(job, FitnessBatch) else run_fitness_job(job, bundle)


def run_fitness_batch(batch: FitnessBatch, bundle: TaskBundle) -> dict[str, Any]:
    """The ``finetune`` fidelity for every formula of the batch: ``{"members": [details | {"error": text}]}``, each
    member's details as :func:`run_fitness_job` returns them and equal to them to float tolerance.

    Every candidate is pruned by its own :class:`~evoprune.prune.ChannelPruner`; at each step the pruned models of
    one architecture are fine-tuned as one stacked model (:func:`~evoprune.evolve.batched.train_stacked`, all with
    the batch's seed, so they share each training batch as they would one by one). A member that fails (its scores,
    its training) gets its error and costs the others nothing. A member's ``seconds`` is its share of the batch.
    """
    start = time.perf_counter()
    members = _evaluate_members(list(batch.formulas), bundle, batch.seed)
    share = (time.perf_counter() - start) / max(len(members), 1)
    return {"members": [{"error": short_error(m)} if isinstance(m, BaseException) else {**m, "seconds": share}
                        for m in members]}


@dataclass
class _Member:
    """One candidate of a batch: its pruner, its step generator, and what it waits for."""

    pruner: Any
    steps: Any
    request: Any = None
    outcome: dict[str, Any] | BaseException | None = None

    def advance(self, sent: Any = None) -> None:
        """Run the member to its next fine-tuning request (sending ``sent`` in: a TrainResult, or an error to raise
        at the yield); on its end record its details, on an error the error."""
        try:
            if isinstance(sent, BaseException):
                self.request = self.steps.throw(sent)
            else:
                self.request = self.steps.send(sent)
            return
        except StopIteration:
            self.request = None
            try:
                self.outcome = _details(self.pruner)
            except CandidateError as exc:
                self.outcome = exc
        except Exception as exc:  # this candidate's failure: scores, pruning or training
            self.request, self.outcome = None, exc


def _evaluate_members(formulas: list[str], bundle: TaskBundle, seed: int) -> list[dict[str, Any] | BaseException]:
    """Prune and fine-tune the task's model with each formula; fine-tuning of equal architectures stacked."""
    from evoprune.evolve.batched import architecture, train_stacked
    from evoprune.prune import ChannelPruner
    from evoprune.train import train

    model, splits = bundle.materialise()
    members = []
    for formula in formulas:
        try:
            too_costly = affordable(parse(formula), bundle.layers, bundle.max_elements, bundle.max_operations)
            if too_costly is not None:
                raise CandidateError(f"not evaluated: the formula {too_costly}")
            pruner = ChannelPruner(
                checked_metric(formula, bundle.nonfinite), schedule=bundle.schedule,
                scoring_samples=bundle.scoring_samples, coupling=bundle.coupling, finetune=bundle.finetune, seed=seed,
                device=visible_device(bundle.device), latency_batch_sizes=(), evaluate_test=False, progress=False,
                copy=True,
            )
            member = _Member(pruner, pruner.prune_steps(model, splits))
        except Exception as exc:
            members.append(_Member(None, None, outcome=exc))
            continue
        member.advance()
        members.append(member)
    while waiting := [m for m in members if m.request is not None]:
        groups: dict[Any, list[_Member]] = {}
        for m in waiting:
            groups.setdefault(architecture(m.request.model), []).append(m)
        for group in groups.values():
            requests = [m.request for m in group]
            results: list[Any] | None = None
            if len(group) > 1:
                try:
                    results = train_stacked([r.model for r in requests], splits, requests[0].recipe,
                                            seeds=[seed] * len(group), device=requests[0].device)
                except ConfigError:  # models that do not stack: fine-tuned one by one below
                    results = None
            if results is None:
                results = []
                for r in requests:
                    try:
                        results.append(train(r.model, splits, r.recipe, seed=seed, device=r.device, progress=False,
                                             description=r.description))
                    except Exception as exc:
                        results.append(exc)
            for m, result in zip(group, results):
                m.advance(result)
    return [m.outcome for m in members]


def _details(pruner: Any) -> dict[str, Any]:
    result = pruner.result_
    accuracy = float(result.after.val_accuracy)
    if not math.isfinite(accuracy):
        raise CandidateError(f"validation accuracy is not finite ({accuracy})")
    return {
        "score": accuracy,
        "pruned_accuracy": float(result.steps[-1].val_accuracy_pruned) if result.steps else accuracy,
        "macs_kept": float(result.macs_kept),
        "params_kept": float(result.params_kept),
        "seconds": float(result.seconds),
    }
