"""``search_channels``: a layer-budget search on one trained network, and the run directory it writes.

Steps: score every channel once with the metric (:func:`~evoprune.criteria.group_scores`); learn the exact cost
model and the budget; measure the references at the budget (uniform ratios, and the metric's global ranking);
search from the better of the two; choose the best allocation on validation (every record meets the budget, as
counted); fine-tune it once with the recipe and report the test split once. Selection never sees the test split.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evoprune.atomic import write_json
from evoprune.config import to_data
from evoprune.criteria import group_scores, recalibrate_batchnorm
from evoprune.data import DatasetSplits, Split
from evoprune.device import machine
from evoprune.metrics import get_metric
from evoprune.progress import make_progress
from evoprune.prune.table import write_table
from evoprune.search.channels.algorithms import Search, fitness, pareto_front, run_ga, run_nsga2, run_sa
from evoprune.search.channels.config import ChannelSearchConfig
from evoprune.search.channels.evaluate import AllocationEvaluator, Record
from evoprune.search.channels.plots import plot_front, plot_keep
from evoprune.search.channels.space import Allocation, ChannelSpace
from evoprune.train import evaluate, train


@dataclass
class ChannelSearchResult:
    """Everything one channel search measured; ``to_dict`` is its ``results.json``.

    ``records``: every evaluated allocation (keep counts in ``groups`` order, MACs and parameters by the counter,
    validation loss/accuracy after BN recalibration, who asked for it first). ``references``: the uniform and
    global-ranking allocations at the budget (record indices). ``chosen``: the best record meeting the budget
    (None for a front without a target); ``front``: record indices of the non-dominated ones (NSGA-II).
    ``finetuned``: per name (``chosen``, and the references with ``finetune_references``), the allocation after
    the recipe (best validation epoch; test once).
    """

    config: ChannelSearchConfig
    seed: int
    groups: list[dict[str, Any]]
    base: dict[str, Any]
    budget: dict[str, Any] | None
    records: list[Record]
    references: dict[str, int]
    chosen: int | None
    front: list[int]
    history: list[dict[str, Any]]
    finetuned: dict[str, dict[str, Any]]
    seconds: dict[str, float]
    machine: dict[str, Any] = field(default_factory=dict)

    def record(self, name: str) -> Record | None:
        """``chosen`` or a reference's record by name."""
        index = self.chosen if name == "chosen" else self.references.get(name)
        return None if index is None else self.records[index]

    def to_dict(self) -> dict[str, Any]:
        return {"space": "channels", "config": to_data(self.config), "seed": self.seed, "groups": self.groups,
                "base": self.base, "budget": self.budget, "chosen": self.chosen, "references": self.references,
                "front": self.front, "finetuned": self.finetuned, "seconds": self.seconds, "machine": self.machine,
                "selection": "allocations compared on validation after BN recalibration; test measured once, after "
                "fine-tuning the chosen one", "history": self.history, "records": self.records}


def _subset(split: Split, n: int | None, seed: int) -> Split:
    if n is None or n >= len(split):
        return split
    return split.subset(torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n])


def search_channels(model: nn.Module, data: DatasetSplits, config: ChannelSearchConfig | None = None, *,
                    seed: int = 0, progress: bool = False,
                    references: Mapping[str, Mapping[str, int]] | None = None) -> ChannelSearchResult:
    """Search per-group channel counts of a trained ``model`` (not modified) on ``data`` with ``config``.

    ``references`` adds allocations to measure beside uniform and global (kept channels per group name, e.g. the
    widths another pruning schedule reached); they may miss the budget, and are then never chosen.

    >>> result = search_channels(model, data, ChannelSearchConfig(macs_target=0.5, evaluations=500), seed=0)
    >>> result.record("chosen")["macs_kept"], result.finetuned["chosen"]["test_accuracy"]
    """
    config = config or ChannelSearchConfig(macs_target=0.5)
    start = time.perf_counter()
    get_metric(config.metric)  # an unknown metric or broken formula fails before any work
    base_model = copy.deepcopy(model).cpu().eval()
    example = data.train.x[:1]
    tick = time.perf_counter()
    scores = group_scores(base_model, config.metric, data, samples=config.scoring_samples, seed=seed,
                          coupling=config.coupling)
    seconds = {"scoring": time.perf_counter() - tick}
    tick = time.perf_counter()
    space = ChannelSpace(base_model, scores, example, min_keep=config.min_keep, seed=seed)
    budget = space.budget(*config.target) if config.target is not None else None
    seconds["cost_model"] = time.perf_counter() - tick
    order = torch.randperm(len(data.train.y), generator=torch.Generator().manual_seed(seed))
    recal_x = data.train.x[order[:config.recalibration_batches * config.recalibration_batch_size]]
    val = _subset(data.val, config.val_samples, seed)
    unpruned = evaluate(base_model, val.x, val.y)
    with make_progress(progress) as bar:
        task = bar.add_task(f"{config.algorithm} channel search", total=config.evaluations + 2, status="")
        evaluator = AllocationEvaluator(
            space, recal_x, val.x, val.y, recalibration_batches=config.recalibration_batches,
            recalibration_batch_size=config.recalibration_batch_size,
            on_record=lambda r: bar.update(task, advance=1, status=f"val acc {r['accuracy']:.4f}"))
        named: dict[str, Allocation] = {}
        if budget is not None:
            named = {"uniform": space.uniform_at(budget), "global": space.global_at(budget)}
        named.update({name: space.allocation(widths, where=f"reference {name!r}")
                      for name, widths in (references or {}).items()})
        for name, allocation in named.items():
            evaluator(allocation, origin=name)
        search = Search(space, budget, evaluator, config, random.Random(seed))
        tick = time.perf_counter()
        kind = budget.kind if budget is not None else "macs"

        def cost(record: Record) -> float:
            return record[f"{kind}_kept"]

        if config.algorithm == "nsga2":
            run_nsga2(search, cost)
        else:  # from the better reference, moved onto the budget's boundary
            best = max((named["uniform"], named["global"]), key=lambda a: fitness(evaluator(a), config.objective))
            (run_sa if config.algorithm == "sa" else run_ga)(search, search.fit(best))
        seconds["search"] = time.perf_counter() - tick
    records = evaluator.records
    feasible = [r for r in records if budget is None or r[kind] <= budget.limit]
    front = [r["index"] for r in pareto_front(records, config.objective, cost)] if config.algorithm == "nsga2" else []
    pool = [r for r in feasible if r["index"] in front] if front else feasible
    chosen = (max(pool, key=lambda r: (fitness(r, config.objective), -r["index"]))["index"]
              if pool and budget is not None else None)
    tuned = {"chosen": chosen} if chosen is not None else {}
    if config.finetune_references:
        tuned.update({name: evaluator(a)["index"] for name, a in named.items()})
    finetuned = {}
    if config.finetune.epochs > 0:
        once = {index: _finetune(space, tuple(records[index]["keep"]), data, recal_x, config, seed, progress)
                for index in dict.fromkeys(tuned.values())}  # one allocation under two names is tuned once
        finetuned = {name: once[index] for name, index in tuned.items()}
        seconds["finetune"] = sum(f["seconds"] for f in once.values())
    seconds.update({f"evaluation_{k}": v for k, v in evaluator.seconds.items()})
    seconds["total"] = time.perf_counter() - start
    macs, params = space.costs.base
    return ChannelSearchResult(
        config=config, seed=seed,
        groups=[{"name": g.name, "members": list(g.members), "width": g.width, "min_keep": lo}
                for g, lo in zip(space.groups, space.lower)],
        base={"macs": macs, "params": params, "val_accuracy": unpruned.accuracy, "val_loss": unpruned.loss,
              "val_samples": len(val.y)},
        budget=None if budget is None else {"kind": budget.kind, "fraction": budget.fraction, "limit": budget.limit},
        records=records, references={n: evaluator(a)["index"] for n, a in named.items()}, chosen=chosen,
        front=front, history=search.history, finetuned=finetuned, seconds=seconds, machine=machine(),
    )


def _finetune(space: ChannelSpace, allocation: Allocation, data: DatasetSplits, recal_x: torch.Tensor,
              config: ChannelSearchConfig, seed: int, progress: bool) -> dict[str, Any]:
    """Prune to ``allocation``, recalibrate, fine-tune with the recipe (best validation epoch), test once."""
    tick = time.perf_counter()
    model = space.costs.prune(allocation)
    recalibrate_batchnorm(model, recal_x, batches=config.recalibration_batches,
                          batch_size=config.recalibration_batch_size)
    tune = replace(data, train=_subset(data.train, config.finetune_samples, seed))
    result = train(model, tune, config.finetune, seed=seed, progress=progress, description="fine-tune chosen")
    test = evaluate(model, data.test.x, data.test.y)
    return {"val_accuracy": result.best_val_accuracy, "best_epoch": result.best_epoch, "epochs": config.finetune.epochs,
            "test_accuracy": test.accuracy, "test_loss": test.loss, "train_samples": len(tune.train.y),
            "seconds": time.perf_counter() - tick}


def write_channel_run(result: ChannelSearchResult, out: str | Path) -> dict[str, Path]:
    """``results.json``, pruning tables (``tables/chosen.json``, the references, the front) and PNG plots."""
    out = Path(out)
    paths = {"results": write_json(out / "results.json", result.to_dict())}
    widths = {g["name"]: g["width"] for g in result.groups}
    names = list(widths)

    def table(name: str, record: Record) -> Path:
        source = {"metric": result.config.metric, "seed": result.seed, "scoring_samples": result.config.scoring_samples,
                  "coupling": result.config.coupling, "record": record["index"], "macs": record["macs"],
                  "params": record["params"], "val_accuracy_recalibrated": record["accuracy"]}
        removed = {n: widths[n] - k for n, k in zip(names, record["keep"])}
        return write_table(out / "tables" / f"{name}.json", removed, widths, source=source)

    for name in ("chosen", *result.references):
        record = result.record(name)
        if record is not None:
            paths[f"table_{name}"] = table(name, record)
    for k, index in enumerate(result.front):
        table(f"front-{k:02d}", result.records[index])
    paths["front_plot"] = plot_front(result, out / "front.png")
    if result.chosen is not None:
        paths["keep_plot"] = plot_keep(result, out / "keep.png")
    return paths
