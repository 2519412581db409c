"""Seconds per candidate of population-batched fine-tuning (``evolve.batched.train_stacked``) against one by one.

The evolution's main task: LeNet-5 pruned to the paper's schedule (``lenet5_paper``: conv 20→5, 50→11, fc 500→40)
on MNIST-5k, fine-tuned 1 epoch with the ``finetune`` recipe; K candidates of that architecture (different initial
weights, pruned by WL1; weights do not change the timing) fine-tuned one by one with ``train.train`` or together
with ``train_stacked`` (K = 1, 4, 8, 16), all with one seed as in evolution (an evaluation's seed depends on the
task and the evaluation's index, not on the candidate: common random numbers), so the members share each batch; and
K = 8 with a seed per member (each member its own batches) for comparison. Optionally the quick preset's VGG-11
×0.25 on digits (``vgg16_paper``).
Then, to see why: one training step per member (forward, backward, Adam) one by one, stacked by
``vmap(functional_call)`` and stacked by grouped layers, and the share of one-by-one training spent in the
convolution and pooling kernels (what batching cannot amortise) as opposed to per-op overhead.

    .venv/bin/python benchmarks/bench_batched_finetune.py --threads 1 [--repeats 5] [--vgg]
    python benchmarks/bench_batched_finetune.py --device cuda --out DIR   # on a GPU: results as batched_finetune_cuda
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap
from torch.profiler import profile

from _common import RESULTS, median_seconds, write_results
from evoprune.data import load_dataset
from evoprune.device import machine, resolve_device
from evoprune.evolve.batched import stack_models, train_stacked
from evoprune.models import build_model
from evoprune.prune import ChannelPruner
from evoprune.train import TRAIN_PRESETS, train

KS = (1, 4, 8, 16)
KERNELS = ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::max_pool2d_with_indices",
           "aten::max_pool2d_with_indices_backward")


def pruned_models(arch: str, arch_args: dict, data, schedule: str, count: int) -> list[torch.nn.Module]:
    out = []
    for seed in range(count):
        torch.manual_seed(seed)
        model = build_model(arch, in_channels=data.in_channels, num_classes=data.num_classes,
                            image_size=data.image_size, **arch_args)
        pruner = ChannelPruner("WL1", schedule=schedule, finetune=None, latency_batch_sizes=(), evaluate_test=False,
                               evaluate_before=False, scoring_samples=200)
        out.append(pruner.prune(model, data).model_)
    return out


def time_finetune(models: list[torch.nn.Module], data, repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds per candidate: one by one (train.train on models[0]) and stacked for each K.

    Repeats go round-robin over the settings, so a change in the machine's load hits every setting alike.
    """
    recipe = TRAIN_PRESETS["finetune"].with_overrides(epochs=1)
    runs = {"one_by_one": (lambda: train(copy.deepcopy(models[0]), data, recipe, progress=False, device=device), 1)}
    for k in KS:
        runs[f"stacked_{k}"] = (lambda k=k: train_stacked([copy.deepcopy(m) for m in models[:k]], data, recipe,
                                                          seeds=[0] * k, device=device), k)
    runs["stacked_8_own_seeds"] = (lambda: train_stacked([copy.deepcopy(m) for m in models[:8]], data, recipe,
                                                         seeds=list(range(8)), device=device), 8)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats + 1):  # the first round warms up
        for name, (run, k) in runs.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) / k)
    return {name: statistics.median(values[1:]) for name, values in times.items()}


def step_times(models: list[torch.nn.Module], data, k: int, repeats: int, device: torch.device) -> dict[str, float]:
    """Milliseconds per member of one training step (batch 128, Adam): one by one, vmap-stacked, grouped layers."""
    x = data.train.x[:128 * k].reshape(k, 128, *data.train.x.shape[1:]).to(device)
    y = data.train.y[:128 * k].reshape(k, 128).to(device)
    models = [copy.deepcopy(m).to(device) for m in models[:k]]

    def runner(forward, params) -> callable:
        optimizer = torch.optim.Adam(params, lr=1e-3)

        def step() -> None:
            logits = forward()
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(k, -1).mean(1).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # time the work, not its queueing
        return step

    single = copy.deepcopy(models[0]).train()
    one = runner(lambda: single(x[0]).unsqueeze(0).expand(k, -1, -1), single.parameters())
    params, buffers = stack_module_state([copy.deepcopy(m).train() for m in models[:k]])
    base = copy.deepcopy(models[0]).to("meta").train()
    batched = vmap(lambda p, b, xb: functional_call(base, (p, b), (xb,)))
    vmapped = runner(lambda: batched(params, buffers, x), params.values())
    net = stack_models(models[:k]).train()
    xs = x.permute(1, 0, 2, 3, 4).flatten(1, 2).contiguous(memory_format=torch.channels_last)
    grouped = runner(lambda: net(xs), net.parameters())
    return {"one_by_one": median_seconds(one, repeats * 5) * 1e3,  # one member's step, repeated k times
            "vmap": median_seconds(vmapped, repeats * 5) * 1e3 / k,
            "grouped": median_seconds(grouped, repeats * 5) * 1e3 / k}


def kernel_share(model: torch.nn.Module, data) -> float:
    """Fraction of one-by-one fine-tuning's CPU time spent inside convolution and max-pool kernels (CPU only)."""
    recipe = TRAIN_PRESETS["finetune"].with_overrides(epochs=1)
    with profile() as prof:
        train(copy.deepcopy(model), data, recipe, progress=False)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if e.key in KERNELS) / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--vgg", action="store_true", help="also VGG-11 ×0.25 on digits (vgg16_paper schedule)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    tasks = [("lenet5-mnist5k", "lenet5", {}, "mnist5k", "lenet5_paper")]
    if args.vgg:
        tasks.append(("vgg11x0.25-digits", "vgg", {"depth": 11, "width": 0.25}, "digits", "vgg16_paper"))
    rows = []
    start = time.perf_counter()
    for name, arch, arch_args, dataset, schedule in tasks:
        data = load_dataset(dataset, seed=0)
        models = pruned_models(arch, arch_args, data, schedule, max(KS))
        load_before = os.getloadavg()[0]
        row = {"task": name, "schedule": schedule, "train": len(data.train), "val": len(data.val),
               **time_finetune(models, data, args.repeats, device)}
        row["steps_ms"] = {str(k): step_times(models, data, k, args.repeats, device) for k in (1, 8)}
        row["kernel_share"] = kernel_share(models[0], data) if device.type == "cpu" else None
        row["load"] = [load_before, os.getloadavg()[0]]
        rows.append(row)

    lines = [
        f"Population-batched fine-tuning, seconds per candidate (1 epoch, `finetune` recipe: Adam, batch 128, cosine), "
        f"{_where(device, args.threads)}, median of {args.repeats}; one by one = `train.train`, stacked = "
        "`evolve.batched.train_stacked` (grouped layers, channels-last) with one seed, as evolution runs it (the "
        "members share each batch), and K=8 with a seed per member.",
        "",
        "| task | train / val | one by one | " + " | ".join(f"stacked K={k}" for k in KS)
        + " | K=8 speed-up | K=8, own seeds | load |",
        "|---|---|---|" + "---|" * len(KS) + "---|---|---|",
    ]
    for r in rows:
        cells = " | ".join(f"{r[f'stacked_{k}']:.3f}" for k in KS)
        lines.append(f"| {r['task']} | {r['train']} / {r['val']} | {r['one_by_one']:.3f} | {cells} | "
                     f"**{r['one_by_one'] / r['stacked_8']:.2f}×** | {r['stacked_8_own_seeds']:.3f} "
                     f"({r['one_by_one'] / r['stacked_8_own_seeds']:.2f}×) | {r['load'][0]:.1f}–{r['load'][1]:.1f} |")
    lines += ["", "One training step (batch 128, Adam), ms per member, and the share of one-by-one fine-tuning spent in "
              "the convolution and max-pool kernels:", "",
              "| task | K | one by one | vmap(functional_call) | grouped layers | conv + pool kernels |", "|---|---|---|---|---|---|"]
    for r in rows:
        for k, s in r["steps_ms"].items():
            share = "–" if r["kernel_share"] is None else f"{r['kernel_share']:.0%}"
            lines.append(f"| {r['task']} | {k} | {s['one_by_one']:.2f} | {s['vmap']:.2f} | {s['grouped']:.2f} | "
                         f"{share} |")
    info = machine()
    lines += ["", f"Machine: {info['nproc']} cores, {info['cpu']}, torch {info['torch']}; load average (1 min) before "
              f"and after each task shown; {time.perf_counter() - start:.0f} s; run {time.strftime('%Y-%m-%d')}."]
    if device.type == "cuda":
        lines[-1] += f" GPU: {torch.cuda.get_device_name(device)}."
    write_results(f"batched_finetune{suffix}", {"machine": info, "device": str(device), "threads": args.threads,
                                                "repeats": args.repeats, "rows": rows}, "\n".join(lines), out=args.out)


def _where(device: torch.device, threads: int) -> str:
    return f"{threads} thread(s)" if device.type == "cpu" else f"on {device} ({torch.cuda.get_device_name(device)})"


if __name__ == "__main__":
    main()
