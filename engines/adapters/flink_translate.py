"""A compiled `engines.plan.Plan` as a PyFlink DataStream program (runs in Flink's own environment).

Imported only in the Flink job process (`engines.adapters.flink_job`) and
in the Python workers Flink starts: it imports pyflink at the top, and
nothing of archbench that needs the project's own pins. The classes below
are the Python functions Flink ships to its workers (pickled by reference
to this module); each reports to the job process over a loopback socket
(`report`): a sink's items, a stream's progress, or the `DataflowError`
of a user function that raised, naming the step.

Batch (``RuntimeExecutionMode.BATCH``, parallelism = workers). A record
between two operators is a *chunk* of items (`chunks`): a list of up to
``BATCH`` items, or, before a keyed operator, ``(bucket, pairs)`` -- the
pairs of one bucket of keys, ``stable_hash(key) % buckets``:

=================  ==========================================================
archbench stage    DataStream operators
=================  ==========================================================
``read``           ``from_collection(range(P))`` -- the partitions' indices,
                   one source task -- then ``rebalance()`` and a `Read`
                   ``flat_map``: partition *i* is made (its callable called)
                   on the worker that gets index *i*, with the pipe's narrow
                   steps fused into the same loop (`engines.plan.fuse`)
``narrow``         a `Fused` ``flat_map``, a chunk at a time; the stream is
                   read by every branch
``reduce_by_key``  the map side combined per partition where the pipe starts
                   at a read (`engines.plan.partial_reduce`), cut into
                   buckets (`engines.plan.cut`), then
                   ``key_by(bucket_of).process(BucketReduce)``: the Python
                   function folds a bucket's pairs per key into a dict
                   (`engines.plan.combine`), emitted when the bucket's
                   input ends
``join``           ``left.connect(right).key_by(bucket_of, bucket_of)``
                   ``.process(BucketJoin)``: both sides of a bucket kept,
                   paired by key when its input ends (`engines.plan.merge_join`)
``collect``        a `Collect` ``flat_map`` that sends the items to the job
                   process in batches, then a Java ``DiscardingSink``
=================  ==========================================================

**Why chunks, and why buckets, not keys.** Every record that enters a
Python operator crosses from the JVM to the Python worker and back, pickled
one by one -- about 20,000 records a second per worker here. A chunk pays
that once for up to ``BATCH`` items. And in BATCH mode Flink sorts a keyed
operator's input by its key and, each time the key changes, waits for the
Python worker to finish the key's bundle: a round trip per key
(`engines.adapters.flink` says where). Keyed by the bucket -- ``n =
BUCKETS_PER_WORKER`` x parallelism buckets -- that round trip is paid per
bucket. Measured on 2 cores: a reduce of 100,000 keys took 504 s keyed by
key, 17.5 s bucketed with a record per pair; ``join`` at small took 19.5 s
bucketed with a record per pair and 7.0 s in chunks (``groupby`` 5.6 s and
4.0 s; one harness run of each). Keys are compared by Python equality, as
on every other engine (Flink compares keys by their pickled bytes, so ``1``
and ``1.0`` would be two keys).

Streams (`translate_stream`) are in the docstring of that function.
"""

from __future__ import annotations

import math
import os
import pickle
import socket
import struct
import time
from contextlib import contextmanager

from pyflink.common import Duration, Types, WatermarkStrategy
from pyflink.common.time import Time
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream.connectors import Sink
from pyflink.datastream.functions import (FlatMapFunction, KeyedCoProcessFunction, KeyedProcessFunction,
                                          ProcessWindowFunction, RuntimeContext)
from pyflink.datastream.window import TumblingEventTimeWindows

from engines.adapters import pickle_by_value_fallback
from engines.errors import DataflowError, NotAPair
from engines.eventtime import Tap, window_closes, window_start
from engines.plan import Pipe, Plan, combine, cut, fuse, merge_join, partial_reduce, source_items, step_error

# Flink pickles the records it hands between operators with plain pickle: in the processes that import
# this module (Flink's Python workers, the job process), a record of a class from a user's workload file
# (sent by value) falls back to cloudpickle
pickle_by_value_fallback()

DISCARD = "org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink"
BATCH = 10_000        # items per chunk, and per message a Collect sends to the job process
BUCKETS_PER_WORKER = 32  # buckets of keys per subtask of a reduce or join (`translate`)


# ------------------------------------------------------- talking to the job process


def frame(obj) -> bytes:
    """One message as it travels: 8-byte length, then the pickle (cloudpickle where plain pickle fails)."""
    try:
        data = pickle.dumps(obj, protocol=5)
    except (pickle.PicklingError, AttributeError, TypeError):
        import cloudpickle

        data = cloudpickle.dumps(obj, protocol=5)
    return struct.pack("!Q", len(data)) + data


class Outbox:
    """Where a job's functions report to (the inbox's out), and whether they stamp spans (a trace records)."""

    def __init__(self, port: int, tracing: bool = False):
        self.port, self.tracing = port, tracing


def report(out: Outbox, message: tuple) -> None:
    """Send one message to the job process's inbox: one short connection, closed before returning."""
    with socket.create_connection(("127.0.0.1", out.port)) as conn:
        conn.sendall(frame(message))


class _Guarded:
    """A function that Flink calls: a user function that raises is reported, naming its step, then re-raised.

    While a trace records (``TRACING``, set by the job process for the job), ``stamp`` times a call as a
    span of lane ``worker <subtask>``; the spans are reported when the task closes.
    """

    def __init__(self, out: Outbox, steps: tuple):
        self.out, self.steps, self.tracing = out, steps, out.tracing

    def failed(self, error: Exception, steps=None):
        error = step_error(error, tuple(steps or self.steps))
        report(self.out, ("error", error))
        return error

    def open(self, runtime_context):
        self.lane = f"worker {runtime_context.get_index_of_this_subtask()}"
        self.spans = []

    @contextmanager
    def stamp(self, name: str, kind: str = "compute"):
        if not self.tracing:
            yield
            return
        start = time.time()
        try:
            yield
        finally:
            self.spans.append((self.lane, name, kind, start, time.time(), os.getpid()))

    def close(self):
        if self.tracing and self.spans:
            report(self.out, ("stamps", self.spans))


def chunks(items, keyed, n: int):
    """What an operator of a batch job emits: its items as *chunks*, one Flink record each.

    For a keyed step after it (``keyed``): ``(bucket, pairs)``, the pairs of
    one bucket of keys (`engines.plan.cut`, ``n`` buckets), for Flink to key
    by the bucket; otherwise lists of at most ``BATCH`` items.
    """
    if keyed is None:
        yield from _slices(list(items))
        return
    for bucket, pairs in enumerate(cut(items, keyed, n)):
        for part in _slices(pairs):
            yield bucket, part


def _slices(items: list):
    return (items[i:i + BATCH] for i in range(0, len(items), BATCH))


def bucket_of(chunk) -> int:
    """Flink's key for a keyed operator: the chunk's bucket of keys."""
    return chunk[0]


class Read(_Guarded, FlatMapFunction):
    """Partition index in, the partition's items out through the fused narrow steps (and the map-side
    combine of a reduce, ``keyed``), as `chunks` for ``n`` buckets."""

    def __init__(self, out, partitions, ops, keyed=None, n=1):
        _Guarded.__init__(self, out, tuple(ops) + ((keyed,) if keyed else ()))
        self.partitions, self.ops, self.keyed, self.n = partitions, tuple(ops), keyed, n

    def flat_map(self, index):
        try:
            with self.stamp(f"read {index}" + "".join(f"+{step.name}" for step in self.steps)):
                items = source_items(self.partitions[index])
                if self.keyed is not None and self.keyed.op == "reduce_by_key":
                    items = partial_reduce(items, self.ops, self.keyed).items()
                else:
                    items = fuse(items, self.ops)
                return list(chunks(items, self.keyed, self.n))
        except Exception as e:
            raise self.failed(e) from None


class Fused(_Guarded, FlatMapFunction):
    """A chunk of items in, what the fused narrow steps make of them out, as `chunks` for ``n`` buckets."""

    def __init__(self, out, ops, keyed=None, n=1):
        _Guarded.__init__(self, out, tuple(ops) + ((keyed,) if keyed else ()))
        self.ops, self.keyed, self.n = tuple(ops), keyed, n

    def flat_map(self, chunk):
        try:
            with self.stamp("+".join(step.name for step in self.steps) or "chunk"):
                return list(chunks(fuse(chunk, self.ops), self.keyed, self.n))
        except Exception as e:
            raise self.failed(e) from None


END_OF_TIME = 2**63 - 1   # an event-time timer here fires when a key's input has ended (BATCH: per key)


class BucketReduce(_Guarded, KeyedProcessFunction):
    """``reduce_by_key`` of one bucket of keys: the chunks' pairs folded per key by the step's function
    (`engines.plan.combine`) into the bucket's dict, emitted as chunks when the bucket's input ends (a
    timer at the end of event time)."""

    def __init__(self, out, step):
        _Guarded.__init__(self, out, (step,))
        self.step = step

    def open(self, runtime_context):
        _Guarded.open(self, runtime_context)
        self.buckets: dict = {}

    def process_element(self, chunk, ctx):
        bucket, pairs = chunk
        acc = self.buckets.get(bucket)
        if acc is None:
            acc = self.buckets[bucket] = {}
            ctx.timer_service().register_event_time_timer(END_OF_TIME)
        try:
            with self.stamp(f"{self.step.name} {bucket}"):
                combine(pairs, self.step.fn, self.step, acc)
        except Exception as e:
            raise self.failed(e) from None
        return []

    def on_timer(self, timestamp, ctx):
        yield from chunks(self.buckets.pop(ctx.get_current_key(), {}).items(), None, 1)


class BucketJoin(_Guarded, KeyedCoProcessFunction):
    """``join`` of one bucket of keys: each side's pairs kept, then paired by key
    (`engines.plan.merge_join`) and emitted as chunks when the bucket's input ends."""

    def __init__(self, out, step):
        _Guarded.__init__(self, out, (step,))
        self.step = step

    def open(self, runtime_context: RuntimeContext):
        _Guarded.open(self, runtime_context)
        self.sides: dict = {}

    def _add(self, side: int, chunk, ctx):
        bucket, pairs = chunk
        if bucket not in self.sides:
            self.sides[bucket] = ([], [])
            ctx.timer_service().register_event_time_timer(END_OF_TIME)
        self.sides[bucket][side].extend(pairs)
        return []

    def process_element1(self, chunk, ctx):
        return self._add(0, chunk, ctx)

    def process_element2(self, chunk, ctx):
        return self._add(1, chunk, ctx)

    def on_timer(self, timestamp, ctx):
        bucket = ctx.get_current_key()
        left, right = self.sides.pop(bucket, ([], []))
        with self.stamp(f"{self.step.name} {bucket}"):
            joined = merge_join(self.step, 1, left, right)
        yield from chunks(joined, None, 1)


class Collect(_Guarded, FlatMapFunction):
    """A sink's last operator: its items go to the job process, ``BATCH`` at a time and the rest when the
    task closes. Records are items, or with ``chunked`` lists of items (a batch job's `chunks`);
    ``live``: each item at once, with the stream time its window closed (a stream's results);
    ``rows``: Flink ``Row`` s (of a SQL query), sent as tuples."""

    def __init__(self, out, sink, live=False, rows=False, chunked=False):
        _Guarded.__init__(self, out, ())
        self.sink, self.live, self.rows, self.chunked = sink, live, rows, chunked

    def open(self, runtime_context):
        _Guarded.open(self, runtime_context)
        self.items = []

    def flat_map(self, item):
        if self.live:
            closes, result = item
            report(self.out, ("windows", self.sink, [result], [closes]))
            return []
        if self.chunked:
            self.items.extend(item)
        else:
            self.items.append(tuple(item) if self.rows else item)
        if len(self.items) >= BATCH:
            self._send()
        return []

    def _send(self):
        with self.stamp(f"collect {self.sink}", "io"):
            report(self.out, ("items", self.sink, self.items))
        self.items = []

    def close(self):
        if self.items:
            self._send()
        _Guarded.close(self)


def translate(env, plan: Plan, port: int, tracing: bool = False) -> None:
    """Build ``plan`` on ``env`` (a BATCH StreamExecutionEnvironment); its sinks report to ``out``.

    State: ``streams[stage]`` -- a stage's DataStream of chunks of items, or
    for a read that only one stage reads, ``("read", index stream,
    partitions)``: its pipe then runs inside the read's `Read`.
    """
    out = Outbox(port, tracing)
    streams: dict = {}
    n = BUCKETS_PER_WORKER * env.get_parallelism()

    def piped(pipe: Pipe, keyed=None):
        held = streams[pipe.stage]
        if isinstance(held, tuple):
            _, indices, partitions = held
            return indices.flat_map(Read(out, partitions, pipe.ops, keyed, n)).name(f"{pipe}")
        if pipe.ops or keyed is not None:
            return held.flat_map(Fused(out, pipe.ops, keyed, n)).name(f"{pipe}")
        return held

    for stage in plan.stages:
        name, step = stage.name, stage.step
        if stage.op == "read":
            indices = env.from_collection(list(range(len(step.arg))), type_info=Types.INT()).name(name).rebalance()
            streams[name] = ("read", indices, list(step.arg))
            if stage.shared:
                streams[name] = piped(Pipe(name))
        elif stage.op == "narrow":
            streams[name] = piped(stage.inputs[0])
        elif stage.op == "reduce_by_key":
            streams[name] = (piped(stage.inputs[0], step).key_by(bucket_of, key_type=Types.INT())
                             .process(BucketReduce(out, step)).name(name))
        elif stage.op == "join":
            left, right = (piped(pipe, step) for pipe in stage.inputs)
            streams[name] = left.connect(right).key_by(bucket_of, bucket_of, key_type=Types.INT()) \
                .process(BucketJoin(out, step)).name(name)
        elif stage.op == "collect":
            piped(stage.inputs[0]).flat_map(Collect(out, name, chunked=True)).name(f"collect {name}") \
                .sink_to(Sink(DISCARD))
        else:
            raise DataflowError(f"stage {name!r}: a {stage.op} runs in a stream (translate_stream)")


# ------------------------------------------------------------- streams


class Wake(_Guarded, FlatMapFunction):
    """One source's reader: ticks in, at most one every ``tick`` wall seconds; out, per tick, the partial
    windows of the events that arrived (each ``(max event time in ms, ((key, start), value))``) and
    ``("sink", name, items)`` for the sinks that read the events themselves.

    The source's clock starts at its first tick (reported: ``("started", source, wall time)``); the last
    tick waits until the stream's duration has passed, so every event is read.
    """

    def __init__(self, out, spec, lateness, window_pipe, window_step, sinks, ticks, tick):
        _Guarded.__init__(self, out, tuple(window_pipe) + ((window_step,) if window_step else ()))
        self.spec, self.lateness, self.tick, self.ticks = spec, lateness, tick, ticks
        self.window_pipe, self.window_step, self.sinks = tuple(window_pipe), window_step, sinks

    def open(self, runtime_context):
        _Guarded.open(self, runtime_context)
        self.taps, self.t0 = {}, {}

    def flat_map(self, tick):
        spec = self.spec
        source, k = tick % len(spec.sources), tick // len(spec.sources)
        if source not in self.taps:
            self.taps[source] = Tap(spec.sources[source], spec.timestamp, self.lateness, spec.duration)
            self.t0[source] = time.time()
            report(self.out, ("started", source, self.t0[source]))
        tap, t0 = self.taps[source], self.t0[source]
        if tap.done:
            return []
        due = t0 + (spec.duration / spec.speedup if k == self.ticks - 1 else k * self.tick)
        pause = due - time.time()
        if pause > 0:
            time.sleep(pause)          # the source's pace: these events have not arrived yet
        now = spec.duration if k == self.ticks - 1 else (time.time() - t0) * spec.speedup
        try:
            with self.stamp(f"read source {source}", "io"):
                events = tap.take(now)
        except Exception as e:
            raise self.failed(e, ()) from None
        out = []
        for sink, ops in self.sinks.items():
            try:
                items = [item for _, event in events for item in fuse((event,), ops)]
            except Exception as e:
                raise self.failed(e, ops) from None
            if items:
                out.append(("sink", sink, items))
        if self.window_step is not None:
            with self.stamp(f"{self.window_step.name} partials"):
                out.extend(self._partials(events))
        return out

    def _partials(self, events):
        step = self.window_step
        size, fn = step.arg.size, step.fn
        parts: dict = {}
        try:
            for t, event in events:
                for item in fuse((event,), self.window_pipe):
                    try:
                        key, value = item
                    except (TypeError, ValueError):
                        raise NotAPair(step.name, item) from None
                    window = (key, window_start(t, size))
                    if window in parts:
                        latest, old = parts[window]
                        parts[window] = (max(latest, t), fn(old, value))
                    else:
                        parts[window] = (t, value)
        except Exception as e:
            raise self.failed(e) from None
        return [("part", math.floor(t * 1000), (window, value)) for window, (t, value) in parts.items()]


class PartTime(TimestampAssigner):
    """A partial window's event time (ms): the latest event in it."""

    def extract_timestamp(self, value, record_timestamp):
        return value[1]


def is_part(item):
    return item[0] == "part"


def window_key(item):
    return item[2][0][0]


class Merge(_Guarded):
    """Two partials of one key's window: their values combined by the window's function."""

    def __init__(self, out, step):
        super().__init__(out, (step,))
        self.fn = step.fn

    def __call__(self, a, b):
        try:
            return a[0], a[1], (a[2][0], self.fn(a[2][1], b[2][1]))
        except Exception as e:
            raise self.failed(e) from None


class Emit(_Guarded, ProcessWindowFunction):
    """A window Flink fires: ``(stream time it closed, what the steps after it make of (key, (start, value)))``."""

    def __init__(self, out, size, duration, ops):
        _Guarded.__init__(self, out, tuple(ops))
        self.size, self.duration, self.ops = size, duration, tuple(ops)

    def process(self, key, context, elements):
        for _, _, ((_, start), value) in elements:
            closes = window_closes(start, self.size, self.duration)
            try:
                results = list(fuse([(key, (start, value))], self.ops))
            except Exception as e:
                raise self.failed(e) from None
            for result in results:
                yield closes, result


def sink_of(name):
    def selected(item):
        return item[0] == "sink" and item[1] == name
    return selected


def sink_items(item):
    return item[2]


def by_source(source, n):
    """Partition ``source``'s ticks to reader ``source`` (there are as many readers as sources)."""
    return source % n


class TickSource:
    """The source a tick is for: ticks are numbered ``k * sources + source``."""

    def __init__(self, sources):
        self.sources = sources

    def __call__(self, tick):
        return tick % self.sources


def translate_stream(env, plan: Plan, port: int, tick: float, tracing: bool = False) -> None:
    """Build the streaming ``plan`` on ``env`` (STREAMING mode): event time, watermarks, Flink's windows.

    =================  ======================================================
    archbench stage    DataStream operators
    =================  ======================================================
    ``stream``         ``from_collection`` of ticks ``k * sources + source``, sent by
                       ``partition_custom`` to one `Wake` reader per source
                       (parallelism = sources): it sleeps to the tick, reads
                       what arrived (`engines.eventtime.Tap` drops the late
                       events, per source) and combines it into partial
                       windows per tick
    ``window``         ``assign_timestamps_and_watermarks`` on the readers'
                       tasks (a partial's time: its latest event;
                       ``for_bounded_out_of_orderness(lateness)``: the
                       watermark of a source is its latest time minus the
                       lateness, and Flink's is the smallest over its
                       inputs, one per source -- the rule of
                       `engines.eventtime`), then ``key_by(key)
                       .window(TumblingEventTimeWindows.of(size))
                       .reduce(Merge, Emit)``
    ``collect``        after the window: `Collect` ``live``, each result
                       sent as Flink fires its window; before it: the
                       events' items, sent at the end
    =================  ======================================================

    A window fires when the watermark passes its end: Flink's watermark is
    ``latest - lateness - 1 ms`` and a window fires at ``end - 1 ms``, the
    same instant as `engines.eventtime.Windows` decides.
    """
    from engines.streaming import shape

    out = Outbox(port, tracing)
    spec = shape(plan)
    src, window = spec["source"].arg, spec["window"]
    sources = len(src.sources)
    ticks = math.ceil(src.duration / src.speedup / tick) + 1
    lateness = window.arg.lateness if window else 0.0
    direct = {sink: tuple(ops) for sink, (ops, after) in spec["sinks"].items() if not after}
    wake = Wake(out, src, lateness, spec["before"], window, direct, ticks, tick)
    read = (env.from_collection(list(range(ticks * sources)), type_info=Types.INT()).name("ticks")
            .partition_custom(by_source, TickSource(sources))
            .flat_map(wake).name(spec["source"].name).set_parallelism(sources))
    for sink in direct:
        (read.filter(sink_of(sink)).set_parallelism(sources).flat_map(sink_items).set_parallelism(sources)
         .flat_map(Collect(out, sink)).set_parallelism(sources).name(f"collect {sink}").sink_to(Sink(DISCARD)))
    if window is None:
        return
    marks = WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(round(lateness * 1000))) \
        .with_timestamp_assigner(PartTime())
    fired = (read.filter(is_part).set_parallelism(sources)
             .assign_timestamps_and_watermarks(marks).set_parallelism(sources)
             .key_by(window_key)
             .window(TumblingEventTimeWindows.of(Time.milliseconds(round(window.arg.size * 1000))))
             .reduce(Merge(out, window), window_function=Emit(out, window.arg.size, src.duration, ()))
             .name(window.name))
    for sink, (ops, after) in spec["sinks"].items():
        if after:
            fired.flat_map(_after(out, ops)).flat_map(Collect(out, sink, live=True)).name(f"collect {sink}") \
                .sink_to(Sink(DISCARD))


class _After(_Guarded, FlatMapFunction):
    """A window result through the narrow steps between the window and one sink; its closing time rides along."""

    def __init__(self, out, ops):
        _Guarded.__init__(self, out, tuple(ops))
        self.ops = tuple(ops)

    def flat_map(self, fired):
        closes, result = fired
        try:
            return [(closes, out) for out in fuse((result,), self.ops)]
        except Exception as e:
            raise self.failed(e) from None


def _after(out, ops):
    return _After(out, ops)


def warm_up(env, port: int) -> None:
    """The smallest job: one item through one Python function, so the first real job starts warm."""
    env.from_collection([0], type_info=Types.INT()).flat_map(Collect(Outbox(port), "warmup")).sink_to(Sink(DISCARD))
