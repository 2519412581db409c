"""``evoprune search``: SA or GA weight-mask search on a trained model, in the seed's mode or the improved one."""

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
        help="simulated-annealing / genetic-algorithm search of weight pruning masks, layer by layer",
        description="Search one boolean mask per conv/linear weight with SA or GA (mask-search seed). "
        "--preset seed reproduces the reference (test-split evaluation, absolute loss caps); --preset improved "
        "selects on validation with a budget relative to the baseline. Writes results.json, history.jsonl, "
        "masks.pt (torch.nn.utils.prune masks) and plots.",
    )
    p.add_argument("--algorithm", choices=["sa", "ga", "both"], default="sa", help="search algorithm (both: SA then GA, one figure)")
    p.add_argument("--preset", choices=["seed", "improved"], default="seed")
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
    p.add_argument("--out", type=Path, default=None, help="run directory (default runs/search-<algorithm>-<preset>-<data>-s<seed>)")
    add_runtime_args(p)
    p.set_defaults(func=run)


def _config(args: argparse.Namespace) -> Any:
    from evoprune.config import with_overrides
    from evoprune.search import preset

    sa = {k: v for k, v in {"iterations": args.iterations, "joint_iterations": args.joint_iterations}.items() if v is not None}
    ga = {k: v for k, v in {"generations": args.generations, "joint_generations": args.joint_generations,
                            "population": args.population}.items() if v is not None}
    config = preset(
        args.preset, sa=sa or None, ga=ga or None, mutation_rate=args.mutation_rate, budget=args.budget,
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


def run(args: argparse.Namespace) -> int:
    from evoprune.search import search_masks, write_run
    from evoprune.search.plots import plot_history, plot_layers

    console = Console()
    config = _config(args)
    if args.out is not None:
        check_output(args.out, option="--out", directory=True)
    model, data, source = _model_and_data(args, console)
    layers = [n.strip() for n in args.layers.split(",") if n.strip()] if args.layers else None
    if layers == []:
        raise ConfigError("--layers is empty; give comma-separated layer names or leave it out")
    algorithms = ["sa", "ga"] if args.algorithm == "both" else [args.algorithm]
    out = args.out or Path("runs") / f"search-{args.algorithm}-{args.preset}-{data.name}-s{args.seed}"
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
