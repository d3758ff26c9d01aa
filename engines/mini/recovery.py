"""mini-data recovery: snapshots at epoch boundaries, a replacement worker, a rollback and a replay.

A data-parallel worker holds state no one else has: the merged output of
every keyed step for the keys it owns. When it dies, that state is gone,
and so is the part of the input it had read. Bytewax's answer, and this
engine's: snapshot the state at **epoch boundaries**, and on a loss roll
*every* worker back to the last epoch that all of them completed, with a
fresh process in the dead one's place, then replay the input from there.

**Epochs.** In a batch flow the natural boundary is the end of an
exchange: when a worker has merged keyed step number ``e`` (counting the
plan's ``reduce_by_key`` and ``join`` stages from 1), epoch ``e`` is
complete on that worker. What it must keep to go on from there is the
output of every stage it has computed that a later stage still reads
(`needed_after`); the reads themselves are recipes (lists, or callables
that make the items), so they are never saved: replaying means reading
again.

**The protocol**, for a run with snapshots (`engines.mini.dataparallel`)::

    worker k, after merging keyed step e     save state(k, e)     ("snapped", run, k, e) -> driver
    driver                                   complete = min over workers of the last e each snapped
    a worker dies                            the driver cancels the run on the others
                                             the cluster starts a fresh worker k and meshes it again
                                             every worker restarts the run at epoch `complete`:
                                             it loads its own state(k, complete) -- the new worker
                                             loads the dead one's -- and skips every stage up to
                                             keyed step `complete`; the driver drops what the sinks
                                             after that point had sent (`kept_sinks`)

A run that snapshots nothing (the default: ``snapshot_interval_s`` None)
recovers too, from epoch 0: the whole input is replayed. Either way the
answer is exact: every stage after the epoch runs once more, on all
workers, from state that was complete on all of them, and every sink's
items reach the driver from exactly one attempt. A snapshot is written
only when ``snapshot_interval_s`` has passed since the worker's last one,
so a long run pays for a few, and a short one for none.

Snapshots are files in a folder (the session's, in the system temp
directory unless ``snapshot_dir`` is given), one per run, worker and
epoch, written to a temporary name and renamed -- a worker killed while
writing leaves no half snapshot. They are deleted when the run ends. A
replacement can load the dead worker's file because every worker of a
local session shares the machine; a cluster over several machines would
need a shared store, and does not recover (its workers' losses fail the
run, as before).

Worked example: the epochs of a word count joined with a table, and what
a worker resuming after the first keeps::

    >>> from engines.flow import Dataflow
    >>> from engines.plan import compile
    >>> flow = Dataflow("wc")
    >>> counts = flow.read([["a b a"]], name="text").flat_map(str.split).count_by_key(name="counts")
    >>> counts.collect("early")
    >>> counts.join(flow.read([[("a", "A")]], name="names"), name="named").collect("late")
    >>> plan = compile(flow)
    >>> [(stage.name, epoch_of(plan, i)) for i, stage in enumerate(plan.stages)]
    [('text', 0), ('counts', 1), ('early', 1), ('names', 1), ('named', 2), ('late', 2)]
    >>> needed_after(plan, 1), kept_sinks(plan, 1)
    ({'counts'}, set())
    >>> sorted(needed_after(plan, 2)), kept_sinks(plan, 2)
    (['named'], {'early'})

After epoch 1 a worker keeps its share of ``counts``; ``early`` is sent
after that boundary, so a resume there sends it again (and the driver
drops what the failed attempt sent of it). After epoch 2 only ``named``
is still read, and ``early`` is complete.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from pathlib import Path

import cloudpickle

from engines.plan import Plan

KEYED = ("reduce_by_key", "join")


def epoch_of(plan: Plan, index: int) -> int:
    """The epoch stage ``index`` belongs to: how many keyed stages end at or before it."""
    return sum(stage.op in KEYED for stage in plan.stages[:index + 1])


def needed_after(plan: Plan, epoch: int) -> set[str]:
    """The stages before epoch ``epoch``'s boundary that stages after it read: what a snapshot there
    holds (those a worker has computed; a read not yet read is read again)."""
    before = {stage.name for i, stage in enumerate(plan.stages) if not _after(plan, i, epoch)}
    read_later = {pipe.stage for i, stage in enumerate(plan.stages) if _after(plan, i, epoch) for pipe in stage.inputs}
    return read_later & before


def kept_sinks(plan: Plan, epoch: int) -> set[str]:
    """The sinks every worker has sent in full once all have completed epoch ``epoch``."""
    return {stage.name for i, stage in enumerate(plan.stages) if stage.op == "collect" and not _after(plan, i, epoch)}


def _after(plan: Plan, index: int, epoch: int) -> bool:
    """Whether stage ``index`` runs after the boundary of epoch ``epoch`` (the end of its keyed stage)."""
    stage = plan.stages[index]
    ends = epoch_of(plan, index) - (stage.op in KEYED)   # a keyed stage belongs to the epoch it ends
    return ends >= epoch


class SnapshotStore:
    """One file per (run, worker, epoch) in ``folder``; a fresh temporary folder when None.

        >>> store = SnapshotStore()
        >>> store.save("run-1", 0, 1, {"counts": [[("a", 2)]]}) > 0
        True
        >>> store.load("run-1", 0, 1)
        {'counts': [[('a', 2)]]}
        >>> store.drop("run-1"); store.close()
    """

    def __init__(self, folder: str | os.PathLike | None = None):
        self.own = folder is None
        self.folder = Path(tempfile.mkdtemp(prefix="mini-data-snapshots-") if folder is None else folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, key: str, worker: int, epoch: int) -> Path:
        return self.folder / f"{key}-w{worker}-e{epoch}.snapshot"

    def save(self, key: str, worker: int, epoch: int, state: dict) -> int:
        """Write ``state`` atomically; the bytes written. Items of a user's own class go by value."""
        try:
            data = pickle.dumps(state, protocol=5)
        except (pickle.PicklingError, AttributeError, TypeError):
            data = cloudpickle.dumps(state, protocol=5)
        path = self.path(key, worker, epoch)
        tmp = path.with_suffix(".partial")
        tmp.write_bytes(data)
        tmp.replace(path)
        return len(data)

    def load(self, key: str, worker: int, epoch: int) -> dict:
        return pickle.loads(self.path(key, worker, epoch).read_bytes())

    def drop(self, key: str) -> None:
        """Delete every snapshot of run ``key``."""
        for path in self.folder.glob(f"{key}-w*"):
            path.unlink(missing_ok=True)

    def close(self) -> None:
        if self.own:
            shutil.rmtree(self.folder, ignore_errors=True)
