"""Where an evolution run's worker time goes, per generation, fidelity and task (finished or not).

    .venv/bin/python benchmarks/evolve_worker_time.py runs/evolve-cpu-s0 runs/evolve-cpu-s0-r2

Reads each run's ``events.jsonl``: every evaluation's in-worker seconds (wall time inside the job), summed per
generation and (fidelity, task), with the evaluation counts and the generation's wall time. Prints a Markdown table
per run; nothing is written.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def table(run_dir: Path) -> str:
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]
    spent: dict[int, dict[tuple[str, str], float]] = defaultdict(lambda: defaultdict(float))
    count: dict[int, dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
    for e in events:
        if e["event"] == "evaluation":
            key = (e["fidelity"], e["task"])
            spent[e["generation"]][key] += e.get("seconds") or 0.0
            count[e["generation"]][key] += 1
    walls = {e["generation"]: e["seconds"] for e in events if e["event"] == "generation"}
    keys = sorted({k for per in spent.values() for k in per})
    lines = [f"## {run_dir}", "", "Worker seconds (evaluations, seconds each) per generation; generation wall time.", "",
             "| gen | wall s | worker s | " + " | ".join(f"{f} {t}" for f, t in keys) + " |",
             "| ---: | ---: | ---: | " + " | ".join("---:" for _ in keys) + " |"]
    for gen in sorted(spent):
        if gen not in walls:
            continue  # an unfinished generation
        cells = [f"{spent[gen][k]:.0f} ({count[gen][k]}, {spent[gen][k] / max(1, count[gen][k]):.3f})" for k in keys]
        lines.append(f"| {gen} | {walls[gen]:.0f} | {sum(spent[gen].values()):.0f} | " + " | ".join(cells) + " |")
    done = [g for g in spent if g in walls]
    total = {k: sum(spent[g][k] for g in done) for k in keys}
    grand = sum(total.values()) or 1.0
    lines += ["", "Share of the finished generations' worker time: "
              + ", ".join(f"{f} {t} {v / grand:.0%}" for (f, t), v in sorted(total.items(), key=lambda kv: -kv[1])), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+")
    args = parser.parse_args()
    print("\n".join(table(run) for run in args.runs))


if __name__ == "__main__":
    main()
