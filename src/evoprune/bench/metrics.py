"""``evoprune bench metrics``: every pruning metric prunes ResNet-20 and VGG to ≈50% of MACs, over seeds.

The protocol is the same for every metric, so only the channel choice differs:

* per seed, one baseline per model is trained from scratch (seeded; best validation epoch kept) and cached as a
  checkpoint, so every metric starts from the same weights;
* one-shot per-layer pruning; the MACs target is solved once for one uniform ratio (every prunable layer loses
  the same fraction, the classifier none), so every metric yields the *same architecture*;
* scoring on a class-balanced set from the training split, then the same fine-tuning budget for all, keeping the
  best validation epoch;
* test accuracy measured once per pruned model, reported as mean ± sample std over seeds; selection never looks
  at test. "val pruned" is the validation accuracy right after pruning, before fine-tuning.

Every finished run is written to the results JSON at once, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from evoprune.atomic import write_json, write_text
from evoprune.baseline import Baseline, BaselineSpec, DataSpec, get_baseline
from evoprune.bench.metrics_report import render_file, render_markdown, summarise
from evoprune.bench.metrics_settings import MODELS, PRESETS, MetricsBenchSettings
from evoprune.bench.registry import BenchReport, Option, RunOptions, Target, read_previous, split_list
from evoprune.data import DatasetSplits
from evoprune.device import machine
from evoprune.metrics import get_metric
from evoprune.prune import ChannelPruner, PruneSchedule
from evoprune.train import TrainConfig


def baseline_config(settings: MetricsBenchSettings) -> TrainConfig:
    """The baselines' recipe (the settings' ``train``, by default SGD + Nesterov, cosine, ±2 px shifts)."""
    return settings.train


def baseline_spec(settings: MetricsBenchSettings, key: str, seed: int) -> BaselineSpec:
    """What the baseline of table model ``key`` for ``seed`` is: model, data subsets split by ``seed``, recipe."""
    arch, extra = MODELS[key]
    extra = {**extra, "width": settings.vgg_width} if arch == "vgg" else dict(extra)
    data = DataSpec(settings.data, split_seed=seed, train_samples=settings.train_samples,
                    eval_samples=settings.eval_samples)
    return BaselineSpec(arch, data, baseline_config(settings), seed=seed, model_args=extra)


def baseline(settings: MetricsBenchSettings, key: str, seed: int, data: DatasetSplits | None, cache: Path, *,
             progress: bool, log: Callable[[str], None]) -> Baseline:
    """The trained baseline of ``key`` for ``seed``: from the checkpoint cache, else trained and cached.

    ``data``: this seed's data if another model loaded it already."""
    return get_baseline(baseline_spec(settings, key, seed), cache_dir=cache, data=data, device=settings.device,
                        progress=progress, log=lambda line: log(f"[{key} seed {seed}] {line}"))


def run(settings: MetricsBenchSettings, options: RunOptions) -> BenchReport:
    """Run (or resume) every model × seed × metric of ``settings``; write ``<out>/<name>.json`` and ``.md``."""
    for metric in settings.metrics:
        get_metric(metric)  # an unknown name or broken formula fails now, not after hours of training
    json_path, md_path = options.out / f"{options.name}.json", options.out / f"{options.name}.md"
    cache = options.cache or options.out / "baselines"
    previous = read_previous(json_path, options.existing)
    run_hash, base_hash = settings.run_hash(), settings.baseline_hash()
    runs = [r for r in previous.get("runs", []) if r.get("settings") == run_hash]
    if len(runs) < len(previous.get("runs", [])):
        options.log(f"ignoring {len(previous['runs']) - len(runs)} runs in {json_path} made with other settings")
    bases = {k: v for k, v in previous.get("baselines", {}).items() if v.get("settings") == base_hash}
    requested = [(key, seed, metric) for seed in settings.seeds for key in settings.models for metric in settings.metrics]
    finished = {(r["model"], r["seed"], r["metric"]) for r in runs}
    skipped = sum(item in finished for item in requested)
    options.log(f"bench metrics ({settings.name}): {len(requested)} pruning runs, {skipped} already done; "
                f"results in {json_path}")
    start = time.perf_counter()
    info = {"target": "metrics", "command": options.command, "machine": machine()}

    def payload() -> dict[str, Any]:
        compute = sum(r["seconds"] for r in runs) + sum(b["seconds"] for b in bases.values())
        return {"settings": settings.to_dict(), **info, "seconds": time.perf_counter() - start,
                "compute_seconds": compute, "table": summarise(runs, bases, settings), "runs": runs,
                "baselines": bases}

    count = skipped
    for seed in settings.seeds:
        data: DatasetSplits | None = None
        for key in settings.models:
            todo = [m for m in settings.metrics if (key, seed, m) not in finished]
            if not todo and f"{key}/{seed}" in bases:
                continue
            base = baseline(settings, key, seed, data, cache, progress=options.progress, log=options.log)
            model, data = base.model, base.data
            bases[f"{key}/{seed}"] = {**_row(base.meta), "settings": base_hash}
            write_json(json_path, payload())
            schedule = PruneSchedule(macs_target=settings.macs_target)
            for metric in todo:
                record, schedule = _prune_one(settings, key, seed, metric, model, data, schedule, options.progress)
                runs.append({**record, "settings": run_hash})
                finished.add((key, seed, metric))
                count += 1
                options.log(f"[{key} seed {seed}] {metric:>10}: val pruned {record['val_accuracy_pruned']:.4f} → test "
                            f"{record['test_accuracy']:.4f} (MACs kept {record['macs_kept']:.1%}, "
                            f"{record['seconds']:.0f} s) [{count}/{len(requested)}]")
                write_json(json_path, payload())  # resumable after every run
    final = payload()
    write_json(json_path, final)
    text = render_markdown(final)
    write_text(md_path, text)
    return BenchReport(json_path, md_path, text, runs_done=len(requested) - skipped, runs_skipped=skipped)


def _row(meta: dict[str, Any]) -> dict[str, Any]:
    """A baseline's entry in the results JSON."""
    return {"val_accuracy": meta["val_accuracy"], "test_accuracy": meta["test_accuracy"],
            "seconds": meta["train_seconds"], "best_epoch": meta["best_epoch"]}


def _prune_one(settings: MetricsBenchSettings, key: str, seed: int, metric: str, model: torch.nn.Module,
               data: DatasetSplits, schedule: PruneSchedule, progress: bool) -> tuple[dict[str, Any], PruneSchedule]:
    """Prune a copy of ``model`` with ``metric`` and fine-tune it; the record, and the schedule with its solved ratio."""
    t0 = time.perf_counter()
    pruner = ChannelPruner(metric, schedule=schedule, scoring_samples=settings.scoring_samples,
                           finetune=settings.finetune, seed=seed, device=settings.device,
                           latency_batch_sizes=(), evaluate_before=False, progress=progress).prune(model, data)
    res = pruner.result_
    record = {
        "model": key, "seed": seed, "metric": metric,
        "test_accuracy": res.after.test_accuracy, "val_accuracy": res.after.val_accuracy,
        "val_accuracy_pruned": res.steps[0].val_accuracy_pruned,
        "macs_kept": res.macs_kept, "params_kept": res.params_kept, "ratio": pruner.schedule_.ratio,
        "widths": res.after.widths, "seconds": time.perf_counter() - t0,
    }
    # Per-layer ranking: the ratio meeting the MACs target is the same for every metric, so solve it only once.
    return record, pruner.schedule_.replace(macs_target=None)


TARGET = Target(
    name="metrics",
    help="every pruning metric at ≈50% of MACs on ResNet-20 and VGG (the transfer table), mean ± std over seeds",
    presets=PRESETS,
    run=run,
    render=render_file,
    set_example="finetune.lr=0.02",
    options=(
        Option("--metrics", "metrics", "comma list of metric names or formulas (default: the preset's)", split_list,
               "A,B,..."),
        Option("--models", "models", "comma list of resnet20, vgg16 (default: the preset's)", split_list, "A,B"),
    ),
)
