"""``evoprune search``: SA or GA weight-mask search on a trained model, in the seed's mode or the improved one;
with ``--space channels``, SA / GA / NSGA-II over per-group channel counts under a MACs or parameter budget; with
``--space sparsity``, SA / GA over per-layer weight sparsities at a global sparsity, magnitude inside each layer."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from evoprune.atomic import check_output
from evoprune.cli.common import add_runtime_args, check_fits_data
from evoprune.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "search",
        help="SA / GA search of weight pruning masks, or of per-layer channel counts (--space channels) or weight "
        "sparsities (--space sparsity)",
        description="--space weights (default): search one boolean mask per conv/linear weight with SA or GA "
        "(mask-search seed). --preset seed reproduces the reference (test-split evaluation, absolute loss caps); "
        "--preset improved selects on validation with a budget relative to the baseline. Writes results.json, "
        "history.jsonl, masks.pt (torch.nn.utils.prune masks) and plots. --space channels: search how many "
        "channels each prunable group keeps (SA, GA, or NSGA-II with --pareto) under --macs-target or "
        "--params-target, the metric choosing the channels, allocations compared by validation accuracy after "
        "BatchNorm recalibration; writes results.json, tables/*.json (for `evoprune prune --table`), front.png, "
        "keep.png, and fine-tunes the chosen allocation. --space sparsity: search how many weights each conv/linear "
        "layer keeps (SA or GA) at --target-sparsity, magnitude choosing them, allocations compared by validation "
        "accuracy; writes results.json and masks.pt of the chosen allocation, fine-tuned with the masks fixed.",
    )
    p.add_argument("--space", choices=["weights", "channels", "sparsity"], default="weights",
                   help="weights: mask search (default); channels: per-layer channel counts (layer budget); "
                   "sparsity: per-layer weight sparsities, magnitude inside each layer")
    p.add_argument("--algorithm", choices=["sa", "ga", "both", "nsga2"], default=None,
                   help="search algorithm (default sa; both: SA then GA, one figure; nsga2: --space channels --pareto)")
    p.add_argument("--preset", choices=["seed", "improved"], default=None, help="weights: mask-search preset (default seed)")
    p.add_argument("--checkpoint", type=Path, default=None, help="trained model from `evoprune train` (default: train --model first)")
    p.add_argument("--model", default="lenet5_d2l", help="zoo model to train when no --checkpoint is given")
    p.add_argument("--train-epochs", type=int, default=None, help="epochs when training the model here")
    p.add_argument("--data", default=None, help="dataset (default: the checkpoint's, else mnist5k)")
    p.add_argument("--data-dir", default=None, help="folder of the dataset's files (mnist, fashion, cifar10/100)")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="share of the training set held out for validation (default: the checkpoint's, else 0.2)")
    p.add_argument("--layers", default=None, help="comma-separated layer names to search (default: all conv/linear)")
    g = p.add_argument_group("search settings (override the preset)")
    g.add_argument("--iterations", type=int, default=None, help="SA proposals per layer")
    g.add_argument("--joint-iterations", type=int, default=None, help="SA proposals in the final joint pass (0: none)")
    g.add_argument("--generations", type=int, default=None, help="GA generations per layer")
    g.add_argument("--joint-generations", type=int, default=None, help="GA generations in the joint pass (0: none)")
    g.add_argument("--population", type=int, default=None, help="GA population size")
    g.add_argument("--mutation-rate", type=float, default=None, help="initial mutation rate r0")
    g.add_argument("--budget", type=float, default=None, help="improved: allowed accuracy drop (fraction) or relative loss rise")
    g.add_argument("--budget-metric", choices=["accuracy", "loss"], default=None)
    g.add_argument("--warmup", choices=["linear", "weights", "none"], default=None, help="how the budget is shared out over layers")
    g.add_argument("--cap-reference-loss", type=float, default=None,
                   help="seed caps: scale the absolute caps by baseline loss / this (0.0895 = the seed's MNIST baseline)")
    g.add_argument("--sparsity", choices=["mean_layer", "global"], default=None, help="sparsity in the cost")
    g.add_argument("--restore-ratio", type=float, default=None, help="restored weights per pruned weight in a move")
    g.add_argument("--magnitude-bias", type=float, default=None, help="0..1: bias proposals toward small weights (default 0)")
    g.add_argument("--finetune-epochs", type=int, default=None, help="fine-tune the result with the masks fixed (also the baselines)")
    g.add_argument("--finetune-between", type=int, default=None,
                   help="epochs of fine-tuning after every phase but the last (iterative pruning; 0: none)")
    g.add_argument("--joint-rounds", type=int, default=None, help="split the joint pass into this many phases")
    g.add_argument("--finetune-lr", type=float, default=None, help="learning rate of every fine-tune (finetune.lr)")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any search setting, e.g. sa.cooling=geometric or finetune.optimizer=sgd "
                   "(applied after the options above)")
    g.add_argument("--eval-size", type=int, default=None, help="images of the selection split per evaluation (default all)")
    g.add_argument("--batch-size", type=int, default=None, help="images per forward chunk")
    g.add_argument("--no-baselines", action="store_true", help="skip random/magnitude pruning at the same sparsity")
    c = p.add_argument_group("--space channels (the budget and what compares allocations; --set reaches every field "
                             "of evoprune.search.channels.ChannelSearchConfig)")
    c.add_argument("--metric", default=None, help="metric name or formula choosing channels inside a group (default eq3)")
    c.add_argument("--macs-target", type=float, default=None, help="keep at most this fraction of MACs (default 0.5)")
    c.add_argument("--params-target", type=float, default=None, help="keep at most this fraction of parameters")
    c.add_argument("--pareto", action="store_true", help="NSGA-II front of accuracy against MACs (or parameters)")
    c.add_argument("--evaluations", type=int, default=None, help="distinct allocations measured (default 500)")
    c.add_argument("--objective", choices=["accuracy", "loss"], default=None, help="validation accuracy (default) or loss")
    c.add_argument("--min-keep", type=float, default=None, help="smallest share of a group kept (default 0.1)")
    c.add_argument("--val-samples", type=int, default=None, help="validation images per evaluation (default 1000)")
    w = p.add_argument_group("--space sparsity (also --evaluations, --objective, --min-keep, --val-samples above; --set "
                             "reaches every field of evoprune.search.sparsity.SparsitySearchConfig)")
    w.add_argument("--target-sparsity", type=float, default=None,
                   help="fraction of the conv/linear weights to prune (default 0.8)")
    p.add_argument("--out", type=Path, default=None,
                   help="run directory (default runs/search-<algorithm>-<preset>-<data>-s<seed>, or "
                   "runs/search-channels-<algorithm>-<data>-s<seed>)")
    add_runtime_args(p)
    p.set_defaults(func=run)


_WEIGHT_ONLY = ("preset", "iterations", "joint_iterations", "generations", "joint_generations", "population",
                "mutation_rate", "budget", "budget_metric", "warmup", "cap_reference_loss", "sparsity", "restore_ratio",
                "magnitude_bias", "finetune_between", "joint_rounds", "eval_size", "batch_size", "layers")
_CHANNEL_ONLY = ("metric", "macs_target", "params_target")
_ALLOCATION = ("evaluations", "objective", "min_keep", "val_samples")  # channels and sparsity
#: The options each space takes, beyond the common ones.
_SPACE_OPTIONS = {"weights": _WEIGHT_ONLY, "channels": _CHANNEL_ONLY + _ALLOCATION,
                  "sparsity": _ALLOCATION + ("target_sparsity",)}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_space(args: argparse.Namespace) -> None:
    """Refuse options of another space, and algorithms the chosen space has not."""
    space, channels = args.space, args.space == "channels"
    foreign = [n for other, names in _SPACE_OPTIONS.items() if other != space for n in names
               if n not in _SPACE_OPTIONS[space]]
    wrong = [_flag(n) for n in dict.fromkeys(foreign) if getattr(args, n) is not None]
    wrong += ["--no-baselines"] * (space != "weights" and args.no_baselines) + ["--pareto"] * (not channels and args.pareto)
    if wrong:
        first = wrong[0].removeprefix("--").replace("-", "_")
        home = next((s for s, names in _SPACE_OPTIONS.items() if first in names), "weights")
        home = "channels" if first == "pareto" else home
        raise ConfigError(f"{', '.join(wrong)} {'do' if len(wrong) > 1 else 'does'} not apply to --space {space}; "
                          f"drop {'them' if len(wrong) > 1 else 'it'} or use --space {home}")
    if space != "weights" and args.algorithm == "both":
        raise ConfigError(f"--space {space} runs one algorithm: --algorithm sa or ga"
                          + (", or nsga2 (with --pareto)" if channels else ""))
    if not channels and args.algorithm == "nsga2":
        raise ConfigError("--algorithm nsga2 searches channel counts: add --space channels --pareto")
    if channels and args.pareto and args.algorithm not in (None, "nsga2"):
        raise ConfigError(f"--pareto runs NSGA-II, not {args.algorithm}; drop --algorithm {args.algorithm}")
    if channels and args.algorithm == "nsga2" and not args.pareto:
        raise ConfigError("--algorithm nsga2 searches the accuracy-vs-cost front: add --pareto")
    args.algorithm = args.algorithm or ("nsga2" if args.pareto else "sa")


def _allocation_config(cls: type, args: argparse.Namespace, given: dict[str, Any],
                       defaults: dict[str, Any] | None = None) -> Any:
    """``cls`` (a channel or sparsity search config) from its defaults, the options given and ``--set``."""
    from evoprune.config import from_data, to_data, with_overrides

    data = {**to_data(cls()), **(defaults or {})}
    data.update({k: v for k, v in given.items() if v is not None})
    for key, value in (("epochs", args.finetune_epochs), ("lr", args.finetune_lr)):
        if value is not None:
            data["finetune"][key] = value
    return with_overrides(from_data(cls, data), args.overrides)


def _channel_config(args: argparse.Namespace) -> Any:
    from evoprune.search.channels import ChannelSearchConfig

    # the default MACs target gives way to a parameter target or a whole front
    defaults = ({"macs_target": None} if args.params_target is not None or (args.pareto and args.macs_target is None)
                else {})
    return _allocation_config(ChannelSearchConfig, args, {
        "algorithm": args.algorithm, "metric": args.metric, "macs_target": args.macs_target,
        "params_target": args.params_target, "evaluations": args.evaluations, "objective": args.objective,
        "min_keep": args.min_keep, "val_samples": args.val_samples}, defaults)


def _sparsity_config(args: argparse.Namespace) -> Any:
    from evoprune.search.sparsity import SparsitySearchConfig

    return _allocation_config(SparsitySearchConfig, args, {
        "algorithm": args.algorithm, "sparsity": args.target_sparsity, "evaluations": args.evaluations,
        "objective": args.objective, "min_keep": args.min_keep, "val_samples": args.val_samples})


def _config(args: argparse.Namespace) -> Any:
    from evoprune.config import with_overrides
    from evoprune.search import preset

    sa = {k: v for k, v in {"iterations": args.iterations, "joint_iterations": args.joint_iterations}.items() if v is not None}
    ga = {k: v for k, v in {"generations": args.generations, "joint_generations": args.joint_generations,
                            "population": args.population}.items() if v is not None}
    config = preset(
        args.preset or "seed", sa=sa or None, ga=ga or None, mutation_rate=args.mutation_rate, budget=args.budget,
        budget_metric=args.budget_metric, warmup=args.warmup, cap_reference_loss=args.cap_reference_loss,
        sparsity=args.sparsity, restore_ratio=args.restore_ratio, magnitude_bias=args.magnitude_bias,
        finetune_epochs=args.finetune_epochs, finetune_between=args.finetune_between, joint_rounds=args.joint_rounds,
        finetune={"lr": args.finetune_lr} if args.finetune_lr is not None else None, eval_size=args.eval_size,
        batch_size=args.batch_size,
        baselines=False if args.no_baselines else None,
    )
    return with_overrides(config, args.overrides)


def _model_and_data(args: argparse.Namespace, console: Console) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """The checkpoint's model on its own data and split, or (no --checkpoint) a baseline trained or reused from
    the cache in runs/baselines."""
    from evoprune.baseline import BaselineSpec, DataSpec, checkpoint_data, get_baseline

    if args.checkpoint is not None:
        from evoprune.checkpoint import load_checkpoint

        model, payload = load_checkpoint(args.checkpoint)
        spec, line = checkpoint_data(payload["meta"], source=f"checkpoint {args.checkpoint}", dataset=args.data,
                                     data_dir=args.data_dir, val_fraction=args.val_fraction, fallback_seed=args.seed)
        console.print(line)
        data = spec.load()
        check_fits_data(payload["arch_kwargs"], data, source=f"checkpoint {args.checkpoint}")
        return model, data, {"checkpoint": str(args.checkpoint), "arch": payload["arch"], "dataset": data.name}
    from evoprune.train import default_preset_for, get_train_preset

    data_spec = DataSpec(args.data or "mnist5k", split_seed=args.seed,
                         val_fraction=0.2 if args.val_fraction is None else args.val_fraction,
                         data_dir=args.data_dir)
    recipe = get_train_preset(default_preset_for(args.model)).with_overrides(epochs=args.train_epochs)
    console.print(f"no --checkpoint: a {args.model} trained on {data_spec.dataset} for {recipe.epochs} epochs first")
    baseline = get_baseline(BaselineSpec(args.model, data_spec, recipe, seed=args.seed),
                            cache_dir=Path("runs") / "baselines", device=args.device, progress=not args.quiet,
                            log=console.print)
    meta = baseline.meta
    console.print(f"baseline {args.model}: test accuracy {meta['test_accuracy']:.4f}, loss {meta['test_loss']:.4f}")
    return baseline.model, baseline.data, {"checkpoint": str(baseline.checkpoint), "arch": args.model,
                                           "dataset": baseline.data.name, "trained_epochs": recipe.epochs}


def _summary_table(results: dict[str, Any]) -> Table:
    table = Table(title="mask search (accuracy/loss on test; selection split in brackets)")
    for column in ("", "baseline acc", "acc", "loss", "sparsity global", "sparsity mean-layer", "trade-off",
                   "evaluations", "search s"):
        table.add_column(column, justify="right")
    for name, r in results.items():
        table.add_row(
            name.upper(), f"{r.baseline['test']['accuracy']:.4f}",
            f"{r.reported['accuracy']:.4f} [{r.final['selection']['accuracy']:.4f}]", f"{r.reported['loss']:.4f}",
            f"{r.sparsity['global']:.4f}", f"{r.sparsity['mean_layer']:.4f}", f"{r.trade_off():.4f}",
            str(r.evaluations), f"{r.search_seconds:.1f}",
        )
        for b in r.baselines:
            test = b.get("finetuned", b)["test"]
            table.add_row(f"  {b['kind']}", "", f"{test['accuracy']:.4f}", f"{test['loss']:.4f}",
                          f"{b['sparsity_global']:.4f}", f"{b['sparsity_mean_layer']:.4f}", "", "", "")
    return table


def _layer_table(name: str, result: Any) -> Table:
    table = Table(title=f"{name.upper()} per layer")
    for column in ("layer", "weights", "pruned", "sparsity", "cap", "evaluations", "ms/eval"):
        table.add_column(column, justify="right")
    for row in result.layers:
        cap = "" if row["limit"] is None else f"{row['constraint']} {row['limit']:.4f}"
        ms = "" if row["ms_per_evaluation"] is None else f"{row['ms_per_evaluation']:.1f}"
        table.add_row(row["layer"], str(row["size"]), str(row["pruned"]), f"{row['sparsity']:.4f}", cap,
                      str(row["evaluations"] or ""), ms)
    return table


def _model_data_out(args: argparse.Namespace, console: Console, algorithm: str) -> tuple[Any, Any, dict[str, Any], Path]:
    """The model, data and source of ``--space channels|sparsity``, and the run directory (checked before any
    training, and again once the default name, which needs the data's, is known)."""
    if args.out is not None:
        check_output(args.out, option="--out", directory=True)
    model, data, source = _model_and_data(args, console)
    out = args.out or Path("runs") / f"search-{args.space}-{algorithm}-{data.name}-s{args.seed}"
    check_output(out, option="--out", directory=True)
    return model, data, source, out


def _run_channels(args: argparse.Namespace, console: Console) -> int:
    from evoprune.search.channels import search_channels, write_channel_run

    config = _channel_config(args)
    model, data, source, out = _model_data_out(args, console, config.algorithm)
    result = search_channels(model, data, config, seed=args.seed, progress=not args.quiet)
    result.machine.update(source)
    paths = write_channel_run(result, out)
    table = Table(title=f"{config.algorithm.upper()} channel search, metric {config.metric} (validation after BN "
                  "recalibration; test once after fine-tuning)")
    for column in ("allocation", "MACs kept", "params kept", "val acc", "val loss"):
        table.add_column(column, justify="right")
    rows = [(n, result.record(n)) for n in ("chosen", *result.references)]
    rows += [(f"front {k}", result.records[i]) for k, i in enumerate(result.front)]
    for name, r in rows:
        if r is not None:
            table.add_row(name, f"{r['macs_kept']:.2%}", f"{r['params_kept']:.2%}", f"{r['accuracy']:.4f}",
                          f"{r['loss']:.4f}")
    console.print(table)
    if "chosen" in result.finetuned:
        f = result.finetuned["chosen"]
        console.print(f"chosen allocation fine-tuned {f['epochs']} epoch(s): val {f['val_accuracy']:.4f}, "
                      f"test {f['test_accuracy']:.4f} (loss {f['test_loss']:.4f})")
    seconds = result.seconds
    console.print(f"{len(result.records)} allocations measured, {seconds['search']:.0f} s of search; over all of "
                  f"them BN recalibration took {seconds['evaluation_recalibrate']:.0f} s, validation "
                  f"{seconds['evaluation_evaluate']:.0f} s, pruning copies {seconds['evaluation_prune']:.0f} s, "
                  f"counting MACs {seconds['evaluation_count']:.0f} s; run directory: {out}")
    if "table_chosen" in paths:
        console.print(f"apply it: evoprune prune --checkpoint {source['checkpoint']} --metric '{config.metric}' "
                      f"--table {paths['table_chosen']}")
    return 0


def _run_sparsity(args: argparse.Namespace, console: Console) -> int:
    from evoprune.atomic import write_json
    from evoprune.search.masks import save_masks
    from evoprune.search.sparsity import chosen_masks, search_sparsities

    config = _sparsity_config(args)
    model, data, source, out = _model_data_out(args, console, config.algorithm)
    result = search_sparsities(model, data, config, seed=args.seed, progress=not args.quiet)
    result["source"] = source
    write_json(out / "results.json", result)
    save_masks(out / "masks.pt", chosen_masks(model, result))
    table = Table(title=f"{config.algorithm.upper()} sparsity search at {config.sparsity:.1%} of the weights pruned "
                  "(magnitude inside each layer; validation)")
    table.add_column("allocation")
    for name in result["layers"]:
        table.add_column(name, justify="right")
    for column in ("sparsity", "val acc", "val loss"):
        table.add_column(column, justify="right")
    rows = [("chosen", result["chosen"]), *result["references"].items()]
    for name, index in rows:
        r = result["records"][index]
        table.add_row(name, *(f"{1 - k / n:.2f}" for k, n in zip(r["kept"], result["sizes"])),
                      f"{r['sparsity']:.2%}", f"{r['accuracy']:.4f}", f"{r['loss']:.4f}")
    console.print(table)
    if "chosen" in result["finetuned"]:
        f = result["finetuned"]["chosen"]
        console.print(f"chosen allocation fine-tuned {f['epochs']} epoch(s) with the masks fixed: val "
                      f"{f['val_accuracy']:.4f}, test {f['test_accuracy']:.4f} (loss {f['test_loss']:.4f})")
    console.print(f"{len(result['records'])} allocations measured in {result['seconds']['search']:.0f} s of search; "
                  f"run directory: {out} (masks.pt: torch.nn.utils.prune masks of the chosen allocation)")
    return 0


def run(args: argparse.Namespace) -> int:
    from evoprune.search import search_masks, write_run
    from evoprune.search.plots import plot_history, plot_layers

    console = Console()
    _check_space(args)
    if args.space == "channels":
        return _run_channels(args, console)
    if args.space == "sparsity":
        return _run_sparsity(args, console)
    config = _config(args)
    if args.out is not None:
        check_output(args.out, option="--out", directory=True)
    model, data, source = _model_and_data(args, console)
    layers = [n.strip() for n in args.layers.split(",") if n.strip()] if args.layers else None
    if layers == []:
        raise ConfigError("--layers is empty; give comma-separated layer names or leave it out")
    algorithms = ["sa", "ga"] if args.algorithm == "both" else [args.algorithm]
    out = args.out or Path("runs") / f"search-{args.algorithm}-{args.preset or 'seed'}-{data.name}-s{args.seed}"
    check_output(out, option="--out", directory=True)
    results = {}
    for algorithm in algorithms:
        result = search_masks(model, data, algorithm=algorithm, config=config, layers=layers, seed=args.seed,
                              device=args.device, progress=not args.quiet)
        result.machine.update(source)
        run_dir = out / algorithm if len(algorithms) > 1 else out
        write_run(result, run_dir)
        results[algorithm] = result
        for warning in result.warnings:
            console.print(f"[yellow]warning:[/] {warning}")
        console.print(_layer_table(algorithm, result))
    if len(results) > 1:
        plot_history({k: r.history for k, r in results.items()}, out / "search.png")
        plot_layers({k: r.layers for k, r in results.items()}, out / "layers.png")
    console.print(_summary_table(results))
    console.print(f"run directory: {out}")
    return 0
