"""One metric against others on a criteria results file: paired over (network, seed) units, the AUC after BN
recalibration (all networks and per network) and the fine-tuned test accuracy (mean over the fine-tuned ratios):
win rate, mean difference in points, two-sided Wilcoxon p (uncorrected; the report's summary has Holm's).

    python benchmarks/criteria_pairs.py benchmarks/results/criteria-cpu.json EP_Func2 BNScale eq3 EP_Func1 random
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from scipy.stats import wilcoxon

from evoprune.bench.criteria_report import auc_records, finetune_records


def units(records: list[dict]) -> dict[tuple, float]:
    """(metric, network, seed) -> value, averaged over ratios where a unit has several."""
    grouped: dict[tuple, list[float]] = {}
    for r in records:
        grouped.setdefault((r["metric"], r["network"], r["seed"]), []).append(r["value"])
    return {k: statistics.fmean(v) for k, v in grouped.items()}


def compare(table: dict[tuple, float], a: str, b: str, label: str) -> None:
    keys = sorted({k[1:] for k in table if k[0] == a} & {k[1:] for k in table if k[0] == b})
    xa, xb = [table[(a, *k)] for k in keys], [table[(b, *k)] for k in keys]
    wins = sum(x > y for x, y in zip(xa, xb)) / len(keys)
    diff = statistics.fmean(x - y for x, y in zip(xa, xb))
    p = wilcoxon(xa, xb).pvalue if any(x != y for x, y in zip(xa, xb)) else float("nan")
    print(f"{label}: {a} vs {b}: {len(keys)} units, wins {wins:.0%}, mean difference {100 * diff:+.1f} points, "
          f"p {p:.3g}; means {statistics.fmean(xa):.3f} / {statistics.fmean(xb):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    parser.add_argument("metric")
    parser.add_argument("others", nargs="+")
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    auc, tuned = units(auc_records(results)), units(finetune_records(results))
    for other in args.others:
        compare(auc, args.metric, other, "AUC after recalibration")
        for net in results["settings"]["models"]:
            compare({k: v for k, v in auc.items() if k[1] == net}, args.metric, other, f"  {net}")
        if tuned:
            compare(tuned, args.metric, other, "fine-tuned test accuracy")


if __name__ == "__main__":
    main()
