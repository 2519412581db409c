"""Speed of the training and evaluation loops against the arithmetic floor.

Measures one training epoch of ``lenet5_d2l`` on 48,000 Fashion-MNIST images and one forward pass over the
10,000 test images, for a few loop settings (batch size, memory format, threads), and compares each with the
floor: the work's multiply-accumulates ÷ this machine's measured fp32 GEMM throughput (a 2048² matmul, median
of 10). A training step costs about 3× the forward MACs (forward, plus gradients w.r.t. inputs and weights).

    .venv/bin/python benchmarks/bench_training.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from _common import gemm_gmacs, median_seconds, write_results
from evoprune.data import load_dataset
from evoprune.device import machine
from evoprune.models import build_model
from evoprune.train import TrainConfig, evaluate, train


def forward_macs(model: torch.nn.Module, shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass of one sample (conv and linear layers)."""
    total = 0

    def hook(module: torch.nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            total += output[0].numel() * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, torch.nn.Linear):
            total += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    for h in handles:
        h.remove()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    data = load_dataset("fashion", seed=0)
    # Time only the epoch's training steps: validation is measured separately as a forward pass.
    no_val = type(data)(name=data.name, train=data.train, val=data.val.subset(torch.arange(1)), test=data.test,
                        num_classes=data.num_classes, class_names=data.class_names)
    model = build_model("lenet5_d2l")
    macs = forward_macs(model, (1, 28, 28))
    rows = []
    all_threads = torch.get_num_threads()
    settings = [
        {"threads": all_threads, "batch": 128, "eval_batch": 256, "channels_last": False},
        {"threads": all_threads, "batch": 128, "eval_batch": 2048, "channels_last": False},
        {"threads": all_threads, "batch": 128, "eval_batch": 256, "channels_last": True},
        {"threads": all_threads, "batch": 512, "eval_batch": 256, "channels_last": False},
        {"threads": 1, "batch": 128, "eval_batch": 256, "channels_last": False},
    ]
    default_threads = torch.get_num_threads()
    for setting in settings:
        torch.set_num_threads(setting["threads"])
        floor_gmacs = gemm_gmacs()
        fmt = torch.channels_last if setting["channels_last"] else torch.contiguous_format
        net = build_model("lenet5_d2l").to(memory_format=fmt)
        config = TrainConfig(epochs=1, batch_size=setting["batch"], optimizer="sgd", lr=0.1, keep_best=False)
        train_x = data.train.x.contiguous(memory_format=fmt)
        split_data = type(no_val)(name=no_val.name, train=type(data.train)(train_x, data.train.y), val=no_val.val,
                                  test=no_val.test, num_classes=10, class_names=no_val.class_names)
        epoch = median_seconds(lambda: train(net, split_data, config, progress=False), args.repeats)
        test_x = data.test.x.contiguous(memory_format=fmt)
        forward = median_seconds(lambda: evaluate(net, test_x, data.test.y, batch_size=setting["eval_batch"]), args.repeats * 3)
        epoch_floor = 3 * macs * len(data.train) / (floor_gmacs * 1e9)
        forward_floor = macs * len(data.test) / (floor_gmacs * 1e9)
        rows.append({**setting, "gemm_gmacs": floor_gmacs, "epoch_s": epoch, "epoch_floor_s": epoch_floor,
                     "forward_10k_s": forward, "forward_floor_s": forward_floor})
    torch.set_num_threads(default_threads)

    lines = [
        f"lenet5_d2l: {macs:,} MACs per sample forward; epoch = 48,000 Fashion-MNIST training images (3× forward MACs); "
        f"forward = 10,000 test images. Median of {args.repeats} epochs / {args.repeats * 3} forwards.",
        "",
        "| threads | train batch | eval batch | channels_last | GEMM GMAC/s | epoch (s) | floor (s) | × floor | forward 10k (s) | floor (s) | × floor |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['threads']} | {r['batch']} | {r['eval_batch']} | {r['channels_last']} | {r['gemm_gmacs']:.1f} | {r['epoch_s']:.2f} | "
            f"{r['epoch_floor_s']:.2f} | {r['epoch_s'] / r['epoch_floor_s']:.1f} | {r['forward_10k_s']:.3f} | "
            f"{r['forward_floor_s']:.3f} | {r['forward_10k_s'] / r['forward_floor_s']:.1f} |"
        )
    info = machine()
    lines += ["", f"Machine: {info['nproc']} cores, {info['cpu']}, torch {info['torch']}; "
              f"run {time.strftime('%Y-%m-%d')}."]
    write_results("training_speed", {"machine": info, "macs_per_sample": macs, "rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
