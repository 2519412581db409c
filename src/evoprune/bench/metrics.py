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
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from evoprune.bench.common import machine, write_json, write_text
from evoprune.bench.metrics_report import render_file, render_markdown, summarise
from evoprune.bench.metrics_settings import MODELS, PRESETS, MetricsBenchSettings
from evoprune.bench.registry import BenchReport, Option, RunOptions, Target, read_previous, split_list
from evoprune.checkpoint import load_checkpoint, save_checkpoint
from evoprune.data import DatasetSplits, Split, load_dataset
from evoprune.metrics import get_metric
from evoprune.models import build_model
from evoprune.prune import ChannelPruner, PruneSchedule
from evoprune.train import TrainConfig, evaluate, train


def baseline_config(settings: MetricsBenchSettings, seed: int) -> TrainConfig:
    """SGD + Nesterov, cosine decay, ±2 px shifts (no flips: Fashion items have a handedness)."""
    return TrainConfig(epochs=settings.train_epochs, batch_size=128, optimizer="sgd", lr=0.05, momentum=0.9,
                       nesterov=True, weight_decay=5e-4, schedule="cosine", augment="shift", seed=seed)


def finetune_config(settings: MetricsBenchSettings, seed: int) -> TrainConfig:
    return TrainConfig(epochs=settings.finetune_epochs, batch_size=128, optimizer="sgd", lr=settings.finetune_lr,
                       momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="cosine", augment="shift", seed=seed)


def load_data(settings: MetricsBenchSettings, seed: int) -> DatasetSplits:
    """The dataset for ``seed``, with seeded random subsets when the settings ask for fewer images."""
    data = load_dataset(settings.data, seed=seed)

    def head(split: Split, n: int | None) -> Split:
        if n is None or n >= len(split):
            return split
        return split.subset(torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n])

    return replace(data, train=head(data.train, settings.train_samples), val=head(data.val, settings.eval_samples),
                   test=head(data.test, settings.eval_samples))


def baseline(settings: MetricsBenchSettings, key: str, seed: int, data: DatasetSplits, cache: Path, *,
             progress: bool, log: Callable[[str], None]) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained baseline of ``key`` for ``seed``: from the checkpoint cache, else trained and cached."""
    arch, extra = MODELS[key]
    extra = {**extra, "width": settings.vgg_width} if arch == "vgg" else dict(extra)
    kwargs = {"in_channels": data.in_channels, "num_classes": data.num_classes, "image_size": data.image_size, **extra}
    path = cache / f"{key}-{data.name}-s{seed}-{settings.baseline_hash()}.pt"
    if path.is_file():
        model, payload = load_checkpoint(path)
        return model, payload["meta"]
    torch.manual_seed(seed)
    model = build_model(arch, **kwargs)
    log(f"[{key} seed {seed}] training the baseline ({settings.train_epochs} epochs)")
    result = train(model, data, baseline_config(settings, seed), device=settings.device, progress=progress,
                   description=f"{key} s{seed}")
    meta = {"val_accuracy": result.best_val_accuracy, "test_accuracy": evaluate(model, data.test.x, data.test.y).accuracy,
            "seconds": result.seconds, "best_epoch": result.best_epoch}
    save_checkpoint(path, model.cpu(), arch=arch, arch_kwargs=kwargs, meta=meta)
    return model, meta


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
            data = data if data is not None else load_data(settings, seed)
            model, meta = baseline(settings, key, seed, data, cache, progress=options.progress, log=options.log)
            bases[f"{key}/{seed}"] = {**meta, "settings": base_hash}
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


def _prune_one(settings: MetricsBenchSettings, key: str, seed: int, metric: str, model: torch.nn.Module,
               data: DatasetSplits, schedule: PruneSchedule, progress: bool) -> tuple[dict[str, Any], PruneSchedule]:
    """Prune a copy of ``model`` with ``metric`` and fine-tune it; the record, and the schedule with its solved ratio."""
    t0 = time.perf_counter()
    pruner = ChannelPruner(metric, schedule=schedule, scoring_samples=settings.scoring_samples,
                           finetune=finetune_config(settings, seed), seed=seed, device=settings.device,
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
    options=(
        Option("--metrics", "metrics", "comma list of metric names or formulas (default: the preset's)", split_list,
               "A,B,..."),
        Option("--models", "models", "comma list of resnet20, vgg16 (default: the preset's)", split_list, "A,B"),
    ),
)
