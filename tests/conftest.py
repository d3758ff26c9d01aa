"""One engine fixture for the whole suite, as bytewax's ``entry_point`` is.

``session`` is parametrized over every registered engine. Each engine is
started once per test session (a JVM, a Ray cluster and a Dask cluster are
too slow to start per test) with two workers; pytest groups the tests by
engine, and an engine is stopped when the tests move on to an engine of
another family. An idiomatic variant (``spark-df``, ``dask-df``) is not
started on its own: it wraps the running session of its generic engine
(`engines.adapters.columnar.ColumnarEngine.over`), so the suite runs one
JVM and one Dask cluster. An engine that is not available here is skipped
with its own reason.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from pathlib import Path

import psutil
import pytest

from engines import engine_names, get_engine
from engines.api import Session
from workloads import SIZES

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


_running: dict[str, Session] = {}   # engine name -> its session, while its family's tests run


def _family(name: str) -> str:
    """The engine whose cluster ``name`` runs on: a variant's generic engine, else ``name``."""
    engine = get_engine(name)
    return engine.generic if engine.columnar else name


def running(name: str) -> Session:
    """The session of engine ``name``, started once; a variant wraps its generic engine's session.

    Mutates `_running`: sessions of other families are closed first, so
    only one family's processes are up at a time.
    """
    family = _family(name)
    for other in [n for n in _running if _family(n) != family]:
        _running.pop(other).close()
    if name not in _running:
        engine = get_engine(name)
        if engine.columnar:
            _running[name] = engine.over(running(family))
        else:
            _running[name] = engine.start(workers=2, **engine.trace_options)   # tests/test_traces.py traces it
    return _running[name]


@pytest.fixture(scope="session", autouse=True)
def _stop_engines():
    yield
    for name in reversed(list(_running)):  # variants before the sessions they wrap
        _running.pop(name).close()


def require_engine(name: str) -> None:
    """Skip where engine ``name`` cannot run here, with its own reason: what is missing and how to install it.

    For tests that need an engine (or its framework) without the ``session``
    fixture; the heavy packages stay unimported until the test goes on.
    """
    engine = get_engine(name)
    ok, why = engine.available()
    if not ok:
        missing = [m for m in engine.requires if importlib.util.find_spec(m) is None]
        hint = f" (in a checkout: pip install -e '.[{engine.extra}]')" if missing and engine.extra else ""
        pytest.skip(f"{name} is unavailable here: {why}{hint}")


@pytest.fixture(scope="session", params=engine_names())
def session(request):
    require_engine(request.param)
    return running(request.param)


def supports(session, model: str) -> bool:
    """Whether ``session``'s engine runs generic programs of ``model`` (natively or emulated).

    A columnar variant runs a workload's columnar form, never a generic
    Dataflow: for the contract its ``dataflow`` is a model it refuses, with
    its reason (test_contract.test_unsupported_models_say_why).
    """
    if model == "dataflow" and get_engine(session.engine).columnar:
        return False
    return not session.supports[model].startswith("unsupported")


def require(session, model: str) -> None:
    """Skip, naming the engine's reason, where it does not run ``model``.

    The contract for such engines is tested apart: they must raise
    UnsupportedModel with that reason (test_contract.test_unsupported_models_say_why).
    """
    if supports(session, model):
        return
    if model == "dataflow" and get_engine(session.engine).columnar:
        pytest.skip(f"{session.engine} runs the columnar forms of workloads, not generic flows "
                    f"(tests/test_columnar.py tests it)")
    pytest.skip(f"{session.engine} does not run {model}: {session.supports[model]}")


def wait_until(condition, timeout: float = 20.0, what: str = "the condition") -> None:
    """Poll ``condition`` until it holds; fail the test, naming ``what``, after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s")
        time.sleep(0.005)


def delivered_on_the_main_thread(host) -> list[bool]:
    """From now on, for each message a mini cluster's ``host`` delivers to the driver: was it on the main
    thread (a caller reading for itself, `engines.mini.cluster.Host.read_for`), not a reader thread?"""
    seen, hook = [], host.reader

    def spy(source, message):
        seen.append(threading.current_thread() is threading.main_thread())
        return hook(source, message)

    host.reader = spy
    return seen


def meet(folder: str, me: str, others: tuple[str, ...], timeout: float = 60.0) -> str:
    """A barrier between processes: mark ``me`` present in ``folder``, return once every one of ``others`` is.

    Code that calls it (a task, a partition) can only return while the
    others are running too, so their spans in a trace overlap for certain,
    however fast or loaded the machine is. Raises TimeoutError, naming who
    never came, after ``timeout`` seconds (they were not run at the same time).
    """
    Path(folder, me).touch()
    deadline = time.monotonic() + timeout
    while missing := [o for o in others if not Path(folder, o).exists()]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{me} waited {timeout} s at the barrier for {', '.join(missing)}, which never came")
        time.sleep(0.005)
    return me


def process_running(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, or one that ends while we look, does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def require_workload(session, workload) -> None:
    """Skip, naming the reason, where ``session``'s engine does not run ``workload``."""
    support = workload.support_on(get_engine(session.engine))
    if support.startswith("unsupported"):
        pytest.skip(f"{session.engine} does not run {workload.name}: {support}")


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
