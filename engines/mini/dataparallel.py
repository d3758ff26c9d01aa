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

Why processes, not threads: Python runs the bytecode of one thread at a
time (the GIL), so two worker *threads* share one core for the Python code
of the steps -- which is why Bytewax's own performance guide tells you to
scale with processes rather than worker threads. Each worker here is a
process (`engines.mini.cluster`), and records between workers are pickled
in whole buckets, never one at a time.

The program. What one worker does is the generator `program`: it walks the
flow's steps and **yields** where it needs the cluster --
``("exchange", step, [buckets per side])`` (it is sent back the chunks
every worker sent it) and ``("sink", name, items)``. `DataWorker` (the
cluster runtime) drives that generator from the messages it receives; the
driver side is `drive`. Both run unchanged in worker processes or as
objects in one process (`engines.mini.cluster.InProcessHost`), the
deterministic form for debugging and teaching.

Messages (``run`` is a run id; ``side`` is 0, or 1 for a join's right input)::

    driver -> worker   ("run", run, flow name, pickled steps)   ("cancel", run)
                       (and a stream's messages: `engines.mini.streams`)
    worker -> worker   ("part", run, step, side, items)  ("end", run, step, side)
                       (a bucket goes in chunks of CHUNK items; the end marker rides in the
                       frame of the last one)
    worker -> driver   ("at", run, worker, step)  ("sink", run, name, items)
                       ("finished", run, worker, trace rows)
                       ("failed", run, worker, error, None or (lost worker, why))

State of a `DataWorker` (plain dicts, keyed by run)::

    runs    = {run: generator}                # the flows this worker is running
    streams = {run: StreamRun}                # the streams it is running
    waiting = {run: (step, sides)}            # the exchange a run is blocked in
    at      = {run: step}                     # the step it runs now (named in errors)
    got     = {(run, step, side): [chunk, ...]}   # items received (early ones too)
              {(run, "early"): [message, ...]}    # a stream's partials that came before its start
    ended   = {(run, step, side): {worker, ...}}  # whose end marker came
    over    = {run, ...}                      # finished or cancelled: late messages are dropped

Worked example -- word count on two workers, in one process::

    >>> from engines.api import Dataflow
    >>> flow = Dataflow("wc")
    >>> flow.read([["to be or"], ["not to be"], ["to"]]).flat_map(str.split).count_by_key().collect("n")
    >>> host = InProcessHost(2, DataWorker)
    >>> out, rows = drive(flow, host, run=1)
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
from collections import Counter
from itertools import chain

import cloudpickle

from engines import Engine
from engines.api import Dataflow, DataflowError, Session, Step
from engines.mini.cluster import DRIVER, Host, InProcessHost
from engines.mini.trace import Recording, Tracer
from engines.plan import merge_join, merge_reduce, narrow, source_items, split
from engines.mini.streams import DEFAULT_TICK, drive_stream, start_stream
from engines.support import Support

CHUNK = 50_000          # items per message: bounds a frame and lets the receiver unpickle while we pickle

SUPPORTS = {
    "dataflow": Support.native(streams="streams natively (windows kept open on the workers as events flow)"),
    "tasks": Support.unsupported("mini-data runs dataflows only; the task model on the same workers is mini-tasks"),
    "actors": Support.unsupported("mini-data runs dataflows only; actors on the same workers are mini-actors"),
}


# ================================================================ one worker's program


def assign(steps, me: int, n: int) -> tuple[Step, ...]:
    """The flow as worker ``me`` of ``n`` sees it: each ``read`` keeps partitions ``me, me+n, ...``.

    >>> flow = Dataflow("x"); flow.read([[0], [1], [2]]).collect("out")
    >>> assign(flow.steps, 1, 2)[0].arg
    ([1],)
    """
    return tuple(Step(s.op, s.name, s.inputs, s.fn, s.arg[me::n]) if s.op == "read" else s for s in steps)


def _chained(sources):
    return chain.from_iterable(map(source_items, sources))


def _one(sources: list):
    """Many partitions as one source, so a worker combines all of its partitions together."""
    return sources[0] if len(sources) == 1 else functools.partial(_chained, tuple(sources))


def _label(origin: str | None, ops: tuple[Step, ...], *last: Step) -> str:
    """The steps one fused loop runs, as a trace names them: ``read_1+flat_map_2+reduce_by_key_3``."""
    return "+".join([origin] * (origin is not None) + [s.name for s in ops + last])


def program(steps, n: int, tracer: Tracer):
    """Run ``steps`` (already `assign`-ed) as one of ``n`` workers; a generator.

    Yields ``("exchange", step name, sides)`` -- ``sides`` is one list of
    ``n`` buckets per input -- and expects, sent back, one list of received
    chunks per input. Yields ``("sink", name, items)`` and expects nothing.

    State: ``lazy[step name] = (sources, narrow steps still to run, origin)``
    -- a stream not computed yet; a keyed step or a sink computes it, and a
    stream read by two or more steps is computed once, at once (as
    `engines.plan.evaluate` does).
    """
    lazy: dict[str, tuple[list, tuple[Step, ...], str | None]] = {}
    consumers = Counter(name for step in steps for name in step.inputs)
    for step in steps:
        if step.op in ("read", "flat_map"):
            if step.op == "read":
                sources, ops, origin = list(step.arg), (), step.name
            else:
                sources, ops, origin = lazy[step.inputs[0]]
                ops += (step,)
            if consumers[step.name] > 1:    # a stream that branches is computed once, not once per branch
                with tracer.span(_label(origin, ops), "branch"):
                    sources, ops, origin = [narrow(_one(sources), ops)], (), None
            lazy[step.name] = (sources, ops, origin)
        elif step.op in ("reduce_by_key", "join"):
            sides = []
            for name in step.inputs:
                sources, ops, origin = lazy[name]
                with tracer.span(_label(origin, ops, step), "split"):
                    sides.append(split(_one(sources), ops, step, n))
            received = yield ("exchange", step.name, sides)
            with tracer.span(step.name, "merge"):
                if step.op == "reduce_by_key":
                    merged = merge_reduce(step, *received[0])
                else:
                    merged = merge_join(step, len(received[0]), *received[0], *received[1])
            lazy[step.name] = ([merged], (), None)
        elif step.op == "collect":
            sources, ops, origin = lazy[step.inputs[0]]
            with tracer.span(_label(origin, ops, step), "sink"):
                items = narrow(_one(sources), ops)
            yield ("sink", step.arg, items)
        else:
            raise DataflowError(f"step {step.name!r}: mini-data does not know the op {step.op!r}")


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

    def handle(self, source, message) -> None:
        """One message. Mutates the state; may run user code (a step) until the next exchange."""
        kind = message[0]
        if kind == "lost":
            self.lost[message[1]] = message[2]
            for run in [*self.runs, *self.streams]:
                self._fail(run, None, message[1:])
            return
        run = message[1]
        if run in self.over:
            return                          # a late message of a finished or cancelled run
        if kind == "run":
            try:
                steps = pickle.loads(message[3])
            except Exception as e:
                self.over.add(run)
                self.ctx.send(DRIVER, ("failed", run, self.ctx.me, DataflowError(
                    f"mini-data worker {self.ctx.me} cannot load flow {message[2]!r}: {type(e).__name__}: {e} "
                    "(the workers import the flow's functions by module: is that module importable there?)"), None))
                return
            self._start(run, steps)
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

    def _start(self, run, steps) -> None:
        me = self.ctx.me

        def at(step):
            self.at[run] = step
            self.ctx.send(DRIVER, ("at", run, me, step))
        self.tracers[run] = Tracer(me, notify=at)
        self.runs[run] = program(steps, self.ctx.n, self.tracers[run])
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
        self.tracers.pop(run, None)
        self.at.pop(run, None)
        self.waiting.pop(run, None)
        for table in (self.got, self.ended):
            for key in [k for k in table if k[0] == run]:
                del table[key]


# ================================================================ the driver


def drive(flow: Dataflow, host, run, *, begin=None, on_windows=None) -> tuple[dict[str, list], list[dict]]:
    """Run ``flow`` on ``host``'s local workers (a `Host` or an `InProcessHost`); ``(sinks, trace rows)``.

    In a multi-process cluster each process drives its own workers and
    gets the sink items those workers collected. ``begin(worker id)`` is the
    message that starts a worker (default: the batch ``run``);
    ``on_windows(closing times)`` hears of each batch of window results
    (streams: `engines.mini.streams`).
    """
    at: dict = {}
    if begin is None:
        def begin(wid):
            return ("run", run, flow.name, cloudpickle.dumps(assign(flow.steps, wid, host.n), protocol=5))
    for wid in host.local:
        if wid in host.lost:
            raise _lost(flow, host, wid, "", at)
        try:
            host.send(wid, begin(wid))
        except OSError:
            pass                            # it died: its loss comes among the events
    out: dict[str, list] = {sink: [] for sink in flow.sinks}
    rows: list[dict] = []
    finished: set = set()
    while len(finished) < len(host.local):
        try:
            source, message = host.recv()
        except KeyboardInterrupt:
            _cancel(host, run)
            raise
        kind = message[0]
        if kind == "lost":
            _cancel(host, run)
            raise _lost(flow, host, message[1], message[2], at)
        if kind == "abort":                 # another process of the cluster failed
            _cancel(host, run)
            raise DataflowError(f"mini-data: {source} failed: {message[1]}")
        if kind == "runtime-error":
            _cancel(host, run)
            raise DataflowError(f"mini-data worker {message[1]} failed: {message[2]}")
        if message[1] != run:
            continue                        # a late message of an earlier run
        if kind == "sink":
            out[message[2]].extend(message[3])
        elif kind == "windows":
            for sink, items in message[2].items():
                out[sink].extend(items)
            if on_windows is not None:
                on_windows(message[3])
        elif kind == "at":
            at[message[2]] = message[3]
        elif kind == "finished":
            finished.add(message[2])
            rows.extend(message[3])
        elif kind == "failed":
            _cancel(host, run)
            _, _, wid, error, lost = message
            raise error if lost is None else _lost(flow, host, lost[0], lost[1], at)
    return out, rows


def _cancel(host, run) -> None:
    for wid in host.local:
        if wid not in host.lost:
            try:
                host.send(wid, ("cancel", run))
            except OSError:
                pass


def _lost(flow: Dataflow, host, who, why: str, at: dict) -> DataflowError:
    """The error for a member that died: which worker, how, and in which step.

    A peer may report the death before the host sees it; for a worker of
    this host, wait (briefly) for the host's own account -- it knows the
    exit status.
    """
    deadline = time.monotonic() + 2.0
    while who in host.local and who not in host.lost and time.monotonic() < deadline:
        host.recv(timeout=0.05)
    sentence = host.lost.get(who) or f"{host.name(who)} was lost ({why})"
    where = f"step {at[who]!r}" if who in at else ("its first step" if isinstance(who, int) else "the run")
    return DataflowError(f"mini-data: {sentence} while running {where} of flow {flow.name!r}; "
                         "the cluster has lost it -- start a new session")


# ================================================================ engine and session


class MiniDataEngine(Engine):
    name = "mini-data"
    architecture = "data parallel"
    description = "archbench's own engine: identical worker processes exchange records by key over a mesh"
    supports = SUPPORTS

    def settings(self, workers: int, **options) -> dict:
        return {"workers": workers, "processes": True, "start_method": "spawn (fresh interpreters)",
                "transport": "TCP loopback, HMAC-SHA256 authenticated",
                "serializer": "pickle protocol 5 (cloudpickle for code)", "chunk_items": CHUNK,
                "heartbeat_s": 1.0, "heartbeat_timeout_s": 30.0, "stream_tick_s": DEFAULT_TICK, **options}

    def start(self, workers: int = 2, **options) -> Session:
        settings = self.settings(workers, **options)
        if settings["processes"]:
            host = Host(workers, "engines.mini.dataparallel:DataWorker", heartbeat=settings["heartbeat_s"],
                        timeout=settings["heartbeat_timeout_s"])
        else:
            host = InProcessHost(workers, DataWorker)
        return MiniDataSession(workers, self.supports, settings, host)


class MiniDataSession(Recording, Session):
    """A mini-data cluster; ``processes=False`` gives the deterministic in-process form.

        >>> with MiniDataEngine().start(workers=2, processes=False) as s:
        ...     flow = Dataflow("squares"); flow.read([[1, 2], [3]]).map(lambda x: x * x).collect("sq")
        ...     sorted(s.dataflow(flow)["sq"]), s.worker_pids
        ([1, 4, 9], [])
    """

    engine = "mini-data"

    def __init__(self, workers, supports, settings, host):
        super().__init__(workers, supports, settings)
        self.host = host
        self._runs = 0
        self._trace: list[dict] = []
        self._traced: list[dict] = []   # every run's rows while a trace is recording (trace_start)
        self._broken = ""

    @property
    def worker_pids(self) -> list[int]:
        return list(self.host.worker_pids)

    def dataflow(self, flow: Dataflow) -> dict[str, list]:
        if not isinstance(flow, Dataflow):
            raise DataflowError(f"session.dataflow takes an engines.api.Dataflow, got {type(flow).__name__}")
        if self.host.lost:
            self._broken = "; ".join(self.host.lost.values())
        if self._broken:
            raise DataflowError(f"this mini-data session is broken ({self._broken}); start a new one")
        self._runs += 1
        try:
            if flow.streaming:
                out, self._trace, _ = drive_stream(flow, self.host, self._runs, tick=self.settings["stream_tick_s"],
                                                   on_window=self.window_latencies.add)
            else:
                out, self._trace = drive(flow, self.host, self._runs)
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
        self.host.close()
