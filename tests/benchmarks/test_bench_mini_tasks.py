"""mini-tasks against Ray, Dask and the pool: per-task overhead, dependent chains, a tree reduction.

Every case runs on every engine with two workers, in the same run, through
the same session API (the ``dask`` and ``ray`` adapters of the registry):

- ``noop``: N no-op tasks submitted at once, then gathered -> tasks/s;
- ``chain``: N dependent tasks submitted ahead (each takes the previous
  Future), then the last one's result -> seconds per hop. An engine may run
  the whole chain where its data is (mini-tasks places each link with the
  one before it); this is the latency a dependency costs inside a graph;
- ``sync-chain``: the driver waits for each hop before submitting the next
  -> seconds per hop: the driver -> worker -> driver round trip; beside it
  ``loopback TCP`` and ``loopback Unix socket``, a byte echoed by another
  process as often: the floors (a local mini cluster talks over the second),
  and ``loopback Unix socket, polling``, where neither process sleeps;
- ``tree``: the ``tree-reduce`` workload (vectors summed up a tree; the
  leaves made on the workers) -> seconds.

``mini-tasks/sleep`` is mini-tasks with ``spin_us=0``: its caller and
workers sleep at once instead of polling for an answer first
(`engines.mini.cluster`, "Polling"). A table of medians and ratios
(mini-tasks against each) is printed at the end. No time is asserted; every answer is checked, outside the timing::

    ARCHBENCH_BENCH_SIZE=medium python -m pytest tests/benchmarks/test_bench_mini_tasks.py --benchmark-enable
"""

from __future__ import annotations

import functools
import operator
import statistics
import time

import pytest

from conftest import require_engine
from engines import get_engine
from loopback import FLOORS, round_trips
from workloads import get_workload
from workloads.task_overhead import noop

pytestmark = pytest.mark.timeout(1800)   # Dask's 10,000 no-op tasks take minutes on a loaded 2-core machine

ENGINES = ["mini-tasks", "mini-tasks/sleep", "ray", "dask", "pool"]
VARIANTS = {"mini-tasks/sleep": ("mini-tasks", {"spin_us": 0})}      # name -> (engine, start options)
COUNTS = {   # noop tasks, chain hops, driver-synchronous hops, tree-reduce workload size
    "tiny": (300, 100, 30, "tiny"),
    "small": (2_000, 300, 100, "small"),
    "medium": (10_000, 1_000, 300, "small"),
    "large": (10_000, 1_000, 1_000, "medium"),
}
ROUNDS = {"tiny": 1, "small": 3, "medium": 3, "large": 3}
TIMES: dict[tuple[str, str], list[float]] = {}
UNITS: dict[str, int] = {}


@pytest.fixture(scope="module")
def sessions():
    """Sessions started on first use (start-up is not timed), all closed at the end of the module."""
    started: dict = {}

    def get(name: str):
        engine_name, options = VARIANTS.get(name, (name, {}))
        require_engine(engine_name)
        if name not in started:
            started[name] = get_engine(engine_name).start(workers=2, **options)
        return started[name]

    yield get
    for session in started.values():
        session.close()


def measure(benchmark, case: str, engine: str, target, size: str):
    def timed():
        start = time.perf_counter()
        result = target()
        TIMES.setdefault((case, engine), []).append(time.perf_counter() - start)
        return result
    return benchmark.pedantic(timed, rounds=ROUNDS[size], warmup_rounds=int(size != "tiny"), iterations=1)


# ---------------------------------------------------------------- the cases


def run_noop(session, n: int) -> list:
    with session.tasks() as tasks:
        return tasks.gather([tasks.submit(noop, i) for i in range(n)])


def run_chain(session, hops: int) -> int:
    with session.tasks() as tasks:
        f = tasks.submit(noop, 0)
        for _ in range(hops):
            f = tasks.submit(operator.add, f, 1)
        return f.result()


def run_sync_chain(session, hops: int) -> int:
    with session.tasks() as tasks:
        x = 0
        for _ in range(hops):
            x = tasks.submit(operator.add, x, 1).result()
        return x


@pytest.mark.parametrize("engine", ENGINES)
def test_noop_tasks(benchmark, sessions, bench_size, engine):
    n = COUNTS[bench_size][0]
    UNITS["noop"] = n
    got = measure(benchmark, "noop", engine, functools.partial(run_noop, sessions(engine), n), bench_size)
    assert got == list(range(n))


@pytest.mark.parametrize("engine", ENGINES)
def test_chain(benchmark, sessions, bench_size, engine):
    hops = COUNTS[bench_size][1]
    UNITS["chain"] = hops
    assert measure(benchmark, "chain", engine, functools.partial(run_chain, sessions(engine), hops), bench_size) == hops


@pytest.mark.parametrize("engine", ENGINES)
def test_sync_chain(benchmark, sessions, bench_size, engine):
    hops = COUNTS[bench_size][2]
    UNITS["sync-chain"] = hops
    got = measure(benchmark, "sync-chain", engine, functools.partial(run_sync_chain, sessions(engine), hops),
                  bench_size)
    assert got == hops


@pytest.mark.parametrize("floor", FLOORS)
def test_sync_chain_floor(benchmark, bench_size, floor):
    """As many one-byte round trips to an echo process as ``sync-chain`` has hops: its floor (the Unix
    socket's is the one a local mini cluster stands on)."""
    hops = COUNTS[bench_size][2]

    def timed():                        # the round trips only, not the echo process's start
        times = round_trips(hops, **FLOORS[floor])
        TIMES.setdefault(("sync-chain", floor), []).append(sum(times))
        return times
    got = benchmark.pedantic(timed, rounds=ROUNDS[bench_size], iterations=1)
    assert len(got) == hops


@functools.lru_cache(maxsize=None)
def tree_case(size: str):
    wl = get_workload("tree-reduce")
    inputs = wl.generate(seed=1, **wl.sizes[size])
    return wl, inputs, wl.reference(inputs)


@pytest.mark.parametrize("engine", ENGINES)
def test_tree_reduce(benchmark, sessions, bench_size, engine):
    wl, inputs, want = tree_case(COUNTS[bench_size][3])
    UNITS["tree"] = wl.units(inputs)
    got = measure(benchmark, "tree", engine, functools.partial(wl.run, sessions(engine), inputs), bench_size)
    wl.check(got, want)


# ---------------------------------------------------------------- the table


@pytest.fixture(scope="module", autouse=True)
def summary(request, bench_size):
    yield
    if not TIMES:
        return
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():      # teardown output is captured (and dropped) otherwise
        table(request.config.pluginmanager.get_plugin("terminalreporter").write_line, bench_size)


def table(write, bench_size: str) -> None:
    med = {key: statistics.median(ts) for key, ts in TIMES.items()}
    write(f"\nmini-tasks benchmarks at size {bench_size!r}, 2 workers (median of the rounds)")
    shown = {"noop": ("tasks/s", lambda t, n: n / t, True), "chain": ("us/hop", lambda t, n: t / n * 1e6, False),
             "sync-chain": ("us/hop", lambda t, n: t / n * 1e6, False), "tree": ("s", lambda t, n: t, False)}
    for case, (unit, value, higher_is_better) in shown.items():
        got = {engine: value(t, UNITS[case]) for (c, engine), t in med.items() if c == case}
        if not got:
            continue
        write(f"  {case} ({UNITS[case]:,} {'tasks' if case in ('noop', 'tree') else 'hops'}): "
              + ", ".join(f"{engine} {v:,.1f} {unit}" for engine, v in got.items()))
        mine = got.get("mini-tasks")
        if mine:
            ratios = [f"{mine / v:.2f}x {engine}"
                      for engine, v in got.items() if engine != "mini-tasks"]
            what = "throughput" if higher_is_better else "time"
            write(f"    mini-tasks {what} / other: " + ", ".join(ratios))
