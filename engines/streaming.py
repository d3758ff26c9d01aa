"""Streams on batch engines: micro-batches, and the event-time rules every engine shares.

A streaming flow has a timed source (`Dataflow.stream`), narrow steps, and
one `window` step grouping ``(key, value)`` items into tumbling event-time
windows. Any engine that runs batch dataflows can run it as **micro-batches**,
the way Spark Structured Streaming does: every ``interval`` seconds of wall
time the driver starts one batch job over the events that arrived since the
last one, merges the job's per-window partial results into the open windows,
and emits the windows the watermark has passed. A batch that starts late
(its predecessor ran longer than the interval) takes everything that has
arrived by then, as Spark's processing-time trigger does, so a slow engine
runs fewer, larger batches instead of falling further behind. The batch
interval is part of the latency: an event waits for its batch to start, and
a window for the batch in which the watermark passes it.

The event-time rules (late events, watermarks, when a window is emitted)
are those of `engines.eventtime`, the same in the native streaming
engines: each batch's source reads drop their late events (`ingest`) and
report each source's mark; the driver's `engines.eventtime.Windows` keeps
the open windows and emits those the watermark has passed.

Also here: `shape`, which splits a streaming flow into the parts every
streaming engine needs, and the item helpers they share (`Timed`,
`ToWindow`).
"""

from __future__ import annotations

import functools
import math
import time
from typing import Callable

from engines.errors import DataflowError
from engines.flow import Dataflow, Step
from engines.eventtime import Windows, admit, window_closes, window_start
from engines.plan import Plan, fuse

DEFAULT_INTERVAL = 0.1   # wall seconds between micro-batches


# ------------------------------------------------------- the flow's shape


def shape(plan: Plan) -> dict:
    """A streaming plan as the parts a stream's runtime needs.

    ``{"source": stream step, "before": narrow steps up to the window,
    "window": the window step or None, "sinks": {sink: (narrow steps before
    it, whether it hangs after the window)}}``. (`engines.plan.compile` has
    checked the shape: a stream source, narrow steps, one window, sinks.)
    """
    window = plan.window
    sinks = {}
    for stage in plan.stages:
        if stage.op == "collect":
            pipe = stage.inputs[0]
            sinks[stage.name] = (list(pipe.ops), window is not None and pipe.stage == window.name)
    return {"source": plan.source.step, "before": list(window.inputs[0].ops) if window else [],
            "window": window.step if window else None, "sinks": sinks}


# ----------------------------------------------- per-partition functions


def ingest(source: Callable, start: float, end: float, timestamp: Callable, seen: float,
           lateness: float, index: int) -> list:
    """Read one source's arrivals in ``[start, end)``, drop the late ones, tag each kept event.

    Items out: ``("event", (time, event))`` per kept event, then one
    ``("mark", (index, seen, late))`` for the driver's watermark.
    """
    kept, new_seen, late = admit([(timestamp(e), e) for e in source(start, end)], seen, lateness)
    return [("event", pair) for pair in kept] + [("mark", (index, new_seen, late))]


def is_event(item) -> bool:
    return item[0] == "event"


def is_mark(item) -> bool:
    return item[0] == "mark"


def payload(item):
    return item[1]


class Timed:
    """A narrow step lifted to ``(time, item)`` pairs: the event time rides along unchanged."""

    def __init__(self, steps: tuple[Step, ...]):
        self.steps = steps

    def __call__(self, pair):
        t, item = pair
        return [(t, out) for out in fuse((item,), self.steps)]


class ToWindow:
    """``(time, (key, value))`` -> ``((key, window start), value)``."""

    def __init__(self, size: float, step: Step):
        self.size, self.step = size, step

    def __call__(self, pair):
        t, item = pair
        try:
            key, value = item
        except (TypeError, ValueError):
            raise DataflowError(f"step {self.step.name!r} needs (key, value) items, got {item!r}") from None
        return (key, window_start(t, self.size)), value


def drop_time(pair):
    return pair[1]


# ------------------------------------------------------ the driver's loop


def batch_flow(spec: dict, start: float, end: float, seen: list[float]) -> Dataflow:
    """The batch job for arrivals in ``[start, end)`` stream seconds."""
    src = spec["source"].arg
    window = spec["window"]
    lateness = window.arg.lateness if window else 0.0
    flow = Dataflow(f"{spec['source'].name}[{start:g},{end:g})")
    raw = flow.read([functools.partial(ingest, s, start, end, src.timestamp, seen[i], lateness, i)
                     for i, s in enumerate(src.sources)])
    raw.filter(is_mark).map(payload).collect("__marks")
    events = raw.filter(is_event).map(payload)
    for sink, (ops, after) in spec["sinks"].items():
        if not after:
            (events.flat_map(Timed(tuple(ops))) if ops else events).map(drop_time).collect(sink)
    if window:
        before = tuple(spec["before"])
        timed = events.flat_map(Timed(before)) if before else events
        timed.map(ToWindow(window.arg.size, window)).reduce_by_key(window.fn).collect("__windows")
    return flow


def run_microbatches(session, plan: Plan, interval: float | None = None) -> dict[str, list]:
    """Run a streaming plan as batch jobs on ``session``; ``{sink: items}`` at the end of the stream.

    Window latencies go to ``session.window_latencies``. Mutates nothing else of the session.
    """
    spec = shape(plan)
    src = spec["source"].arg
    window = spec["window"]
    interval = interval or session.settings.get("microbatch_interval", DEFAULT_INTERVAL)
    seen = [-math.inf] * len(src.sources)
    windows = Windows(len(seen), window.arg.size, window.arg.lateness, window.fn) if window else None
    out: dict[str, list] = {sink: [] for sink in spec["sinks"]}
    after = after_window(spec)
    t0 = time.perf_counter()
    start = 0.0
    while start < src.duration:
        now = (time.perf_counter() - t0) * src.speedup        # stream time that has passed
        end = min(src.duration, max(now, start + interval * src.speedup))
        pause = t0 + end / src.speedup - time.perf_counter()
        if pause > 0:
            time.sleep(pause)  # the source's pace: these events have not arrived yet
        results = session.dataflow(batch_flow(spec, start, end, seen))
        for index, new_seen, _late in results.pop("__marks"):
            seen[index] = new_seen
        for sink in out:
            out[sink].extend(results.get(sink, []))
        if windows:
            for key, value in results.pop("__windows", []):
                windows.add(key, value)
            for index, mark in enumerate(seen):
                windows.mark(index, math.inf if end >= src.duration else mark)
            due = windows.due()
            stamp = time.perf_counter()
            for key, start_, _ in due:
                closes = window_closes(start_, window.arg.size, src.duration)
                session.window_latencies.add(stamp - (t0 + closes / src.speedup))
            for sink, items in emitted(due, after).items():
                out[sink].extend(items)
        start = end
    return out


def after_window(spec: dict) -> dict[str, tuple[Step, ...]]:
    """``{sink: the narrow steps between the window and it}`` for the sinks downstream of the window."""
    return {sink: tuple(ops) for sink, (ops, is_after) in spec["sinks"].items() if is_after}


def emitted(due: list[tuple], after: dict[str, tuple[Step, ...]]) -> dict[str, list]:
    """The sinks' items for windows ``due`` (``(key, start, value)`` each): ``(key, (start, value))``
    through the steps after the window."""
    items = [(key, (start, value)) for key, start, value in due]
    return {sink: list(fuse(items, ops)) for sink, ops in after.items()}
