"""mini-actors: the actor architecture -- stateful actors in worker processes, messaging each other.

This is how Ray runs actors (and Akka, and Orleans). A long-lived **actor**
is an object that lives in one worker process and keeps its state between
messages. Nobody calls its methods: senders put **messages** in its
**mailbox**, and the actor handles them one at a time, in order. Actors
hold **refs** to each other and message each other directly, worker to
worker over the mesh (`engines.mini.cluster`) -- the driver is only one
more sender.

Hosting. Each worker runs an `ActorHost` (the cluster runtime). It hosts
any number of actors; each has its own mailbox (a FIFO) and its own
thread, which handles one message at a time. So a slow actor does not
stall its neighbours, and a method may wait for the reply of another actor
(``other.call(...).result()``) while the worker keeps receiving. The
connection reader threads only *route* (a message goes into a mailbox, a
reply to its Future); user code runs on actor threads only. Routing on the
reader threads (`engines.mini.messaging.deliver_directly`) saves the hop
through the cluster's inbox queue and main thread; ``direct_receive=False``
keeps that hop, for comparison.

Routing. A ref (`MiniActorRef`) is plain data -- the actor's id, its class
name, the session's token and ``home`` (the worker it was spawned on) --
so it pickles, and an actor that receives one can message the target
itself. Every process that sends (the driver, each worker) is a `Sender`
and keeps a location table ``where``; a ref is routed by the table of the
process it is used in, falling back to ``home``. The table changes only
when supervision moves an actor, and the driver then tells every worker.

Ordering. Messages from one sender to one actor keep their order: they
travel one connection (a FIFO), are routed in the order read, and wait in
one mailbox. Nothing is promised between different senders.

Back-pressure (credit-based flow control, per sender process and actor).
A sender may have at most ``window`` messages (the engine setting
``mailbox``, default 1024) to one actor that the actor has not yet handled. The hosting worker counts the messages
it handles from each sender and, every ``window // 2`` of them, sends that
sender a ``credit`` (the running count). A sender out of credit first
flushes what it has queued, then blocks until credit comes back -- so a
flood of tells slows the sender to the actor's pace, and a mailbox holds
at most ``window`` messages per sending process, however fast they come.
A sender blocked for ``send_timeout`` seconds fails with an error that
says why (two actors flooding each other can deadlock: one must ``call``).

Batching. Messages are queued per destination and leave together in one
frame: when the sender is about to wait (``result()``, out of credit),
when ``batch`` of them are queued, when an actor's mailbox runs empty
(its replies go back together), and at the latest about ``linger``
seconds (2 ms) after being queued -- a timer thread polls while messages
flow and sleeps when they stop. A lone call is therefore sent at once, and
a burst of them costs one frame per ``batch``.

Supervision. When a worker dies, the driver (`engines.mini.supervisor`)
restarts each of its actors on a live worker -- the constructor runs
again with the same arguments, so state is fresh -- up to ``max_restarts``
times, and tells every worker the new location. Calls that were in flight
fail with an error naming the actor, the method and how the host died;
later calls reach the new incarnation. Tells in flight are lost
(at-most-once delivery, as in Ray and Akka).

Messages (``cid`` a call id, None for a tell; ``payload`` pickled bytes).
Arguments are pickled when the message is sent, so the actor gets a copy
taken at that moment (as in Ray: mutating a list after telling it changes
nothing), and a value that cannot travel fails its own call at once,
never the connection or a batch::

    to a worker   ("spawn", actor, class name, incarnation, payload of (cls, args, kwargs))
                  ("msg", actor, cid, method, payload of (args, kwargs))
                  ("retire", actor, why)   ("moved", [(actor, (worker | None, incarnation, why))])
                  ("trace", cid)   ("batch", [message, ...])   ("lost", worker, why)
    to a sender   ("reply", cid, ok, payload of the value or the ActorError)
                  ("credit", actor, incarnation, handled so far)
    to the driver ("flow", run, ...)   (operator actors of a dataflow, `engines.mini.operators`)

State of a `Sender` (`engines.mini.messaging`: the driver and every worker)::

    where  = {actor: (worker | None, incarnation, why)}  # None: stopped or dead, ``why`` says how
    calls  = {cid: (Reply, actor, class name, method, worker)}   # asked, not answered yet
    credit = {actor: [incarnation, admitted, credited]}  # flow control: in flight = admitted - credited
    lost   = {worker: why}

State of an `ActorHost` (one per worker), besides::

    actors  = {actor: _Actor}   # hosted here: object, mailbox, thread, handled/credited per sender
    retired = {actor: why}      # stopped here; late messages are answered with that

The driver's own state (placement, recipes for restarts, the outbox) is
in `engines.mini.supervisor`; the dataflow and task models on actors are
in `engines.mini.operators`.

Worked example -- the in-process form (`engines.mini.cluster.InProcessHost`:
the same runtime, one thread, one FIFO of messages, deterministic)::

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

import logging
import queue
import secrets
import threading
import time

from engines import Engine
from engines.api import ActorError, Actors, Dataflow, Future, Session, Tasks
from engines.plan import Plan
from engines.common import invoke
from engines.mini.cluster import DRIVER, Host, InProcessHost
from engines.mini.messaging import MiniActorRef, Reply, Sender, _local, _senders, deliver_directly, pack, \
    remote_error, unpack
from engines.mini.supervisor import Driver
from engines.support import Support
from engines.mini.trace import Recording

log = logging.getLogger("archbench.mini")

SUPPORTS = {
    "dataflow": Support.emulated("operator actors (one per step per worker) push record batches downstream, "
                                 "as Flink runs a job", streams="streams as micro-batches of such jobs"),
    "tasks": Support.emulated("a pool of stateless worker actors, one per worker; dependencies are resolved "
                              "on the driver"),
    "actors": Support.native(),
}


# ================================================================ the runtime in each worker


class _Actor:
    """One hosted actor. ``handled``/``credited``: messages handled per sender, and the count last sent back."""

    __slots__ = ("aid", "cls_name", "inc", "obj", "error", "mailbox", "handled", "credited", "started", "ready",
                 "closed")

    def __init__(self, aid):
        self.aid, self.cls_name, self.inc = aid, aid.rsplit("-", 1)[0], 0
        self.obj, self.error, self.started, self.ready, self.closed = None, None, False, False, False
        self.mailbox = queue.SimpleQueue()      # (source, message, arrival time); None stops the thread
        self.handled, self.credited = {}, {}


class ActorHost(Sender):
    """The cluster runtime of mini-actors: hosts actors, routes messages, sends credit.

    ``threads=False`` is the in-process form: actors run on the calling
    thread, inside `handle`, and everything queued is flushed at its end.
    """

    def __init__(self, ctx, token: str, window: int = 1024, send_timeout: float = 60.0, threads: bool = True,
                 batch: int = 64, linger: float = 0.002, trace_cap: int = 100_000, direct: bool = True):
        super().__init__(ctx.me, token, window=window, send_timeout=send_timeout, threads=threads,
                         batch=batch, linger=linger, trace_cap=trace_cap)
        self.ctx = ctx
        self.actors: dict = {}
        self.retired: dict = {}
        self.warned: set = set()                # retired actors a refused tell was logged for
        if threads:
            _senders[token] = self              # for threads an actor starts itself
            if direct:
                deliver_directly(ctx, "inbox", self.handle)

    def handle(self, source, message) -> None:
        """One message from the cluster (any thread: route only, never run user code here)."""
        kind = message[0]
        if kind == "msg":
            self._deliver(source, message)
        elif kind == "batch":
            for m in message[1]:
                self.handle(source, m)
            return
        elif kind == "reply":
            self.on_reply(*message[1:])
        elif kind == "credit":
            self.on_credit(*message[1:])
        elif kind == "spawn":
            self._spawn(*message[1:])
        elif kind == "retire":
            self._retire(*message[1:])
        elif kind == "moved":
            self.on_moved(message[1])
        elif kind == "lost":
            self.on_lost(message[1], message[2])
        elif kind == "trace":
            self.post(source, ("reply", message[1], True, pack(self.take_trace(), "trace rows")), "trace")
            self.flush()
        if not self.threads:
            self.flush()

    # -- hosting
    def _actor(self, aid) -> _Actor:
        with self.cond:
            actor = self.actors.get(aid)
            if actor is None:                   # a message may overtake its actor's spawn: it waits
                actor = self.actors[aid] = _Actor(aid)
            return actor

    def _spawn(self, aid, cls_name: str, inc: int, payload: bytes) -> None:
        actor = self._actor(aid)
        actor.cls_name, actor.inc, actor.started = cls_name, inc, True
        if self.threads:
            threading.Thread(target=self._serve, args=(actor, payload), daemon=True, name=f"actor {aid}").start()
        else:
            self._construct(actor, payload)
            self._drain(actor)

    def _construct(self, actor: _Actor, payload: bytes) -> None:
        start = time.time()
        try:
            cls, args, kwargs = unpack(payload, f"the class or arguments of {actor.cls_name}")
            actor.obj = cls(*args, **kwargs)
        except ActorError as e:
            actor.error = ActorError(f"{actor.cls_name} actor {actor.aid} could not start: {e}")
        except BaseException as e:
            actor.error = remote_error(f"{actor.cls_name} actor {actor.aid} could not start: "
                                       f"{actor.cls_name}.__init__ raised", e)
        if actor.error is not None:
            log.error("%s", actor.error)
        actor.ready = True
        self.span(actor.aid, "__init__", DRIVER, start, start, time.time())

    def _serve(self, actor: _Actor, payload: bytes) -> None:
        """An actor's thread: build it, then handle its mailbox one message at a time."""
        _local.sender, _local.actor = self, actor.aid
        self._construct(actor, payload)
        mailbox = actor.mailbox
        while True:
            item = mailbox.get()
            if item is None:
                break
            self._run(actor, *item)
            if mailbox.empty():
                self.flush()                    # replies and tells leave together when the mailbox is empty
        actor.closed = True
        self._refuse_all(actor, self.retired.get(actor.aid, "it was retired"))
        self.flush()

    def _drain(self, actor: _Actor) -> None:
        """In-process form: handle what the mailbox holds, here and now."""
        outer = getattr(_local, "sender", None)
        _local.sender = self
        try:
            while actor.ready and not actor.mailbox.empty():
                item = actor.mailbox.get_nowait()
                if item is not None:
                    self._run(actor, *item)
        finally:
            _local.sender = outer

    def _deliver(self, source, message) -> None:
        aid = message[1]
        actor = self.actors.get(aid)
        if actor is None:
            if aid in self.retired:
                return self._refuse(source, message, self.retired[aid])
            actor = self._actor(aid)
        actor.mailbox.put((source, message, time.time()))
        if actor.closed:                        # retired while we routed: its thread will not see this
            self._refuse_all(actor, self.retired.get(aid, "it was retired"))
        elif not self.threads and actor.ready:
            self._drain(actor)

    def _refuse(self, source, message, why: str) -> None:
        _, aid, cid, method, _ = message
        error = ActorError(f"{aid.rsplit('-', 1)[0]} actor {aid} is stopped: {why}; {method}() was not run")
        if cid is None:
            if aid not in self.warned:          # once per actor: senders that do not know yet may send many
                self.warned.add(aid)
                log.warning("tell %s (further tells to it are dropped silently)", error)
        else:
            self.post(source, ("reply", cid, False, pack(error, "an error")), "reply")

    def _run(self, actor: _Actor, source, message, arrived: float) -> None:
        """Handle one message: run the method, reply to a call, give the sender credit."""
        _, aid, cid, method, payload = message
        start = time.time()
        try:
            if actor.error is not None:
                raise actor.error
            args, kwargs = unpack(payload, f"the arguments of {actor.cls_name}.{method}()")
            value, ok = invoke(actor.obj, aid, method, args, kwargs), True
        except ActorError as e:
            value, ok = e, False
        except BaseException as e:              # SystemExit and the like: the actor keeps serving
            value, ok = remote_error(f"{actor.cls_name} actor {aid}: {method}() raised", e), False
        self.span(aid, method, source, arrived, start, time.time())
        if cid is not None:
            try:
                reply = pack(value, f"the reply of {actor.cls_name}.{method}()")
            except ActorError as e:
                ok, reply = False, pack(e, "an error")
            self.post(source, ("reply", cid, ok, reply), "reply")
        elif not ok:
            log.error("tell %s", value)         # a tell has no one to answer: say it where it can be seen
        if self.window:
            n = actor.handled[source] = actor.handled.get(source, 0) + 1
            if n - actor.credited.get(source, 0) >= self.window // 2:
                actor.credited[source] = n
                self.post(source, ("credit", aid, actor.inc, n), "credit")

    def _retire(self, aid, why: str) -> None:
        with self.cond:
            self.retired[aid] = why
            actor = self.actors.pop(aid, None)
        if actor is not None and actor.started and self.threads:
            actor.mailbox.put(None)             # its thread handles what came before, then ends
        elif actor is not None:                 # never built here: what waited for it is refused
            actor.closed = True
            self._refuse_all(actor, why)

    def _refuse_all(self, actor: _Actor, why: str) -> None:
        while True:
            try:
                item = actor.mailbox.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self._refuse(item[0], item[1], why)

    # -- sending
    def transmit(self, dest, message) -> int:
        return self.ctx.send(dest, message)

    def wait(self, future: Reply, timeout) -> None:
        if not self.threads:
            raise ActorError(f"{future.name}: in the in-process form every actor runs on one thread, so a "
                             "method cannot wait for a reply; use tell, or processes=True")
        if future.name.rsplit(".", 1)[0] == getattr(_local, "actor", None):
            raise ActorError(f"{future.name}: an actor cannot wait for its own reply -- the message waits in "
                             "its mailbox until the method that waits for it returns; call the method "
                             "directly (self.method()), or tell")
        self.flush()
        Future._fetch(future, timeout)


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


class MiniActorsEngine(Engine):
    name = "mini-actors"
    architecture = "actors"
    description = "archbench's own engine: stateful actors with mailboxes in worker processes, messaging directly"
    supports = SUPPORTS

    def settings(self, workers: int, **options) -> dict:
        return {"workers": workers, "processes": True, "start_method": "spawn (fresh interpreters)",
                "transport": "TCP loopback, HMAC-SHA256 authenticated", "serializer": "pickle protocol 5 "
                "(cloudpickle for classes and driver-side arguments that need it)",
                "mailbox": 1024, "batch": 64, "linger_s": 0.002, "send_timeout_s": 60.0, "max_restarts": 3,
                "direct_receive": True, "trace_cap": 100_000, "heartbeat_s": 1.0, "heartbeat_timeout_s": 30.0,
                **options}

    def start(self, workers: int = 2, **options) -> Session:
        settings = self.settings(workers, **options)
        token = secrets.token_hex(8)
        runtime = {"token": token, "window": settings["mailbox"], "send_timeout": settings["send_timeout_s"],
                   "batch": settings["batch"], "linger": settings["linger_s"], "trace_cap": settings["trace_cap"]}
        if settings["processes"]:
            host = Host(workers, "engines.mini.actors:ActorHost", heartbeat=settings["heartbeat_s"],
                        timeout=settings["heartbeat_timeout_s"],
                        options={**runtime, "direct": settings["direct_receive"]})
        else:
            host = InProcessHost(workers, ActorHost, options={**runtime, "threads": False})
        try:
            driver = Driver(host, token, max_restarts=settings["max_restarts"], direct=settings["direct_receive"],
                            window=runtime["window"], send_timeout=runtime["send_timeout"],
                            threads=settings["processes"], batch=runtime["batch"], linger=runtime["linger"],
                            trace_cap=runtime["trace_cap"], latencies=None)
        except BaseException:
            host.close()
            raise
        return MiniActorsSession(workers, self.supports, settings, host, driver)


class MiniActorsSession(Recording, Session):
    """A mini-actors cluster; ``processes=False`` gives the deterministic in-process form.

        >>> with MiniActorsEngine().start(workers=2, processes=False) as s:
        ...     flow = Dataflow("squares"); flow.read([[1, 2], [3]]).map(lambda x: x * x).collect("sq")
        ...     sorted(s.dataflow(flow)["sq"]), s.worker_pids
        ([1, 4, 9], [])
    """

    engine = "mini-actors"

    def __init__(self, workers, supports, settings, host, driver: Driver):
        super().__init__(workers, supports, settings)
        self.host, self.driver = host, driver
        driver.latencies = self.latencies
        self._closed = False

    @property
    def worker_pids(self) -> list[int]:
        return list(self.host.worker_pids)

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
            self.host.close()
