"""Every engine records a trace from its own instruments, in the rows of `engines.tracing`.

The property that matters: a CPU-bound program on an engine whose workers
are processes shows at least two worker lanes busy at the same time --
read from the trace itself, never from a clock margin. Each unit of work
below spins until the other worker has started one too (a file per worker
in a shared folder), so two are certainly running at once on every engine
that runs them in parallel; the trace must show it.
"""

from __future__ import annotations

import operator
import os
import time

import pytest

from conftest import require
from engines import get_engine
from engines.api import Dataflow
from engines.tracing import KINDS, busy_at_once

ONE_PROCESS = {"serial"}          # engines whose work runs in the driver's own process


def _check_rows(rows: list[dict]) -> None:
    for row in rows:
        assert row["event"] in ("span", "send"), row
        assert isinstance(row["lane"], str) and row["lane"], row
        if row["event"] == "span":
            assert row["kind"] in KINDS and row["start"] <= row["end"], row
        else:
            assert row["bytes"] >= 0 and isinstance(row["peer"], str), row


def rendezvous(folder: str, item, spin_s: float = 0.05):
    """Mark this process as working, then keep working until another process has marked too (or 20 s)."""
    open(os.path.join(folder, f"{os.getpid()}"), "w").close()
    deadline = time.monotonic() + 20.0
    while len(os.listdir(folder)) < 2 and time.monotonic() < deadline:
        end = time.perf_counter() + spin_s
        while time.perf_counter() < end:
            pass
    end = time.perf_counter() + spin_s   # and a little more, so both spans cover the same moment
    while time.perf_counter() < end:
        pass
    return item


def _traced(session, run):
    session.trace_start()
    try:
        out = run()
    finally:
        trace = session.trace_stop()
    _check_rows(trace.rows)
    return out, trace


def _two_workers_at_once(session, trace) -> None:
    lanes = {r["lane"] for r in trace.rows if r["event"] == "span" and r["lane"].startswith("worker")}
    assert len(lanes) >= 2, f"{session.engine}: worker lanes in the trace: {sorted(lanes)} ({trace.source})"
    assert busy_at_once(trace.rows) > 0, f"{session.engine}: no two worker lanes busy at once ({trace.source})"


def _parallel(session) -> None:
    if session.engine in ONE_PROCESS:
        pytest.skip(f"{session.engine} runs everything in one process: nothing runs at once")


def test_a_dataflow_shows_two_workers_busy_at_once(session, tmp_path):
    require(session, "dataflow")
    _parallel(session)
    import functools

    flow = Dataflow("meet")
    parts = [functools.partial(lambda i: [rendezvous(str(tmp_path), (i % 2, 1))], i) for i in range(4)]
    flow.read(parts).reduce_by_key(operator.add).collect("out")
    out, trace = _traced(session, lambda: session.dataflow(flow))
    assert sorted(out["out"]) == [(0, 2), (1, 2)]
    _two_workers_at_once(session, trace)


def test_tasks_show_two_workers_busy_at_once(session, tmp_path):
    require(session, "tasks")
    _parallel(session)

    def run():
        with session.tasks() as tasks:
            return tasks.gather([tasks.submit(rendezvous, str(tmp_path), i) for i in range(4)])

    out, trace = _traced(session, run)
    assert out == [0, 1, 2, 3]
    _two_workers_at_once(session, trace)


class Meeter:
    def __init__(self, folder):
        self.folder = folder

    def meet(self, i):
        return rendezvous(self.folder, i)


def test_actors_show_two_workers_busy_at_once(session, tmp_path):
    require(session, "actors")
    _parallel(session)

    def run():
        with session.actors() as actors:
            a, b = actors.spawn(Meeter, str(tmp_path)), actors.spawn(Meeter, str(tmp_path))
            return actors.gather([a.call("meet", 1), b.call("meet", 2)])

    out, trace = _traced(session, run)
    assert out == [1, 2]
    _two_workers_at_once(session, trace)


def test_a_shuffle_traces_the_bytes_it_moved(session):
    require(session, "dataflow")
    flow = Dataflow("moved")
    flow.read([[(f"k{i}", i) for i in range(200)], [(f"k{i}", i) for i in range(200)]]) \
        .reduce_by_key(operator.add).collect("out")
    _, trace = _traced(session, lambda: session.dataflow(flow))
    sends = [r for r in trace.rows if r["event"] == "send"]
    if not sends:
        assert trace.missing, f"{session.engine}: no bytes in the trace, and it does not say why"
    else:
        assert sum(r["bytes"] for r in sends) > 0


def test_every_engine_says_where_its_trace_comes_from(session):
    if get_engine(session.engine).columnar:
        pytest.skip("a columnar variant traces through its generic engine's session")
    session.trace_start()
    trace = session.trace_stop()
    assert trace.source != "none", f"{session.engine} records no trace"
