"""A stand-in for the part of ``pynvml`` (NVIDIA's NVML bindings) that
``core.metrics.SystemCollector`` reads, with its documented names and
shapes: two GPUs. The real library runs where a GPU is lent
(tests/core/test_metrics.py)."""

from __future__ import annotations

from types import SimpleNamespace

GIB = 1024**3


class FakeNvml:
    class NVMLError(Exception):
        pass

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802 - NVML's own names
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        return index

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:  # noqa: N802
        return SimpleNamespace(used=(handle + 1) * 10 * GIB, total=80 * GIB, free=0)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:  # noqa: N802
        return SimpleNamespace(gpu=35 + handle * 50, memory=10)
