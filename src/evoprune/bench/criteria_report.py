"""The criteria benchmark's report: Markdown tables, a plain-language reading and PNG plots, from the results JSON
alone (so a committed results file re-renders byte for byte)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from evoprune.bench.criteria_settings import CriteriaBenchSettings
from evoprune.criteria import curve_auc, holm, mean_ranks, pairwise_table, reading
from evoprune.errors import ConfigError

#: Human-designed criteria (and Torch-Pruning's group importances): "the best human metric" is the best-ranked
#: of these; the paper's seeds and evolved functions are compared against it.
HUMAN = ("WL1", "WL2", "FPGM", "BNScale", "Taylor", "DI", "MMD", "tp_l1", "tp_l2", "tp_bn_scale", "tp_taylor")
#: The rows every metric is compared against in the paired table (when present), besides the best human metric.
ANCHORS = ("random", "WL1", "WL2", "eq3", "EP_Func1", "EP_Func2", "oracle")


def _mean_std(values: Iterable[float]) -> str:
    values = list(values)
    if not values:
        return "—"
    mean = statistics.fmean(values)
    return f"{mean:.3f}" if len(values) == 1 else f"{mean:.3f} ± {statistics.stdev(values):.3f}"


def curve_records(results: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    """Long-format records ``{metric, network, ratio, seed, value}`` of one curve measurement (``accuracy_pruned``
    or ``accuracy_recalibrated``), the cells of the paired statistics."""
    return [{"metric": r["metric"], "network": r["network"], "ratio": p["ratio"], "seed": r["seed"], "value": p[key]}
            for r in results["records"] for p in r["curve"]]


def finetune_records(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"metric": r["metric"], "network": r["network"], "ratio": f["ratio"], "seed": r["seed"],
             "value": f["test_accuracy"]} for r in results["records"] for f in r["finetuned"]]


def _auc(results: Mapping[str, Any], record: Mapping[str, Any], key: str) -> float:
    cell = results["cells"][f"{record['network']}/{record['seed']}"]
    points = sorted(record["curve"], key=lambda p: p["ratio"])
    return curve_auc([p["macs"] / cell["macs"] for p in points], [p[key] for p in points], cell["test_accuracy"])


def auc_records(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One record per (metric, network, seed): the normalised AUC after BN recalibration. A (network, seed) is
    the independent replicate (its ratios share one baseline and one scoring), so these are the honest cells."""
    return [{"metric": r["metric"], "network": r["network"], "ratio": 0.0, "seed": r["seed"],
             "value": _auc(results, r, "accuracy_recalibrated")} for r in results["records"]]


def _summary(results: Mapping[str, Any]) -> list[str]:
    """One row per metric: oracle correlation, AUC, mean ranks, and paired tests against random and the best
    human metric with a (network, seed) as the unit, Holm-corrected over every pair of metrics."""
    records = results["records"]
    units = pairwise_table(auc_records(results), seed=0)
    tuned = finetune_records(results)
    recal_ranks, _ = mean_ranks(curve_records(results, "accuracy_recalibrated"))
    tuned_ranks = mean_ranks(tuned)[0] if tuned else {}
    human = next((m for m in units["metrics"] if m in HUMAN), None)
    pairs = {(p["a"], p["b"]): p for p in units["pairs"]}
    # Each column is one family of tests (every metric against that reference), Holm-corrected within it.
    corrected: dict[tuple[str, str | None], float | None] = {}
    references = ["random", human, *(["eq3"] if "eq3" in units["metrics"] else [])]  # eq3: the paper's evolved default
    for other in references:
        family = [m for m in units["metrics"] if (m, other) in pairs]
        corrected.update(zip(((m, other) for m in family), holm([pairs[m, other]["p"] for m in family])))

    def versus(metric: str, other: str | None) -> str:
        pair = pairs.get((metric, other))
        if pair is None:
            return ""
        p = corrected[metric, other]
        return f"{pair['win_rate']:.0%}, {100 * pair['mean_diff']:+.1f}, p {'—' if p is None else f'{p:.2g}'}"

    lines = ["## Summary", "",
             f"One row per metric, best first by mean rank of its AUC over the {units['ranked_cells']} (network, seed) "
             "units. ρ: Spearman correlation with the oracle, mean over groups, networks and seeds. AUC: normalised "
             "area under the accuracy-vs-MACs curve after BN recalibration, mean over units. Mean ranks over the "
             "(network, ratio, seed) cells after BN recalibration and after fine-tuning. *vs*: paired over the "
             "(network, seed) units (one baseline and one scoring each, the independent replicates): win rate, mean "
             "AUC difference in points, two-sided Wilcoxon p Holm-corrected within the column (each column is one "
             "family: every metric against that reference; — = too few non-zero differences to test). The reading "
             "below corrects over every pair of metrics instead, a stricter family.", "",
             f"| metric | ρ | AUC | rank (recal.) | rank (fine-tuned) | vs random | vs {human or 'best human'} "
             "(best human) |" + (" vs eq3 (the paper's evolved default) |" if "eq3" in references else ""),
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if "eq3" in references else "")]
    for metric in units["metrics"]:
        own = [r for r in records if r["metric"] == metric]
        auc = statistics.fmean(u["value"] for u in auc_records({**results, "records": own}))
        rho = statistics.fmean(r["correlations"]["spearman_mean"] for r in own)
        tuned_rank = f"{tuned_ranks[metric]:.1f}" if metric in tuned_ranks else "—"
        lines.append(f"| {metric} | {rho:+.3f} | {auc:.3f} | {recal_ranks.get(metric, float('nan')):.1f} | {tuned_rank} "
                     f"| {versus(metric, 'random')} | {versus(metric, human)} |"
                     + (f" {versus(metric, 'eq3')} |" if "eq3" in references else ""))
    return [*lines, "", "**Reading** (AUC after BN recalibration): " + reading(units, unit="(network, seed) units"), ""]


def _by(records: Iterable[Mapping[str, Any]], *keys: str) -> dict[tuple, list[Mapping[str, Any]]]:
    out: dict[tuple, list[Mapping[str, Any]]] = {}
    for record in records:
        out.setdefault(tuple(record[k] for k in keys), []).append(record)
    return out


def _order(results: Mapping[str, Any]) -> list[str]:
    seen: list[str] = []
    for record in results["records"]:
        if record["metric"] not in seen:
            seen.append(record["metric"])
    return seen


def render_markdown(results: Mapping[str, Any], *, plots: Mapping[str, str] | None = None) -> str:
    """The report of a results JSON: unpruned networks, oracle correlations, AUCs, mean ranks, paired comparisons
    (accuracy after BN recalibration, every (network, ratio, seed) cell), fine-tuned accuracy, the reading."""
    settings = CriteriaBenchSettings.from_dict(results["settings"])
    records, cells = results["records"], results["cells"]
    if not records:
        raise ConfigError("the results file holds no measurements yet; run the benchmark first")
    networks = [n for n in settings.models if any(r["network"] == n for r in records)]
    metrics = _order(results)
    by_metric_net = _by(records, "metric", "network")
    m = results.get("machine", {})
    lines = [
        f"# Criteria benchmark ({settings.name}): can the yardstick tell pruning functions apart?",
        "",
        f"Command: `{results.get('command', '')}`  ",
        f"Machine: {m.get('cpu', '?')}, {m.get('nproc', '?')} cores, torch {m.get('torch', '?')} with "
        f"{m.get('threads', '?')} thread(s){', GPU ' + m['cuda'] if m.get('cuda') else ''}; compute "
        f"{results.get('compute_seconds', 0) / 60:.1f} min.  ",
        f"Protocol: {settings.summary()}. Oracle: validation-loss increase when one channel alone is removed from "
        f"its group, on {settings.oracle_samples} class-balanced validation images. Curves: uniform per-layer "
        "ratios (the same architecture for every metric), test split, right after pruning and after "
        f"re-estimating BatchNorm statistics on {settings.recalibration_batches} training batches; test is "
        "measured, never selected on.",
        "",
        "## Unpruned networks",
        "",
        "| network | test accuracy | MACs | parameters | prunable groups | oracle s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for net in networks:
        own = [c for k, c in cells.items() if k.split("/")[0] == net]
        lines.append(f"| {net} | {_mean_std(c['test_accuracy'] for c in own)} | {own[0]['macs']:,} | "
                     f"{own[0]['params']:,} | {len(own[0]['groups'])} | {_mean_std(c['oracle_seconds'] for c in own)} |")
    lines += ["", *_summary(results), "## Correlation with the oracle", "",
              "Spearman ρ per group, averaged over groups (each group weighted equally), mean ± std over seeds; "
              "Kendall τ-b likewise (all networks); worst: the lowest single-group ρ seen.", "",
              "| metric | " + " | ".join(f"ρ {n}" for n in networks) + " | ρ all | τ all | worst ρ |",
              "| --- | " + " | ".join("---:" for _ in networks) + " | ---: | ---: | ---: |"]
    rho_all = {mt: [r["correlations"]["spearman_mean"] for r in records if r["metric"] == mt] for mt in metrics}
    for mt in sorted(metrics, key=lambda x: -statistics.fmean(rho_all[x])):
        own = [r for r in records if r["metric"] == mt]
        cols = [_mean_std(r["correlations"]["spearman_mean"] for r in by_metric_net.get((mt, n), [])) for n in networks]
        lines.append(f"| {mt} | " + " | ".join(cols) + f" | {_mean_std(rho_all[mt])} | "
                     f"{_mean_std(r['correlations']['kendall_mean'] for r in own)} | "
                     f"{min(r['correlations']['spearman_worst'] for r in own):.3f} |")
    lines += ["", "## Accuracy against MACs", "",
              "Normalised area under the test-accuracy-vs-MACs-kept curve (1.0 = no loss anywhere on the measured "
              "span), mean ± std over seeds: right after pruning / after BN recalibration.", "",
              "| metric | " + " | ".join(f"AUC {n}" for n in networks) + " | AUC all (recalibrated) |",
              "| --- | " + " | ".join("---:" for _ in networks) + " | ---: |"]
    auc_all = {mt: [_auc(results, r, "accuracy_recalibrated") for r in records if r["metric"] == mt] for mt in metrics}
    for mt in sorted(metrics, key=lambda x: -statistics.fmean(auc_all[x])):
        cols = []
        for n in networks:
            own = by_metric_net.get((mt, n), [])
            cols.append(f"{_mean_std(_auc(results, r, 'accuracy_pruned') for r in own)} / "
                        f"{_mean_std(_auc(results, r, 'accuracy_recalibrated') for r in own)}")
        lines.append(f"| {mt} | " + " | ".join(cols) + f" | {_mean_std(auc_all[mt])} |")
    recal = curve_records(results, "accuracy_recalibrated")
    table = pairwise_table(recal, seed=0)
    pruned_ranks, _ = mean_ranks(curve_records(results, "accuracy_pruned"))
    lines += ["", "## Mean rank and paired comparisons", "",
              f"Each (network, ratio, seed) cell ranks the metrics by test accuracy after BN recalibration "
              f"({table['ranked_cells']} complete cells; rank 1 = best); right after pruning in brackets. Paired "
              "against the anchors over the same cells: win rate, Wilcoxon signed-rank p (two-sided; — = fewer than "
              "6 non-zero differences; * = still < 0.05 after Holm's correction for every pair of the table), mean "
              "difference in accuracy points with its bootstrap 95% interval. The cells of one network and seed share "
              "its channel scores, so they are not independent: read the p-values as optimistic.", ""]
    human = [mt for mt in table["metrics"] if mt in HUMAN]
    anchors = [a for a in ANCHORS if a in table["metrics"]]
    if human and human[0] not in anchors:
        anchors.insert(0, human[0])
    pairs = {(p["a"], p["b"]): p for p in table["pairs"]}
    lines += ["| metric | mean rank | " + " | ".join(f"vs {a}" + (" (best human)" if human and a == human[0] else "")
                                                    for a in anchors) + " |",
              "| --- | ---: | " + " | ".join("---:" for _ in anchors) + " |"]
    for mt in table["metrics"]:
        cols = []
        for a in anchors:
            pair = pairs.get((mt, a))
            if pair is None:
                cols.append("")
                continue
            p = "—" if pair["p"] is None else f"{pair['p']:.2g}" + ("*" if (pair["p_holm"] or 1.0) < 0.05 else "")
            cols.append(f"{pair['win_rate']:.0%}, p {p}, {100 * pair['mean_diff']:+.1f} "
                        f"[{100 * pair['ci_low']:+.1f}, {100 * pair['ci_high']:+.1f}]")
        lines.append(f"| {mt} | {table['mean_rank'][mt]:.2f} ({pruned_ranks.get(mt, float('nan')):.2f}) | "
                     + " | ".join(cols) + " |")
    lines += ["", "**Reading** (accuracy after BN recalibration): " + reading(table), ""]
    tuned = finetune_records(results)
    if tuned:
        lines += ["## After a short fine-tune", "",
                  f"Test accuracy after {settings.finetune.epochs} fine-tuning epoch(s) "
                  f"({settings.finetune.optimizer}, lr {settings.finetune.lr:g}; best validation epoch kept), "
                  f"seeds {', '.join(map(str, settings.tuned_seeds))}, mean ± std.", "",
                  "| metric | " + " | ".join(f"{n} @ {r:.0%}" for n in networks for r in settings.finetune_ratios)
                  + " |", "| --- | " + " | ".join("---:" for _ in networks for _ in settings.finetune_ratios) + " |"]
        by_cell = _by(tuned, "metric", "network", "ratio")
        for mt in metrics:
            lines.append(f"| {mt} | " + " | ".join(_mean_std(r["value"] for r in by_cell.get((mt, n, ratio), []))
                                                  for n in networks for ratio in settings.finetune_ratios) + " |")
        tuned_table = pairwise_table(tuned, seed=0)
        lines += ["", "**Reading** (fine-tuned test accuracy): " + reading(tuned_table), ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{title}]({name})" for title, name in plots.items()] + [""]
    return "\n".join(lines)


def write_plots(results: Mapping[str, Any], out: Path, name: str) -> dict[str, Path]:
    """One accuracy-vs-MACs PNG per network and the win-rate heat map, beside the results; ``{title: path}``."""
    from evoprune.criteria.plots import plot_accuracy_macs, plot_win_rates

    plots: dict[str, Path] = {}
    cells = results["cells"]
    for net in dict.fromkeys(r["network"] for r in results["records"]):
        points = [{"metric": r["metric"], "seed": r["seed"], "ratio": p["ratio"],
                   "macs": p["macs"] / cells[f"{net}/{r['seed']}"]["macs"], "accuracy": p["accuracy_pruned"],
                   "accuracy_recalibrated": p["accuracy_recalibrated"]}
                  for r in results["records"] if r["network"] == net for p in r["curve"]]
        unpruned = statistics.fmean(c["test_accuracy"] for k, c in cells.items() if k.split("/")[0] == net)
        plots[f"accuracy against MACs, {net}"] = plot_accuracy_macs(points, out / f"{name}-{net}.png", network=net,
                                                                    unpruned_accuracy=unpruned)
    table = pairwise_table(curve_records(results, "accuracy_recalibrated"), seed=0)
    plots["pairwise win rates"] = plot_win_rates(table, out / f"{name}-win-rates.png")
    return plots


def render_file(path: Path) -> str:
    """The Markdown report of an existing results file (its plots are named as the run wrote them)."""
    try:
        results = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not a readable criteria results file ({exc})") from None
    stem = Path(path).stem
    networks = dict.fromkeys(r["network"] for r in results.get("records", []))
    plots = {f"accuracy against MACs, {n}": f"{stem}-{n}.png" for n in networks}
    plots["pairwise win rates"] = f"{stem}-win-rates.png"
    return render_markdown(results, plots=plots)
