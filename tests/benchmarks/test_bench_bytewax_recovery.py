"""What Bytewax's recovery costs a run without a fault: the same workloads with ``recovery`` off and on.

Three sessions of the ``bytewax`` adapter, two processes each, started once:
``off`` (the default), ``on`` (a recovery store per run, a snapshot every
0.1 s: what ``--fault`` runs with) and ``on, epoch 10 s`` (the store and the
exactly-once sink, but hardly a snapshot: what the snapshots themselves
cost is the difference to ``on``). Each round runs a workload once on every
session, in an order that turns each round, so the three forms share the
machine's moods; a form's ratio to ``off`` is the median of the rounds'
ratios. Every answer is checked, outside the timing; no time is asserted::

    ARCHBENCH_BENCH_SIZE=small python -m pytest tests/benchmarks/test_bench_bytewax_recovery.py --benchmark-enable
"""

from __future__ import annotations

import statistics
import time

import pytest

from conftest import require_engine
from engines import get_engine
from workloads import get_workload

pytestmark = pytest.mark.timeout(1800)

FORMS = {"off": {}, "on": {"recovery": "on"}, "on, epoch 10 s": {"recovery": "on", "epoch_interval_s": 10}}
ROUNDS = {"tiny": 1, "small": 9, "medium": 5, "large": 1}
TIMES: dict[str, dict[str, list[float]]] = {}      # workload -> form -> seconds per round


@pytest.fixture(scope="module")
def sessions():
    require_engine("bytewax")
    started = {form: get_engine("bytewax").start(workers=2, **options) for form, options in FORMS.items()}
    yield started
    for session in started.values():
        session.close()


@pytest.fixture(scope="module", autouse=True)
def summary(request, bench_size):
    yield
    if TIMES:
        with request.config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
            report(request.config.pluginmanager.get_plugin("terminalreporter").write_line, bench_size)


def report(write, bench_size: str) -> None:
    write(f"\nBytewax recovery at size {bench_size!r}: median seconds; median of the rounds' ratios to 'off'")
    for workload, forms in TIMES.items():
        off = forms["off"]
        cells = [f"off {statistics.median(off):.3f} s"]
        for form, ts in forms.items():
            if form != "off":
                ratio = statistics.median(t / o for t, o in zip(ts, off))
                cells.append(f"{form} {statistics.median(ts):.3f} s ({ratio:.2f}x)")
        write(f"  {workload}: " + ", ".join(cells))


@pytest.mark.parametrize("name", ["wordcount", "groupby", "join"])
def test_recovery_cost(benchmark, sessions, bench_size, name):
    workload = get_workload(name)
    inputs = workload.generate(seed=1, **workload.sizes[bench_size])
    want = workload.reference(inputs)
    for session in sessions.values():                  # a warm-up on each
        workload.check(workload.run(session, inputs), want)
    rounds = ROUNDS[bench_size] if not benchmark.disabled else 1
    times: dict[str, list[float]] = {form: [] for form in FORMS}
    order = list(FORMS)

    def interleaved():          # pytest-benchmark times the whole; the summary reads the forms' own times
        for r in range(rounds):
            for form in order[r % len(order):] + order[:r % len(order)]:
                start = time.perf_counter()
                got = workload.run(sessions[form], inputs)
                times[form].append(time.perf_counter() - start)
                workload.check(got, want)

    benchmark.pedantic(interleaved, rounds=1, iterations=1)
    TIMES[name] = times
    benchmark.extra_info.update({form: statistics.median(ts) for form, ts in times.items()})
