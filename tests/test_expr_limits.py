"""Evaluating a formula on a real layer never aborts on numerics and never allocates past the memory limit.

Issue 10, item 4: ``m_inv(out_dot(pow2(mul(mX, 1e300)), mX))`` ended in ``torch._C._LinAlgError`` (non-finite
values must give −inf scores instead), and ``sum(mmul(X, tran(X)))`` tried to allocate 4 GB on LeNet-5's fc1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from evoprune.errors import ConfigError
from evoprune.expr import FormulaError, evaluate, parse, sanitize_scores
from evoprune.expr.memory import LIMIT_ENV, footprint, memory_limit
from evoprune.expr.typecheck import infer_all
from evoprune.metrics import score_layers

OVERFLOW = "m_inv(out_dot(pow2(mul(mX, 1e300)), mX))"
GRAM = "sum(mmul(X, tran(X)))"


def conv_bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, 10))


def test_overflowing_formula_scores_minus_inf_instead_of_a_linalg_error(capfd) -> None:
    model = conv_bn_net()
    x, y = torch.rand(60, 1, 14, 14), torch.arange(60) % 10
    scores = score_layers(model, OVERFLOW, x, y)
    assert set(scores) == {"0", "4"}
    for name, s in scores.items():
        assert s.dtype == torch.float64 and not torch.isnan(s).any() and not (s == float("inf")).any(), name
        assert (s == float("-inf")).any(), name  # channels with a non-zero mean map overflow
    assert "MKL" not in capfd.readouterr().err  # LAPACK was never handed the non-finite matrices


def test_a_non_finite_matrix_spoils_only_its_own_channel() -> None:
    features = torch.rand(40, 3, 2, 2, dtype=torch.float64) * 1e-200  # (1e100)² · 1e-200: finite
    features[:, 1] *= 1e200  # (1e300)² overflows to inf on channel 1 only
    raw = evaluate(parse(OVERFLOW), features=features, labels=torch.arange(40) % 4)
    assert torch.isnan(raw[1]) and torch.isfinite(raw[[0, 2]]).all()
    assert sanitize_scores(raw)[1] == float("-inf")


def test_a_lapack_failure_on_finite_input_costs_only_its_block(monkeypatch) -> None:
    """LAPACK can also fail to converge on finite but degenerate matrices: that block scores NaN, the rest stand."""
    features = torch.rand(30, 4, 3, dtype=torch.float64)
    tree = parse("m_trace(m_inv(mmul(tran(X), X)))")
    expected = evaluate(tree, features=features)
    real_pinv, calls = torch.linalg.pinv, []

    def flaky_pinv(a, **kw):
        calls.append(a.shape[0])
        if len(calls) == 2:
            raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")
        return real_pinv(a, **kw)

    monkeypatch.setattr(torch.linalg, "pinv", flaky_pinv)
    one_channel = footprint(infer_all(tree), {"n": 30, "D": 3, "K": 1, "F": 4}, classes=1, materialised=True,
                            label_aware=False).bytes(1, itemsize=8)
    monkeypatch.setenv(LIMIT_ENV, str(1.5 * one_channel / 1e9))  # one channel per block
    raw = evaluate(tree, features=features)
    assert calls == [1, 1, 1, 1]
    assert torch.isnan(raw[1]) and torch.equal(raw[[0, 2, 3]], expected[[0, 2, 3]])


def test_gram_matrix_of_lenet_fc1_is_evaluated_in_blocks_within_the_limit() -> None:
    """The audit's 4 GB case (500 channels, 1,000 samples, an N×N matrix each) stays near the limit, in a fresh
    process so that the peak resident memory is this evaluation's."""
    script = (
        "import json, resource, torch\n"
        "from evoprune.expr import evaluate, parse\n"
        "f = torch.rand(1000, 500, generator=torch.Generator().manual_seed(0))\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"s = evaluate(parse({GRAM!r}), features=f, layer='fc1')\n"
        "grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before\n"
        "ok = torch.allclose(s, f.double().sum(0) ** 2, rtol=1e-9)\n"
        "print(json.dumps({'grown_kb': grown, 'ok': bool(ok), 'n': s.numel()}))\n"
    )
    env = dict(os.environ, **{LIMIT_ENV: "0.2"})
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["ok"] and result["n"] == 500
    assert result["grown_kb"] < 450_000  # 0.2 GB of blocks plus allocator slack; unblocked it was 4 GB


def test_a_formula_too_large_for_one_channel_is_refused_with_the_layer_and_the_fix(monkeypatch) -> None:
    monkeypatch.setenv(LIMIT_ENV, "0.001")
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))
    x, y = torch.rand(600, 1, 4, 4), torch.arange(600) % 3
    with pytest.raises(FormulaError) as info:
        score_layers(model, GRAM, x, y)
    message = str(info.value)
    assert message.startswith(f"formula {GRAM} needs about 0.00289 GB of intermediate values for a single channel "
                              "of layer '1' (600 samples, 1 positions per map), over the limit of 0.001 GB")
    assert message.endswith(f"raise the limit (e.g. {LIMIT_ENV}=1)")
    assert "\n" not in message


def test_blocked_evaluation_matches_unblocked_on_every_path(monkeypatch) -> None:
    torch.manual_seed(1)
    features, labels = torch.rand(50, 6, 3, 3, dtype=torch.float64), torch.arange(50) % 5
    weight = torch.randn(6, 2, 3, 3, dtype=torch.float64)
    cases = ["sum(sub(W, WI))",  # weights only
             "sum(out_dot(mP, mQ))",  # moments, label-aware
             "var(mmul(tran(P), mmul(P, mQ)))",  # materialised, label-aware
             "sum(add(geo_median(W), WI))"]  # a shared value (geo_median of the whole kernel)
    whole = {f: evaluate(parse(f), features=features, labels=labels, weight=weight) for f in cases}
    monkeypatch.setenv(LIMIT_ENV, "0.00002")  # 20 kB: a channel or two per block
    for f in cases:
        assert torch.allclose(evaluate(parse(f), features=features, labels=labels, weight=weight), whole[f],
                              rtol=1e-12, atol=0), f


def test_footprint_counts_per_channel_and_shared_values() -> None:
    tree = parse("sum(add(geo_median(W), WI))")
    fp = footprint(infer_all(tree), {"n": 1, "D": 1, "K": 7, "F": 5}, classes=1, materialised=False,
                   label_aware=False)
    assert fp.shared == 7 + 5 * 5  # the median filter and the filters' distance matrix
    assert fp.per_channel == 7 + 1  # WI + median, then its sum
    assert fp.block(5, limit=8 * (fp.shared + 2 * fp.per_channel), itemsize=8) == 2
    assert fp.block(5, limit=8 * fp.shared, itemsize=8) == 0


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", "inf"])
def test_a_bad_limit_setting_says_what_to_set(monkeypatch, value) -> None:
    monkeypatch.setenv(LIMIT_ENV, value)
    with pytest.raises(ConfigError, match=f"{LIMIT_ENV}={value!r} is not a positive number of gigabytes"):
        memory_limit()


def test_limit_default_and_override(monkeypatch) -> None:
    monkeypatch.delenv(LIMIT_ENV, raising=False)
    assert memory_limit() == 1_000_000_000
    monkeypatch.setenv(LIMIT_ENV, "2.5")
    assert memory_limit() == 2_500_000_000
