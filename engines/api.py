"""The contract between workloads and engines: three programming models.

A workload never touches an engine directly. It gets a **session** and
uses whichever of the three models it is written in:

- **dataflow** -- build a `Dataflow` (a frozen definition: steps joined by
  streams) and hand it to ``session.dataflow(flow)``. The engine decides
  where each step runs; records are exchanged between workers by key.
- **tasks** -- ``with session.tasks() as tasks:`` submit functions; a
  `Future` passed as a top-level argument is a dependency, resolved to its
  value where the dependent task runs.
- **actors** -- ``with session.actors() as actors:`` spawn stateful objects
  and send them messages: ``ref.call`` (ask, a Future of the reply) and
  ``ref.tell`` (fire and forget). An `ActorRef` can be passed to another
  actor, which may message it from inside a method.

Building a flow runs nothing::

    >>> import operator
    >>> flow = Dataflow("wordcount")
    >>> lines = flow.read([["a b", "b"], ["c b"]])
    >>> counts = lines.flat_map(str.split).count_by_key()
    >>> counts.collect("counts")
    >>> [step.op for step in flow.steps]
    ['read', 'flat_map', 'flat_map', 'reduce_by_key', 'collect']

Core steps are ``read``, ``flat_map``, ``reduce_by_key``, ``join`` and
``collect``, and for streams ``stream`` (a timed source) and ``window``
(tumbling event-time windows with a watermark); every other step (``map``, ``filter``, ``key_by``,
``count_by_key``) is a few lines composed from them, so an engine that runs
the five core steps runs every flow. Mistakes fail while the flow is built,
naming the step::

    >>> flow.read([[1]]).flat_map(42)
    Traceback (most recent call last):
    ...
    engines.api.DataflowError: step 'flat_map_6' of flow 'wordcount': flat_map needs a callable, got int 42
"""

from __future__ import annotations

import operator
import reprlib
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

MODELS = ("dataflow", "tasks", "actors")


# ---------------------------------------------------------------- errors


class ArchbenchError(Exception):
    """Base of every error archbench raises on purpose."""


class DataflowError(ArchbenchError):
    """A flow definition is wrong, or a step failed while running."""


class UnsupportedModel(ArchbenchError):
    """The engine does not offer this programming model (see its ``supports``)."""


class TaskError(ArchbenchError):
    """A task raised. The message names the task and carries the remote traceback."""


class ActorError(ArchbenchError):
    """An actor call failed: the method raised, or the actor (or its host) is gone."""


class NotAPair(DataflowError):
    """A keyed step got an item that is not a ``(key, value)`` pair.

    Every engine raises this one error, in these words, for such an item. A
    pair is an item that unpacks into two, as a 2-tuple does. The step, the
    item (shortened) and its type are fields, so nothing has to read the
    message to know what happened::

        >>> raise NotAPair("sum", "a line of text")
        Traceback (most recent call last):
        ...
        engines.api.NotAPair: step 'sum' needs (key, value) items, got 'a line of text' (str): make each item a pair first, e.g. .map(lambda x: (key_of(x), x)) or .key_by(key_of)
    """

    def __init__(self, step: str, item):
        self.step, self.item, self.kind = step, _SHORT.repr(item), type(item).__name__
        super().__init__(self._text())

    def _text(self) -> str:
        return (f"step {self.step!r} needs (key, value) items, got {self.item} ({self.kind}): make each item "
                "a pair first, e.g. .map(lambda x: (key_of(x), x)) or .key_by(key_of)")

    def __reduce__(self):  # travels from a worker with its fields, not only its text
        return _not_a_pair, (self.step, self.item, self.kind)


def _not_a_pair(step: str, item: str, kind: str) -> NotAPair:
    error = NotAPair.__new__(NotAPair)
    error.step, error.item, error.kind = step, item, kind
    DataflowError.__init__(error, error._text())
    return error


_SHORT = reprlib.Repr()   # an item as an error shows it: long strings and containers cut short
_SHORT.maxstring = _SHORT.maxother = 60


# ------------------------------------------------------- the dataflow model


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


# ---------------------------------------------------- futures and latency


class LatencyLog:
    """Seconds from submit (or call) to the result being seen by the driver.

    One per session; the harness clears it before each timed repeat and
    reads it after. Thread-safe: results may arrive on engine threads.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.samples: list[float] = []

    def add(self, seconds: float) -> None:
        with self._lock:
            self.samples.append(seconds)

    def clear(self) -> None:
        with self._lock:
            self.samples = []


class Future:
    """A value being computed elsewhere; ``result()`` waits for it.

    Engines either push the outcome (``_set_result`` / ``_set_error``, from
    any thread) or override ``_fetch`` to pull it on demand. The first
    outcome seen is final and stamps the **latency**: submit -> the driver
    hears that the task ended. (A task-parallel engine that leaves the value
    on its worker settles the Future with a stand-in for it then --
    `engines.common.HeldFuture` -- or stamps the latency itself.)

    ``_new_event`` makes the one-shot event a Future waits on (``is_set``,
    ``set``, ``wait``): a subclass made by the thousand may give a cheaper one.
    """

    _new_event = threading.Event

    def __init__(self, name: str, log: LatencyLog | None = None):
        self.name = name
        self._log = log
        self._t_submit = time.perf_counter()
        self._event = self._new_event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[["Future"], None]] = []
        self._value = None
        self._error: BaseException | None = None

    def _set_result(self, value) -> None:
        self._settle(value, None)

    def _set_error(self, error: BaseException) -> None:
        self._settle(None, error)

    def _settle(self, value, error) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self._value, self._error = value, error
            if self._log is not None:
                self._log.add(time.perf_counter() - self._t_submit)
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self)

    def _add_done_callback(self, callback: Callable[["Future"], None]) -> None:
        """Call ``callback(self)`` once the outcome is in (at once if it is already)."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return
        callback(self)

    def _fetch(self, timeout: float | None) -> None:
        """Wait for a pushed outcome. Pull-based engines override this."""
        if not self._event.wait(timeout):
            raise TimeoutError(f"{self.name} not done after {timeout} s")

    def done(self) -> bool:
        return self._event.is_set()

    def result(self, timeout: float | None = None):
        """The value, or the error the computation raised."""
        if not self._event.is_set():
            self._fetch(timeout)
        if self._error is not None:
            raise self._error
        return self._value

    def __repr__(self):
        state = "done" if self.done() else "pending"
        return f"<Future {self.name} {state}>"

    def __reduce__(self):
        raise TypeError(f"a Future ({self.name}) cannot be pickled: pass it as a top-level "
                        "argument of tasks.submit (it becomes a dependency) or call .result() first")


# ------------------------------------------------------- the session


class _ModelContext:
    """What the task and actor contexts share: a session, ``gather``, and ``with``."""

    def __init__(self, session: "Session"):
        self.session = session

    def gather(self, futures: Iterable[Future]) -> list:
        """The results of ``futures``, in the order given."""
        return [f.result() for f in futures]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        """Release what this context holds. Default: nothing."""


class Tasks(_ModelContext):
    """The task model. Engines subclass and implement ``submit``."""

    def submit(self, fn: Callable, *args, retries: int = 0, **kwargs) -> Future:
        """Run ``fn(*args, **kwargs)`` on a worker; Futures among the
        top-level arguments are dependencies, replaced by their values."""
        raise NotImplementedError


class ActorRef:
    """An address of an actor; picklable, so actors can hold each other's refs.

    ``call`` asks (a Future of the return value); ``tell`` sends and forgets.
    Messages from one sender to one actor arrive in the order sent.
    """

    def __init__(self, actor_id: str, cls_name: str):
        self.actor_id = actor_id
        self.cls_name = cls_name

    def call(self, method: str, *args, **kwargs) -> Future:
        raise NotImplementedError

    def tell(self, method: str, *args, **kwargs) -> None:
        raise NotImplementedError

    def __getattr__(self, attr):
        if attr.startswith("_"):
            raise AttributeError(attr)
        raise AttributeError(f"{self.cls_name} actor {self.actor_id}: methods are not called directly "
                             f"on a ref; use ref.call({attr!r}, ...) for a reply or "
                             f"ref.tell({attr!r}, ...) to send and forget")

    def __repr__(self):
        return f"<ActorRef {self.cls_name} {self.actor_id}>"


class Actors(_ModelContext):
    """The actor model. Engines subclass and implement ``spawn``, calling `register` for a named actor."""

    def __init__(self, session: "Session"):
        super().__init__(session)
        self._named: dict[str, ActorRef] = {}

    def spawn(self, cls: type, *args, name: str | None = None, **kwargs) -> ActorRef:
        """Start ``cls(*args, **kwargs)`` as an actor; ``name`` makes it findable with ``get``."""
        raise NotImplementedError

    def register(self, name: str | None, ref: ActorRef) -> ActorRef:
        """Record ``ref`` under ``name`` (when given) for `get`; returns ``ref``."""
        if name is not None:
            if name in self._named:
                raise ActorError(f"an actor named {name!r} exists already")
            self._named[name] = ref
        return ref

    def get(self, name: str) -> ActorRef:
        """The ref of the actor spawned with ``name``."""
        if name not in self._named:
            raise ActorError(f"no actor named {name!r}; named actors: {sorted(self._named)}")
        return self._named[name]

    def close(self) -> None:
        """Stop the actors of this context."""


class Session:
    """A running engine with ``workers`` workers; use it as a context manager.

    Subclasses override the models they offer; the others raise
    `UnsupportedModel` with the engine's own reason.
    """

    engine = "?"

    def __init__(self, workers: int, supports: dict[str, str], settings: dict | None = None):
        self.workers = workers
        self.supports = supports
        self.settings = dict(settings or {})
        self.latencies = LatencyLog()          # per Future: task submit -> result, actor call -> reply
        self.window_latencies = LatencyLog()   # per window result: emitted - window end (streams)

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the workers (empty where workers are not processes of ours)."""
        return []

    def dataflow(self, flow: Dataflow) -> dict[str, list]:
        """Run ``flow``; ``{sink name: list of items}``, order within a sink unspecified."""
        raise self._unsupported("dataflow")

    def tasks(self) -> Tasks:
        raise self._unsupported("tasks")

    def actors(self) -> Actors:
        raise self._unsupported("actors")

    def _unsupported(self, model: str) -> UnsupportedModel:
        why = self.supports.get(model, "unsupported")
        return UnsupportedModel(f"engine {self.engine!r} does not run the {model} model ({why}); "
                                f"see `archbench engines` for which engines do")

    def trace_start(self) -> None:
        """Begin recording what the workers do (`engines.tracing`). Default: there is nothing to record."""

    def trace_stop(self):
        """The `engines.tracing.Trace` recorded since `trace_start`: rows, their instrument, what is missing.

        Default: no rows -- the harness then shows the driver's own span of the run alone.
        """
        from engines.tracing import Trace

        return Trace(source="none", missing=[f"{self.engine} records nothing of its workers"])

    def close(self) -> None:
        """Stop the workers. Safe to call twice."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
