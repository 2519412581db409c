"""``evoprune prune``: structurally prune a model with any metric; report accuracy, MACs, params, latency; save."""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from evoprune.atomic import check_output, write_atomic
from evoprune.baseline import DataSpec, checkpoint_data
from evoprune.checkpoint import load_checkpoint, pruning_history_of, save_checkpoint
from evoprune.cli.common import add_runtime_args, check_fits_data, parse_key_values
from evoprune.config import from_data, to_data, with_overrides
from evoprune.errors import ConfigError
from evoprune.prune import (
    PRESETS,
    ChannelPruner,
    ModelGraph,
    PresetSchedule,
    PruneResult,
    PruneSchedule,
    export_onnx,
)
from evoprune.prune.table import read_table
from evoprune.train import TRAIN_PRESETS, TrainConfig, get_train_preset


def register(subparsers: argparse._SubParsersAction) -> None:
    presets = "; ".join(f"{p.name}: {p.description}" for p in PRESETS.values())
    p = subparsers.add_parser(
        "prune",
        help="structurally prune a model with any metric, fine-tune, report and save it",
        description="Remove whole channels (Torch-Pruning dependency graph, so residual and concatenated layers "
        "work) ranked by a metric name or formula, step by step with fine-tuning; report accuracy (validation for "
        f"selection, test once), MACs, parameters and CPU latency before and after. Schedule presets: {presets}.",
    )
    src = p.add_argument_group("model")
    src.add_argument("--checkpoint", type=Path, default=None, help="checkpoint to prune (from `evoprune train` or a pruned one)")
    src.add_argument("--model", default=None, help="zoo model to prune untrained (train-free) when no --checkpoint")
    src.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="zoo model argument, e.g. depth=16")
    data = p.add_argument_group("data")
    data.add_argument("--data", default=None,
                      help="dataset (default: the checkpoint's; with --model: mnist5k); must match the checkpoint's")
    data.add_argument("--data-dir", default=None, help="folder of the dataset's files (default: the checkpoint's)")
    data.add_argument("--split-seed", type=int, default=None,
                      help="seed of the train/validation split (default: the checkpoint's, else --seed)")
    data.add_argument("--val-fraction", type=float, default=None,
                      help="share of the training set held out for validation (default: the checkpoint's, else 0.2)")
    data.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                      help="standardise inputs (default: as the checkpoint was trained)")
    how = p.add_argument_group("what to remove")
    how.add_argument("--metric", default="eq3", help="metric name or formula (default eq3); see `evoprune metrics list`")
    how.add_argument("--schedule", default=None, choices=sorted(PRESETS), help="a paper schedule preset")
    how.add_argument("--ratio", type=float, default=None, help="fraction of every prunable layer's channels to remove")
    how.add_argument("--ratio-table", action="append", metavar="LAYER=RATIO",
                     help="per-layer ratio; LAYER may be a glob such as 'layer*.*.conv1' (repeatable)")
    how.add_argument("--counts", action="append", metavar="LAYER=N1,N2,...",
                     help="exact channels removed per step for a layer (repeatable)")
    how.add_argument("--steps", type=int, default=None, help="prune steps, each followed by fine-tuning (default 1)")
    how.add_argument("--table", type=Path, default=None, metavar="FILE",
                     help="a pruning table (channels each group loses, in one step) written by `evoprune search "
                     "--space channels` (its tables/*.json)")
    how.add_argument("--global", dest="global_ranking", action="store_true", help="rank channels across layers")
    how.add_argument("--macs-target", type=float, default=None, help="keep this fraction of MACs (solves for --ratio)")
    how.add_argument("--ignore", action="append", metavar="LAYER", help="never prune this layer or glob (repeatable)")
    how.add_argument("--min-channels", type=int, default=None, help="narrowest width a layer may keep (default 1)")
    how.add_argument("--scoring-samples", type=int, default=1000, help="class-balanced scoring set size (default 1000)")
    how.add_argument("--coupling", choices=["mean", "max", "params", "root", "last"], default="mean",
                     help="combine coupled layers' scores (see the guide)")
    ft = p.add_argument_group("fine-tuning (after every step, best validation epoch kept)")
    ft.add_argument("--finetune-preset", default="finetune", choices=sorted(TRAIN_PRESETS), help="training preset")
    ft.add_argument("--finetune-epochs", type=int, default=None, help="epochs per step (0: no fine-tuning)")
    ft.add_argument("--lr", type=float, default=None)
    ft.add_argument("--batch-size", type=int, default=None)
    ft.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override the fine-tuning recipe, e.g. finetune.optimizer=sgd or finetune.momentum=0.9 "
                    "(applied after the options above)")
    out = p.add_argument_group("output")
    out.add_argument("--latency-batch", type=int, default=64, help="larger batch for CPU latency (also batch 1)")
    out.add_argument("--latency-repeats", type=int, default=30, help="timed runs per batch size (median reported)")
    out.add_argument("--no-latency", action="store_true", help="skip latency timing")
    out.add_argument("--out", type=Path, default=None, help="pruned checkpoint (default runs/<model>-<data>-<metric>-pruned.pt)")
    out.add_argument("--json", type=Path, default=None, help="results JSON (default: next to --out)")
    out.add_argument("--onnx", type=Path, default=None, help="also export the pruned model to this ONNX file")
    add_runtime_args(p)
    p.set_defaults(func=run)


@dataclass(frozen=True)
class PruneSettings:
    """What ``evoprune prune --set`` reaches: the fine-tuning recipe (the schedule has its own options)."""

    finetune: TrainConfig


def _schedule(args: argparse.Namespace) -> PruneSchedule | PresetSchedule:
    ratios = {k: float(v) for k, v in parse_key_values(args.ratio_table, option="--ratio-table").items()}
    counts = {k: tuple(v) if isinstance(v, tuple) else (v,) for k, v in parse_key_values(args.counts, option="--counts").items()}
    overrides = {"ratios": ratios, "counts": counts, "ratio": args.ratio, "steps": args.steps,
                 "macs_target": args.macs_target, "min_channels": args.min_channels,
                 "ignore": tuple(args.ignore) if args.ignore else None, "global_ranking": args.global_ranking or None}
    overrides = {k: v for k, v in overrides.items() if v not in (None, {}, ())}
    if args.table is not None:
        if args.schedule or overrides:
            raise ConfigError("--table fixes what is removed; drop --schedule/--ratio/--ratio-table/--counts/--steps/"
                              "--macs-target/--global/--ignore/--min-channels, or drop --table")
        return PruneSchedule(counts=read_table(args.table).counts(), name=f"table {args.table.name}")
    if args.schedule:
        if any(k in overrides for k in ("ratio", "ratios", "counts", "steps", "macs_target")):
            raise ConfigError(f"--schedule {args.schedule} fixes what is removed; drop --ratio/--ratio-table/--counts/"
                              "--steps/--macs-target, or drop --schedule")
        return PresetSchedule(args.schedule, **overrides)
    if not any(k in overrides for k in ("ratio", "ratios", "counts", "macs_target")):
        raise ConfigError("say what to remove: --ratio R, --ratio-table LAYER=R, --counts LAYER=N,..., --macs-target F, --table FILE "
                          f"or --schedule ({', '.join(sorted(PRESETS))})")
    if counts and "steps" not in overrides:
        overrides["steps"] = len(next(iter(counts.values())))
    return PruneSchedule(**overrides)


def _load(args: argparse.Namespace) -> tuple[Any, str, dict[str, Any], dict[str, Any], list[list[Any]]]:
    """(model, arch, arch_kwargs, checkpoint meta, prior pruning history)."""
    if args.checkpoint is not None:
        if args.model:
            raise ConfigError("give either --checkpoint or --model, not both")
        model, payload = load_checkpoint(args.checkpoint)
        return model, payload["arch"], dict(payload["arch_kwargs"]), dict(payload.get("meta", {})), pruning_history_of(payload)
    if not args.model:
        raise ConfigError("nothing to prune: give --checkpoint PATH (see `evoprune train`) or --model NAME (untrained)")
    return None, args.model, parse_key_values(args.model_arg, option="--model-arg"), {}, []


def _check_options(args: argparse.Namespace) -> None:
    for flag, value in (("--latency-batch", args.latency_batch), ("--latency-repeats", args.latency_repeats),
                        ("--scoring-samples", args.scoring_samples)):
        if value < 1:
            raise ConfigError(f"{flag} must be ≥ 1, got {value}")
    if args.onnx is not None:
        check_output(args.onnx, option="--onnx")


def run(args: argparse.Namespace) -> int:
    import torch

    _check_options(args)
    model, arch, arch_kwargs, meta, history = _load(args)
    console = Console()
    given = {"dataset": args.data, "data_dir": args.data_dir, "split_seed": args.split_seed,
             "val_fraction": args.val_fraction, "normalize": args.normalize}
    if args.checkpoint is not None:
        data_spec, line = checkpoint_data(meta, source=f"checkpoint {args.checkpoint}", fallback_seed=args.seed, **given)
        console.print(line)
    else:
        data_spec = from_data(DataSpec, {"dataset": "mnist5k", "split_seed": args.seed,
                                         **{k: v for k, v in given.items() if v is not None}})
    data = data_spec.load()
    if args.checkpoint is not None:
        check_fits_data(arch_kwargs, data, source=f"checkpoint {args.checkpoint}")
    if model is None:
        from evoprune.models import build_model

        arch_kwargs = {"in_channels": data.in_channels, "num_classes": data.num_classes, "image_size": data.image_size,
                       **arch_kwargs}
        torch.manual_seed(args.seed)
        model = build_model(arch, **arch_kwargs)
    schedule = _schedule(args)
    if args.table is not None:
        groups = ModelGraph(model, data.train.x[:1]).prunable_groups()
        read_table(args.table).check_fits(groups, where=f"--table {args.table}")
    metric_tag = re.sub(r"[^A-Za-z0-9_]+", "", args.metric)[:24] if re.fullmatch(r"[\w-]+", args.metric) else "formula"
    out = args.out or Path("runs") / f"{arch}-{data.name}-{metric_tag}-pruned.pt"
    json_path = args.json or out.with_suffix(".json")
    check_output(out, option="--out")
    check_output(json_path, option="--json")
    recipe = get_train_preset(args.finetune_preset).with_overrides(
        epochs=args.finetune_epochs, lr=args.lr, batch_size=args.batch_size)
    recipe = with_overrides(PruneSettings(recipe), args.overrides).finetune
    finetune = recipe if recipe.epochs > 0 else None
    pruner = ChannelPruner(
        args.metric, schedule=schedule, scoring_samples=args.scoring_samples, coupling=args.coupling,
        finetune=finetune, seed=args.seed, device=args.device, progress=not args.quiet,
        latency_batch_sizes=() if args.no_latency else (1, args.latency_batch), latency_repeats=args.latency_repeats,
    )
    console.print(f"pruning [bold]{arch}[/] on {data.describe()} with metric [bold]{args.metric}[/]")
    pruner.prune(model, data, prior_history=history)
    result = pruner.result_
    save_checkpoint(out, pruner.model_, arch=arch, arch_kwargs=arch_kwargs, pruning_history=pruner.pruning_history_,
                    meta={
        **to_data(data_spec), "dataset": data.name, "seed": args.seed, "metric": args.metric,
        "val_accuracy": result.after.val_accuracy, "test_accuracy": result.after.test_accuracy,
        "source_checkpoint": str(args.checkpoint) if args.checkpoint else None, "prune_result": result.to_dict(),
    })
    if args.onnx is not None:
        export_onnx(pruner.model_, args.onnx, data.test.x[:1])
    _print(console, result, arch, data.name)
    report = {"model": arch, "arch_kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in arch_kwargs.items()},
              "data": data.name, "seed": args.seed, "checkpoint": str(out), "source_checkpoint": str(args.checkpoint) if args.checkpoint else None,
              "onnx": str(args.onnx) if args.onnx else None, **result.to_dict()}
    write_atomic(json_path, lambda handle: handle.write((json.dumps(report, indent=2) + "\n").encode()))
    console.print(f"pruned checkpoint: {out}; results: {json_path}" + (f"; ONNX: {args.onnx}" if args.onnx else ""))
    return 0


def _pct(after: float, before: float) -> str:
    return f"{(after / before - 1) * 100:+.1f}%" if before else ""


def _print(console: Console, result: PruneResult, arch: str, data: str) -> None:
    b, a = result.before, result.after
    table = Table(title=f"{arch} on {data}: {result.metric}", caption=f"{result.schedule}. Fine-tuning keeps the best "
                  "validation epoch; test accuracy measured once before and once after.")
    for column in ("", "before", "after", "change"):
        table.add_column(column, justify="right")
    table.add_row("parameters", f"{b.params:,}", f"{a.params:,}", _pct(a.params, b.params))
    table.add_row("MACs", f"{b.macs:,}", f"{a.macs:,}", _pct(a.macs, b.macs))
    for label, x, y in (("val accuracy", b.val_accuracy, a.val_accuracy), ("test accuracy", b.test_accuracy, a.test_accuracy)):
        if x is not None and y is not None:
            table.add_row(label, f"{x:.4f}", f"{y:.4f}", f"{(y - x) * 100:+.2f} pt")
    for batch in b.latency_ms:
        table.add_row(f"CPU latency, batch {batch}", f"{b.latency_ms[batch]:.2f} ms", f"{a.latency_ms[batch]:.2f} ms",
                      f"{b.latency_ms[batch] / a.latency_ms[batch]:.2f}× faster")
    console.print(table)
    widths = Table(title="channels per prunable layer")
    for column in ("layer", "before", "after"):
        widths.add_column(column, justify="right")
    for name, before in b.widths.items():
        widths.add_row(name, str(before), str(a.widths.get(name, before)))
    console.print(widths)
    steps = Table(title="steps")
    for column in ("step", "removed", "MACs", "params", "val acc pruned", "val acc fine-tuned", "epochs"):
        steps.add_column(column, justify="right")
    for s in result.steps:
        steps.add_row(str(s.step), str(sum(s.removed.values())), f"{s.macs:,}", f"{s.params:,}",
                      f"{s.val_accuracy_pruned:.4f}", f"{s.val_accuracy:.4f}", str(s.finetune_epochs))
    console.print(steps)
    if result.clamped:
        console.print(f"[yellow]clamped to the minimum width:[/] {', '.join(result.clamped)}")
    if result.solved_ratio is not None:
        console.print(f"MACs target solved with ratio {result.solved_ratio:.4f}")
