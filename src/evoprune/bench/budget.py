"""``evoprune bench budget``: a layer-budget search against uniform ratios, global ranking and the present
``--macs-target`` schedule, after the same fine-tuning (issue 14).

Per (network, seed) a baseline is trained (or read from the content-addressed cache); per metric and MACs target
one :func:`~evoprune.search.channels.search_channels` run measures and fine-tunes all four rows of the table
(``finetune_references``), so they share the metric's scores, the BN recalibration set and the fine-tuning recipe
and seed; selection is on validation, test measured once per row. Each finished (network, seed, metric, target)
record is appended to the results JSON, so a killed run resumes where it stopped; the Markdown report is rendered
from the JSON alone (:mod:`evoprune.bench.budget_report`).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from evoprune.atomic import write_json, write_text
from evoprune.baseline import BaselineSpec, DataSpec, get_baseline
from evoprune.bench.budget_report import render_file, render_markdown
from evoprune.bench.budget_settings import PRESETS, ROWS, BudgetBenchSettings
from evoprune.bench.registry import METRICS_OPTION, MODELS_OPTION, BenchReport, RunOptions, Target, read_previous
from evoprune.config import from_data, to_data
from evoprune.data import DatasetSplits
from evoprune.device import machine
from evoprune.metrics import get_metric
from evoprune.prune import ChannelPruner, PruneSchedule
from evoprune.search.channels import ChannelSearchConfig, search_channels


def _schedule_widths(model: torch.nn.Module, data: DatasetSplits, metric: str, target: float,
                     settings: BudgetBenchSettings, seed: int) -> dict[str, int]:
    """The widths ``evoprune prune --macs-target`` reaches (its solved uniform ratio), nothing fine-tuned."""
    pruner = ChannelPruner(metric, schedule=PruneSchedule(macs_target=target), scoring_samples=settings.scoring_samples,
                           finetune=None, seed=seed, device="cpu", latency_batch_sizes=(), evaluate_test=False,
                           evaluate_before=False)
    return dict(pruner.prune(model, data).result_.after.widths)


def _measure(settings: BudgetBenchSettings, model: torch.nn.Module, data: DatasetSplits, metric: str, target: float,
             seed: int, progress: bool) -> dict[str, Any]:
    """One record: the four rows' MACs kept, validation after recalibration, fine-tuned validation and test."""
    config = from_data(ChannelSearchConfig, {
        "algorithm": settings.algorithm, "metric": metric, "macs_target": target, "evaluations": settings.evaluations,
        "val_samples": settings.val_samples, "recalibration_batches": settings.recalibration_batches,
        "scoring_samples": settings.scoring_samples, "finetune": to_data(settings.finetune),
        "finetune_samples": settings.finetune_samples, "finetune_references": True})
    widths = _schedule_widths(model, data, metric, target, settings, seed)
    result = search_channels(model, data, config, seed=seed, progress=progress, references={"macs_schedule": widths})
    rows = {}
    for row in ROWS:
        record = result.record("chosen" if row == "searched" else row)
        tuned = result.finetuned["chosen" if row == "searched" else row]
        rows[row] = {"keep": record["keep"], "macs_kept": record["macs_kept"], "params_kept": record["params_kept"],
                     "meets_target": record["macs"] <= result.budget["limit"],
                     "val_accuracy_recalibrated": record["accuracy"], "val_accuracy": tuned["val_accuracy"],
                     "test_accuracy": tuned["test_accuracy"], "test_loss": tuned["test_loss"]}
    searched = [r for r in result.records if r["origin"] == "search"]
    return {"rows": rows, "chosen_origin": result.record("chosen")["origin"], "evaluations": len(searched),
            "groups": [g["name"] for g in result.groups], "search_seconds": result.seconds["search"],
            "seconds_breakdown": result.seconds}


def run(settings: BudgetBenchSettings, options: RunOptions) -> BenchReport:
    """Run (or resume) every network × seed × metric × target of ``settings``; write ``<out>/<name>.json``, ``.md``."""
    for metric in settings.metrics:
        get_metric(metric)  # an unknown name or broken formula fails now, not after hours of training
    json_path, md_path = options.out / f"{options.name}.json", options.out / f"{options.name}.md"
    cache = options.cache or options.out / "baselines"
    previous = read_previous(json_path, options.existing)
    records = [r for r in previous.get("records", [])
               if r.get("settings") == settings.cell_hash(r.get("network", "")) and r.get("network") in settings.models]
    finished = {(r["network"], r["seed"], r["metric"], r["target"]) for r in records}
    requested = [(key, seed, metric, target) for seed in settings.seeds for key in settings.models
                 for metric in settings.metrics for target in settings.targets]
    skipped = sum(item in finished for item in requested)
    options.log(f"bench budget ({settings.name}): {len(requested)} searches, {skipped} already done; results in "
                f"{json_path}")
    start = time.perf_counter()
    info = {"target": "budget", "command": options.command, "machine": machine()}

    def payload() -> dict[str, Any]:
        return {"settings": to_data(settings), **info, "seconds": time.perf_counter() - start,
                "compute_seconds": sum(r["seconds"] for r in records), "records": records}

    count = skipped
    for seed in settings.seeds:
        data: DatasetSplits | None = None
        for key in settings.models:
            todo = [(m, t) for m in settings.metrics for t in settings.targets if (key, seed, m, t) not in finished]
            if not todo:
                continue
            arch, args = settings.model(key)
            spec = BaselineSpec(arch, DataSpec(settings.data, split_seed=seed, train_samples=settings.train_samples,
                                               eval_samples=settings.eval_samples), settings.train, seed=seed,
                                model_args=args)
            base = get_baseline(spec, cache_dir=cache, data=data, device=settings.device, progress=options.progress,
                                log=lambda line, key=key, seed=seed: options.log(f"[{key} seed {seed}] {line}"))
            model, data = base.model.to(torch.device("cpu")).eval(), base.data
            for metric, target in todo:
                tick = time.perf_counter()
                measured = _measure(settings, model, data, metric, target, seed, options.progress)
                records.append({"network": key, "seed": seed, "metric": metric, "target": target,
                                "settings": settings.cell_hash(key), "baseline_test_accuracy": base.meta["test_accuracy"],
                                **measured, "seconds": time.perf_counter() - tick})
                count += 1
                rows = measured["rows"]
                options.log(f"[{key} seed {seed}] {metric} at {target:.0%} MACs: test searched "
                            f"{rows['searched']['test_accuracy']:.4f}, uniform {rows['uniform']['test_accuracy']:.4f}, "
                            f"global {rows['global']['test_accuracy']:.4f}, --macs-target "
                            f"{rows['macs_schedule']['test_accuracy']:.4f} ({measured['search_seconds']:.0f} s search)"
                            f" [{count}/{len(requested)}]")
                write_json(json_path, payload())  # resumable after every record
    final = payload()
    write_json(json_path, final)
    text = render_markdown(final)
    write_text(md_path, text)
    return BenchReport(json_path, md_path, text, runs_done=len(requested) - skipped, runs_skipped=skipped)


TARGET = Target(
    name="budget",
    help="layer-budget search vs uniform ratios, global ranking and the --macs-target schedule, same metric and "
    "fine-tuning, on ResNet-20, VGG-16 x0.5 and a MobileNetV2-style net at 50% and 30% of MACs",
    presets=PRESETS,
    run=run,
    render=render_file,
    set_example="evaluations=300",
    options=(METRICS_OPTION, MODELS_OPTION),
)
