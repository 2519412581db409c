"""The demo's four steps, each a thin call into the library's public API that writes its artefacts into one
subfolder of the run directory: ``train/``, ``prune/``, ``search/``, ``evolve/``."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from evoprune.atomic import write_json
from evoprune.baseline import DataSpec
from evoprune.data import DatasetSplits
from evoprune.demo.config import DemoConfig

MODEL = "lenet5"
DATASET = "mnist5k"
SCHEDULE = "lenet5_paper"
SEARCH_PRESET = "improved"
SEARCH_ALGORITHMS = ("sa", "ga")
EVOLVE_DIR = "evolve"


@dataclass
class Trained:
    """The trained LeNet-5 and what the later steps need to know about it."""

    model: nn.Module
    data: DatasetSplits
    data_spec: DataSpec
    arch_kwargs: dict[str, Any]
    val_accuracy: float
    test_accuracy: float
    macs: int
    params: int
    epochs: int
    best_epoch: int
    checkpoint: Path
    seconds: float


@dataclass
class Pruned:
    """One metric's pruning run (``result`` is a :class:`evoprune.prune.PruneResult`)."""

    metric: str
    result: Any
    checkpoint: Path
    results_json: Path
    seconds: float


@dataclass
class Searched:
    """One mask search (``result`` is a :class:`evoprune.search.SearchResult`)."""

    algorithm: str
    result: Any
    run_dir: Path
    seconds: float


def train_step(config: DemoConfig, out: Path, *, seed: int, device: str, progress: bool) -> Trained:
    """Train the paper's LeNet-5 on MNIST-5k with the ``lenet5`` preset; save ``train/lenet5-mnist5k.pt`` and a
    summary JSON beside it."""
    from evoprune.baseline import BaselineSpec, DataSpec, get_baseline
    from evoprune.prune import count_macs_params
    from evoprune.train import get_train_preset

    start = time.perf_counter()
    recipe = get_train_preset("lenet5").with_overrides(epochs=config.train_epochs)
    checkpoint = out / "train" / f"{MODEL}-{DATASET}.pt"
    baseline = get_baseline(BaselineSpec(MODEL, DataSpec(DATASET, split_seed=seed), recipe, seed=seed),
                            out=checkpoint, reuse=False, device=device, progress=progress)
    model, data, meta = baseline.model, baseline.data, baseline.meta
    macs, params = count_macs_params(model, data.test.x[:1])
    seconds = time.perf_counter() - start
    write_json(checkpoint.with_suffix(".json"), {
        "model": MODEL, "data": DATASET, "seed": seed, "val_accuracy": meta["val_accuracy"],
        "test_accuracy": meta["test_accuracy"], "test_loss": meta["test_loss"], "macs": macs, "params": params,
        "best_epoch": meta["best_epoch"], "epochs": recipe.epochs, "seconds": seconds,
        "checkpoint": str(checkpoint)})
    return Trained(model, data, baseline.spec.data, baseline.arch_kwargs, meta["val_accuracy"], meta["test_accuracy"], macs, params,
                   recipe.epochs, meta["best_epoch"], checkpoint, seconds)


def prune_step(trained: Trained, metric: str, config: DemoConfig, out: Path, *, seed: int, device: str,
               progress: bool) -> Pruned:
    """Prune a copy of the trained model with ``metric`` on the paper's LeNet-5 schedule, fine-tuning after each
    step; save the pruned checkpoint and its results JSON under ``prune/``."""
    from evoprune.checkpoint import save_checkpoint
    from evoprune.config import to_data
    from evoprune.prune import ChannelPruner
    from evoprune.train import get_train_preset

    start = time.perf_counter()
    finetune = get_train_preset("finetune").with_overrides(epochs=config.finetune_epochs)
    pruner = ChannelPruner(metric, schedule=SCHEDULE, scoring_samples=config.scoring_samples, finetune=finetune,
                           seed=seed, device=device, latency_batch_sizes=(), progress=progress)
    pruner.prune(trained.model, trained.data)
    result = pruner.result_
    checkpoint = out / "prune" / f"{MODEL}-{metric}.pt"
    save_checkpoint(checkpoint, pruner.model_, arch=MODEL, arch_kwargs=trained.arch_kwargs,
                    pruning_history=pruner.pruning_history_, meta={
        **to_data(trained.data_spec), "seed": seed, "metric": metric,
        "source_checkpoint": str(trained.checkpoint), "prune_result": result.to_dict(),
    })
    results_json = checkpoint.with_suffix(".json")
    write_json(results_json, {"model": MODEL, "data": DATASET, "seed": seed, "checkpoint": str(checkpoint),
                              **result.to_dict()})
    return Pruned(metric, result, checkpoint, results_json, time.perf_counter() - start)


def search_step(trained: Trained, algorithm: str, config: DemoConfig, out: Path, *, seed: int, device: str,
                progress: bool) -> Searched:
    """Search weight masks of the trained model with the ``improved`` preset at the demo's budget; write the run
    (results, history, masks, plots) to ``search/<algorithm>/``."""
    from evoprune.search import preset, search_masks, write_run

    start = time.perf_counter()
    search_config = preset(SEARCH_PRESET, **config.search)
    result = search_masks(trained.model, trained.data, algorithm=algorithm, config=search_config, seed=seed,
                          device=device, progress=progress)
    result.machine.update({"checkpoint": str(trained.checkpoint), "arch": MODEL, "dataset": DATASET})
    trained.model.cpu()
    run_dir = out / "search" / algorithm
    write_run(result, run_dir)
    return Searched(algorithm, result, run_dir, time.perf_counter() - start)


def evolve_step(config: DemoConfig, out: Path, *, seed: int, device: str, threads: int | None, progress: bool,
                view: Callable[[], AbstractContextManager[Any]] | None = None) -> Any:
    """Run the evolution preset in ``evolve/`` (overwriting an earlier demo's run there) and return its
    :class:`evoprune.evolve.EvolutionResult`. ``threads`` sets the number of worker processes (one thread each);
    ``view`` makes the context manager whose value observes the run (e.g. the CLI's live view)."""
    from evoprune.device import resolve_device
    from evoprune.evolve import Observer, evolve, load_config

    overrides: dict[str, Any] = {"seed": seed, "evaluation.device": str(resolve_device(device))}
    if threads is not None:
        overrides["evaluation.workers"] = threads
    overrides.update(config.evolve_overrides)
    evolution_config = load_config(config.evolve_preset, overrides)
    with (view() if view is not None else nullcontext(Observer())) as observer:
        return evolve(evolution_config, out / EVOLVE_DIR, overwrite=True, observer=observer, progress=progress)
