"""Bytewax: a dataflow of operators, run by identical workers that exchange by key.

Bytewax is a data-parallel stream processor: a Python API over Timely
Dataflow (Rust). Every worker runs every operator of the flow; an input's
partitions are shared out among the workers; a *stateful* operator is keyed,
and each item is sent to the worker that owns its key before the operator
sees it. There is no long-running cluster: a run is N processes started
together, each told the addresses of all (``python -m bytewax.run -w1 -i
<proc id> -a host:port;host:port``). Here the N processes are started once
per session (start-up is timed apart) and each run is one ``cluster_main``
call in each of them, with fresh ports.

The translation, step by step (each archbench step becomes bytewax steps of
the same name):

=================  ==========================================================
archbench step     Bytewax operators
=================  ==========================================================
``read``           ``op.input`` from `_Partitions`, a ``FixedPartitionedSource``
                   with one partition per archbench partition, each built
                   (its callable called) on the worker it is assigned to, and
                   read in batches of `BATCH_SIZE` items
``flat_map``       nothing yet: a chain of narrow steps runs **fused**, in the
                   ``op.flat_map_batch`` of the next keyed step or sink (maps
                   and filters as C loops, `engines.plan.fuse`) -- one Python
                   list per batch instead of one per step
``reduce_by_key``  ``op.flat_map_batch`` running the narrow steps, combining
                   the batch (bytewax has no map-side combiner; this is one,
                   per batch) and cutting it into buckets
                   (`engines.plan.split`): one ``(bucket, [pairs])`` item per
                   bucket; then ``op.stateful_batch`` folding each bucket's
                   pairs into a dict, emitted once the input ends
``join``           the same cut into buckets on each side, labelled with the
                   side; ``op.merge``; ``op.stateful_batch`` keeping each
                   side's values per key and emitting every pair at the end
``collect``        ``op.flat_map_batch`` running the narrow steps, then
                   ``op.output`` into a `list_sink` of the run, whose items each
                   process sends back to the driver at the end
=================  ==========================================================

Bytewax routes by *string* keys and keeps state per routing key; archbench
keys are any Python value. The routing key here is the key's **bucket**
(``stable_hash(key) % BUCKETS``, as a string): each bucket's state is a dict
of the real keys, so keys compare as in Python (``1`` and ``1.0`` are one
key) and each worker holds a few dicts -- the same state every data-parallel
engine here keeps per owner. (Keyed by the real key, as ``op.fold_final`` or
``op.join`` would be, bytewax builds one state machine per key: the same
answers, 1.2-1.7 times slower on the groupby, wordcount and join workloads
at small size.) Bytewax pickles every item it exchanges on its own, so a
batch's pairs travel as one list per bucket, not one item per pair -- as
every other data-parallel engine here sends buckets. Fused steps, bucket
lists and batches of 10,000 items made the adapter 2.6 (wordcount) to 4.5
(groupby) times faster at medium size than per-step operators, one item per
pair and batches of 1,000 -- level with the Bytewax flows written by hand in
`tests/benchmarks/test_bench_mini_data.py`, which it was 4 times slower than.

A failing user function does not reach bytewax (a Python error inside an
operator makes every process panic): a
`engines.adapters.bytewax_run.Guard` records the first error (naming the
step), and from then on the process's operators pass nothing on, so the run
ends normally and the driver raises that `DataflowError`.

Bytewax exchanges records with plain pickle: in its processes, a record of a
class from a user's workload file (sent by value) falls back to cloudpickle
(`engines.adapters.pickle_by_value_fallback`), as do the sinks' items on
their way back to the driver.

A timed stream (`Dataflow.stream`) runs natively, as one long Bytewax run:
sources woken on a tick, window state in a keyed stateful operator, window
results sent to the driver as they are emitted
(`engines.adapters.bytewax_streams`, which also says why not Bytewax's
own windowing).

**Trace** (``trace_start`` / ``trace_stop``): Bytewax has no instrument of
its own that says what each worker did when, so the adapter stamps its own
steps. While a trace records (the driver says so with each run), every call
of a function the adapter gives Bytewax is stamped with ``time.time()`` in
the worker process that runs it, under its bytewax step id: a source
partition's batch (``io``; the first one builds the partition), a batch of
fused narrow steps, combined and cut into buckets, a bucket's fold, a join's
sides and pairs (``compute``). Each process sends its stamps back with its
sinks' items at the end of the run; the lanes are ``worker <Bytewax worker
index>`` (one worker per process). Not shown: the bytes moved between
workers (Bytewax does not report them), the time buckets spend in Bytewax's
exchange and its scheduling and progress tracking (idle on the lanes), and
each run's start in each process. Untraced, a step pays one ``None`` check
per batch.

**Tasks** and **actors** are not offered: a Bytewax program is a dataflow
and nothing else.

**A lost worker.** The session's worker processes (`fault_targets`) are
one Timely cluster per run: when one dies, the driver sees its pipe end at
once, and the others cannot finish (their peer is gone; they panic on the
broken connection), so the driver kills them and starts a fresh set of
processes. What happens to the run depends on the setting ``recovery``:

- ``off`` (the default): the run fails promptly with a `WorkerLost` naming
  the process and how it ended (``bytewax worker 1 (pid 4242) was killed
  by SIGKILL``); the session goes on with the fresh processes.
- ``on`` (what ``archbench run --fault`` starts it with: `fault_options`):
  each run gets a recovery store of its own and a snapshot every
  ``epoch_interval_s``; the fresh processes run the same flow on the same
  store and Bytewax **resumes from the last snapshot** -- the input
  partitions at the offsets they had emitted, each reduce and join bucket
  with its state, the sinks cut back to what they had written
  (`engines.adapters.bytewax_recovery` says how, and why the answer is
  exact). A run that loses a process more than `MAX_RESTARTS` times fails,
  naming each loss. A stream is not resumed from snapshots (its router's
  per-source counts, which make the windows wait for items in flight, are
  not Bytewax state): it starts again from its beginning, and what the
  lost run had sent the driver is dropped -- its windows are exact, their
  latency includes the loss.

Recovery is off by default because it is not free: the store, the
snapshots and the sink's file cost every run something (measured in
`engines.adapters.bytewax_recovery`), which no other engine's timed figures
pay -- mini-data recovers without snapshots by default. A cell with a fault
runs all its repeats with it on, so its ``recovery_s`` is the recovery alone.

    >>> BytewaxEngine().settings(2)["processes"]
    2
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import socket
import time
from collections import deque
from functools import partial
from itertools import chain, islice
from multiprocessing.connection import wait

import cloudpickle

from engines.adapters import LOG_DIR, AdapterEngine, AdapterSession, pickle_by_value_fallback
from engines.adapters.bytewax_recovery import (WorkerLost, file_sink, fresh_store, lost_again, own_key, read_items,
                                               recovery_options, remove_store, sink_path)
from engines.adapters.bytewax_run import Guard, Run, bytewax_id, list_sink
from engines.adapters.bytewax_streams import Emitter, translate_stream
from engines.api import ArchbenchError, DataflowError, Session, Step
from engines.plan import Pipe, Plan, narrow, source_items, split
from engines.support import Support
from engines.tracing import Stamps, span, worker_lane

BATCH_SIZE = 10_000  # items per batch the source emits: the map-side combine covers a batch
JOB_GRACE = 30      # seconds the other processes get to finish once one has failed outright
STREAM_TICK = 0.02  # wall seconds between a stream source's wake-ups (as mini-data's tick)
EPOCH_S = 0.1       # with recovery: wall seconds per epoch, so a snapshot at least every 0.1 s of input
MAX_RESTARTS = 3    # with recovery: restarts of one run after a lost process before it fails

TRACE_SOURCE = "stamps in the Bytewax adapter's steps, taken in its worker processes"
TRACE_MISSING = (
    "bytes moved between workers: Bytewax does not report what it exchanges (the adapter would have to "
    "pickle each bucket a second time to know)",
    "exchange time: Bytewax routes the buckets between operators itself; items in transit, Bytewax's "
    "scheduling and its progress tracking are not stamped and show as idle",
    "each run's start in each process (the processes connecting, the dataflow being built) is not stamped",
)


class BytewaxEngine(AdapterEngine):
    name = "bytewax"
    architecture = "data parallel"
    description = "Bytewax dataflows: N worker processes running cluster_main"
    supports = {
        "dataflow": Support.native(streams="streams natively (window state in a keyed stateful operator)"),
        "tasks": Support.unsupported("a Bytewax program is a dataflow of operators; "
                                     "there is no call to run one function on a worker"),
        "actors": Support.unsupported("Bytewax has no addressable objects; its state lives "
                                      "in keyed operators and only the stream reaches it"),
    }
    requires = ("bytewax",)
    extra = "bytewax"
    options = ("stream_tick_s", "recovery", "epoch_interval_s")
    #: a run with ``--fault`` runs the whole cell with Bytewax's recovery, so its timed repeats pay the same
    #: store and snapshots as the faulted one and ``recovery_s`` is the recovery alone
    fault_options = {"recovery": "on"}

    def settings(self, workers: int, **options) -> dict:
        self.check_options(options)
        recovery = _switch(options.get("recovery", "off"))
        epoch = float(options.get("epoch_interval_s", EPOCH_S)) if recovery else None
        return {
            "workers": workers,
            "processes": workers,
            "worker_count_per_proc": 1,
            "source": f"FixedPartitionedSource, one partition per archbench partition, batches of {BATCH_SIZE}",
            "combine": "per batch before the exchange",
            "keyed_state": f"{BUCKETS} route keys (buckets) per keyed step, a dict of keys each",
            "epoch_interval": f"{epoch:g} s, a snapshot at the end of each" if recovery else "bytewax default (10 s)",
            "epoch_interval_s": epoch,
            "recovery": ("on: a fresh SQLite recovery store per run (one partition per process) in the log folder; "
                         f"a lost process restarts all {workers} from the last snapshot, at most {MAX_RESTARTS} times "
                         "(a stream: from its beginning, without a store)"
                         if recovery else
                         "off: no recovery store; a lost process fails the run, the processes are restarted"),
            "max_restarts": MAX_RESTARTS if recovery else 0,
            "sink": ("exactly-once: a file per process, cut back to its snapshot on resume" if recovery else
                     "a list per process, sent to the driver at the end"),
            "addresses": "127.0.0.1, fresh ports per run",
            "stream_tick_s": float(options.get("stream_tick_s", STREAM_TICK)),
            LOG_DIR: options.get(LOG_DIR),
        }

    def start(self, workers: int = 2, **options) -> Session:
        return BytewaxSession(workers, self.supports, self.settings(workers, **options))


class BytewaxSession(AdapterSession):
    engine = "bytewax"

    def __init__(self, workers, supports, settings):
        super().__init__(workers, supports, settings)
        self._log = str(self.logs / "bytewax-workers.log")
        self._procs: list = []
        self.stamps = Stamps()   # the processes' step stamps, kept while a trace records
        with self.opening():
            self._start_processes()

    def _start_processes(self) -> None:
        """Start the N processes and wait until each has imported bytewax. Mutates ``_procs``."""
        ctx = multiprocessing.get_context("spawn")
        for i in range(self.workers):
            here, there = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(there, self._log), name=f"bytewax-{i}", daemon=True)
            proc.start()
            there.close()
            self._procs.append((proc, here))
        for proc, conn in self._procs:
            if not conn.poll(120):
                raise DataflowError(f"bytewax worker process {proc.pid} did not start; see {self._log}")
            try:
                conn.recv()
            except EOFError:
                proc.join(5)
                raise DataflowError(
                    f"bytewax worker process {proc.pid} exited while starting (status {proc.exitcode}). "
                    "Worker processes are spawned: they import your main script again, so a script that starts "
                    "a session must do so under `if __name__ == \"__main__\":`") from None

    @property
    def worker_pids(self) -> list[int]:
        return [proc.pid for proc, _ in self._procs]

    streams_natively = True

    def run_plan(self, plan: Plan) -> dict[str, list]:
        out: dict[str, list] = {sink: [] for sink in plan.sinks}
        starts: list[float] = []                  # a stream's sources' start times (wall)
        arrivals: list[tuple[float, list]] = []   # (when, closing stream times) per batch of window results

        def during(message: tuple) -> None:       # a stream's messages while it runs
            if message[0] == "started":
                starts.append(message[2])
            else:
                arrivals.append((time.time(), message[3]))
                out[message[1]].extend(message[2])

        def replayed() -> None:                   # a stream starts again from its beginning: what the lost
            starts.clear()                        # run sent is dropped, and is sent again
            arrivals.clear()
            for items in out.values():
                items.clear()
        tick = self.settings["stream_tick_s"] if plan.streaming else None
        try:
            sinks = self._job(cloudpickle.dumps(plan, protocol=5), tick, during, recover=True, replayed=replayed)
        finally:
            if starts:       # stream time 0 is when the last source started reading
                speedup = plan.source.step.arg.speedup
                for when, closes in arrivals:
                    for closes_at in closes:
                        self.window_latencies.add(when - (max(starts) + closes_at / speedup))
        for sink, items in sinks.items():
            out[sink].extend(items)
        return out

    def run_native(self, build) -> dict[str, list]:
        """Run a Bytewax dataflow written by hand, in the session's processes; ``{sink: items}``.

        ``build(sinks)`` -- a module-level function, called in each process --
        returns a ``bytewax.dataflow.Dataflow`` whose outputs append their
        items to the lists of ``sinks`` (a dict: name -> list); the items of
        every process are returned, sink by sink. An exception in ``build``, or
        Bytewax failing while it runs, is raised here as a `DataflowError`.
        The hand-written twins (`harness.twins`) run so, beside the adapter.
        """
        return self._job(cloudpickle.dumps(build, protocol=5), None, lambda message: None)

    @property
    def recovering(self) -> bool:
        return self.settings["epoch_interval_s"] is not None

    def _job(self, payload: bytes, tick: float | None, during, recover: bool = False,
             replayed=lambda: None) -> dict[str, list]:
        """One run on every process; the sinks' items merged over the processes.

        With recovery on (and ``recover``), a lost process restarts the run on
        fresh processes, at most `MAX_RESTARTS` times: a flow of batches
        resumes from the snapshots in its recovery store (one per run, removed
        at the end); a stream (``tick``) starts again from its beginning, after
        ``replayed()`` has dropped what the lost run had sent.
        """
        if not (recover and self.recovering):
            return self._attempt(payload, tick, during, None)
        store = fresh_store(self.logs, self.workers) if tick is None else None
        lost: list[WorkerLost] = []
        try:
            while True:
                try:
                    return self._attempt(payload, tick, during, store and str(store))
                except WorkerLost as e:
                    lost.append(e)
                    if len(lost) > MAX_RESTARTS:
                        raise WorkerLost(e.worker, e.pid, e.how, lost_again(lost, MAX_RESTARTS, self._log,
                                                                            replayed=tick is not None)) from e
                    if tick is not None:
                        replayed()
        finally:
            if store is not None:
                remove_store(store)

    def _attempt(self, payload: bytes, tick: float | None, during, store: str | None) -> dict[str, list]:
        """Send one run to every process, wait for all; the sinks' items merged over the processes."""
        addresses = [f"127.0.0.1:{port}" for port in _free_ports(self.workers)]
        tracing = self.stamps.recording
        epoch = self.settings["epoch_interval_s"]
        for i, (_, conn) in enumerate(self._procs):
            conn.send((payload, addresses, i, tick, tracing, store, epoch))
        replies = self._replies(during)
        if tracing:
            for i, ((proc, _), reply) in enumerate(zip(self._procs, replies)):
                for name, kind, start, end in (reply[2] if len(reply) > 2 else None) or ():
                    self.stamps.add(span(worker_lane(i), name, kind, start, end, proc.pid))
        if any(reply[0] in ("crashed", "died") for reply in replies):
            # a process that died, panicked or hangs cannot run the next flow; after a death the
            # others may still be inside the run, and are killed rather than asked to stop
            self._restart(kill=any(reply[0] == "died" for reply in replies))
        for status, value, *_ in sorted(replies, key=lambda reply: reply[0] != "died"):   # a death first
            if status != "ok":
                raise value
        merged: dict[str, list] = {}
        for _, sinks, *_ in replies:
            for sink, items in sinks.items():
                merged.setdefault(sink, []).extend(items)
        return merged

    def _replies(self, during) -> list[tuple]:
        """Each process's final reply, in process order; a stream's messages on the way go to ``during``.

        Once one process has failed, the others get `JOB_GRACE` seconds to
        finish. Once one has *died* (its pipe ends: killed, or it crashed
        outright), none waits: a Timely cluster that lost a process cannot
        finish the run, so every process still running is counted as
        stopped by that death (`_job` then restarts them all).
        """
        conns = {conn: (i, proc) for i, (proc, conn) in enumerate(self._procs)}
        replies: dict = {}
        while len(replies) < len(conns):
            waiting = [conn for conn in conns if conn not in replies]
            failed = any(reply[0] != "ok" for reply in replies.values())
            ready = wait(waiting, timeout=JOB_GRACE if failed else None)
            if not ready:
                for conn in waiting:
                    replies[conn] = ("crashed", DataflowError(f"bytewax process {conns[conn][1].pid} did not finish"))
            for conn in ready:
                try:
                    message = pickle.loads(conn.recv_bytes())
                except EOFError:
                    message = ("died", self._died(*conns[conn]))
                if message[0] in ("started", "windows"):
                    during(message)
                else:
                    replies[conn] = message
            died = [reply for reply in replies.values() if reply[0] == "died"]
            if died:
                for conn in conns:
                    replies.setdefault(conn, ("crashed", died[0][1]))
        return [replies[conn] for conn in conns]

    def _died(self, i: int, proc) -> WorkerLost:
        """The error of a run during which worker process ``i`` (``proc``) died."""
        from engines.mini.cluster import exit_status

        proc.join(5)   # its pipe has ended: it has exited, or is about to
        how = exit_status(proc.exitcode) if proc.exitcode is not None else "closed its pipe"
        return WorkerLost(i, proc.pid, how,
                          f"bytewax worker {i} (pid {proc.pid}) {how} during the run; Bytewax runs without "
                          f"its recovery store here (recovery=off), so the run fails (the session restarts its "
                          f"{self.workers} processes for the next run; its output went to {self._log})")

    def trace_start(self) -> None:
        """From the next run on, the processes stamp each of the adapter's steps and send the stamps back."""
        self.stamps.start()

    def trace_stop(self):
        return self.stamps.stop(TRACE_SOURCE, list(TRACE_MISSING))

    def _restart(self, kill: bool = False) -> None:
        self._stop_processes(kill)
        self._start_processes()

    def _stop_processes(self, kill: bool = False) -> None:
        """Ask each process to stop (``kill``: kill it at once); wait until each has exited. Mutates ``_procs``."""
        procs, self._procs = self._procs, []
        for proc, conn in procs:
            try:
                if kill:
                    proc.kill()
                else:
                    conn.send(None)
            except OSError:
                pass
        for proc, conn in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
            conn.close()

    def close(self) -> None:
        self._stop_processes()
        super().close()


def _switch(value) -> bool:
    """``on``/``off`` (or true/false) as a bool; anything else names what is allowed."""
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("on", "true", "1", "yes"):
        return True
    if str(value).lower() in ("off", "false", "0", "no"):
        return False
    raise ArchbenchError(f"engine 'bytewax': recovery={value!r}; write recovery=on or recovery=off")


def _free_ports(n: int) -> list[int]:
    """``n`` ports free on the loopback now (bytewax binds them when the run starts)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# ------------------------------------------------------- in each worker process


LISTEN_BOUND = 10.0   # seconds a process waits for the processes before it to listen


def _listening(port: int) -> bool:
    """Whether some process listens on loopback ``port`` (Linux's table of TCP sockets; elsewhere: say yes)."""
    try:
        with open("/proc/net/tcp") as f:
            rows = [line.split() for line in f.readlines()[1:]]
    except OSError:
        return True
    return any(row[1] == f"0100007F:{port:04X}" and row[3] == "0A" for row in rows)   # 0A: LISTEN


def _await_peers(addresses: list[str], proc_id: int) -> None:
    """Wait (at most `LISTEN_BOUND` s) until the processes before ``proc_id`` listen on their ports.

    Timely's process ``i`` connects to every process before it as it starts; one not listening yet is
    tried again only a second later -- without this wait, 1 run in 2 took a second longer."""
    deadline = time.monotonic() + LISTEN_BOUND
    for address in addresses[:proc_id]:
        port = int(address.rpartition(":")[2])
        while not _listening(port) and time.monotonic() < deadline:
            time.sleep(0.001)


def _serve(conn, log_path: str) -> None:
    """A worker process: run one flow per message until told to stop (None)."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    pickle_by_value_fallback()  # bytewax exchanges records with plain pickle
    from bytewax.testing import cluster_main

    conn.send(("ready", os.getpid()))
    while True:
        job = conn.recv()
        if job is None:
            return
        payload, addresses, proc_id, tick, tracing, store, epoch = job
        run = Run(tracing, store, proc_id)
        try:
            job_flow = cloudpickle.loads(payload)
            if tick is None and not isinstance(job_flow, Plan):   # a Bytewax flow written by hand
                flow = job_flow(run.sinks)
            elif tick is None:
                flow = _translate(job_flow, run)
            else:
                flow = translate_stream(job_flow, run, tick, Emitter(conn))
        except Exception as e:  # every process fails alike, before any of them starts
            conn.send(("error", e if isinstance(e, DataflowError) else DataflowError(f"{type(e).__name__}: {e}")))
            continue
        try:
            _await_peers(addresses, proc_id)
            cluster_main(flow, addresses, proc_id, worker_count_per_proc=1, **recovery_options(store, epoch))
        except BaseException as e:  # bytewax panics are BaseExceptions; the other processes may hang
            conn.send(("crashed", DataflowError(f"bytewax failed: {type(e).__name__}: {e}"), run.stamps))
            continue
        if store is not None:       # the exactly-once sinks wrote to files: read them back
            for name, items in run.sinks.items():
                items.extend(read_items(sink_path(store, bytewax_id(name), proc_id)))
        # pickle.dumps here falls back to cloudpickle (records of a user's own classes)
        reply = ("error", run.error, run.stamps) if run.error else ("ok", run.sinks, run.stamps)
        conn.send_bytes(pickle.dumps(reply, protocol=5))


def _split(ops: tuple[Step, ...], step: Step, side: int | None, batch: list) -> list:
    """The map side of a keyed step over one batch: the fused narrow steps, the combine of a reduce,
    the cut into `BUCKETS` (`engines.plan.split`). One item per bucket that got any pairs:
    ``(bucket, pairs)``, or ``(bucket, (side, pairs))`` for a join's ``side`` (0 left, 1 right)."""
    buckets = split(batch, ops, step, BUCKETS)
    return [(str(b), pairs if side is None else (side, pairs)) for b, pairs in enumerate(buckets) if pairs]


def _translate(plan: Plan, run: Run):
    """The bytewax flow for ``plan``; its sinks fill ``run.sinks``.

    A bytewax stream per stage; a pipe's narrow steps run fused in one
    ``flat_map_batch`` in front of the next keyed step (its map side,
    `_split`) or sink; a stage read by two or more is computed once, in a
    ``flat_map_batch`` of its own, and its stream consumed by each.
    """
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow as BytewaxFlow

    bx = BytewaxFlow(bytewax_id(plan.name) or "flow")
    streams: dict = {}

    def routed(pipe: Pipe, step: Step, part: str, side: int | None = None):
        sid = bytewax_id(step.name, part)
        split_side = Guard(run, step, partial(_split, pipe.ops, step, side), name=sid)
        return op.flat_map_batch(sid, streams[pipe.stage], split_side)

    for stage in plan.stages:
        name, step = stage.name, stage.step
        if stage.op == "read":
            streams[name] = op.input(bytewax_id(name), bx, _Partitions(step, run))
        elif stage.op == "narrow":
            pipe = stage.inputs[0]
            computed = Guard(run, step, partial(narrow, ops=pipe.ops))
            streams[name] = op.flat_map_batch(bytewax_id(name), streams[pipe.stage], computed)
        elif stage.op == "reduce_by_key":
            combined = routed(stage.inputs[0], step, "combine")
            reduced = op.stateful_batch(bytewax_id(name), combined, partial(_Reduce, step, run))
            streams[name] = op.key_rm(bytewax_id(name, "unroute"), reduced)
        elif stage.op == "join":
            sides = [routed(pipe, step, f"{side}_route", i)
                     for i, (side, pipe) in enumerate(zip(("left", "right"), stage.inputs))]
            merged = op.merge(bytewax_id(name, "sides"), *sides)
            joined = op.stateful_batch(bytewax_id(name), merged, partial(_Join, step, run))
            streams[name] = op.key_rm(bytewax_id(name, "unroute"), joined)
        elif stage.op == "collect":
            pipe = stage.inputs[0]
            stream = streams[pipe.stage]
            items = run.sinks.setdefault(name, [])
            sid = bytewax_id(name, "steps")
            if run.store is not None:   # exactly-once: each process's items keyed to its own file partition
                keyed = Guard(run, step, partial(_keyed, pipe.ops, own_key(run.proc_id)), name=sid)
                op.output(bytewax_id(name), op.flat_map_batch(sid, stream, keyed),
                          file_sink(run.store, bytewax_id(name), run.proc_id))
                continue
            if pipe.ops:
                stream = op.flat_map_batch(sid, stream, Guard(run, step, partial(narrow, ops=pipe.ops), name=sid))
            op.output(bytewax_id(name), stream, list_sink(items))
        else:
            raise DataflowError(f"stage {name!r}: a {stage.op} runs as a stream (engines.adapters.bytewax_streams)")
    return bx


def _keyed(ops: tuple[Step, ...], key: str, batch: list) -> list:
    """A sink's fused narrow steps over one batch, each item keyed to this process's file partition."""
    return [(key, item) for item in (narrow(batch, ops=ops) if ops else batch)]


BUCKETS = 128  # route keys of a keyed step: each holds a dict of the keys that hash to it


def _Reduce(step: Step, run: Run, resume_state):
    """The state of one bucket of a reduce: ``{key: combined value}``, emitted when the input ends."""
    from bytewax.operators import StatefulBatchLogic

    class Reduce(StatefulBatchLogic):
        def __init__(self):
            self.acc: dict = {} if resume_state is None else pickle.loads(resume_state)

        def on_batch(self, lists):
            Guard(run, step, self._fold)(lists)
            return (), StatefulBatchLogic.RETAIN

        def _fold(self, lists):
            acc, fn = self.acc, step.fn
            for key, value in chain.from_iterable(lists):
                acc[key] = fn(acc[key], value) if key in acc else value

        def on_eof(self):
            return run.timed(bytewax_id(step.name), "compute", list, self.acc.items()), StatefulBatchLogic.DISCARD

        def snapshot(self):   # pickled now: the dict goes on changing
            return pickle.dumps(self.acc, protocol=5)

    return Reduce()


def _Join(step: Step, run: Run, resume_state):
    """The state of one bucket of a join: each side's values per key; every pair emitted when the input ends."""
    from bytewax.operators import StatefulBatchLogic

    class Join(StatefulBatchLogic):
        def __init__(self):
            self.sides: tuple[dict, dict] = ({}, {}) if resume_state is None else pickle.loads(resume_state)

        def on_batch(self, labelled):
            run.timed(bytewax_id(step.name), "compute", self._keep, labelled)
            return (), StatefulBatchLogic.RETAIN

        def _keep(self, labelled):
            for i, pairs in labelled:
                side = self.sides[i]
                for key, value in pairs:
                    side.setdefault(key, []).append(value)

        def on_eof(self):
            return run.timed(bytewax_id(step.name), "compute", self._pairs), StatefulBatchLogic.DISCARD

        def _pairs(self) -> list:
            left, right = self.sides
            return [(key, (lv, rv)) for key, rvs in right.items() for rv in rvs for lv in left.get(key, ())]

        def snapshot(self):   # pickled now: the lists go on growing
            return pickle.dumps(self.sides, protocol=5)

    return Join()


# the source and the sink (imported lazily: bytewax is only needed in the worker processes)


def _Partitions(step: Step, run: Run):
    from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

    class Partition(StatefulSourcePartition):
        def __init__(self, recipe, resume_at: int | None):
            self.recipe, self.items, self.read = recipe, None, resume_at or 0

        def next_batch(self):
            batch = Guard(run, step, self._take, kind="io")()
            if not batch:
                raise StopIteration
            return batch

        def _take(self) -> list:
            if self.items is None:  # made here, on the worker this partition is assigned to
                self.items = iter(source_items(self.recipe))
                deque(islice(self.items, self.read), maxlen=0)   # resumed: skip what the snapshot had read
            batch = list(islice(self.items, BATCH_SIZE))
            self.read += len(batch)
            return batch

        def snapshot(self):         # how many items it has emitted: a resumed partition starts after them
            return self.read

    class Partitions(FixedPartitionedSource):
        def list_parts(self):
            return [str(i) for i in range(len(step.arg))]

        def build_part(self, step_id, for_part, resume_state):
            return Partition(step.arg[int(for_part)], resume_state)

    return Partitions()
