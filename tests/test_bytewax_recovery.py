"""Bytewax with its recovery store (``recovery=on``): a killed process is restarted and the run resumes.

Each test's flow kills one of its own Bytewax processes from inside a step
(SIGKILL to itself) at a point the test chooses, once: a file in the test's
folder marks that the kill happened, so the replacement process goes on.

- a flow of batches resumes from the store's last snapshot: the answer is
  exact (the reduce's state restored, the sink's items each once), and the
  replacements did not read the input again from its start;
- a process lost every time is restarted `MAX_RESTARTS` times, then the run
  fails naming it -- and the session goes on;
- a stream starts again from its beginning: its window results are exact;
- the store is the run's own, in the log folder, and gone when it ends.
"""

from __future__ import annotations

import operator
import os
import pickle
import signal
import sqlite3
import time
from functools import partial
from pathlib import Path

import pytest

from conftest import require_engine
from engines import get_engine
from engines.adapters.bytewax import BATCH_SIZE
from engines.api import Dataflow, DataflowError

PARTS, PER_PART = 4, 4 * BATCH_SIZE           # each partition read in four batches, the first epochs apart
NUMBERS = list(range(PARTS * PER_PART))


@pytest.fixture(scope="module")
def session():
    require_engine("bytewax")
    with get_engine("bytewax").start(workers=2, recovery="on", epoch_interval_s=0.02) as session:
        yield session


def numbers(part: int):
    """Partition ``part``, a batch at a time; each batch takes the work of reading it."""
    for start in range(part * PER_PART, (part + 1) * PER_PART, BATCH_SIZE):
        time.sleep(0.05)
        yield from range(start, start + BATCH_SIZE)


def resumable_items(logs: Path, step_id: str) -> int:
    """How many input items a resume from the store under ``logs`` would skip now: the largest offset that
    a ``step_id`` partition snapshotted in an epoch every worker has completed (0: none yet).

    Read from Bytewax's own store: ``fronts`` holds each worker's frontier, ``snaps`` each snapshot."""
    fronts, snaps = {}, []
    for part in logs.glob("bytewax-recovery-*/db/part-*.sqlite3"):
        try:
            with sqlite3.connect(f"file:{part}?mode=ro", uri=True) as db:
                for worker, front in db.execute("SELECT worker_index, max(worker_frontier) FROM fronts GROUP BY 1"):
                    fronts[worker] = max(front, fronts.get(worker, 0))
                snaps += db.execute("SELECT snap_epoch, ser_change FROM snaps WHERE step_id = ?", (step_id,)).fetchall()
        except sqlite3.Error:              # being written: not yet
            return 0
    if len(fronts) < 2:
        return 0
    done = min(fronts.values())
    return max([pickle.loads(state) for epoch, state in snaps if epoch < done and state], default=0)


_seen = {}   # this process's file of the items it saw


def seen(folder: str, logs: str, x: int) -> int:
    """Note ``x`` as seen by this process; once a resume would skip some input, kill this process (once)."""
    if os.getpid() not in _seen:
        _seen[os.getpid()] = open(Path(folder, f"seen-{os.getpid()}"), "a")
    _seen[os.getpid()].write(f"{x}\n")
    _seen[os.getpid()].flush()
    killed = Path(folder, "killed")
    if x % 1000 == 0 and not killed.exists() and resumable_items(Path(logs), "resume.numbers") > 0:
        killed.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def always_dies(x: int) -> int:
    if x == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def resume_flow(step) -> Dataflow:
    flow = Dataflow("resume")
    items = flow.read([partial(numbers, p) for p in range(PARTS)], name="numbers").map(step, name="step")
    items.collect("items")
    items.map(lambda x: (x % 7, x)).reduce_by_key(operator.add).collect("sums")
    return flow


SUMS = sorted({k: sum(x for x in NUMBERS if x % 7 == k) for k in range(7)}.items())


def test_bytewax_resumes_a_killed_process_from_its_last_snapshot_with_the_exact_answer(session, tmp_path):
    pids = session.worker_pids
    out = session.dataflow(resume_flow(partial(seen, str(tmp_path), str(session.logs))))
    killed = int((tmp_path / "killed").read_text())
    assert killed in pids and not set(session.worker_pids) & set(pids)    # all processes were replaced
    assert sorted(out["sums"]) == SUMS                                      # the reduce's state was restored
    assert sorted(out["items"]) == NUMBERS                                  # each item once: an exactly-once sink
    again = [int(x) for pid in session.worker_pids for x in (tmp_path / f"seen-{pid}").read_text().split()]
    assert 0 < len(again) < len(NUMBERS)                                    # resumed, not read from the start
    assert not list(session.logs.glob("bytewax-recovery-*"))               # the run's store is gone


def test_bytewax_gives_up_after_its_restarts_naming_the_lost_process(session):
    with pytest.raises(DataflowError) as lost:
        session.dataflow(resume_flow(always_dies))
    message = str(lost.value)
    assert "was killed by SIGKILL during the run, which had been restarted from its recovery store 3 times" in message
    assert message.count("was killed by SIGKILL") == 5                     # the last, then each of the four
    assert sorted(session.dataflow(resume_flow(lambda x: x))["sums"]) == SUMS   # the session goes on
    assert not list(session.logs.glob("bytewax-recovery-*"))


def arrivals(source: int, start: float, end: float) -> list[tuple[int, float]]:
    """Source ``source``'s events arriving in ``[start, end)``: one every 0.05 s, its time its arrival."""
    first = int(start * 20) + (start * 20 > int(start * 20))
    return [(source * 1000 + i, i / 20) for i in range(first, 200) if start <= i / 20 < end]


def dies_once(folder: str, event):
    killed = Path(folder, "killed")
    if event[1] >= 5.0 and not killed.exists():       # half-way through the stream
        killed.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return event


def window_flow(step) -> Dataflow:
    flow = Dataflow("windows")
    events = flow.stream([partial(arrivals, s) for s in range(2)], timestamp=lambda e: e[1], duration=10.0,
                         speedup=10.0)
    events.map(step).map(lambda e: (e[0] % 3, 1)).window(1.0, operator.add).collect("counts")
    return flow


def test_a_bytewax_stream_that_loses_a_process_starts_again_and_its_windows_are_exact(session, tmp_path):
    with get_engine("serial").start() as serial:
        want = sorted(serial.dataflow(window_flow(lambda e: e))["counts"])
    got = session.dataflow(window_flow(partial(dies_once, str(tmp_path))))["counts"]
    assert (tmp_path / "killed").exists()
    assert sorted(got) == want                         # each window once, none lost, none twice
