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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from evoprune.atomic import write_json, write_text
from evoprune.baseline import Baseline, BaselineSpec, DataSpec, get_baseline
from evoprune.bench.common import fingerprint
from evoprune.bench.registry import BenchReport, Option, RunOptions, Target, read_previous, split_list
from evoprune.bench.search_report import render_against_baselines, render_comparison, summarise_run
from evoprune.config import to_data
from evoprune.device import machine
from evoprune.errors import ConfigError
from evoprune.search import preset as search_preset
from evoprune.search import search_masks
from evoprune.train import TrainConfig

# The improved preset with its fine-tuning switched off and one joint pass: what the search alone contributes.
SEARCH_ONLY: dict[str, Any] = {"finetune_between": 0, "finetune_epochs": 0, "joint_rounds": 1, "baselines": False}
TINY: dict[str, Any] = {"sa": {"iterations": 10, "joint_iterations": 4}, "ga": {"generations": 2, "joint_generations": 2},
                        "joint_rounds": 2, "finetune_between": 1, "finetune_epochs": 1}


@dataclass(frozen=True)
class Variant:
    """One row of the table: a search preset (``seed`` or ``improved``) with overrides of its settings.

    ``--set variants.improved.overrides.budget=0.05`` (a variant is named by ``name`` or its index).
    """

    name: str
    search: str
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchBenchSettings:
    """One protocol. ``variants`` are the rows; ``train`` is the baseline's recipe. ``layout`` picks the table:
    ``comparison`` (variants vs the seed mode) or ``baselines`` (each run against random and magnitude pruning at
    its sparsity)."""

    name: str
    description: str
    data: str
    train: TrainConfig
    variants: tuple[Variant, ...]
    algorithms: tuple[Literal["sa", "ga"], ...] = ("sa", "ga")
    seeds: tuple[int, ...] = (0, 1, 2)
    device: str = "cpu"
    layout: Literal["comparison", "baselines"] = "comparison"

    def __post_init__(self) -> None:
        for key in ("variants", "algorithms", "seeds"):
            if not getattr(self, key):
                raise ConfigError(f"{key} is empty; a search bench needs at least one")
        names = [v.name for v in self.variants]
        if len(set(names)) < len(names):
            raise ConfigError(f"variants {names}: each variant needs its own name")

    def summary(self) -> str:
        return (f"{self.data}; baseline {self.train.optimizer} {self.train.epochs} epochs; variants "
                f"{', '.join(v.name for v in self.variants)}; {'/'.join(a.upper() for a in self.algorithms)}; seeds "
                f"{','.join(map(str, self.seeds))}")

    def to_dict(self) -> dict[str, Any]:
        return to_data(self)

    def run_hash(self, variant: Variant) -> str:
        """Fingerprint of what shaped a run of ``variant``: a finished run is skipped on resume only when it
        matches (other seeds, algorithms or variants leave it valid)."""
        return fingerprint({"data": self.data, "train": to_data(self.train), "search": variant.search,
                            "overrides": variant.overrides})


# The MNIST-5k baseline: 3,200 training images are too few for the seed's plain SGD on the sigmoid LeNet (it stays
# at chance); Adam with cosine decay and ±2 px shifts for 150 epochs lands near the seed's 97.2% / 0.09 test loss.
MNIST5K_RECIPE = TrainConfig(epochs=150, optimizer="adam", lr=3e-3, schedule="cosine", augment="shift", batch_size=128)
FASHION_RECIPE = TrainConfig(epochs=30, optimizer="adam", lr=2e-3, schedule="cosine", batch_size=128)

PRESETS: dict[str, SearchBenchSettings] = {
    "mnist5k": SearchBenchSettings(
        name="mnist5k", description="improved vs seed mode on MNIST-5k (the issue's quality comparison)",
        data="mnist5k", train=MNIST5K_RECIPE,
        variants=(Variant("seed", "seed"), Variant("improved", "improved"),
                  Variant("improved, search only", "improved", SEARCH_ONLY))),
    "fashion": SearchBenchSettings(
        name="fashion", description="magnitude-biased improved SA + fine-tuning vs random/magnitude pruning on "
        "Fashion-MNIST", data="fashion", train=FASHION_RECIPE,
        variants=(Variant("improved, magnitude-biased", "improved", {"magnitude_bias": 1.0, "budget": 0.03}),),
        algorithms=("sa",), seeds=(0,), layout="baselines"),
    "smoke": SearchBenchSettings(
        name="smoke", description="a check of the whole path in about a minute (15-epoch baseline, tiny budgets)",
        data="mnist5k", train=MNIST5K_RECIPE.with_overrides(epochs=15),
        variants=(Variant("seed", "seed", {"sa": {"iterations": 10}, "ga": {"generations": 2}}),
                  Variant("improved", "improved", TINY)),
        seeds=(0,)),
}


def baseline(settings: SearchBenchSettings, cache: Path) -> Baseline:
    """The trained lenet5_d2l every search of ``settings`` starts from (split and training seed 0), from the cache
    or trained now."""
    spec = BaselineSpec("lenet5_d2l", DataSpec(settings.data, split_seed=0), settings.train, seed=0)
    return get_baseline(spec, cache_dir=cache, device=settings.device)


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
    # every variant's search config is built (and checked) before the baseline is trained
    configs = {v.name: search_preset(v.search, **v.overrides) for v in settings.variants}
    hashes = {v.name: settings.run_hash(v) for v in settings.variants}
    json_path, md_path = options.out / f"{options.name}.json", options.out / f"{options.name}.md"
    previous = read_previous(json_path, options.existing)
    requested = [(v.name, a, s) for s in settings.seeds for v in settings.variants for a in settings.algorithms]
    runs = [r for r in previous.get("runs", []) if (r.get("variant"), r.get("algorithm"), r.get("seed")) in requested
            and r.get("settings") == hashes[r["variant"]]]
    if len(runs) < len(previous.get("runs", [])):
        options.log(f"ignoring {len(previous['runs']) - len(runs)} runs in {json_path} made with other settings")
    finished = {(r["variant"], r["algorithm"], r["seed"]) for r in runs}
    skipped = sum(item in finished for item in requested)
    options.log(f"bench search ({settings.name}): {len(requested)} searches, {skipped} already done; results in {json_path}")
    base = baseline(settings, options.cache or options.out / "baselines")
    model, data = base.model, base.data
    info = {"settings": settings.to_dict(), "command": options.command, "machine": machine(), "baseline": base.meta}
    for variant, algorithm, seed in requested:
        if (variant, algorithm, seed) in finished:
            continue
        result = search_masks(model, data, algorithm=algorithm, config=configs[variant], seed=seed,
                              device=settings.device, progress=options.progress)
        runs.append({**summarise_run(result, variant), "settings": hashes[variant]})
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
                presets=PRESETS, run=run, render=render_file, set_example="variants.improved.overrides.budget=0.05",
                options=(Option("--algorithms", "algorithms", "comma list of sa, ga (default: the preset's)", split_list,
                                "sa,ga"),))
