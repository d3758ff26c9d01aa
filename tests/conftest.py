"""One engine fixture for the whole suite, as bytewax's ``entry_point`` is.

``session`` is parametrized over every registered engine. Each engine is
started once per test session (a JVM, a Ray cluster and a Dask cluster are
too slow to start per test) with two workers; pytest groups the tests by
engine and stops each one before starting the next. An engine that is not
available here is skipped with its own reason.
"""

from __future__ import annotations

import os

import pytest

from engines import engine_names, get_engine
from workloads import SIZES

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session", params=engine_names())
def session(request):
    engine = get_engine(request.param)
    ok, why = engine.available()
    if not ok:
        pytest.skip(f"{request.param} is unavailable here: {why}")
    with engine.start(workers=2) as s:
        yield s


def supports(session, model: str) -> bool:
    """Whether ``session``'s engine runs ``model`` at all (natively or emulated)."""
    return not session.supports[model].startswith("unsupported")


def require(session, model: str) -> None:
    """Skip, naming the engine's reason, where it does not run ``model``.

    The contract for such engines is tested apart: they must raise
    UnsupportedModel with that reason (test_contract.test_unsupported_models_say_why).
    """
    if not supports(session, model):
        pytest.skip(f"{session.engine} does not run {model}: {session.supports[model]}")


@pytest.fixture(scope="session")
def bench_size() -> str:
    """The size benchmarks run at: tiny in the suite (a smoke test, timing off), any size when measuring::

        ARCHBENCH_BENCH_SIZE=medium python -m pytest tests/benchmarks --benchmark-enable

    Benchmarks never assert a time; compare the ratios of one run.
    """
    size = os.environ.get("ARCHBENCH_BENCH_SIZE", "tiny")
    if size not in SIZES:
        raise pytest.UsageError(f"ARCHBENCH_BENCH_SIZE={size!r}; choose from: {', '.join(SIZES)}")
    return size
