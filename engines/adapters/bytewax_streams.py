"""Bytewax streams: a timed source and event-time windows as Bytewax operators.

A streaming flow runs on Bytewax natively, as one long dataflow: the source
partitions wake every ``tick`` seconds of wall time and emit what has
arrived, the narrow steps run on it as it passes, and a keyed stateful
operator keeps the windows open and emits each one when the watermark
passes its end -- straight back to the driver, which stamps its latency.

=================  ==========================================================
archbench step     Bytewax operators
=================  ==========================================================
``stream``         ``op.input`` from `_Sources`: one ``FixedPartitionedSource``
                   partition per source, woken on a tick grid by
                   ``next_awake``; each batch is the events that arrived
                   (late ones dropped by `engines.eventtime.Tap`) then the
                   source's *mark*
``flat_map``       ``op.flat_map_batch`` applying the step to events; marks
                   pass through untouched
``window``         ``op.flat_map_batch`` (`_Route`): each event becomes a
                   partial ``((key, start), value)`` routed to its key's
                   bucket, each mark a copy per bucket; ``op.stateful_batch``
                   (`_WindowLogic`): an `engines.eventtime.Windows` per bucket
``collect``        ``op.output``: window results go to the driver as they
                   are emitted; events before the window at the end
=================  ==========================================================

Why not Bytewax's own windowing (``bytewax.operators.windowing`` with an
``EventClock``): its watermark is kept per key and advances with the system
clock, so *which* events are late would depend on how keys and sources
interleave -- the answers would differ from the other engines'. Here the
late rule is applied per source, where the source is read, and the window
operator only hears each source's mark. Bytewax exchanges items between
workers without promising their order, so a mark carries how many items
its source sent to the bucket before it, and waits for them (`Windows.mark`).

Items between the operators are tagged tuples of four, the item last::

    ("e", source, event time, item)      an event (or what a step made of it)
    ("m", source, mark, None)            a source's progress (infinity at its end)
    ("p", source, (key, start), value)   a partial window (combined per batch), routed to a bucket
    ("m", source, mark, sent)            a mark, one copy per bucket
    ("w", closes, None, item)            a window result (or what a step made of it)

The stream's clock starts when its **last source starts reading** (each
source partition reports its first wake-up to the driver): Bytewax starts
its processes' dataflow anew for every run, and that second or so is the
run's start-up, not the events' latency. It still counts in the run time.

Traced as the batch flows are (`engines.adapters.bytewax`): a source's
wake-up is an ``io`` span, a batch of a narrow step, of the routing to
buckets (`_Route`) and of a bucket's windows a ``compute`` span, stamped in
the worker processes and sent back with each process's final reply. The
ticks between wake-ups, and the marks' and partials' way through Bytewax's
exchange, are not stamped.
"""

from __future__ import annotations

import pickle
import threading
import time
from datetime import datetime, timezone
from functools import partial

from engines.adapters.bytewax_run import Guard, Run, bytewax_id
from engines.api import Step
from engines.eventtime import Tap, Windows, next_tick, window_closes
from engines.plan import Pipe, Plan, narrow_call, stable_hash
from engines.streaming import ToWindow

STREAM_BUCKETS = 8   # route keys of a window step: every mark is copied to each


class Emitter:
    """Tells the driver, while the flow runs: a source's start, and window results as sinks receive them.

    Called from Bytewax's worker thread; the process's main thread waits in ``cluster_main`` meanwhile.
    """

    def __init__(self, conn):
        self.conn, self.lock = conn, threading.Lock()

    def started(self, source: int, t0: float) -> None:
        self._send(("started", source, t0))

    def windows(self, sink: str, items: list, closes: list) -> None:
        self._send(("windows", sink, items, closes))

    def _send(self, message: tuple) -> None:
        data = pickle.dumps(message, protocol=5)
        with self.lock:
            self.conn.send_bytes(data)


def translate_stream(plan: Plan, run: Run, tick: float, emit: Emitter):
    """The Bytewax flow for the streaming ``plan``; window results go to ``emit``, other sinks to ``run.sinks``.

    A pipe's narrow steps are one ``flat_map_batch`` each; a step that two
    branches share is built once (``steps``), and both read its stream.
    """
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow as BytewaxFlow

    source, window = plan.source, plan.window
    src = source.step.arg
    bx = BytewaxFlow(bytewax_id(plan.name) or "flow")
    streams: dict = {}      # stage name -> its bytewax stream
    steps: dict = {}        # narrow step name -> its bytewax stream

    def piped(pipe: Pipe):
        stream = streams[pipe.stage]
        for step in pipe.ops:
            if step.name not in steps:
                steps[step.name] = op.flat_map_batch(bytewax_id(step.name), stream, Guard(run, step, partial(_apply, step)))
            stream = steps[step.name]
        return stream

    for stage in plan.stages:
        name, step = stage.name, stage.step
        if stage.op == "stream":
            lateness = window.step.arg.lateness if window else 0.0
            streams[name] = op.input(bytewax_id(name), bx, _Sources(step, run, lateness, tick, emit))
        elif stage.op == "window":
            routed = op.flat_map_batch(bytewax_id(name, "route"), piped(stage.inputs[0]),
                                       Guard(run, step, _Route(step), name=bytewax_id(name, "route")))
            windows = op.stateful_batch(bytewax_id(name), routed,
                                        partial(_WindowLogic, step, run, len(src.sources), src.duration))
            streams[name] = op.key_rm(bytewax_id(name, "unroute"), windows)
        elif stage.op == "collect":
            op.output(bytewax_id(step.name), piped(stage.inputs[0]), _Collect(name, run, emit))
    return bx


def _apply(step: Step, batch: list) -> list:
    """A narrow step over a batch of tagged items: applied to events and window results; marks pass."""
    kind, fn = narrow_call(step)
    if kind == "map":
        return [it if it[0] == "m" else (it[0], it[1], it[2], fn(it[3])) for it in batch]
    if kind == "filter":
        return [it for it in batch if it[0] == "m" or fn(it[3])]
    out = []
    for it in batch:
        if it[0] == "m":
            out.append(it)
        else:
            out.extend((it[0], it[1], it[2], result) for result in fn(it[3]))
    return out


class _Route:
    """Events to partial windows, combined per batch and keyed by bucket; each mark copied to every bucket.

    All of a source's items pass through the worker that reads it, so this
    object (one per worker process) sees them in order and counts what each
    source sent to each bucket; a mark carries that count.
    """

    def __init__(self, step: Step):
        self.to_window, self.fn = ToWindow(step.arg.size, step), step.fn
        self.sent: dict[int, list[int]] = {}

    def __call__(self, batch: list) -> list:
        out: list = []
        parts: dict = {}                                   # (source, (key, start)) -> combined value
        for item in batch:
            if item[0] == "e":
                window, value = self.to_window((item[2], item[3]))
                part = (item[1], window)
                parts[part] = self.fn(parts[part], value) if part in parts else value
            else:                                          # a mark: what came before it leaves first
                self._flush(parts, out)
                sent = self.sent.setdefault(item[1], [0] * STREAM_BUCKETS)
                out.extend((str(b), ("m", item[1], item[2], sent[b])) for b in range(STREAM_BUCKETS))
        self._flush(parts, out)
        return out

    def _flush(self, parts: dict, out: list) -> None:
        for (source, window), value in parts.items():
            bucket = stable_hash(window[0]) % STREAM_BUCKETS
            self.sent.setdefault(source, [0] * STREAM_BUCKETS)[bucket] += 1
            out.append((str(bucket), ("p", source, window, value)))
        parts.clear()


def _WindowLogic(step: Step, run: Run, sources: int, duration: float, resume_state):
    """The open windows of one bucket: partials merged, marks heard, due windows emitted."""
    from bytewax.operators import StatefulBatchLogic

    class WindowLogic(StatefulBatchLogic):
        def __init__(self):
            self.windows = Windows(sources, step.arg.size, step.arg.lateness, step.fn)

        def on_batch(self, items):
            return Guard(run, step, self._take)(items), StatefulBatchLogic.RETAIN

        def _take(self, items) -> list:
            windows = self.windows
            for item in items:
                if item[0] == "p":
                    windows.add(item[2], item[3], source=item[1])
                else:
                    windows.mark(item[1], item[2], sent=item[3])
            return self._due()

        def _due(self) -> list:
            size = self.windows.size
            return [("w", window_closes(start, size, duration), None, (key, (start, value)))
                    for key, start, value in self.windows.due()]

        def on_eof(self):
            return Guard(run, step, self._due)(), StatefulBatchLogic.DISCARD

        def snapshot(self):
            return None

    return WindowLogic()


def _Sources(step: Step, run: Run, lateness: float, tick: float, emit: Emitter):
    """One partition per source; its clock starts at its first wake-up, then it wakes every ``tick`` s."""
    from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

    spec = step.arg

    class Source(StatefulSourcePartition):
        def __init__(self, index: int):
            self.index = index
            self.tap = Tap(spec.sources[index], spec.timestamp, lateness, spec.duration)
            self.awake = None
            self.ended = False
            self.t0 = None

        def next_batch(self):
            if self.ended or run.error is not None:
                raise StopIteration
            return Guard(run, step, self._take, kind="io")()

        def _take(self) -> list:
            i = self.index
            if self.t0 is None:
                self.t0 = time.time()
                emit.started(i, self.t0)
            t0 = self.t0
            now = (time.time() - t0) * spec.speedup
            items = [("e", i, t, event) for t, event in self.tap.take(now)]
            items.append(("m", i, self.tap.mark, None))
            self.ended = self.tap.done
            self.awake = datetime.fromtimestamp(next_tick(t0, tick), timezone.utc)
            return items

        def next_awake(self):
            return self.awake

        def snapshot(self):
            return None

    class Sources(FixedPartitionedSource):
        def list_parts(self):
            return [str(i) for i in range(len(spec.sources))]

        def build_part(self, step_id, for_part, resume_state):
            return Source(int(for_part))

    return Sources()


def _Collect(sink: str, run: Run, emit: Emitter):
    from bytewax.outputs import DynamicSink, StatelessSinkPartition

    class Part(StatelessSinkPartition):
        def write_batch(self, items):
            results = [item for item in items if item[0] == "w"]
            if results:
                emit.windows(sink, [item[3] for item in results], [item[1] for item in results])
            events = [item[3] for item in items if item[0] == "e"]
            if events:
                run.sinks.setdefault(sink, []).extend(events)

    class Collect(DynamicSink):
        def build(self, step_id, worker_index, worker_count):
            return Part()

    return Collect()
