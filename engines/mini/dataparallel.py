"""mini-data: the data-parallel architecture -- identical workers trading records by key.

This is how Bytewax and Spark run a dataflow. There is no scheduler in the
loop: every worker runs **every step** of the flow on **its share** of the
data, and workers trade records directly with each other at the steps that
need all the records of a key in one place.

- **Input**: partition ``k`` of a ``read`` belongs to worker ``k % n``
  (`assign`). A partition given as a callable is called *on its worker*,
  so input need not pass through the driver.
- **Narrow steps** (``flat_map``, ``map``, ``filter``...) stay on the
  worker, fused into one loop (`engines.plan.fuse`).
- **Keyed steps** (``reduce_by_key``, ``join``) are exchanges. Each worker
  first *combines on the sending side* (one value per key for a reduce),
  cuts the result into ``n`` buckets by owner, ``stable_hash(key) % n``
  (`engines.plan.split`), and sends bucket ``j`` to worker ``j`` over the
  mesh -- never through the driver. Then it sends an **end-of-input
  marker** for that step: the *epoch* closes. A worker knows it has every
  record of its keys when it holds the marker of all ``n`` workers, and
  only then merges (`engines.plan.merge_reduce`, `engines.plan.merge_join`).
- **collect** sends a worker's items to the driver, which concatenates.
- **Streams** (a ``stream`` source and a ``window``) run natively: the
  workers keep windows open as events flow (`engines.mini.streams`).
- **A lost worker** is replaced by a fresh process, and every worker
  resumes the run from the last epoch (the end of an exchange) that all
  of them snapshotted -- from the start when none did; the answer is exact
  (`engines.mini.recovery`); a stream starts again from its beginning,
  and the driver gets each window once (`engines.mini.streams`).

Why processes, not threads: Python runs the bytecode of one thread at a
time (the GIL), so two worker *threads* share one core for the Python code
of the steps -- which is why Bytewax's own performance guide tells you to
scale with processes rather than worker threads. Each worker here is a
process (`engines.mini.cluster`), and records between workers are pickled
in whole buckets, never one at a time.

The program. What one worker does is the generator `program`: it walks the
flow's compiled stages (`engines.plan.compile`) and **yields** where it needs the cluster --
``("exchange", step, [buckets per side])`` (it is sent back the chunks
every worker sent it), ``("sink", name, items)`` and, after each exchange,
``("epoch", e, state)`` (what a snapshot would keep). `DataWorker` (the
cluster runtime) drives that generator from the messages it receives; the
driver side is `drive`. Both run unchanged in worker processes or as
objects in one process (`engines.mini.cluster.InProcessHost`), the
deterministic form for debugging and teaching.

Messages (``run`` is a run id; ``side`` is 0, or 1 for a join's right input)::

    driver -> worker   ("run", run, flow name, pickled plan, recovery settings or None)   ("cancel", run)
                       (and a stream's messages: `engines.mini.streams`)
    worker -> worker   ("part", run, step, side, items)  ("end", run, step, side)
                       (a bucket goes in chunks of CHUNK items; the end marker rides in the
                       frame of the last one)
    worker -> driver   ("at", run, worker, step)  ("sink", run, name, items)
                       ("finished", run, worker, trace rows)
                       ("failed", run, worker, error, None or (lost worker, why))
                       ("snapped", run, worker, epoch)   its state at the end of that epoch is saved
    cluster -> worker  ("lost", k, why)   ("joined", k): a fresh worker k took the lost one's place

State of a `DataWorker` (plain dicts, keyed by run)::

    runs    = {run: generator}                # the flows this worker is running
    streams = {run: StreamRun}                # the streams it is running
    waiting = {run: (step, sides)}            # the exchange a run is blocked in
    at      = {run: step}                     # the step it runs now (named in errors)
    got     = {(run, step, side): [chunk, ...]}   # items received (early ones too)
              {(run, "early"): [message, ...]}    # a stream's partials that came before its start
    ended   = {(run, step, side): {worker, ...}}  # whose end marker came
    over    = {run, ...}                      # finished or cancelled: late messages are dropped
    recovery = {run: settings}                # where and how often a run snapshots (engines.mini.recovery)
    lost    = {worker: why}                   # peers lost and not yet replaced

Worked example -- word count on two workers, in one process::

    >>> from engines.api import Dataflow
    >>> flow = Dataflow("wc")
    >>> flow.read([["to be or"], ["not to be"], ["to"]]).flat_map(str.split).count_by_key().collect("n")
    >>> host = InProcessHost(2, DataWorker)
    >>> out, rows = drive(compile(flow), host, run=1)
    >>> sorted(out["n"])
    [('be', 2), ('not', 1), ('or', 1), ('to', 3)]

Worker 0 read partitions 0 and 2 ("to be or", "to") and combined them to
``{to: 2, be: 1, or: 1}`` before sending anything; it kept ``to`` (its
owner is ``stable_hash("to") % 2 == 0``) and sent ``be`` and ``or`` to
worker 1 with its end marker. Worker 1 read "not to be", sent ``to`` to
worker 0 and kept the rest. With both markers in, each merged its keys and
sent them to the driver. Every byte that moved is in the trace::

    >>> sorted({(r["worker"], r["to"]) for r in rows if r["event"] == "send"}, key=str)
    [(0, 'driver'), (0, 1), (1, 'driver'), (1, 0)]
"""

from __future__ import annotations

import functools
import pickle
import time
from dataclasses import replace
from itertools import chain

import cloudpickle

from engines.api import Dataflow, DataflowError, Session, Step
from engines.mini.cluster import DRIVER, ClusterError, InProcessHost
from engines.mini.engine import MiniEngine, MiniSession
from engines.mini.recovery import KEYED, SnapshotStore, kept_sinks, needed_after
from engines.mini.streams import DEFAULT_TICK, StreamStart, start_stream
from engines.mini.trace import Tracer
from engines.plan import Pipe, Plan, Stage, compile, merge_join, merge_reduce, narrow, source_items, split
from engines.support import Support

CHUNK = 50_000          # items per message: bounds a frame and lets the receiver unpickle while we pickle

SUPPORTS = {
    "dataflow": Support.native(streams="streams natively (windows kept open on the workers as events flow)"),
    "tasks": Support.unsupported("mini-data runs dataflows only; the task model on the same workers is mini-tasks"),
    "actors": Support.unsupported("mini-data runs dataflows only; actors on the same workers are mini-actors"),
}


# ================================================================ one worker's program


def assign(plan: Plan, me: int, n: int) -> Plan:
    """The plan as worker ``me`` of ``n`` sees it: each ``read`` keeps partitions ``me, me+n, ...``.

    >>> flow = Dataflow("x"); flow.read([[0], [1], [2]]).collect("out")
    >>> assign(compile(flow), 1, 2).stages[0].step.arg
    ([1],)
    """
    def mine(stage: Stage) -> Stage:
        step = stage.step
        return replace(stage, step=replace(step, arg=step.arg[me::n])) if stage.op == "read" else stage
    return replace(plan, stages=tuple(map(mine, plan.stages)))


def _chained(sources):
    return chain.from_iterable(map(source_items, sources))


def _one(sources: list):
    """Many partitions as one source, so a worker combines all of its partitions together."""
    return sources[0] if len(sources) == 1 else functools.partial(_chained, tuple(sources))


def program(plan: Plan, n: int, tracer: Tracer, resume: tuple[int, dict] | None = None):
    """Run ``plan`` (already `assign`-ed) as one of ``n`` workers; a generator.

    Yields ``("exchange", step name, sides)`` -- ``sides`` is one list of
    ``n`` buckets per input -- and expects, sent back, one list of received
    chunks per input. Yields ``("sink", name, items)`` and expects nothing.
    After each exchange's merge it yields ``("epoch", e, state)``: epoch
    ``e`` is complete here, and ``state`` is what a snapshot keeps to go on
    from it (`engines.mini.recovery`). Started with ``resume=(e, state)``, it
    restores that state and runs only the stages after epoch ``e``.

    State: ``parts[stage] = sources`` -- this worker's share of a stage's
    items: a read's partitions, still to be read (``unread``), or the one
    list it computed. A pipe from a stage runs fused into the next split or
    sink (`engines.plan.Pipe`); a stage two or more others read is computed
    once, at once (as `engines.plan.evaluate` does).
    """
    start, restored = resume or (0, {})
    parts: dict[str, list] = {}
    unread: set[str] = set()

    def label(pipe: Pipe, *last: Step) -> str:
        """What one fused loop runs, as a trace names it: ``read_1+flat_map_2+reduce_by_key_3``."""
        return "+".join([pipe.stage] * (pipe.stage in unread) + [s.name for s in pipe.ops + last])

    def computed(pipe: Pipe) -> list:
        with tracer.span(label(pipe), "branch"):
            return [narrow(_one(parts[pipe.stage]), pipe.ops)]

    epoch = 0
    for stage in plan.stages:
        step = stage.step
        if stage.op == "read":                  # a read is a recipe: set up again on a resume
            parts[stage.name] = list(step.arg)
            unread.add(stage.name)
        if epoch < start:                       # before the epoch resumed from: restored, not run again
            if stage.name in restored:
                parts[stage.name] = restored[stage.name]
                unread.discard(stage.name)
            epoch += stage.op in KEYED
            continue
        if stage.op == "read":
            if stage.shared:                    # a stage that branches is computed once, not once per branch
                parts[stage.name] = computed(Pipe(stage.name))
                unread.discard(stage.name)
        elif stage.op == "narrow":
            parts[stage.name] = computed(stage.inputs[0])
        elif stage.op in KEYED:
            sides = []
            for pipe in stage.inputs:
                with tracer.span(label(pipe, step), "split"):
                    sides.append(split(_one(parts[pipe.stage]), pipe.ops, step, n))
            received = yield ("exchange", stage.name, sides)
            with tracer.span(stage.name, "merge"):
                if stage.op == "reduce_by_key":
                    merged = merge_reduce(step, *received[0])
                else:
                    merged = merge_join(step, len(received[0]), *received[0], *received[1])
            parts[stage.name] = [merged]
            epoch += 1
            yield ("epoch", epoch, {name: parts[name] for name in needed_after(plan, epoch) if name not in unread})
        elif stage.op == "collect":
            pipe = stage.inputs[0]
            with tracer.span(label(pipe, step), "sink"):
                items = narrow(_one(parts[pipe.stage]), pipe.ops)
            yield ("sink", stage.name, items)
        else:
            raise DataflowError(f"stage {stage.name!r}: a {stage.op} runs as a stream (engines.mini.streams)")


# ================================================================ the runtime in each worker


class DataWorker:
    """The cluster runtime of mini-data: drives `program` from the messages a worker receives."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.runs: dict = {}
        self.streams: dict = {}
        self.tracers: dict = {}
        self.at: dict = {}
        self.waiting: dict = {}
        self.got: dict = {}
        self.ended: dict = {}
        self.over: set = set()
        self.lost: dict = {}
        self.recovery: dict = {}

    def handle(self, source, message) -> None:
        """One message. Mutates the state; may run user code (a step) until the next exchange."""
        kind = message[0]
        if kind == "lost":
            self.lost[message[1]] = message[2]
            for run in [*self.runs, *self.streams]:
                self._fail(run, None, message[1:])
            return
        if kind == "joined":                # a fresh worker took the lost one's place (recovery)
            self.lost.pop(message[1], None)
            return
        run = message[1]
        if run in self.over:
            return                          # a late message of a finished or cancelled run
        if kind == "run":
            try:
                plan = pickle.loads(message[3])
            except Exception as e:
                self.over.add(run)
                self.ctx.send(DRIVER, ("failed", run, self.ctx.me, DataflowError(
                    f"mini-data worker {self.ctx.me} cannot load flow {message[2]!r}: {type(e).__name__}: {e} "
                    "(the workers import the flow's functions by module: is that module importable there?)"), None))
                return
            self._start(run, plan, message[4] if len(message) > 4 else None)
        elif kind == "part":
            self.got.setdefault((run, message[2], message[3]), []).append(message[4])
            self._resume(run)
        elif kind == "end":
            self.ended.setdefault((run, message[2], message[3]), set()).add(source)
            self._resume(run)
        elif kind == "cancel":
            self._drop(run)
        else:
            self._stream(run, kind, message)

    def _stream(self, run, kind: str, message) -> None:
        """A stream's message: start it, tick its sources, or merge partial windows (`engines.mini.streams`)."""
        try:
            if kind == "stream":
                self.streams[run] = stream = start_stream(self.ctx, run, message)
                self.at[run] = stream.label            # every tick runs the whole flow: errors name it all
                self.ctx.send(DRIVER, ("at", run, self.ctx.me, stream.label))
                over = stream.start()
                for early in self.got.pop((run, "early"), []):  # peers that started first
                    over = stream.receive(early[2], early[3])
            elif run not in self.streams:           # a peer's partials before our own start: keep them
                self.got.setdefault((run, "early"), []).append(message)
                return
            elif kind == "tick":
                over = self.streams[run].tick()
            else:
                over = self.streams[run].receive(message[2], message[3])
        except Exception as e:
            self._fail(run, e, None)
            return
        if over:
            self.ctx.send(DRIVER, ("finished", run, self.ctx.me, self.streams[run].tracer.take()))
            self._drop(run)

    def _start(self, run, plan: Plan, recovery: dict | None) -> None:
        me = self.ctx.me

        def at(step):
            self.at[run] = step
            self.ctx.send(DRIVER, ("at", run, me, step))
        self.tracers[run] = Tracer(me, notify=at)
        resume = None
        if recovery is not None:
            self.recovery[run] = {**recovery, "store": SnapshotStore(recovery["dir"]), "last": time.monotonic()}
            if recovery["resume"]:
                store, epoch = self.recovery[run]["store"], recovery["resume"]
                resume = (epoch, store.load(recovery["key"], me, epoch))
        self.runs[run] = program(plan, self.ctx.n, self.tracers[run], resume)
        if self.lost:
            self._fail(run, None, next(iter(self.lost.items())))
        else:
            self._advance(run, None)

    def _advance(self, run, value) -> None:
        """Run the program until it blocks in an exchange or ends. Mutates the state."""
        gen, tracer = self.runs[run], self.tracers[run]
        try:
            while True:
                request = gen.send(value)
                value = None
                if request[0] == "sink":
                    self._send(DRIVER, ("sink", run, request[1]), request[2], tracer, request[1])
                    continue
                if request[0] == "epoch":
                    self._snapshot(run, request[1], request[2], tracer)
                    continue
                _, step, sides = request
                for side, buckets in enumerate(sides):
                    self._exchange(run, step, side, buckets, tracer)
                self.waiting[run] = (step, len(sides))
                value = self._received(run)
                if value is None:
                    return                  # wait for the other workers' end markers
        except StopIteration:
            self.ctx.send(DRIVER, ("finished", run, self.ctx.me, tracer.take()))
            self._drop(run)
        except Exception as e:
            self._fail(run, e, None)

    def _snapshot(self, run, epoch: int, state: dict, tracer: Tracer) -> None:
        """Save this worker's state at the end of ``epoch`` if the run snapshots and its interval has
        passed; tell the driver (`engines.mini.recovery`)."""
        rec = self.recovery.get(run)
        if rec is None or rec["interval_s"] is None or time.monotonic() - rec["last"] < rec["interval_s"]:
            return
        with tracer.span(f"snapshot {epoch}", "snapshot"):
            rec["store"].save(rec["key"], self.ctx.me, epoch, state)
        rec["last"] = time.monotonic()
        self.ctx.send(DRIVER, ("snapped", run, self.ctx.me, epoch))

    def _exchange(self, run, step: str, side: int, buckets: list, tracer: Tracer) -> None:
        """Send bucket j to worker j, then the end-of-input marker; keep our own bucket."""
        me = self.ctx.me
        for j, bucket in enumerate(buckets):
            if j == me:
                self.got.setdefault((run, step, side), []).append(bucket)
                self.ended.setdefault((run, step, side), set()).add(me)
            else:
                self._send(j, ("part", run, step, side), bucket, tracer, step, end=("end", run, step, side))

    def _send(self, dest, head: tuple, items: list, tracer: Tracer, step: str, end=None) -> None:
        """``items`` to ``dest`` in chunks of `CHUNK`; ``end`` (a marker) rides in the last frame."""
        chunks = [items[i:i + CHUNK] for i in range(0, len(items), CHUNK)]
        for i, chunk in enumerate(chunks):
            self.ctx.queue(dest, (*head, chunk))
            if end is not None and i == len(chunks) - 1:
                self.ctx.queue(dest, end)
            tracer.sent(dest, self.ctx.flush(dest), step, head[0], items=len(chunk))
        if end is not None and not chunks:
            tracer.sent(dest, self.ctx.send(dest, end), step, end[0], items=0)

    def _received(self, run):
        """The chunks of the exchange ``run`` waits in, once every worker's end marker is in; else None."""
        step, sides = self.waiting[run]
        keys = [(run, step, side) for side in range(sides)]
        if any(len(self.ended.get(key, ())) < self.ctx.n for key in keys):
            return None
        del self.waiting[run]
        for key in keys:
            self.ended.pop(key)
        return [self.got.pop(key, []) for key in keys]

    def _resume(self, run) -> None:
        if run in self.waiting:
            value = self._received(run)
            if value is not None:
                self._advance(run, value)

    def _fail(self, run, error, lost) -> None:
        if error is not None and not isinstance(error, DataflowError):   # e.g. an item that cannot be pickled
            where = f" in step {self.at[run]!r}" if run in self.at else ""
            error = DataflowError(f"mini-data worker {self.ctx.me}{where}: {type(error).__name__}: {error}")
        self._drop(run)
        try:
            self.ctx.send(DRIVER, ("failed", run, self.ctx.me, error, lost))
        except OSError:
            pass  # the driver is gone; the cluster exits this worker

    def _drop(self, run) -> None:
        """Forget everything about ``run``; its late messages will be ignored. Mutates the state."""
        self.over.add(run)
        gen = self.runs.pop(run, None)
        if gen is not None:
            gen.close()
        self.streams.pop(run, None)
        self.recovery.pop(run, None)
        self.tracers.pop(run, None)
        self.at.pop(run, None)
        self.waiting.pop(run, None)
        for table in (self.got, self.ended):
            for key in [k for k in table if k[0] == run]:
                del table[key]


# ================================================================ the driver


def drive(plan: Plan, host, run, *, stream: StreamStart | None = None,
          recovery: dict | None = None) -> tuple[dict[str, list], list[dict]]:
    """Run ``plan`` on ``host``'s local workers (a `Host` or an `InProcessHost`); ``(sinks, trace rows)``.

    In a multi-process cluster each process drives its own workers and
    gets the sink items those workers collected. ``stream`` (a
    `StreamStart`) runs a stream instead of a batch: it makes the message
    that starts each worker and hears of each batch of window results
    (`engines.mini.streams`).

    ``recovery`` -- ``{"dir": the snapshot folder, "interval_s": seconds
    between snapshots or None, "max": recoveries}`` -- makes a run on a
    host that can replace a worker survive a worker's loss: the worker is
    replaced, and every worker resumes a batch at the last epoch all of
    them snapshotted (`engines.mini.recovery`), a stream from its start
    with the windows already delivered left out (`engines.mini.streams`).
    Without it, or after ``max`` recoveries, a loss fails the run with a
    `DataflowError` naming the worker.
    """
    at: dict = {}
    recovers = recovery is not None and host.can_replace
    key = f"{plan.name}-{run}".replace("/", "_").replace(" ", "_")
    attempt, snapped, recoveries = run, {}, 0      # the attempt's run id; last epoch snapshotted per worker

    def run_message(wid: int, epoch: int) -> tuple:
        payload = cloudpickle.dumps(assign(plan, wid, host.n), protocol=5)
        settings = None if not recovers else {"dir": recovery["dir"], "interval_s": recovery["interval_s"],
                                              "key": key, "resume": epoch}
        return ("run", attempt, plan.name, payload, settings)

    def start(epoch: int = 0) -> None:
        for wid in host.local:
            if wid in host.lost:
                raise _lost(plan, host, wid, "", at)
            try:
                host.send(wid, stream.begin(wid, attempt) if stream is not None else run_message(wid, epoch))
            except OSError:
                pass                        # it died: its loss comes among the events
    out: dict[str, list] = {sink: [] for sink in plan.sinks}
    rows: list[dict] = []
    finished: set = set()
    start()
    try:
        while len(finished) < len(host.local):
            try:
                source, message = host.recv()
            except KeyboardInterrupt:
                _cancel(host, attempt)
                raise
            kind = message[0]
            lost = None
            if kind == "lost":
                if host.recovered(message):
                    continue                # an earlier loss, of a worker already replaced
                lost = message[1:3]
            elif kind == "abort":           # another process of the cluster failed
                _cancel(host, attempt)
                raise DataflowError(f"mini-data: {source} failed: {message[1]}")
            elif kind == "runtime-error":
                _cancel(host, attempt)
                raise DataflowError(f"mini-data worker {message[1]} failed: {message[2]}")
            elif message[1] != attempt:
                continue                    # a late message of an earlier run, or attempt
            elif kind == "failed":
                if message[4] is None:
                    _cancel(host, attempt)
                    raise message[3]
                lost = message[4]
            elif kind == "sink":
                out[message[2]].extend(message[3])
            elif kind == "windows":
                for sink, items in message[2].items():
                    out[sink].extend(items)
                stream.windows(message[3], message[4])
            elif kind == "at":
                at[message[2]] = message[3]
            elif kind == "snapped":
                snapped[message[2]] = message[3]
            elif kind == "finished":
                finished.add(message[2])
                rows.extend(message[3])
            if lost is None:
                continue
            _cancel(host, attempt)
            if not recovers or recoveries >= recovery["max"]:
                raise _lost(plan, host, lost[0], lost[1], at, recoveries)
            recoveries += 1
            epoch = 0 if stream is not None else min(snapped.get(wid, 0) for wid in host.local)
            try:
                host.replace(lost[0])
            except ClusterError as e:
                raise DataflowError(f"mini-data: {host.name(lost[0])} was lost while running flow {plan.name!r}, "
                                    f"and no worker could take its place: {e}") from None
            for sink in (stream.raw_sinks if stream is not None else set(out) - kept_sinks(plan, epoch)):
                out[sink] = []              # sent again by the resumed stages
            attempt, finished, at = (run, recoveries), set(), {}
            start(epoch)
    finally:
        if recovers:
            SnapshotStore(recovery["dir"]).drop(key)
    return out, rows


def drive_stream(plan: Plan, host, run, *, tick: float = DEFAULT_TICK, on_window=None,
                 recovery: dict | None = None):
    """Run the streaming ``plan`` on ``host``'s workers; ``(sinks, trace rows, closing times)``.

    ``on_window(latency)`` is called as each window result reaches the
    driver, with the wall seconds since its window closed (`engines.mini.streams`).
    ``recovery`` as for `drive`.
    """
    stream = StreamStart(plan, host.n, run, tick, on_window)
    out, rows = drive(plan, host, run, stream=stream, recovery=recovery)
    return out, rows, stream.closes


def _cancel(host, run) -> None:
    for wid in host.local:
        if wid not in host.lost:
            try:
                host.send(wid, ("cancel", run))
            except OSError:
                pass


def _lost(plan: Plan, host, who, why: str, at: dict, recoveries: int = 0) -> DataflowError:
    """The error for a member that died: which worker, how, in which step (and how often it was replaced).

    A peer may report the death before the host sees it; for a worker of
    this host, wait (briefly) for the host's own account -- it knows the
    exit status.
    """
    deadline = time.monotonic() + 2.0
    while who in host.local and who not in host.lost and time.monotonic() < deadline:
        host.recv(timeout=0.05)
    sentence = host.lost.get(who) or f"{host.name(who)} was lost ({why})"
    where = f"step {at[who]!r}" if who in at else ("its first step" if isinstance(who, int) else "the run")
    if recoveries:
        return DataflowError(f"mini-data: {sentence} while running {where} of flow {plan.name!r}, after "
                             f"{recoveries} replacement(s) of lost workers, each lost again: the run stops "
                             "(a step that kills its worker? the session is broken -- start a new one)")
    return DataflowError(f"mini-data: {sentence} while running {where} of flow {plan.name!r}; "
                         "the cluster has lost it -- start a new session")


# ================================================================ engine and session


class MiniDataEngine(MiniEngine):
    name = "mini-data"
    architecture = "data parallel"
    description = "archbench's own engine: identical worker processes exchange records by key over a mesh"
    supports = SUPPORTS
    runtime, local_runtime = "engines.mini.dataparallel:DataWorker", DataWorker

    def mode_settings(self) -> dict:
        return {"serializer": "pickle protocol 5 (cloudpickle for code)", "chunk_items": CHUNK,
                "stream_tick_s": DEFAULT_TICK,
                # a lost worker is replaced and the run resumed from the last epoch snapshotted on every
                # worker (engines.mini.recovery); no interval: no snapshots, a loss replays the whole input
                "recovery": True, "snapshot_interval_s": None, "snapshot_dir": None, "max_recoveries": 3}

    def start(self, workers: int = 2, **options) -> Session:
        settings = self.settings(workers, **options)
        return MiniDataSession(workers, self.supports, settings, self.start_host(settings))


class MiniDataSession(MiniSession):
    """A mini-data cluster; ``processes=False`` gives the deterministic in-process form.

        >>> with MiniDataEngine().start(workers=2, processes=False) as s:
        ...     flow = Dataflow("squares"); flow.read([[1, 2], [3]]).map(lambda x: x * x).collect("sq")
        ...     sorted(s.dataflow(flow)["sq"]), s.worker_pids
        ([1, 4, 9], [])
    """

    engine = "mini-data"

    def __init__(self, workers, supports, settings, host):
        super().__init__(workers, supports, settings, host)
        self._runs = 0
        self._trace: list[dict] = []
        self._traced: list[dict] = []   # every run's rows while a trace is recording (trace_start)
        self._broken = ""
        self._snapshots = SnapshotStore(settings["snapshot_dir"]) if settings["recovery"] else None

    streams_natively = True

    def _recovery(self) -> dict | None:
        if self._snapshots is None:
            return None
        return {"dir": str(self._snapshots.folder), "interval_s": self.settings["snapshot_interval_s"],
                "max": self.settings["max_recoveries"]}

    def run_plan(self, plan: Plan) -> dict[str, list]:
        if self.host.lost:
            self._broken = "; ".join(self.host.lost.values())
        if self._broken:
            raise DataflowError(f"this mini-data session is broken ({self._broken}); start a new one")
        self._runs += 1
        try:
            if plan.streaming:
                out, self._trace, _ = drive_stream(plan, self.host, self._runs, tick=self.settings["stream_tick_s"],
                                                   on_window=self.window_latencies.add, recovery=self._recovery())
            else:
                out, self._trace = drive(plan, self.host, self._runs, recovery=self._recovery())
        finally:
            if self.host.lost:
                self._broken = "; ".join(self.host.lost.values())
            if self._trace_t0 is not None:
                self._traced += self._trace
        return out

    def trace(self) -> list[dict]:
        """The event rows of the last run (see `engines.mini.trace`)."""
        return list(self._trace)

    def trace_start(self) -> None:
        self._traced = []
        super().trace_start()

    def _recorded(self) -> list[dict]:
        return self._traced

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._snapshots is not None:
                self._snapshots.close()
