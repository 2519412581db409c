"""``evoprune bench criteria``: a yardstick that can tell pruning functions apart (issue 12).

Per (network, seed) cell a baseline is trained (or read from the content-addressed cache), its oracle is computed
once (each channel's validation-loss increase when it alone is removed), and every metric and reference row is
measured on it: Spearman/Kendall correlation of its channel scores with the oracle per group, an accuracy-vs-MACs
curve at uniform per-layer ratios (test split, right after pruning and after BatchNorm recalibration), and for the
``finetune_seeds`` the validation/test accuracy after a short fine-tune at ``finetune_ratios``. Each finished
(network, seed, metric) record is appended to the results JSON, so a killed run resumes where it stopped; the
Markdown report and plots are rendered from the JSON alone (:mod:`evoprune.bench.criteria_report`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from evoprune.atomic import write_json, write_text
from evoprune.baseline import Baseline, BaselineSpec, DataSpec, get_baseline
from evoprune.bench.criteria_report import render_file, render_markdown, write_plots
from evoprune.bench.criteria_settings import PRESETS, CriteriaBenchSettings
from evoprune.bench.registry import METRICS_OPTION, MODELS_OPTION, BenchReport, RunOptions, Target, read_previous
from evoprune.criteria import cached_oracle, group_correlations, group_scores, metric_curve, summarise_correlations
from evoprune.criteria.curves import prune_uniform
from evoprune.data import DatasetSplits, Split
from evoprune.device import machine
from evoprune.metrics import get_metric
from evoprune.prune import ModelGraph, count_macs_params
from evoprune.train import evaluate, train

#: Torch-Pruning's own group importances, as external reference rows.
_TP_IMPORTANCES: dict[str, Callable[[], tp.importance.Importance]] = {
    "tp_l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
    "tp_l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
    "tp_bn_scale": lambda: tp.importance.BNScaleImportance(),
    "tp_taylor": lambda: tp.importance.GroupTaylorImportance(),
}


def baseline(settings: CriteriaBenchSettings, key: str, seed: int, data: DatasetSplits | None, cache: Path, *,
             progress: bool, log: Callable[[str], None]) -> Baseline:
    """The trained network ``key`` of cell ``seed`` (its split and training seed), from the cache or trained."""
    arch, args = settings.model(key)
    spec = BaselineSpec(arch, DataSpec(settings.data, split_seed=seed, train_samples=settings.train_samples,
                                       eval_samples=settings.eval_samples), settings.train, seed=seed, model_args=args)
    return get_baseline(spec, cache_dir=cache, data=data, device=settings.device, progress=progress,
                        log=lambda line: log(f"[{key} seed {seed}] {line}"))


def tp_group_scores(model: nn.Module, name: str, data: DatasetSplits, *, samples: int, seed: int) -> dict[str, torch.Tensor]:
    """Per prunable group, the scores of one of Torch-Pruning's group importances (Taylor: gradients of the
    cross-entropy on the same class-balanced scoring set the library metrics use)."""
    from evoprune.metrics import scoring_set

    work = copy.deepcopy(model).eval()
    device = next(work.parameters()).device
    graph = ModelGraph(work, data.train.x[:1].to(device))
    importance = _TP_IMPORTANCES[name]()
    if name == "tp_taylor":
        x, y = scoring_set(data.train.x, data.train.y, size=samples, seed=seed)
        work.zero_grad()
        torch.nn.functional.cross_entropy(work(x.to(device)), y.to(device)).backward()
    out = {}
    for group in graph.prunable_groups():
        scores = importance(graph.tp_group(group))
        out[group.name] = (torch.zeros(group.width) if scores is None else scores.detach().float().cpu())
    return out


def _train_subset(data: DatasetSplits, samples: int | None, seed: int) -> DatasetSplits:
    """``data`` with a seeded random subset of ``samples`` training images (all of them for None)."""
    if samples is None or samples >= len(data.train.y):
        return data
    keep = torch.randperm(len(data.train.y), generator=torch.Generator().manual_seed(seed))[:samples]
    return replace(data, train=Split(data.train.x[keep], data.train.y[keep]))


def _measure(settings: CriteriaBenchSettings, name: str, model: nn.Module, data: DatasetSplits, oracle: Any,
             seed: int, progress: bool) -> dict[str, Any]:
    """Everything measured for one metric on one cell: correlations, curve, fine-tuned points."""
    start = time.perf_counter()
    if name == "oracle":
        scores = {g: s.clone() for g, s in oracle.increase.items()}
    elif name in _TP_IMPORTANCES:
        scores = tp_group_scores(model, name, data, samples=settings.scoring_samples, seed=seed)
    else:
        scores = group_scores(model, name, data, samples=settings.scoring_samples, seed=seed)
    scores = {g: s.detach().float().cpu() for g, s in scores.items()}
    per_group = group_correlations({g: scores[g].numpy() for g in oracle.increase},
                                   {g: s.numpy() for g, s in oracle.increase.items()})
    curve = metric_curve(model, name, data, ratios=settings.ratios, scores=scores, seed=seed,
                         recalibration_batches=settings.recalibration_batches, device=settings.device)
    finetuned = []
    if seed in settings.finetune_seeds:
        tune_data = _train_subset(data, settings.finetune_samples, seed)
        for ratio in settings.finetune_ratios:
            pruned = prune_uniform(model, scores, ratio, data.train.x[:1])
            result = train(pruned, tune_data, settings.finetune, seed=seed, device=settings.device, progress=progress,
                           description=f"fine-tune {name} {ratio:.0%}")
            test = evaluate(pruned, data.test.x, data.test.y)
            finetuned.append({"ratio": ratio, "val_accuracy": result.best_val_accuracy, "test_accuracy": test.accuracy,
                              "test_loss": test.loss})
    return {"correlations": summarise_correlations(per_group), "per_group": per_group,
            "curve": [vars(p) for p in curve], "finetuned": finetuned, "seconds": time.perf_counter() - start}


def run(settings: CriteriaBenchSettings, options: RunOptions) -> BenchReport:
    """Run (or resume) every network × seed × metric of ``settings``; write ``<out>/<name>.json``, ``.md``, PNGs."""
    for metric in settings.metrics:
        get_metric(metric)  # an unknown name or broken formula fails now, not after hours of training
    json_path, md_path = options.out / f"{options.name}.json", options.out / f"{options.name}.md"
    cache = options.cache or options.out / "baselines"
    previous = read_previous(json_path, options.existing)
    rows = list(settings.references[:1]) + list(settings.metrics) + list(settings.references[1:])
    records = [r for r in previous.get("records", [])
               if r.get("settings") == settings.cell_hash(r.get("network", "")) and r.get("network") in settings.models]
    cells = {k: v for k, v in previous.get("cells", {}).items() if v.get("settings") == settings.cell_hash(k.split("/")[0])}
    finished = {(r["network"], r["seed"], r["metric"]) for r in records}
    requested = [(key, seed, name) for seed in settings.seeds for key in settings.models for name in rows]
    skipped = sum(item in finished for item in requested)
    options.log(f"bench criteria ({settings.name}): {len(requested)} measurements, {skipped} already done; "
                f"results in {json_path}")
    start = time.perf_counter()
    info = {"target": "criteria", "command": options.command, "machine": machine()}
    if skipped == len(requested) and "command" in previous:
        # nothing is measured here (a --resume that only re-renders): the file keeps who measured it, and how long
        info = {**info, "command": previous["command"], "machine": previous.get("machine", info["machine"])}
        start -= previous.get("seconds", 0.0)

    def payload() -> dict[str, Any]:
        return {"settings": settings.to_dict(), **info, "seconds": time.perf_counter() - start,
                "compute_seconds": sum(r["seconds"] for r in records) + sum(c["seconds"] for c in cells.values()),
                "cells": cells, "records": records}

    count = skipped
    for seed in settings.seeds:
        data: DatasetSplits | None = None
        for key in settings.models:
            todo = [n for n in rows if (key, seed, n) not in finished]
            if not todo:
                continue
            tick = time.perf_counter()
            base = baseline(settings, key, seed, data, cache, progress=options.progress, log=options.log)
            model, data = base.model.to(torch.device("cpu")).eval(), base.data
            oracle = cached_oracle(model, data.val.x, data.val.y, cache / "oracle" / f"{base.checkpoint.stem}.pt",
                                   samples=settings.oracle_samples, seed=seed, device=settings.device,
                                   progress=options.progress)
            test = evaluate(model, data.test.x, data.test.y)
            macs, params = count_macs_params(model, data.train.x[:1])
            cells[f"{key}/{seed}"] = {"settings": settings.cell_hash(key), "test_accuracy": test.accuracy,
                                      "test_loss": test.loss, "val_accuracy": base.meta.get("val_accuracy"),
                                      "macs": macs, "params": params, "oracle_baseline_loss": oracle.baseline_loss,
                                      "oracle_seconds": oracle.seconds, "seconds": time.perf_counter() - tick,
                                      "groups": {g: int(s.numel()) for g, s in oracle.increase.items()}}
            options.log(f"[{key} seed {seed}] unpruned test {test.accuracy:.4f}; oracle of "
                        f"{len(oracle.increase)} groups in {oracle.seconds:.0f} s"
                        + (" (computed before, read from the cache)" if oracle.reused else ""))
            for name in todo:
                measured = _measure(settings, name, model, data, oracle, seed, options.progress)
                records.append({"network": key, "seed": seed, "metric": name, "settings": settings.cell_hash(key),
                                **measured})
                finished.add((key, seed, name))
                count += 1
                last = measured["curve"][-1]
                options.log(f"[{key} seed {seed}] {name:>14}: rho {measured['correlations']['spearman_mean']:+.3f}; "
                            f"at {last['ratio']:.0%} test {last['accuracy_pruned']:.4f} → recalibrated "
                            f"{last['accuracy_recalibrated']:.4f} ({measured['seconds']:.0f} s) [{count}/{len(requested)}]")
                write_json(json_path, payload())  # resumable after every measurement
    final = payload()
    write_json(json_path, final)
    plots = write_plots(final, options.out, options.name)
    text = render_markdown(final, plots={k: p.name for k, p in plots.items()})
    write_text(md_path, text)
    return BenchReport(json_path, md_path, text, runs_done=len(requested) - skipped, runs_skipped=skipped)


TARGET = Target(
    name="criteria",
    help="tell pruning functions apart: oracle correlation, accuracy-vs-MACs curves with BN recalibration, "
    "fine-tuned points and paired statistics, on ResNet-20, VGG-16 x0.5 and a MobileNetV2-style net",
    presets=PRESETS,
    run=run,
    render=render_file,
    set_example="ratios=[0.1,0.3]",
    options=(METRICS_OPTION, MODELS_OPTION),
)
