"""The serial engine: one process, no framework, every model, deterministic.

This is the debugging and teaching form of all three architectures, the way
Dask's synchronous scheduler is: nothing runs in parallel and nothing is
pickled, so a workload that fails here fails for a reason of its own, with
an ordinary traceback.

- **dataflow**: the flow is evaluated stage by stage in this process
  (`engines.plan.evaluate` with one bucket: no shuffle is needed); a
  stream runs as micro-batches (`engines.streaming`).
- **tasks**: ``submit`` runs the function at once; its dependencies were
  submitted earlier, so they are already done.
- **actors**: one FIFO queue of messages for all actors. Sending a message
  appends it; if nothing is being handled, the queue is drained, one
  message at a time, in order. A ``tell`` sent from inside a method is
  queued and handled after the current message -- never re-entrantly --
  so every run gives the same interleaving.

**A lost worker** is not a fault serial can have: there is no worker
process, so `fault_targets` is empty and `fault_reason` says why (the
harness records the fault as ``unsupported`` with that reason).

    >>> class Counter:
    ...     def __init__(self): self.n = 0
    ...     def add(self, k): self.n += k; return self.n
    >>> with SerialEngine().start() as s, s.actors() as actors:
    ...     c = actors.spawn(Counter)
    ...     c.tell("add", 2)
    ...     c.call("add", 3).result()
    5
"""

from __future__ import annotations

import logging
from collections import deque

from engines import Engine
from engines.api import ActorError, ActorRef, Actors, Future, Session, Tasks
from engines.common import invoke, resolve, task_error, task_name
from engines.plan import InProcess, Plan, evaluate
from engines.support import Support
from engines.tracing import Stamps

log = logging.getLogger("archbench.actors")


class SerialEngine(Engine):
    name = "serial"
    architecture = "baseline"
    description = "one process, no framework: the reference and debug mode"
    supports = {
        "dataflow": Support.native(),
        "tasks": Support.native(),
        "actors": Support.native(),
    }

    def start(self, workers: int = 1, **options) -> Session:
        return SerialSession(workers, self.supports, self.settings(1, **options))

    def settings(self, workers: int, **options) -> dict:
        return {"workers": 1, "note": "always one process, whatever --workers says", **options}


class SerialSession(Session):
    """Its trace: its own stamps of each partition's work, task and message, all on the driver's lane."""

    engine = "serial"

    def __init__(self, workers, supports, settings):
        super().__init__(workers, supports, settings)
        self.stamps = Stamps()

    def run_plan(self, plan: Plan) -> dict[str, list]:
        return evaluate(plan, InProcess(self.stamps), buckets=1)

    def fault_reason(self) -> str:
        return "one process: the driver runs every step; killing it kills the run itself"

    def trace_start(self) -> None:
        self.stamps.start()

    def trace_stop(self):
        return self.stamps.stop("serial's own stamps per partition, task and message",
                                ["nothing moves between processes: there is one"])

    def tasks(self) -> Tasks:
        return SerialTasks(self)

    def actors(self) -> Actors:
        return SerialActors(self)


class SerialTasks(Tasks):
    def submit(self, fn, *args, retries: int = 0, **kwargs) -> Future:
        future = Future(task_name(fn), self.session.latencies)
        for attempt in range(retries + 1):
            try:
                a, k = resolve(args, kwargs)
                with self.session.stamps.span("driver", future.name, "compute"):
                    value = fn(*a, **k)
                future._set_result(value)
                break
            except Exception as e:
                if attempt == retries:
                    future._set_error(task_error(future.name, e))
        return future


class SerialRef(ActorRef):
    def __init__(self, actor_id, cls_name, system: "SerialActors"):
        super().__init__(actor_id, cls_name)
        self._system = system

    def call(self, method, *args, **kwargs) -> Future:
        future = Future(f"{self.actor_id}.{method}", self._system.session.latencies)
        self._system._send(self, method, args, kwargs, future)
        return future

    def tell(self, method, *args, **kwargs) -> None:
        self._system._send(self, method, args, kwargs, None)


class SerialActors(Actors):
    def __init__(self, session):
        super().__init__(session)
        self._actors: dict[str, object] = {}     # actor id -> the object
        self._queue: deque = deque()             # (ref, method, args, kwargs, future | None)
        self._draining = False
        self._closed = False

    def spawn(self, cls, *args, name=None, **kwargs) -> ActorRef:
        def start() -> SerialRef:
            actor_id = f"{cls.__name__}-{len(self._actors) + 1}"
            self._actors[actor_id] = cls(*args, **kwargs)
            return SerialRef(actor_id, cls.__name__, self)

        return self.register(name, start)

    def _send(self, ref, method, args, kwargs, future) -> None:
        self._queue.append((ref, method, args, kwargs, future))
        if not self._draining:
            self._drain()

    def _drain(self) -> None:
        """Handle queued messages in order until none is left. Mutates the queue."""
        self._draining = True
        try:
            while self._queue:
                ref, method, args, kwargs, future = self._queue.popleft()
                try:
                    if self._closed:
                        raise ActorError(f"{ref.cls_name} actor {ref.actor_id} is stopped "
                                         "(its actors() context has closed)")
                    with self.session.stamps.span("driver", f"{ref.actor_id}.{method}", "message"):
                        value = invoke(self._actors[ref.actor_id], ref.actor_id, method, args, kwargs)
                    if future is not None:
                        future._set_result(value)
                except ActorError as e:
                    if future is not None:
                        future._set_error(e)
                    else:  # a tell has no one to answer: say it where it can be seen
                        log.error("tell %s", e)
        finally:
            self._draining = False

    def close(self) -> None:
        self._closed = True
        self._actors.clear()
