"""Benchmarks: pytest-benchmark, a few rounds, ratios read side by side.

They never assert a time. In the test suite they run once each at ``tiny``
size (``--benchmark-disable`` is in the default options), as smoke tests;
to measure, choose a size and enable timing::

    ARCHBENCH_BENCH_SIZE=medium python -m pytest tests/benchmarks --benchmark-enable
"""

from __future__ import annotations

import os

import pytest

from workloads import SIZES


@pytest.fixture(scope="session")
def bench_size() -> str:
    size = os.environ.get("ARCHBENCH_BENCH_SIZE", "tiny")
    if size not in SIZES:
        raise pytest.UsageError(f"ARCHBENCH_BENCH_SIZE={size!r}; choose from: {', '.join(SIZES)}")
    return size
