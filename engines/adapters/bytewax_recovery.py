"""Bytewax's own recovery, as the adapter uses it: a store per run, snapshots per epoch, an exact sink.

Bytewax recovers a dataflow by **rolling back to an epoch and resuming**:

- *epochs*: each input partition advances its epoch every
  ``epoch_interval`` of wall time; an epoch closes on a worker when every
  operator there has seen all of that epoch's items;
- *snapshots*: when an epoch closes, every stateful part of the flow that
  changed in it writes a snapshot to the **recovery store** (SQLite
  partition files, ``part-<i>.sqlite3``, made once by
  ``bytewax.recovery.init_db_dir``): each input partition its position
  (``StatefulSourcePartition.snapshot``: the adapter's partitions say how
  many items they have emitted), each key of a stateful operator its state
  (``StatefulBatchLogic.snapshot``: a bucket's dict of keys), each output
  partition its position;
- *resume*: started again on the same store, Bytewax finds the last epoch
  that every worker completed, hands each part its snapshot of that epoch
  (the ``resume_state`` of ``build_part`` and of the stateful operators'
  builders) and goes on from there: the inputs re-read what came after it,
  the operators fold it into the restored state.

Everything after the resume epoch runs a second time, so what a sink wrote
then is written again: Bytewax's output is **at-least-once** unless the
sink can seek back. The adapter's batch sinks do (`FileSink`): each
process's items go to a file of its own in the run's store folder, the
partition's snapshot is the file's length, and a resumed partition cuts its
file back to that length before it writes again. An item is in the file
exactly once -- written before the snapshot and kept, or after it, cut and
written anew -- so the answer is **exact**. Each process reads its file
back when the run ends and sends the items to the driver, as the sinks
without recovery send their lists.

The store lives in the session's log folder, a fresh one per run
(`fresh_store`), removed when the run ends; restarts of one run share it.

**A stream** is not resumed from snapshots: its router counts, per source,
what it sent each bucket (the marks wait for those items), and that count is
not Bytewax state. It starts again from its beginning without a store; the
driver drops what the lost run had sent, so its windows are exact, and their
latency includes the loss.

**What it costs** without a fault (``tests/benchmarks/test_bench_bytewax_recovery.py``,
small size, 2 processes, the three forms interleaved round by round on a
busy 2-core machine; medians of the rounds' ratios to recovery off):
wordcount 2.2x, groupby 2.5x, join 1.65x with a snapshot every 0.1 s; with
an epoch of 10 s (the store and the sink, hardly a snapshot) 2.5x, 1.8x,
1.07x -- a fixed cost per run (opening the store, the sink's exchange and
file: 0.05-0.15 s on a tiny flow) plus, on the keyed workloads, the
snapshots of each bucket's whole dict at every epoch.

    >>> import pickle, tempfile
    >>> path = Path(tempfile.mkdtemp(), "sink")
    >>> first = FilePart(path, None)
    >>> first.write_batch(["a", "b"]); mark = first.snapshot(); first.write_batch(["c"])
    >>> resumed = FilePart(path, mark)          # the process died after "c": resume at the snapshot
    >>> resumed.write_batch(["c", "d"]); read_items(path)
    ['a', 'b', 'c', 'd']
"""

from __future__ import annotations

import itertools
import pickle
import shutil
from datetime import timedelta
from pathlib import Path

from engines.api import DataflowError

_runs = itertools.count()


class WorkerLost(DataflowError):
    """A run lost Bytewax worker process ``worker`` (``pid``), which ``how`` ended (``was killed by SIGKILL``)."""

    def __init__(self, worker: int, pid: int, how: str, message: str):
        super().__init__(message)
        self.worker, self.pid, self.how = worker, pid, how

    def __reduce__(self):
        return WorkerLost, (self.worker, self.pid, self.how, str(self))


def lost_again(lost: list[WorkerLost], restarts: int, log: str, replayed: bool = False) -> str:
    """The error of a run that lost a process once more than its ``restarts`` allow (``replayed``: a
    stream, restarted from its beginning)."""
    last = lost[-1]
    each = "; ".join(f"worker {e.worker} (pid {e.pid}) {e.how}" for e in lost)
    whence = "from its beginning" if replayed else "from its recovery store"
    return (f"bytewax worker {last.worker} (pid {last.pid}) {last.how} during the run, which had been "
            f"restarted {whence} {restarts} times (max_restarts) -- it lost a process "
            f"each time: {each}. The run fails; its processes' output went to {log}")


def fresh_store(logs: Path, partitions: int) -> Path:
    """A new, empty recovery store under ``logs`` (one per run), ``partitions`` SQLite files."""
    from bytewax.recovery import init_db_dir

    while True:
        folder = logs / f"bytewax-recovery-{next(_runs)}"
        if not folder.exists():
            break
    (folder / "db").mkdir(parents=True)
    init_db_dir(folder / "db", partitions)
    return folder


def remove_store(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def recovery_options(folder: str | None, epoch_s: float | None) -> dict:
    """``cluster_main``'s keyword arguments for a run with the store at ``folder`` (None: no recovery)."""
    if folder is None:
        return {}
    from bytewax.recovery import RecoveryConfig

    return {"epoch_interval": timedelta(seconds=epoch_s), "recovery_config": RecoveryConfig(Path(folder, "db"))}


def sink_path(folder: str, sink: str, proc_id: int) -> Path:
    return Path(folder, f"sink-{sink}-{proc_id}.pickles")


class FilePart:
    """One process's output partition: batches appended to a file; its snapshot, the file's length."""

    def __init__(self, path: Path, resume_state: int | None):
        self.file = open(path, "r+b" if resume_state is not None else "wb")
        if resume_state is not None:
            self.file.truncate(resume_state)      # what the lost run wrote after the snapshot goes
            self.file.seek(resume_state)

    def write_batch(self, items: list) -> None:
        pickle.dump(items, self.file, protocol=5)
        self.file.flush()                         # in the OS's hands: a killed process loses none of it

    def snapshot(self) -> int:
        return self.file.tell()

    def close(self) -> None:
        self.file.close()


def read_items(path: Path) -> list:
    """Every item a `FilePart` wrote to ``path``, in order (none if it never wrote)."""
    items: list = []
    if not path.exists():
        return items
    with open(path, "rb") as f:
        while True:
            try:
                items.extend(pickle.load(f))
            except EOFError:
                return items


def file_sink(folder: str, sink: str, proc_id: int):
    """A ``FixedPartitionedSink`` with one partition per process, named by the process, written by a
    `FilePart`. Items must come keyed by `own_key` (``proc_id``), so each stays in its own process."""
    from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

    class Part(FilePart, StatefulSinkPartition):
        pass

    class FileSink(FixedPartitionedSink):
        def list_parts(self):
            return [own_key(proc_id)]             # only this process can write its file

        def part_fn(self, item_key: str) -> int:
            return int(item_key)                  # partition i of the sorted keys: process i's own

        def build_part(self, step_id, for_part, resume_state):
            return Part(sink_path(folder, sink, int(for_part)), resume_state)

    return FileSink()


def own_key(proc_id: int) -> str:
    """The route key of process ``proc_id``'s own sink partition (zero-padded: they sort as numbers)."""
    return f"{proc_id:05d}"
