"""``search_masks``: one SA or GA mask search from a trained model to a ``SearchResult``.

Order of work: baseline metrics → caps per layer → one phase per layer, front to back (plus joint phases over all
layers if configured), optionally fine-tuning between phases → final metrics with a plain full forward → optional
fine-tuning with the masks fixed → random and magnitude baselines at the same sparsity, fine-tuned for as many
epochs in all. The model's weights are never modified (fine-tuning works on copies); it is put on ``device`` and
left in the train/eval mode it came in.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn.utils import prune

from evoprune.device import machine, resolve_device
from evoprune.errors import ConfigError
from evoprune.progress import make_progress
from evoprune.search.baselines import BASELINE_KINDS, baseline_masks
from evoprune.search.config import ALGORITHMS, SearchConfig, preset
from evoprune.search.evaluator import MaskEvaluator, Metrics, evaluate_masked
from evoprune.search.ga import run_ga_phase
from evoprune.search.graph import LayerGraph
from evoprune.search.masks import apply_masks, layer_stats
from evoprune.search.objective import Constraint, Objective, mask_sparsity
from evoprune.search.result import SearchResult
from evoprune.search.sa import run_sa_phase
from evoprune.search.schedules import budget_shares, seed_loss_caps
from evoprune.search.state import Phase, SearchState


class _Split(Protocol):
    x: torch.Tensor
    y: torch.Tensor


class _Data(Protocol):
    """What the search needs of ``evoprune.data.DatasetSplits`` (``train``/``val`` only for fine-tuning and
    validation-selected presets)."""

    train: _Split
    val: _Split
    test: _Split


def _metrics_dict(m: Metrics) -> dict[str, float]:
    return {"loss": m.loss, "accuracy": m.accuracy}


def _selection_data(data: _Data, config: SearchConfig, seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    split = getattr(data, config.selection_split, None)
    if split is None or len(split.y) == 0:
        raise ConfigError(f"the {config.preset!r} preset selects on the {config.selection_split!r} split, which this data lacks or is empty")
    x, y = split.x, split.y
    if config.eval_size is not None and config.eval_size < len(y):
        idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:config.eval_size]
        x, y = x[idx], y[idx]
    return x.to(device), y.to(device)


def _phases(graph: LayerGraph, config: SearchConfig, algorithm: str, baseline: Metrics) -> list[Phase]:
    layers = graph.layers
    if config.caps == "seed":
        indices = config.layer_indices if config.layer_indices is not None else tuple(l.ref_index for l in layers)
        if len(indices) != len(layers):
            raise ConfigError(f"layer_indices has {len(indices)} entries for {len(layers)} searched layers")
        total = config.total_layers if config.total_layers is not None else graph.total_ref_layers
        scale = baseline.loss / config.cap_reference_loss if config.cap_reference_loss else 1.0
        caps = seed_loss_caps(indices, total, config.loss_to_warmup, scale)
        constraints = [Constraint("loss", cap) for cap in caps]
        final = constraints[-1]
    else:
        shares = budget_shares([l.numel for l in layers], config.warmup)
        if config.budget_metric == "loss":
            constraints = [Constraint("loss", baseline.loss * (1 + config.budget * s)) for s in shares]
            final = Constraint("loss", baseline.loss * (1 + config.budget))
        else:
            constraints = [Constraint("accuracy", baseline.accuracy - config.budget * s) for s in shares]
            final = Constraint("accuracy", baseline.accuracy - config.budget)
    per_layer = config.sa.iterations if algorithm == "sa" else config.ga.generations
    steps = layer_steps([l.numel for l in layers], per_layer, config.allocation)
    phases = [Phase(l.name, (l.name,), c, n) for l, c, n in zip(layers, constraints, steps)]
    joint = config.sa.joint_iterations if algorithm == "sa" else config.ga.joint_generations
    rounds = min(config.joint_rounds, joint)
    for r in range(rounds if joint > 0 else 0):
        label = "joint" if rounds == 1 else f"joint {r + 1}"
        phases.append(Phase(label, tuple(l.name for l in layers), final, joint // rounds + (r < joint % rounds)))
    return phases


def layer_steps(sizes: Sequence[int], per_layer: int, allocation: str) -> list[int]:
    """Steps (SA proposals or GA generations) of each layer's phase: ``per_layer`` each (``uniform``), or the same
    total shared in proportion to the layers' weight counts with at least a tenth of ``per_layer`` each
    (``weights``), so a 150-weight layer does not get as many evaluations as a 48,000-weight one."""
    if allocation == "uniform":
        return [per_layer] * len(sizes)
    total = per_layer * len(sizes)
    floor = max(1, per_layer // 10)
    spare = total - floor * len(sizes)
    shares = [spare * size / sum(sizes) for size in sizes]
    steps = [floor + int(share) for share in shares]
    # Hand out what rounding down left over to the largest remainders, so the total is exact.
    for i in sorted(range(len(sizes)), key=lambda i: shares[i] - int(shares[i]), reverse=True)[:total - sum(steps)]:
        steps[i] += 1
    return steps


def _planned_evaluations(phases: Sequence[Phase], config: SearchConfig, algorithm: str) -> int:
    if algorithm == "sa":
        return sum(1 + phase.steps for phase in phases)
    return sum(config.ga.population + phase.steps * (config.ga.population - config.ga.elite) for phase in phases)


def _train_masked(model: nn.Module, masks: dict[str, torch.Tensor], data: _Data, config: SearchConfig, epochs: int,
                  seed: int, device: torch.device, progress: bool, label: str) -> nn.Module:
    """A copy of ``model`` trained ``epochs`` epochs with ``masks`` fixed through torch prune hooks (masked weights
    are zero in every forward and get no gradient), the epoch selected on validation."""
    from evoprune.train import train

    tuned = apply_masks(copy.deepcopy(model), masks)
    train_config = config.finetune.with_overrides(epochs=epochs)
    train(tuned, data, train_config, seed=seed, device=device, progress=progress, description=f"fine-tune {label}")
    return tuned.eval()


def _finetune(model: nn.Module, masks: dict[str, torch.Tensor], data: _Data, config: SearchConfig, epochs: int,
              seed: int, device: torch.device, progress: bool, label: str) -> tuple[dict[str, dict[str, float]], dict[str, torch.Tensor]]:
    """Fine-tune a copy of ``model`` with ``masks`` fixed; return val/test metrics and the weights, masks baked in."""
    from evoprune.train import evaluate

    tuned = _train_masked(model, masks, data, config, epochs, seed, device, progress, label)
    metrics = {split: evaluate(tuned, getattr(data, split).x, getattr(data, split).y, device=device) for split in ("val", "test")}
    for name in masks:
        prune.remove(tuned.get_submodule(name), "weight")
    return {k: {"loss": m.loss, "accuracy": m.accuracy} for k, m in metrics.items()}, _cpu_state(tuned)


def _adapt(model: nn.Module, masks: dict[str, torch.Tensor], data: _Data, config: SearchConfig, seed: int,
           device: torch.device) -> nn.Module:
    """Between phases: a copy of ``model`` fine-tuned with ``masks`` fixed, whose pruned weights keep their values
    (``weight_orig``: with no gradient and no weight decay they are untouched), so a later restore move brings a
    weight back as it was rather than as zero."""
    tuned = _train_masked(model, masks, data, config, config.finetune_between, seed, device, False, "between phases")
    for name in masks:
        module = tuned.get_submodule(name)
        original = module.weight_orig.detach().clone()
        prune.remove(module, "weight")
        with torch.no_grad():
            module.weight.copy_(original)
    return tuned


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _masked_state(model: nn.Module, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``model``'s weights with ``masks`` baked in (pruned weights set to zero)."""
    state = _cpu_state(model)
    for name, mask in masks.items():
        key = f"{name}.weight" if name else "weight"
        state[key] = state[key] * mask.cpu()
    return state


def resolve_speed_settings(config: SearchConfig, device: torch.device) -> SearchConfig:
    """Fill in the device-dependent defaults: chunk size and how GA populations are batched."""
    accelerator = device.type != "cpu"
    return config.with_overrides(
        batch_size=config.batch_size or (8192 if accelerator else 512),
        population_mode=("vmap" if accelerator else "loop") if config.population_mode == "auto" else None,
    )


def search_masks(
    model: nn.Module,
    data: _Data,
    *,
    algorithm: str = "sa",
    config: SearchConfig | str = "seed",
    layers: Sequence[str] | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = False,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> SearchResult:
    """Search weight masks of ``model`` (a trained classifier returning logits) with SA or GA, layer by layer.

    ``config`` is a ``SearchConfig`` or a preset name (``"seed"``, ``"improved"``); ``layers`` restricts the
    search to some conv/linear layers (default: all, in forward order). ``data`` is a
    ``evoprune.data.DatasetSplits`` (any object with ``train``/``val``/``test`` splits having ``x`` and ``y``).
    ``on_record`` receives every history record as it is logged. The result's masks are one bool tensor per
    searched layer's weight; biases are never pruned.
    """
    start_time = time.perf_counter()
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    cfg = preset(config) if isinstance(config, str) else config
    if prune.is_pruned(model):
        raise ConfigError("the model already carries torch.nn.utils.prune masks; call prune.remove() on its layers first")
    dev = resolve_device(device)
    cfg = resolve_speed_settings(cfg, dev)
    model.to(dev)
    was_training = model.training
    model.eval()
    try:
        graph = LayerGraph(model, layers)
        splits = {"selection": _selection_data(data, cfg, seed, dev), "test": (data.test.x.to(dev), data.test.y.to(dev))}

        selection_is_test = cfg.selection_split == "test" and len(splits["selection"][1]) == len(data.test.y)

        def metrics(net: nn.Module, masks: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
            """Plain full-forward metrics of ``net`` with ``masks`` on the selection and test splits (one pass when
            they are the same data)."""
            out = {"selection": _metrics_dict(evaluate_masked(net, masks, *splits["selection"], batch_size=cfg.batch_size))}
            out["test"] = out["selection"] if selection_is_test else _metrics_dict(
                evaluate_masked(net, masks, *splits["test"], batch_size=cfg.batch_size))
            if cfg.selection_split == "val":
                out["val"] = out["selection"]
            return out

        def make_evaluator(net_graph: LayerGraph) -> MaskEvaluator:
            return MaskEvaluator(net_graph, *splits["selection"], batch_size=cfg.batch_size,
                                 population_batch_size=cfg.population_batch_size, population_mode=cfg.population_mode)

        baseline = metrics(model, {})
        base_sel = Metrics(**baseline["selection"])
        phases = _phases(graph, cfg, algorithm, base_sel)
        warnings = [f"phase {p.label}: the unpruned model already breaks its cap ({p.constraint.describe()}; loss "
                    f"{base_sel.loss:.4f}, accuracy {base_sel.accuracy:.4f}), so nothing can be pruned there"
                    for p in phases if p.constraint.violated(base_sel.loss, base_sel.accuracy)]
        evaluator = make_evaluator(graph)
        dense_weights = {name: w.cpu() for name, w in evaluator.weights0.items()}
        state = SearchState(evaluator, Objective(base_sel.loss, cfg.eps, cfg.penalty), cfg.sparsity,
                            torch.Generator().manual_seed(seed), magnitude_bias=cfg.magnitude_bias,
                            early_stop=cfg.early_stop)
        working = model

        def adapt(phase_index: int) -> dict[str, float]:
            """Fine-tune between phases and carry on searching on the adapted network."""
            nonlocal working
            current = dict(state.evaluator.masks)
            working = _adapt(working, current, data, cfg, seed + 1000 * (phase_index + 1), dev)
            state.replace_evaluator(make_evaluator(LayerGraph(working, list(current))))
            after = _metrics_dict(evaluate_masked(working, current, *splits["selection"], batch_size=cfg.batch_size))
            # The loss term now measures change from the adapted network: the one the next phase starts from.
            state.objective = replace(state.objective, baseline_loss=after["loss"])
            return after

        search_start = time.perf_counter()
        phase_reports = _run_phases(state, phases, cfg, algorithm, progress, on_record,
                                    adapt if cfg.finetune_between > 0 else None)
        search_seconds = time.perf_counter() - search_start
        evaluator = state.evaluator
        masks = {name: mask.detach().cpu().clone() for name, mask in evaluator.masks.items()}
        final = metrics(working, masks)
        finetuned, state_dict = None, None
        if cfg.finetune_epochs > 0:
            finetuned, state_dict = _finetune(working, masks, data, cfg, cfg.finetune_epochs, seed, dev, progress,
                                              algorithm.upper())
        elif working is not model:
            state_dict = _masked_state(working, masks)
        # The baselines prune the unpruned model once and get as many fine-tuning epochs as the search used in all.
        finetune_total = cfg.finetune_epochs + cfg.finetune_between * (len(phases) - 1)
        baselines = []
        if cfg.baselines:
            generator = torch.Generator().manual_seed(seed + 1)
            for kind in BASELINE_KINDS:
                bmasks = baseline_masks(kind, dense_weights, masks, generator)
                row: dict[str, Any] = {"kind": kind, "sparsity_global": mask_sparsity(bmasks, "global"),
                                       "sparsity_mean_layer": mask_sparsity(bmasks, "mean_layer"), **metrics(model, bmasks)}
                if finetune_total > 0:
                    row["finetuned"], _ = _finetune(model, bmasks, data, cfg, finetune_total, seed, dev, progress, kind)
                baselines.append(row)
    finally:
        model.train(was_training)
    return SearchResult(
        algorithm=algorithm, config=cfg, seed=seed, masks=masks, selection_split=cfg.selection_split,
        baseline=baseline, final=final,
        sparsity={"global": mask_sparsity(masks, "global"), "mean_layer": mask_sparsity(masks, "mean_layer")},
        layers=_layer_rows(graph, masks, phase_reports), phases=phase_reports, evaluations=evaluator.evaluations,
        images=evaluator.images, head_forwards=evaluator.head_forwards, search_seconds=search_seconds,
        wall_time_s=time.perf_counter() - start_time, history=state.history, finetuned=finetuned,
        baselines=baselines, state_dict=state_dict, machine=machine(), warnings=warnings,
    )


def _run_phases(state: SearchState, phases: Sequence[Phase], cfg: SearchConfig, algorithm: str, progress: bool,
                on_record: Callable[[dict[str, Any]], None] | None,
                between: Callable[[int], dict[str, float]] | None = None) -> list[dict[str, Any]]:
    """Run every phase with a progress bar, calling ``between(index)`` (fine-tuning; it returns the selection
    metrics after it) after every phase but the last; return per-phase timing and end state."""
    reports = []
    with make_progress(progress) as bar:
        task = bar.add_task(f"{algorithm.upper()} {cfg.preset}", total=_planned_evaluations(phases, cfg, algorithm), status="")

        def record_hook(record: dict[str, Any]) -> None:
            bar.update(task, completed=record["evaluations"], status=(
                f"{record['phase']} cost {record['cost']:.4g} sparsity {record['sparsity']:.3f} "
                f"loss {record['loss']:.4f} acc {record['accuracy']:.4f}"))
            if on_record is not None:
                on_record(record)

        state.on_record = record_hook
        for index, phase in enumerate(phases):
            evaluator = state.evaluator
            t0, e0, i0 = time.perf_counter(), evaluator.evaluations, evaluator.images
            score = run_sa_phase(state, phase, cfg) if algorithm == "sa" else run_ga_phase(state, phase, cfg)
            seconds, evals = time.perf_counter() - t0, evaluator.evaluations - e0
            reports.append({
                "phase": phase.label, "layers": list(phase.layers), "constraint": phase.constraint.metric,
                "limit": phase.constraint.limit, "evaluations": evals, "seconds": seconds,
                "ms_per_evaluation": 1000 * seconds / max(evals, 1),
                "images_per_evaluation": (evaluator.images - i0) / max(evals, 1),
                **{f"end_{k}": v for k, v in score.as_dict().items()},
            })
            if between is not None and index < len(phases) - 1:
                bar.update(task, status=f"{phase.label}: fine-tuning {cfg.finetune_between} epoch(s) with the masks fixed")
                t1 = time.perf_counter()
                after = between(index)
                reports[-1].update({"finetune_seconds": time.perf_counter() - t1,
                                    **{f"finetuned_{k}": v for k, v in after.items()}})
    return reports


def _layer_rows(graph: LayerGraph, masks: dict[str, torch.Tensor], reports: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-layer sparsity with the cap, evaluations and time of the layer's own phase."""
    by_phase = {r["phase"]: r for r in reports}
    rows = []
    for layer, stats in zip(graph.layers, layer_stats(masks)):
        report = by_phase.get(layer.name, {})
        rows.append({**stats, "ref_index": layer.ref_index,
                     **{k: report.get(k) for k in ("constraint", "limit", "evaluations", "seconds", "ms_per_evaluation")}})
    return rows
