"""Merge budget results files written by separate processes (e.g. one per network) into one.

A results file belongs to one process at a time, so a run split over cores writes one file per process (each with
its own `--models` or `--seeds`, each resumed from a copy of the same earlier file); this joins their records. A
record is one (network, seed, metric, target) search; two files may both hold it only when they copied it from the
earlier file, and then it must be the same record. Each record's settings fingerprint must match that of every other
record of its network (the same protocol). The merged JSON is written with its Markdown report beside it, as the
run would write them; `evoprune bench budget --preset P --resume --out DIR` continues from it.

    .venv/bin/python benchmarks/merge_budget.py runs/budget-a/budget-cpu.json runs/budget-b/budget-cpu.json \
        --out benchmarks/results/budget-cpu.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from evoprune.atomic import write_json, write_text
from evoprune.bench.budget_report import render_markdown
from evoprune.bench.budget_settings import BudgetBenchSettings


def merge(paths: list[Path]) -> dict[str, Any]:
    files = [json.loads(p.read_text()) for p in paths]
    records: dict[tuple, dict[str, Any]] = {}
    hashes: dict[str, str] = {}
    for path, data in zip(paths, files):
        for r in data["records"]:
            key = (r["network"], r["seed"], r["metric"], r["target"])
            if hashes.setdefault(r["network"], r["settings"]) != r["settings"]:
                raise SystemExit(f"{path}: {key} was measured with other settings than the other {r['network']} "
                                 "records; these files are not one protocol")
            if key in records and records[key] != r:
                raise SystemExit(f"{path}: {key} was also measured, differently, by another file; merge disjoint runs")
            records[key] = r
    first = files[0]
    for path, data in zip(paths, files):
        if _protocol(data) != _protocol(first):
            raise SystemExit(f"{path}: settings differ from {paths[0]}'s (beyond --models/--seeds); not one run")
    listed = [m for data in files for m in data["settings"]["models"]] + list(hashes)
    models = [m for m in BudgetBenchSettings().models if m in listed] + sorted(set(listed) - set(BudgetBenchSettings().models))
    seeds = sorted({s for data in files for s in data["settings"]["seeds"]} | {r["seed"] for r in records.values()})
    ordered = sorted(records.values(), key=lambda r: (r["seed"], models.index(r["network"]), r["metric"], -r["target"]))
    settings = {**first["settings"], "models": models, "seeds": seeds}
    return {"settings": settings, "target": first["target"],
            "command": " && ".join(dict.fromkeys(f["command"] for f in files)), "machine": first["machine"],
            "seconds": max(f["seconds"] for f in files), "compute_seconds": sum(r["seconds"] for r in ordered),
            "records": ordered}


def _protocol(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data["settings"].items() if k not in ("models", "seeds")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    merged = merge(args.files)
    write_json(args.out, merged)
    write_text(args.out.with_suffix(".md"), render_markdown(merged))
    print(f"{args.out}: {len(merged['records'])} records; report beside it")


if __name__ == "__main__":
    main()
