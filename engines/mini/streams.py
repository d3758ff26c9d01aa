"""mini-data streams: workers keep windows open while events flow -- no batches.

A streaming flow (a timed ``stream`` source, narrow steps, one ``window``,
``collect``) runs *natively* on mini-data, the way Bytewax runs one: the
workers start once and keep running until the stream ends. Every ``tick``
seconds of wall time each worker

1. reads what has arrived at **its sources** (source ``i`` belongs to
   worker ``i % n``), dropping late events by the source's own rule
   (`engines.eventtime.Tap`);
2. runs the narrow steps on the new events, puts each ``(key, value)`` in
   its window ``(key, start)`` and combines them -- the sending-side
   combine of a reduce, per tick;
3. sends every worker ``("win", run, its partial windows, marks)``: the
   partials of the keys that worker owns (``stable_hash(key) % n``) and
   the mark of each source it reads -- to *every* worker, since every
   owner needs every source's progress to know its watermark.

Each worker, as owner, merges the partials it receives into its open
windows (`engines.eventtime.Windows`) and sends the windows the watermark
has passed straight to the driver, which stamps each one's latency as it
arrives. A mark travels in the same message as the partials sent before
it, over a connection that keeps order, so a window never closes before
all of its partials are in. When a worker has heard every source's final
mark (infinity) it has emitted every window, and reports ``finished``.

**A lost worker** (with recovery on, the default) is replaced and the
stream starts again on every worker with the same ``t0``: each tap reads
from stream time 0 up to *now* in its first tick (catching up at full
speed: the sources are functions of the time range, so they give the same
events again), then goes on at the stream's pace. Nothing of the first
attempt is needed, so a stream snapshots nothing. What reaches the driver
is **exactly once**: every owner is told which of its windows the driver
already has (``delivered``) and does not emit them again, and the items of
the raw sinks (fed before the window) that the first attempt sent are
dropped, since the replay sends them all again. The steps themselves run
at least once on the replayed events (a step with a side effect sees
them twice). A window still open at the loss closes late, by the time the
replacement took: its latency shows the loss. The cost is the catch-up,
which grows with the stream's age -- a long-lived stream would snapshot
its taps and open windows instead, as Bytewax does.

What sets the latency: a window can close only after the tick in which
the slowest source passes its end (up to ``tick`` s), plus one hop to the
owner and one to the driver -- no job to schedule, as a micro-batch engine
has (`engines.streaming`).

Messages (``run`` is the run id; a timer is a message a worker sends
itself with ``ctx.later``)::

    driver -> worker   ("stream", run, flow name, pickled (spec, source ids, windows delivered), t0, tick)
    worker -> itself   ("tick", run)
    worker -> worker   ("win", run, [((key, start), value), ...], [(source, mark), ...])
    worker -> driver   ("sink", run, name, items)        events of a sink before the window
                       ("windows", run, {sink: items}, [closing stream time per window],
                                    [(key, start) per window])
                       ("finished", run, worker, trace rows)

Worked example -- two workers in one process, two sources, windows of 10::

    >>> from engines.api import Dataflow
    >>> from engines.mini.cluster import InProcessHost
    >>> from engines.mini.dataparallel import DataWorker, drive_stream
    >>> flow = Dataflow("clicks")
    >>> flow.stream([lambda a, b: [(t, "a") for t in range(30) if a <= t < b],
    ...              lambda a, b: [(t, "b") for t in range(0, 30, 2) if a <= t < b]],
    ...             timestamp=lambda e: e[0], duration=30.0, speedup=300.0) \\
    ...     .map(lambda e: (e[1], 1)).window(10.0, lambda a, b: a + b).collect("counts")
    >>> from engines.plan import compile
    >>> out, rows, closes = drive_stream(compile(flow), InProcessHost(2, DataWorker), run=1, tick=0.01)
    >>> sorted(out["counts"])
    [('a', (0.0, 10)), ('a', (10.0, 10)), ('a', (20.0, 10)), ('b', (0.0, 5)), ('b', (10.0, 5)), ('b', (20.0, 5))]
    >>> sorted(closes)
    [10.0, 10.0, 20.0, 20.0, 30.0, 30.0]
"""

from __future__ import annotations

import pickle
import time

import cloudpickle

from engines.api import DataflowError
from engines.eventtime import Tap, Windows, next_tick, window_closes
from engines.mini.cluster import DRIVER
from engines.mini.trace import Tracer
from engines.plan import Plan, stable_hash, step_error
from engines.streaming import Timed, ToWindow, after_window, drop_time, emitted, shape

DEFAULT_TICK = 0.02   # wall seconds between a worker's reads of its sources


class StreamRun:
    """One stream on one worker: the sources it reads and the windows of the keys it owns.

    ``tick()`` and ``receive(...)`` each return True once this worker's part is over.
    """

    def __init__(self, ctx, run, payload: bytes, t0: float, tick: float):
        spec, mine, delivered = pickle.loads(payload)
        self.ctx, self.run, self.t0, self.tick_s = ctx, run, t0, tick
        self.delivered = delivered   # windows (key, start) the driver has from an earlier attempt
        self.tracer = Tracer(ctx.me)
        self.src = src = spec["source"].arg
        self.window = window = spec["window"]
        lateness = window.arg.lateness if window else 0.0
        self.taps = {i: Tap(src.sources[i], src.timestamp, lateness, src.duration) for i in mine}
        self.before = Timed(tuple(spec["before"]))
        self.raw = {sink: Timed(tuple(ops)) for sink, (ops, after) in spec["sinks"].items() if not after}
        self.after = after_window(spec)
        self.windows = Windows(len(src.sources), window.arg.size, lateness, window.fn) if window else None
        self.to_window = ToWindow(window.arg.size, window) if window else None
        self.steps = tuple(s for s in [window, *spec["before"], *(s for ops, _ in spec["sinks"].values() for s in ops)]
                           if s is not None)
        self.label = "+".join(s.name for s in [spec["source"], *spec["before"], window] if s is not None)

    def start(self) -> bool:
        if self.taps:
            self.ctx.later(0.0, ("tick", self.run))
        return self._over()

    def tick(self) -> bool:
        """Read the sources, send partial windows and marks, set the next tick. Runs user code."""
        now = (time.time() - self.t0) * self.src.speedup
        try:
            with self.tracer.span(self.label, "tick"):
                pairs = [pair for tap in self.taps.values() for pair in tap.take(now)]
                for sink, timed in self.raw.items():
                    items = [drop_time(out) for pair in pairs for out in timed(pair)]
                    if items:
                        self.tracer.sent(DRIVER, self.ctx.send(DRIVER, ("sink", self.run, sink, items)), sink,
                                         "sink", items=len(items))
                if self.windows is not None:
                    self._send_partials(pairs)
        except Exception as e:
            raise step_error(e, self.steps) from None
        if not all(tap.done for tap in self.taps.values()):
            self.ctx.later(next_tick(self.t0, self.tick_s) - time.time(), ("tick", self.run))
        return self._over()

    def _send_partials(self, pairs: list) -> None:
        n, fn, to_window = self.ctx.n, self.window.fn, self.to_window
        parts: list[dict] = [{} for _ in range(n)]
        for pair in pairs:
            for timed in self.before(pair):
                window, value = to_window(timed)
                part = parts[stable_hash(window[0]) % n]
                part[window] = fn(part[window], value) if window in part else value
        marks = [(i, tap.mark) for i, tap in self.taps.items()]
        for j, part in enumerate(parts):
            self.ctx.queue(j, ("win", self.run, list(part.items()), marks))
            if j != self.ctx.me:                    # our own share goes straight to our inbox
                self.tracer.sent(j, self.ctx.flush(j), self.window.name, "win", items=len(part))

    def receive(self, partials: list, marks: list) -> bool:
        """Merge partial windows, hear marks, send the windows now due to the driver. Runs user code."""
        windows = self.windows
        try:
            with self.tracer.span(self.window.name, "merge"):
                for window, value in partials:
                    windows.add(window, value)
                for source, mark in marks:
                    windows.mark(source, mark)
                due = [d for d in windows.due() if (d[0], d[1]) not in self.delivered]
                if due:
                    closes = [window_closes(start, windows.size, self.src.duration) for _, start, _ in due]
                    ids = [(key, start) for key, start, _ in due]
                    sent = self.ctx.send(DRIVER, ("windows", self.run, emitted(due, self.after), closes, ids))
                    self.tracer.sent(DRIVER, sent, self.window.name, "windows", items=len(due))
        except Exception as e:
            raise step_error(e, self.steps) from None
        return self._over()

    def _over(self) -> bool:
        if not all(tap.done for tap in self.taps.values()):
            return False
        return self.windows is None or self.windows.finished


class StreamStart:
    """The driver's side of one stream: the message that starts each worker, and what window results tell.

    ``begin(worker, attempt)`` is worker's ``("stream", ...)`` message: the
    plan's shape, the sources it reads and the windows of its keys that the
    driver already has. ``windows(closes, ids)`` hears of a batch of window
    results reaching the driver: their closing stream times go to
    ``closes``, their ``(key, start)`` to ``delivered``, and
    ``on_window(latency)`` hears the wall seconds since each window closed.
    `engines.mini.dataparallel.drive_stream` runs the loop.
    """

    def __init__(self, plan: Plan, n: int, run, tick: float = DEFAULT_TICK, on_window=None):
        self.spec, self.n, self.run, self.tick, self.on_window = shape(plan), n, run, tick, on_window
        self.name, self.src = plan.name, self.spec["source"].arg
        self.t0 = time.time()
        self.closes: list[float] = []
        self.delivered: set = set()
        #: the sinks fed straight from the events, not by the window: a replay sends them all again
        self.raw_sinks = {sink for sink, (_, after) in self.spec["sinks"].items() if not after}

    def begin(self, wid: int, attempt=None) -> tuple:
        mine = [i for i in range(len(self.src.sources)) if i % self.n == wid]
        owned = {w for w in self.delivered if stable_hash(w[0]) % self.n == wid}
        payload = cloudpickle.dumps((self.spec, mine, owned), protocol=5)
        return ("stream", self.run if attempt is None else attempt, self.name, payload, self.t0, self.tick)

    def windows(self, closes: list[float], ids: list[tuple]) -> None:
        now = time.time()
        self.closes.extend(closes)
        self.delivered.update(ids)
        if self.on_window is not None:
            for closes_at in closes:
                self.on_window(now - (self.t0 + closes_at / self.src.speedup))


def start_stream(ctx, run, message) -> StreamRun:
    """The `StreamRun` for a ``("stream", ...)`` message; a bad payload raises a `DataflowError`."""
    _, _, name, payload, t0, tick = message
    try:
        return StreamRun(ctx, run, payload, t0, tick)
    except Exception as e:
        raise DataflowError(f"mini-data worker {ctx.me} cannot load stream {name!r}: {type(e).__name__}: {e}") from None

