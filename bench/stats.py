"""Small statistics shared by the benchmarks."""

from __future__ import annotations

import statistics


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` in 0..1."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def latency_summary(values_ms: list[float]) -> dict:
    return {"n": len(values_ms), "p50_ms": round(statistics.median(values_ms), 2),
            "p95_ms": round(percentile(values_ms, 0.95), 2),
            "mean_ms": round(statistics.mean(values_ms), 2)}
