"""Weights, issue 14: the mask search's `improved` preset against magnitude pruning at per-layer sparsities found by
a sparsity search (`evoprune.search.sparsity`), at the same global sparsity and with as much fine-tuning.

    .venv/bin/python benchmarks/bench_sparsity_search.py              # the 6 improved runs of mask_search.json
    .venv/bin/python benchmarks/bench_sparsity_search.py --algorithms sa --seeds 0 --evaluations 20   # a quick look
    .venv/bin/python benchmarks/bench_sparsity_search.py --join A/sparsity_search.json B/sparsity_search.json

For every `improved` run (SA and GA, seeds 0-2) of the committed mask-search quality results (MNIST-5k, LeNet-5 of
d2l, `evoprune bench search --preset mnist5k`), the same trained network is searched over per-layer sparsities at
that run's global sparsity (SA over keep levels of 1% per layer, magnitude inside each layer, validation accuracy of
1,000 images), and the chosen allocation is fine-tuned with the masks fixed for as many epochs, with the same
recipe, as the run's own baselines got (all the fine-tuning the run did), then tested once. Written beside the
run's own rows: its test accuracy, and magnitude pruning at its own per-layer sparsities (`magnitude_layer`) and
globally (`magnitude_global`). Results: `benchmarks/results/sparsity_search.{json,md}`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_results
from evoprune.bench.search import PRESETS, baseline
from evoprune.device import machine
from evoprune.search.config import preset
from evoprune.search.sparsity import SparsitySearchConfig, search_sparsities

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algorithms", default="sa,ga", help="which improved runs to match")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--evaluations", type=int, default=300)
    parser.add_argument("--cache", type=Path, default=ROOT / "runs" / "bench_mask_search")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--join", type=Path, nargs="+", default=None,
                        help="instead of measuring: join results files of separate processes (e.g. one per algorithm)")
    args = parser.parse_args()
    if args.join:
        parts = [json.loads(p.read_text()) for p in args.join]
        payload = {**parts[0], "rows": [r for part in parts for r in part["rows"]]}
        write_results("sparsity_search", payload, markdown(payload), args.out)
        return
    torch.set_num_threads(1)
    quality = json.loads((RESULTS / "mask_search.json").read_text())["quality"]
    algorithms, seeds = args.algorithms.split(","), [int(s) for s in args.seeds.split(",")]
    runs = [r for r in quality["rows"] if r["variant"] == "improved" and r["algorithm"] in algorithms
            and r["seed"] in seeds]
    base = baseline(PRESETS["mnist5k"], args.cache)
    assert abs(base.meta["test_accuracy"] - quality["mnist5k_baseline"]["test_accuracy"]) < 1e-9, "not the same network"
    improved = preset("improved")
    rows = []
    for run in runs:
        epochs = improved.finetune_epochs + improved.finetune_between * (len(run["phases"]) - 1)
        config = SparsitySearchConfig(sparsity=run["sparsity"]["global"], evaluations=args.evaluations,
                                      finetune=improved.finetune.with_overrides(epochs=epochs))
        tick = time.perf_counter()
        result = search_sparsities(base.model, base.data, config, seed=run["seed"])
        chosen = result["records"][result["chosen"]]
        own = {b["kind"]: b["finetuned"]["test"]["accuracy"] for b in run["baselines"]}
        rows.append({"algorithm": run["algorithm"], "seed": run["seed"], "sparsity": run["sparsity"]["global"],
                     "finetune_epochs": epochs, "improved": run["accuracy"],
                     "magnitude_layer": own["magnitude_layer"], "magnitude_global": own["magnitude_global"],
                     "searched": result["finetuned"]["chosen"]["test_accuracy"],
                     "searched_sparsity": chosen["sparsity"], "searched_keep": chosen["keep"],
                     "layers": result["layers"], "search_seconds": result["seconds"]["search"],
                     "seconds": time.perf_counter() - tick})
        print(f"{run['algorithm']} seed {run['seed']}: improved {run['accuracy']:.4f}, "
              f"magnitude at searched sparsities {rows[-1]['searched']:.4f} ({rows[-1]['seconds']:.0f} s)", flush=True)
    payload = {"machine": machine(), "evaluations": args.evaluations, "levels": SparsitySearchConfig().levels, "rows": rows}
    write_results("sparsity_search", payload, markdown(payload), args.out)


def _cell(values: list[float]) -> str:
    pct = [100 * v for v in values]
    return f"{statistics.fmean(pct):.2f}" + (f" ± {statistics.stdev(pct):.2f}" if len(pct) > 1 else "")


def markdown(payload: dict[str, Any]) -> str:
    lines = ["# Mask search (`improved`) against magnitude pruning at searched per-layer sparsities", "",
             "MNIST-5k, LeNet-5 (d2l), the mask-search quality runs' network; test accuracy % after the same "
             "fine-tuning (epochs: all the fine-tuning the run did), mean ± std over seeds. `searched sparsities`: "
             f"SA over {payload['evaluations']} allocations of per-layer keep levels (1% steps) at the run's global "
             "sparsity, magnitude inside each layer, chosen on validation.", "",
             "| matched run | seeds | global sparsity | fine-tune epochs | improved mask search | magnitude at its "
             "sparsities | magnitude, global | magnitude at searched sparsities |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for algorithm in dict.fromkeys(r["algorithm"] for r in payload["rows"]):
        mine = [r for r in payload["rows"] if r["algorithm"] == algorithm]
        lines.append(f"| improved {algorithm.upper()} | {len(mine)} | {statistics.fmean(r['sparsity'] for r in mine):.4f} | "
                     f"{mine[0]['finetune_epochs']} | " + " | ".join(
                         _cell([r[k] for r in mine]) for k in ("improved", "magnitude_layer", "magnitude_global", "searched"))
                     + " |")
    lines += ["", "Per-layer sparsity chosen (1 − kept fraction), per run:", "",
              "| run | " + " | ".join(payload["rows"][0]["layers"]) + " | search s |",
              "| --- | " + " | ".join("---:" for _ in payload["rows"][0]["layers"]) + " | ---: |"]
    for r in payload["rows"]:
        lines.append(f"| {r['algorithm'].upper()} seed {r['seed']} | " + " | ".join(
            f"{1 - k / payload['levels']:.2f}" for k in r["searched_keep"]) + f" | {r['search_seconds']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
