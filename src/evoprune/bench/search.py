"""``evoprune bench search``: mask-search modes compared on one trained LeNet-5 (lenet5_d2l), over seeds.

The protocol: one baseline network per dataset is trained once (seeded, cached as a checkpoint) and every search
starts from it; each variant (a search preset plus overrides) runs with SA and GA for every seed, at about the
same number of evaluations; accuracy is selected on the preset's split and test is reported once per run. Every
finished run goes into the results JSON at once, so a killed run resumes where it stopped.

Presets: ``mnist5k`` (the issue's quality comparison: seed vs improved vs improved without fine-tuning, 3 seeds),
``fashion`` (the improved search with magnitude-biased moves against random and magnitude pruning at its
sparsity), ``smoke`` (seconds, for tests).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from evoprune.bench.common import fingerprint, machine, write_json, write_text
from evoprune.bench.registry import BenchReport, RunOptions, Target, read_previous
from evoprune.bench.search_report import render_against_baselines, render_comparison, summarise_run
from evoprune.checkpoint import load_checkpoint, save_checkpoint
from evoprune.data import load_dataset
from evoprune.errors import ConfigError
from evoprune.models import build_model
from evoprune.search import preset, search_masks
from evoprune.train import TrainConfig, evaluate_split, train

# The improved preset with its fine-tuning switched off and one joint pass: what the search alone contributes.
SEARCH_ONLY: dict[str, Any] = {"finetune_between": 0, "finetune_epochs": 0, "joint_rounds": 1, "baselines": False}
TINY: dict[str, Any] = {"sa": {"iterations": 10, "joint_iterations": 4}, "ga": {"generations": 2, "joint_generations": 2},
                        "joint_rounds": 2, "finetune_between": 1, "finetune_epochs": 1}


@dataclass(frozen=True)
class SearchBenchSettings:
    """One protocol. ``variants`` maps a row label to (search preset, overrides); ``train`` is the baseline's
    recipe. ``layout`` picks the table: ``comparison`` (variants vs the seed mode) or ``baselines`` (each run
    against random and magnitude pruning at its sparsity)."""

    name: str
    description: str
    data: str
    train: TrainConfig
    variants: dict[str, tuple[str, dict[str, Any]]]
    algorithms: tuple[str, ...] = ("sa", "ga")
    seeds: tuple[int, ...] = (0, 1, 2)
    device: str = "cpu"
    layout: str = "comparison"
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        return (f"{self.data}; baseline {self.train.optimizer} {self.train.epochs} epochs; variants "
                f"{', '.join(self.variants)}; {'/'.join(a.upper() for a in self.algorithms)}; seeds "
                f"{','.join(map(str, self.seeds))}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "train": self.train.to_dict()}


# The MNIST-5k baseline: 3,200 training images are too few for the seed's plain SGD on the sigmoid LeNet (it stays
# at chance); Adam with cosine decay and ±2 px shifts for 150 epochs lands near the seed's 97.2% / 0.09 test loss.
MNIST5K_RECIPE = TrainConfig(epochs=150, optimizer="adam", lr=3e-3, schedule="cosine", augment="shift", batch_size=128)
FASHION_RECIPE = TrainConfig(epochs=30, optimizer="adam", lr=2e-3, schedule="cosine", batch_size=128)

PRESETS: dict[str, SearchBenchSettings] = {
    "mnist5k": SearchBenchSettings(
        "mnist5k", "improved vs seed mode on MNIST-5k (the issue's quality comparison)", "mnist5k", MNIST5K_RECIPE,
        {"seed": ("seed", {}), "improved": ("improved", {}), "improved, search only": ("improved", SEARCH_ONLY)}),
    "fashion": SearchBenchSettings(
        "fashion", "magnitude-biased improved SA + fine-tuning vs random/magnitude pruning on Fashion-MNIST", "fashion",
        FASHION_RECIPE, {"improved, magnitude-biased": ("improved", {"magnitude_bias": 1.0, "budget": 0.03})},
        algorithms=("sa",), seeds=(0,), layout="baselines"),
    "smoke": SearchBenchSettings(
        "smoke", "a check of the whole path in about a minute (15-epoch baseline, tiny budgets)", "mnist5k",
        MNIST5K_RECIPE.with_overrides(epochs=15),
        {"seed": ("seed", {"sa": {"iterations": 10}, "ga": {"generations": 2}}), "improved": ("improved", TINY)},
        seeds=(0,)),
}


def trained_lenet5_d2l(data: Any, recipe: TrainConfig, path: Path, device: str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """A lenet5_d2l trained on ``data`` with ``recipe``, from the checkpoint at ``path`` or trained and saved there."""
    if path.is_file():
        model, payload = load_checkpoint(path)
        return model.eval(), payload["meta"]
    torch.manual_seed(recipe.seed)
    kwargs = {"in_channels": data.in_channels, "num_classes": data.num_classes, "image_size": data.image_size}
    model = build_model("lenet5_d2l", **kwargs)
    start = time.perf_counter()
    result = train(model, data, recipe, device=device, progress=False)
    test = evaluate_split(model, data.test)
    meta = {"dataset": data.name, "seed": recipe.seed, "train_config": recipe.to_dict(),
            "train_seconds": time.perf_counter() - start, "best_epoch": result.best_epoch,
            "val_accuracy": result.best_val_accuracy, "test_accuracy": test.accuracy, "test_loss": test.loss}
    save_checkpoint(path, model.cpu(), arch="lenet5_d2l", arch_kwargs=kwargs, meta=meta)
    return model.eval(), meta


def baseline(settings: SearchBenchSettings, data: Any, cache: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained lenet5_d2l every search of ``settings`` starts from (seed 0), from the cache or trained now."""
    recipe = settings.train.with_overrides(seed=0)
    path = cache / f"lenet5_d2l-{settings.data}-{fingerprint(recipe.to_dict())}.pt"
    return trained_lenet5_d2l(data, recipe, path, settings.device)


def render_markdown(payload: dict[str, Any]) -> str:
    settings = payload["settings"]
    b = payload.get("baseline") or {}
    lines = [f"# Mask search: {settings['description']}", "",
             f"Command: `{payload.get('command', '')}`. lenet5_d2l (sigmoid, average pooling, 61,470 weights); "
             + (f"baseline test accuracy {100 * b['test_accuracy']:.2f}%, loss {b['test_loss']:.4f}. " if b else "")
             + f"Machine: {payload['machine']['nproc']} cores, {payload['machine']['cpu']}.", ""]
    runs = payload["runs"]
    if settings["layout"] == "comparison":
        lines += render_comparison(runs, settings["data"])
    else:
        for run in runs:
            lines += render_against_baselines(run, settings["data"])
    return "\n".join(lines).rstrip() + "\n"


def run(settings: SearchBenchSettings, options: RunOptions) -> BenchReport:
    """Run (or resume) every variant × algorithm × seed; write ``<out>/<name>.json`` and ``.md``."""
    json_path, md_path = options.out / f"{options.name}.json", options.out / f"{options.name}.md"
    previous = read_previous(json_path, options.existing)
    settings_hash = fingerprint(settings.to_dict())
    runs = [r for r in previous.get("runs", []) if r.get("settings") == settings_hash]
    requested = [(v, a, s) for s in settings.seeds for v in settings.variants for a in settings.algorithms]
    finished = {(r["variant"], r["algorithm"], r["seed"]) for r in runs}
    skipped = sum(item in finished for item in requested)
    options.log(f"bench search ({settings.name}): {len(requested)} searches, {skipped} already done; results in {json_path}")
    data = load_dataset(settings.data, seed=0)
    model, meta = baseline(settings, data, options.cache or options.out / "baselines")
    info = {"settings": settings.to_dict(), "command": options.command, "machine": machine(), "baseline": meta}
    for variant, algorithm, seed in requested:
        if (variant, algorithm, seed) in finished:
            continue
        name, overrides = settings.variants[variant]
        config = preset(name, **overrides)
        result = search_masks(model, data, algorithm=algorithm, config=config, seed=seed, device=settings.device,
                              progress=options.progress)
        runs.append({**summarise_run(result, variant), "settings": settings_hash})
        options.log(f"[{variant} {algorithm.upper()} seed {seed}] sparsity {result.sparsity['global']:.3f}, "
                    f"test accuracy {runs[-1]['accuracy']:.4f}, {result.evaluations} evaluations, {result.wall_time_s:.0f} s")
        write_json(json_path, {**info, "runs": runs})  # resumable after every run
    payload = {**info, "runs": runs}
    write_json(json_path, payload)
    text = render_markdown(payload)
    write_text(md_path, text)
    return BenchReport(json_path, md_path, text, runs_done=len(requested) - skipped, runs_skipped=skipped)


def render_file(path: Path) -> str:
    """The Markdown of an existing results file (nothing is run)."""
    try:
        return render_markdown(json.loads(Path(path).read_text()))
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise ConfigError(f"{path} is not a results file of bench search ({exc!r}); give the JSON it wrote") from None


TARGET = Target(name="search", help="mask-search modes (seed, improved, baselines) compared over seeds",
                presets=PRESETS, run=run, render=render_file)
