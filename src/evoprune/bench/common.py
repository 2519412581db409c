"""What every benchmark target shares: mean ± std, settings fingerprints, atomic result files."""

from __future__ import annotations

import hashlib
import json
import statistics
from collections.abc import Mapping
from typing import Any


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fingerprint(values: Mapping[str, Any]) -> str:
    """A short hash of the settings that shaped a result: results are reused only when it matches."""
    blob = json.dumps(dict(values), sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]



