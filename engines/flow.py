"""The dataflow model: a `Dataflow` is a frozen definition, steps joined by streams.

A workload builds one and hands it to ``session.dataflow(flow)``; the
engine decides where each step runs (`engines.plan.compile` turns the
steps into the stage plan every engine interprets). Building a flow runs
nothing::

    >>> flow = Dataflow("wordcount")
    >>> lines = flow.read([["a b", "b"], ["c b"]])
    >>> counts = lines.flat_map(str.split).count_by_key()
    >>> counts.collect("counts")
    >>> [step.op for step in flow.steps]
    ['read', 'flat_map', 'flat_map', 'reduce_by_key', 'collect']

Core steps are ``read``, ``flat_map``, ``reduce_by_key``, ``join`` and
``collect``, and for streams ``stream`` (a timed source) and ``window``
(tumbling event-time windows with a watermark); every other step (``map``,
``filter``, ``key_by``, ``count_by_key``) is a few lines composed from them,
so an engine that runs the core steps runs every flow. Mistakes fail while
the flow is built, naming the step::

    >>> flow.read([[1]]).flat_map(42)
    Traceback (most recent call last):
    ...
    engines.api.DataflowError: step 'flat_map_6' of flow 'wordcount': flat_map needs a callable, got int 42

Workloads import all of this from `engines.api`, the contract.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from engines.errors import DataflowError


@dataclass(frozen=True)
class Step:
    """One step of a flow. ``inputs`` are the names of upstream steps.

    ``op`` is one of the core steps; ``fn`` the user's function (or None);
    ``arg`` the partitions of a ``read`` or the sink name of a ``collect``.
    """

    op: str
    name: str
    inputs: tuple[str, ...]
    fn: Callable | None = None
    arg: Any = None


@dataclass(frozen=True)
class StreamSource:
    """The ``arg`` of a ``stream`` step: see `Dataflow.stream`."""

    sources: tuple[Callable, ...]
    timestamp: Callable
    speedup: float
    duration: float


@dataclass(frozen=True)
class WindowSpec:
    """The ``arg`` of a ``window`` step: tumbling windows of ``size``, watermark lag ``lateness``."""

    size: float
    lateness: float


@dataclass(frozen=True)
class MapFn:
    """``map(fn)`` as a flat_map function: one output per input.

    Runtimes may recognise it and call ``fn`` directly (a faster loop);
    calling it as a flat_map function gives the same result.
    """

    fn: Callable

    def __call__(self, item):
        return (self.fn(item),)


@dataclass(frozen=True)
class FilterFn:
    """``filter(pred)`` as a flat_map function: the item, or nothing."""

    pred: Callable

    def __call__(self, item):
        return (item,) if self.pred(item) else ()


@dataclass(frozen=True)
class _KeyBy:
    key: Callable

    def __call__(self, item):
        return (self.key(item), item)


@dataclass(frozen=True)
class CountOne:
    """``count_by_key``'s narrow step: ``(key, 1)`` per item (the item itself is the key when ``key`` is None).

    Runtimes may recognise it followed by an adding reduction, and count
    the keys directly (`engines.plan.counting`).
    """

    key: Callable | None

    def __call__(self, item):
        return (item if self.key is None else self.key(item), 1)


def _iterable(obj) -> bool:
    try:
        iter(obj)
    except TypeError:
        return False
    return True


def user_function(fn: Callable) -> Callable:
    """The function the user wrote, seen through the composite wrappers.

    >>> user_function(MapFn(FilterFn(len).pred))
    <built-in function len>
    """
    while isinstance(fn, (MapFn, FilterFn, _KeyBy, CountOne)):
        inner = getattr(fn, "fn", None) or getattr(fn, "pred", None) or getattr(fn, "key", None)
        if inner is None:  # count_by_key without a key function
            return fn
        fn = inner
    return fn


def describe_function(fn: Callable) -> str:
    """A short, human name for a user function: ``str.split``, ``<lambda> at wl.py:12``.

    >>> describe_function(str.split)
    'str.split'
    """
    fn = user_function(fn)
    code = getattr(fn, "__code__", None)
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    if code is None:
        return name
    filename = code.co_filename.rsplit("/", 1)[-1]
    return f"{name} at {filename}:{code.co_firstlineno}"


@dataclass(frozen=True)
class Stream:
    """The output of one step; build the next step from it.

    ``keyed`` is True when the items are known to be ``(key, value)`` pairs
    (made by a keyed step or ``key_by``), None when only running will tell:
    a ``read`` of pairs is a keyed stream like any other, so keyed steps
    apply to it directly, and an item that turns out not to be a pair fails
    at run time with `NotAPair`, naming the step.
    """

    flow: "Dataflow"
    step: str
    keyed: bool | None
    timed: bool = False      # items carry event times (downstream of a `stream` source)

    # core steps
    def flat_map(self, fn: Callable[[Any], Iterable], *, name: str | None = None) -> "Stream":
        """Zero or more output items per input item; stays on the worker."""
        keyed = self.keyed if isinstance(fn, FilterFn) else None
        return self.flow._add("flat_map", name, (self,), fn=fn, keyed=keyed)

    def reduce_by_key(self, fn: Callable[[Any, Any], Any], *, name: str | None = None) -> "Stream":
        """Combine the values of each key with ``fn`` (associative and commutative).

        Items must be ``(key, value)``; the result has one ``(key, value)``
        per key. Engines combine before sending, then send each key to its owner.
        """
        return self.flow._add("reduce_by_key", name, (self,), fn=fn, keyed=True)

    def join(self, other: "Stream", *, name: str | None = None) -> "Stream":
        """Inner join of two keyed streams: ``(key, (left, right))`` per matching pair."""
        return self.flow._add("join", name, (self, other), keyed=True)

    def collect(self, sink: str) -> None:
        """Send every item to the driver; ``session.dataflow`` returns them under ``sink``."""
        self.flow._add("collect", sink, (self,), arg=sink, keyed=self.keyed)

    # composites: each a few lines over the core steps
    def map(self, fn: Callable, *, name: str | None = None) -> "Stream":
        """One output item per input item."""
        self.flow._check_callable("map", name, fn)
        return self.flat_map(MapFn(fn), name=name or self.flow._next_name("map"))

    def filter(self, pred: Callable[[Any], bool], *, name: str | None = None) -> "Stream":
        """Keep the items for which ``pred`` is true."""
        self.flow._check_callable("filter", name, pred)
        return self.flat_map(FilterFn(pred), name=name or self.flow._next_name("filter"))

    def key_by(self, key: Callable, *, name: str | None = None) -> "Stream":
        """``item`` becomes ``(key(item), item)``."""
        self.flow._check_callable("key_by", name, key)
        return self.flat_map(MapFn(_KeyBy(key)), name=name or self.flow._next_name("key_by")) \
            ._as_keyed()

    def count_by_key(self, key: Callable | None = None, *, name: str | None = None) -> "Stream":
        """``(key, count)`` per distinct key; items are the keys unless ``key`` is given."""
        if key is not None:
            self.flow._check_callable("count_by_key", name, key)
        ones = self.flat_map(MapFn(CountOne(key)), name=self.flow._next_name("count_by_key"))
        return ones.reduce_by_key(operator.add, name=name)

    def window(self, size: float, fn: Callable[[Any, Any], Any], *, lateness: float = 0.0,
               name: str | None = None) -> "Stream":
        """Tumbling event-time windows of ``size`` stream seconds, per key.

        Items are ``(key, value)``; each window's values of a key are combined
        with ``fn`` (associative and commutative) and emitted once, as
        ``(key, (window_start, combined))``, when the watermark passes the
        window's end. The watermark of a source is the largest event time it
        has delivered minus ``lateness``; the stream's is the smallest over
        its sources. **Late events** -- older than their own source's
        watermark when they arrive -- are dropped (so every engine drops the
        same ones, whatever the timing between sources).
        """
        if size <= 0 or lateness < 0:
            raise self.flow._error(name or "window", f"window needs size > 0 and lateness >= 0, got {size}, {lateness}")
        return self.flow._add("window", name, (self,), fn=fn, arg=WindowSpec(float(size), float(lateness)), keyed=True)

    def _as_keyed(self) -> "Stream":
        return Stream(self.flow, self.step, True, self.timed)


class Dataflow:
    """A named graph of steps. Building it runs nothing; engines run it.

    Steps are frozen `Step` objects, appended in an order where every step
    comes after its inputs (so ``flow.steps`` is already topologically sorted).
    """

    def __init__(self, name: str):
        self.name = name
        self.steps: list[Step] = []
        self._names: set[str] = set()
        self._counter = 0

    def read(self, partitions, *, name: str | None = None) -> Stream:
        """A source: a list of partitions, each a list or a zero-argument callable.

        Callables are evaluated on the workers, so data need not pass
        through the driver. Items may be anything; a read of ``(key, value)``
        pairs (a table from storage) goes straight into keyed steps.
        """
        name = name or self._next_name("read")
        if isinstance(partitions, (str, bytes)) or not _iterable(partitions):
            raise self._error(name, "read needs a list of partitions "
                              f"(each a list or a zero-argument callable), got {type(partitions).__name__}")
        parts = []
        for i, part in enumerate(partitions):
            if not callable(part) and (isinstance(part, (str, bytes)) or not _iterable(part)):
                raise self._error(name, f"partition {i} is a {type(part).__name__}, not a list of items or "
                                  "a zero-argument callable returning them")
            parts.append(part if callable(part) else list(part))
        return self._add("read", name, (), arg=tuple(parts) or ([],), keyed=None)  # no partitions: nothing to read

    def stream(self, sources, *, timestamp: Callable, duration: float, speedup: float = 1.0,
               name: str | None = None) -> Stream:
        """A timed source: events arrive over ``duration`` seconds of stream time.

        Each source is a callable ``source(start, end)`` returning, in arrival
        order, the events that *arrive* in ``[start, end)`` stream seconds;
        ``timestamp(event)`` is an event's event time (at most its arrival).
        Stream time runs ``speedup`` times faster than the wall clock, so a
        10-second window closes every 0.1 s at ``speedup=100``: the offered
        rate is whatever the sources deliver per second.
        """
        name = name or self._next_name("stream")
        if isinstance(sources, (str, bytes)) or not hasattr(sources, "__len__") or not sources \
                or not all(callable(src) for src in sources):
            raise self._error(name, "stream needs a non-empty list of callables source(start, end)")
        self._check_callable("stream", name, timestamp)
        if duration <= 0 or speedup <= 0:
            raise self._error(name, f"stream needs duration > 0 and speedup > 0, got {duration}, {speedup}")
        spec = StreamSource(tuple(sources), timestamp, float(speedup), float(duration))
        return self._add("stream", name, (), arg=spec, keyed=None)

    @property
    def streaming(self) -> bool:
        """Whether the flow has a timed source (engines run it as a stream)."""
        return any(s.op == "stream" for s in self.steps)

    @property
    def sinks(self) -> list[str]:
        """The names of the ``collect`` sinks, in definition order."""
        return [s.arg for s in self.steps if s.op == "collect"]

    def step(self, name: str) -> Step:
        """The step called ``name``."""
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(f"flow {self.name!r} has no step {name!r}; steps: {[s.name for s in self.steps]}")

    def __repr__(self):
        return f"Dataflow({self.name!r}, steps={[s.name for s in self.steps]})"

    # building
    def _next_name(self, op: str) -> str:
        self._counter += 1
        return f"{op}_{self._counter}"

    def _error(self, step: str, message: str) -> DataflowError:
        return DataflowError(f"step {step!r} of flow {self.name!r}: {message}")

    def _check_callable(self, op: str, name: str | None, fn) -> None:
        if not callable(fn):
            raise self._error(name or f"{op}_{self._counter + 1}",
                              f"{op} needs a callable, got {type(fn).__name__} {fn!r}")

    def _add(self, op, name, inputs, *, fn=None, arg=None, keyed=None) -> Stream | None:
        name = name or self._next_name(op)
        if op in ("flat_map", "reduce_by_key", "window"):
            self._check_callable(op, name, fn)
        for stream in inputs:
            if not isinstance(stream, Stream) or stream.flow is not self:
                raise self._error(name, f"{op} takes streams of this flow, got {stream!r}")
        timed = op == "stream" or any(stream.timed for stream in inputs)
        if op == "stream" and self.streaming:
            raise self._error(name, "a flow has at most one stream source")
        if op == "window" and not timed:
            raise self._error(name, "window needs a timed stream: build it from flow.stream(...)")
        if op in ("reduce_by_key", "join") and timed:
            raise self._error(name, f"{op} on a timed stream never ends; group it in time with "
                              "window(size, fn) instead")
        if op == "window" and any(s.op == "window" for s in self.steps):
            raise self._error(name, "a flow has at most one window step")
        if name in self._names:
            what = "sink" if op == "collect" else "step"
            raise self._error(name, f"two {what}s are named {name!r}; give each a unique name")
        self._names.add(name)
        self.steps.append(Step(op, name, tuple(s.step for s in inputs), fn, arg))
        return None if op == "collect" else Stream(self, name, keyed, timed and op != "window")

