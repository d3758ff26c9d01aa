"""The contract between workloads and engines: three programming models.

A workload never touches an engine directly. It gets a **session** and
uses whichever of the three models it is written in:

- **dataflow** -- build a `Dataflow` (a frozen definition: steps joined by
  streams, `engines.flow`) and hand it to ``session.dataflow(flow)``. The
  engine decides where each step runs; records are exchanged between
  workers by key.
- **tasks** -- ``with session.tasks() as tasks:`` submit functions; a
  `Future` passed as a top-level argument is a dependency, resolved to its
  value where the dependent task runs.
- **actors** -- ``with session.actors() as actors:`` spawn stateful objects
  and send them messages: ``ref.call`` (ask, a Future of the reply) and
  ``ref.tell`` (fire and forget). An `ActorRef` can be passed to another
  actor, which may message it from inside a method.

Everything a workload needs is importable from here: the dataflow model
(`engines.flow`), the errors (`engines.errors`), futures and sessions.

    >>> flow = Dataflow("wordcount")
    >>> flow.read([["a b", "b"], ["c b"]]).flat_map(str.split).count_by_key().collect("counts")
    >>> from engines import get_engine
    >>> with get_engine("serial").start(workers=1) as session:
    ...     sorted(session.dataflow(flow)["counts"])
    [('a', 1), ('b', 3), ('c', 1)]
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterable

from engines.errors import ActorError, ArchbenchError, DataflowError, NotAPair, TaskError, UnsupportedModel
from engines.flow import (CountOne, Dataflow, FilterFn, MapFn, Step, Stream, StreamSource, WindowSpec,
                          describe_function, user_function)
from engines.plan import Plan, compile
from engines.streaming import run_microbatches

__all__ = ["MODELS", "ArchbenchError", "DataflowError", "UnsupportedModel", "TaskError", "ActorError", "NotAPair",
           "Dataflow", "Stream", "Step", "StreamSource", "WindowSpec", "MapFn", "FilterFn", "CountOne",
           "user_function", "describe_function", "LatencyLog", "Future", "Tasks", "ActorRef", "Actors", "Session"]

MODELS = ("dataflow", "tasks", "actors")


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
    """The actor model. Engines subclass and implement ``spawn``, which starts the actor through `register`."""

    def __init__(self, session: "Session"):
        super().__init__(session)
        self._named: dict[str, ActorRef] = {}

    def spawn(self, cls: type, *args, name: str | None = None, **kwargs) -> ActorRef:
        """Start ``cls(*args, **kwargs)`` as an actor; ``name`` makes it findable with ``get``."""
        raise NotImplementedError

    def register(self, name: str | None, start: Callable[[], ActorRef]) -> ActorRef:
        """Start an actor with ``start()`` and record its ref under ``name`` (when given) for `get`.

        Names are unique in a context: a name already taken is refused
        before anything starts. Returns the ref.
        """
        if name is not None and name in self._named:
            raise ActorError(f"an actor named {name!r} exists already ({self._named[name]!r}); names are unique")
        ref = start()
        if name is not None:
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

    #: True where the engine's worker processes exist only while a run goes on (Flink starts its Python
    #: workers per job): the harness then asks `fault_targets` only when the fault is due
    targets_per_run = False

    def fault_targets(self) -> list[tuple[int, str]]:
        """The processes a fault may kill (``archbench run --fault``): ``(pid, what it is)`` each.

        Default: the `worker_pids`, as ``"<engine> worker <i>"``. An engine
        whose worker is another kind of process (an executor, a worker under
        a nanny) says so here; one with none says why in `fault_reason`.
        """
        return [(pid, f"{self.engine} worker {i}") for i, pid in enumerate(self.worker_pids)]

    def fault_reason(self) -> str:
        """Why there is no worker process to kill, when `fault_targets` is empty."""
        return f"{self.engine}'s workers are not processes of their own: killing one would kill the driver"

    #: whether the engine runs a stream itself; when not, `dataflow` runs it as micro-batches
    streams_natively = False

    def dataflow(self, flow: Dataflow) -> dict[str, list]:
        """Run ``flow``; ``{sink name: list of items}``, order within a sink unspecified.

        The same for every engine: the flow is checked and compiled
        (`engines.plan.compile`); a stream on an engine that does not run
        streams natively runs as micro-batches (`engines.streaming`); every
        other plan goes to the engine's `run_plan`.
        """
        plan = compile(flow)
        if plan.streaming and not self.streams_natively:
            return run_microbatches(self, plan)
        return self.run_plan(plan)

    def run_plan(self, plan: Plan) -> dict[str, list]:
        """Run a compiled flow; what engines that offer the dataflow model implement."""
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
