"""Merge criteria results files written by separate processes (e.g. one per network) into one.

A results file belongs to one process at a time, so a run split over cores writes one file per process (each with
its own `--models` or `--seeds`); this joins their cells and records. Settings must agree, and each (network, seed)
cell with its records is taken from the one file whose `--models` and `--seeds` ran it (files resumed from one
partial file also carry the others' early cells). The merged JSON is written with its Markdown report and plots beside it, as the run would write them
(also while the runs are unfinished); `evoprune bench criteria --preset P --resume --out DIR` continues from it.

    .venv/bin/python benchmarks/merge_criteria.py runs/crit-a/criteria-cpu.json runs/crit-b/criteria-cpu.json \
        --out benchmarks/results/criteria-cpu.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from evoprune.atomic import write_json, write_text
from evoprune.bench.criteria_report import render_markdown, write_plots
from evoprune.bench.criteria_settings import MODELS


def merge(paths: list[Path]) -> dict[str, Any]:
    files = [json.loads(p.read_text()) for p in paths]
    first = files[0]
    cells: dict[str, Any] = {}
    records: dict[tuple, dict[str, Any]] = {}
    for path, data in zip(paths, files):
        if {k: v for k, v in data["settings"].items() if k not in ("models", "seeds")} != {
                k: v for k, v in first["settings"].items() if k not in ("models", "seeds")}:
            raise SystemExit(f"{path}: settings differ from {paths[0]}'s; these files are not one run")
        ran = {(n, s) for n in data["settings"]["models"] for s in data["settings"]["seeds"]}
        # a (network, seed) cell and its records come from the file whose --models and --seeds ran it (files
        # resumed from one partial file also carry the others' early cells)
        for key, cell in data["cells"].items():
            network, seed = key.split("/")
            if (network, int(seed)) in ran and records_of(data, network, int(seed)):
                if key in cells:
                    raise SystemExit(f"{path}: cell {key} was also measured by another file; merge disjoint runs")
                cells[key] = cell
                records.update({(r["network"], r["seed"], r["metric"]): r
                                for r in records_of(data, network, int(seed))})
    networks = {k.split("/")[0] for k in cells}
    settings = {**first["settings"], "models": [m for m in MODELS if m in networks]}
    return {"settings": settings, "target": first["target"],
            "command": " && ".join(dict.fromkeys(f["command"] for f in files)), "machine": first["machine"],
            "seconds": max(f["seconds"] for f in files),
            "compute_seconds": sum(r["seconds"] for r in records.values()) + sum(c["seconds"] for c in cells.values()),
            "cells": cells, "records": list(records.values())}


def records_of(data: dict[str, Any], network: str, seed: int) -> list[dict[str, Any]]:
    return [r for r in data["records"] if r["network"] == network and r["seed"] == seed]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    merged = merge(args.files)
    write_json(args.out, merged)
    plots = write_plots(merged, args.out.parent, args.out.stem)
    write_text(args.out.with_suffix(".md"), render_markdown(merged, plots={k: p.name for k, p in plots.items()}))
    print(f"{args.out}: {len(merged['cells'])} cells, {len(merged['records'])} records; report and plots beside it")


if __name__ == "__main__":
    main()
