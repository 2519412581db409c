"""Helpers the benchmark scripts share on top of ``evoprune.bench.common`` (machine facts, atomic result files):
GEMM throughput, medians of timings, and writing a script's results under ``benchmarks/results``."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from evoprune.atomic import write_json, write_text

RESULTS = Path(__file__).resolve().parent / "results"


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_gmacs(n: int = 2048, repeats: int = 10) -> float:
    """Measured fp32 GEMM throughput in GMAC/s (an n×n by n×n matmul is n³ multiply-adds), median of ``repeats``."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    seconds = median_seconds(lambda: a @ b, repeats, warmup=2)
    return n**3 / seconds / 1e9


def write_results(name: str, payload: dict[str, Any], markdown: str, out: Path = RESULTS) -> None:
    """``OUT/NAME.json`` and ``OUT/NAME.md``, each written atomically (a killed script leaves the old files whole)."""
    write_json(out / f"{name}.json", payload)
    write_text(out / f"{name}.md", markdown.rstrip() + "\n")
    print(markdown)

