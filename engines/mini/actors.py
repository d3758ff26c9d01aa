"""mini-actors: the actor architecture -- stateful actors in worker processes, messaging each other.

This is how Ray runs actors (and Akka, and Orleans). A long-lived **actor**
is an object that lives in one worker process and keeps its state between
messages. Nobody calls its methods: senders put **messages** in its
**mailbox**, and the actor handles them one at a time, in order. Actors
hold **refs** to each other and message each other directly, worker to
worker over the mesh (`engines.mini.cluster`) -- the driver is only one
more sender.

Read it in this order:

- `engines.mini.messaging` -- the architecture itself, as plain data and
  verbs with a worked example: routing by ref, mailboxes and the order
  per sender, back-pressure by credit, supervision and restarts, the
  messages. No I/O, no threads: read it first.
- `engines.mini.endpoint` -- the shell every process has around that
  state: one lock, pickled payloads, batched frames, the ref and the call
  Future.
- `engines.mini.actorworker` -- a worker: a thread per actor, routing on
  the cluster's reader threads; or, in one process, actors run in turn.
- `engines.mini.actordriver` -- the driver: placement, the cluster's
  events, waiting.
- this module -- the engine, the session and its ``actors()`` context;
  `engines.mini.operators` runs the dataflow and task models on actors.

Worked example -- the in-process form (`engines.mini.cluster.InProcessHost`:
the same state and verbs, one thread, one FIFO of messages, deterministic)::

    >>> class Counter:
    ...     def __init__(self): self.n = 0
    ...     def add(self, k): self.n += k; return self.n
    ...     def relay(self, other, k): other.tell("add", k); return "sent"
    >>> with MiniActorsEngine().start(workers=2, processes=False) as s, s.actors() as actors:
    ...     a, b = actors.spawn(Counter), actors.spawn(Counter)
    ...     a.tell("add", 2)
    ...     print(a.call("add", 3).result(), a.call("relay", b, 5).result(), b.call("add", 0).result())
    ...     rows = s.trace()
    5 sent 5

The driver queued ``spawn`` for worker 0 (round robin), ``spawn`` for
worker 1, then ``add 2`` and ``add 3`` for ``a``; ``result()`` flushed
each worker's queue as one frame. ``a`` handled both adds and replied 5;
``relay`` queued ``add 5`` for worker 1 -- straight there, never through
the driver -- and the trace of the workers' sends shows it::

    >>> sorted({(r["worker"], r["to"], r["what"]) for r in rows
    ...         if r["event"] == "send" and r["worker"] != "driver"}, key=str)
    [(0, 'driver', 'reply'), (0, 1, 'tell'), (1, 'driver', 'reply')]
"""

from __future__ import annotations

import secrets

from engines.api import ActorError, Actors, Dataflow, Session, Tasks
from engines.mini.actordriver import Driver, InProcessDriver
from engines.mini.actorworker import InProcessActorHost
from engines.mini.endpoint import MiniActorRef
from engines.mini.engine import MiniEngine, MiniSession
from engines.plan import Plan
from engines.support import Support

SUPPORTS = {
    "dataflow": Support.emulated("operator actors (one per step per worker) push record batches downstream, "
                                 "as Flink runs a job", streams="streams as micro-batches of such jobs"),
    "tasks": Support.emulated("a pool of stateless worker actors, one per worker; dependencies are resolved "
                              "on the driver"),
    "actors": Support.native(),
}


# ================================================================ the actors() context


class MiniActors(Actors):
    """One ``with session.actors()`` block: the actors it spawned are stopped when it closes.

    ``spawn`` takes two keywords of its own: ``worker=k`` (place it there)
    and ``max_restarts=n`` (restarts after its host dies; default from the
    session) -- a constructor argument with either name cannot be passed.
    """

    def __init__(self, session: "MiniActorsSession"):
        super().__init__(session)
        self.driver: Driver = session.driver
        self.mine: list[MiniActorRef] = []
        self.closed = False

    def spawn(self, cls, *args, name=None, worker=None, max_restarts=None, **kwargs) -> MiniActorRef:
        if self.closed:
            raise ActorError("this actors() context has closed; spawn inside an open `with session.actors()`")
        ref = self.register(name, lambda: self.driver.spawn(cls, args, kwargs, worker, max_restarts))
        self.mine.append(ref)
        return ref

    def gather(self, futures) -> list:
        futures = list(futures)
        self.driver.flush()
        return [f.result() for f in futures]

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.driver.retire(self.mine, "its actors() context has closed")
            self._named.clear()


# ================================================================ engine and session


class MiniActorsEngine(MiniEngine):
    name = "mini-actors"
    architecture = "actors"
    description = "archbench's own engine: stateful actors with mailboxes in worker processes, messaging directly"
    supports = SUPPORTS
    runtime, local_runtime = "engines.mini.actorworker:ActorHost", InProcessActorHost

    def mode_settings(self) -> dict:
        return {"serializer": "pickle protocol 5 (cloudpickle for classes and driver-side arguments that need it)",
                "mailbox": 1024, "batch": 64, "linger_s": 0.002, "send_timeout_s": 60.0, "max_restarts": 3,
                "direct_receive": True, "trace_cap": 100_000}

    def start(self, workers: int = 2, **options) -> Session:
        settings = self.settings(workers, **options)
        token = secrets.token_hex(8)
        runtime = {"token": token, "window": settings["mailbox"], "send_timeout": settings["send_timeout_s"],
                   "batch": settings["batch"], "linger": settings["linger_s"], "trace_cap": settings["trace_cap"]}
        host = self.start_host(settings, {**runtime, "direct": settings["direct_receive"]}, runtime)
        try:
            driver = (Driver if settings["processes"] else InProcessDriver)(
                host, token, max_restarts=settings["max_restarts"], direct=settings["direct_receive"],
                window=runtime["window"], send_timeout=runtime["send_timeout"], batch=runtime["batch"],
                linger=runtime["linger"], trace_cap=runtime["trace_cap"])
        except BaseException:
            host.close()
            raise
        return MiniActorsSession(workers, self.supports, settings, host, driver)


class MiniActorsSession(MiniSession):
    """A mini-actors cluster; ``processes=False`` gives the deterministic in-process form.

        >>> with MiniActorsEngine().start(workers=2, processes=False) as s:
        ...     flow = Dataflow("squares"); flow.read([[1, 2], [3]]).map(lambda x: x * x).collect("sq")
        ...     sorted(s.dataflow(flow)["sq"]), s.worker_pids
        ([1, 4, 9], [])
    """

    engine = "mini-actors"

    def __init__(self, workers, supports, settings, host, driver: Driver):
        super().__init__(workers, supports, settings, host)
        self.driver = driver
        driver.latencies = self.latencies
        self._closed = False

    def actors(self) -> MiniActors:
        return MiniActors(self)

    def tasks(self) -> Tasks:
        from engines.mini.operators import ActorTasks
        return ActorTasks(self)

    def run_plan(self, plan: Plan) -> dict[str, list]:
        from engines.mini.operators import run_flow
        return run_flow(self, plan)

    def trace(self) -> list[dict]:
        """Message spans and sends of every process since the last call (see `engines.mini.trace`)."""
        return self.driver.trace()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.driver.close()
        finally:
            super().close()
