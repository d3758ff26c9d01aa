"""The shell every mini-actors process has around its messaging state: refs, payloads, a lock, frames.

`engines.mini.messaging` decides (routes, credit, calls, mailboxes,
restarts); an `Endpoint` -- the driver's (`engines.mini.actordriver`) or a
worker's (`engines.mini.actorworker`) -- does what it cannot: it holds the
state behind one lock (`apply` runs a verb under it, then acts on what the
verb left), pickles arguments and replies, sends the outbox as frames,
settles the Futures of calls, and makes a sender wait for credit. Also
here: the ref user code holds (`MiniActorRef`), the call Future (`Reply`)
and the linger timer.

Batching. Messages wait in the outbox and leave together, one frame per
destination: when the sender is about to wait (``result()``, out of
credit), when ``batch`` of them are queued, when an actor's mailbox runs
empty (its replies go back together), and at the latest about ``linger``
seconds (2 ms) after being queued -- a timer thread polls while messages
flow and sleeps when they stop. A lone call is therefore sent at once, and
a burst of them costs one frame per ``batch``.

Arguments are pickled when the message is sent, so the actor gets a copy
taken at that moment (mutating a list after telling it changes nothing),
and a value that cannot travel fails its own call at once, never a frame::

    >>> pack(([1, "a"], {}), "the arguments of X.f()") == pickle.dumps(([1, "a"], {}), protocol=5)
    True
    >>> pack(threading.Lock(), "the reply of X.f()")
    Traceback (most recent call last):
    ...
    engines.api.ActorError: the reply of X.f() could not be pickled (TypeError: cannot pickle '_thread.lock' object); an actor gets a copy of each argument and its caller a copy of each reply, so send plain data or refs

`InProcess` is the other form of the same shell: one thread runs every
process, so nobody may wait (for credit, or for a reply inside a method)
and nothing lingers.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time

import cloudpickle

from engines.api import ActorError, ActorRef, Future
from engines.common import OneShot, plain_args
from engines.errors import remote_traceback
from engines.mini import messaging
from engines.mini.cluster import DRIVER, ClusterError
from engines.mini.trace import Events

log = logging.getLogger("archbench.mini")

_endpoints: dict = {}             # session token -> the Endpoint of this process
_here = threading.local()         # .endpoint, .actor: what the code on this thread runs as


# ================================================================ refs and payloads


class MiniActorRef(ActorRef):
    """The address of a mini actor: plain data, so it pickles into messages and other actors.

    ``call``/``tell`` go through the `Endpoint` of the process they run in --
    the actor's host worker when used inside an actor, the driver outside.
    """

    def __init__(self, actor_id: str, cls_name: str, token: str, home: int):
        super().__init__(actor_id, cls_name)
        self.token, self.home = token, home

    def call(self, method: str, *args, **kwargs) -> Future:
        return endpoint_for(self).send(self, method, args, kwargs, reply=True)

    def tell(self, method: str, *args, **kwargs) -> None:
        endpoint_for(self).send(self, method, args, kwargs, reply=False)

    def __reduce__(self):
        return MiniActorRef, (self.actor_id, self.cls_name, self.token, self.home)

    def __eq__(self, other):
        return isinstance(other, MiniActorRef) and (other.actor_id, other.token) == (self.actor_id, self.token)

    def __hash__(self):
        return hash((self.actor_id, self.token))


def endpoint_for(ref: MiniActorRef) -> "Endpoint":
    """The Endpoint that messages ``ref`` from this thread: the running actor's host, else this process's."""
    endpoint = getattr(_here, "endpoint", None)
    if endpoint is not None and endpoint.token == ref.token:
        return endpoint
    endpoint = _endpoints.get(ref.token)
    if endpoint is None:
        raise ActorError(f"{ref.cls_name} actor {ref.actor_id}: its mini-actors session is not running in "
                         "this process (it has closed, or the ref was sent outside its cluster); "
                         "spawn the actor again in a running session")
    return endpoint


def run_as(endpoint, actor) -> tuple:
    """From now on, code on this thread runs as ``actor`` of ``endpoint``; what it ran as before."""
    before = getattr(_here, "endpoint", None), getattr(_here, "actor", None)
    _here.endpoint, _here.actor = endpoint, actor
    return before


def running_actor():
    """The id of the actor whose method runs on this thread, or None."""
    return getattr(_here, "actor", None)


def to_driver(message: tuple) -> None:
    """Send ``message`` to the driver from inside an actor's method (the engine's own operator actors use it)."""
    endpoint = getattr(_here, "endpoint", None)
    if endpoint is None or endpoint.me == DRIVER:
        raise ActorError("to_driver is for methods of actors running in a mini-actors worker")
    endpoint.apply(messaging.post, DRIVER, message, message[0])


def pack(obj, what: str, *names, code: bool = False) -> bytes:
    """Pickle ``obj`` for a message (cloudpickle when ``code`` or when pickle refuses); errors teach.

    ``what`` names it in an error, formatted with ``names`` only then (it costs nothing per message).
    """
    try:
        if not code:
            try:
                return pickle.dumps(obj, protocol=5)
            except Exception:
                pass
        return cloudpickle.dumps(obj, protocol=5)
    except Exception as e:
        what = what.format(*names)
        raise ActorError(f"{what} could not be pickled ({type(e).__name__}: {e}); an actor gets a copy of "
                         "each argument and its caller a copy of each reply, so send plain data or refs") from None


def pack_recipe(obj, what: str) -> bytes:
    """Pickle an actor's class and constructor arguments (cloudpickle: the class may live in ``__main__``)."""
    try:
        return cloudpickle.dumps(obj, protocol=5)
    except Exception as e:
        raise ActorError(f"{what} could not be pickled ({type(e).__name__}: {e}); the worker builds the "
                         "actor from a copy, so pass a class and plain arguments (or refs)") from None


def unpack(payload: bytes, what: str, *names):
    """Unpickle a payload; ``what`` (formatted with ``names``) names it in the error."""
    try:
        return pickle.loads(payload)
    except Exception as e:
        what = what.format(*names)
        raise ActorError(f"{what} could not be unpickled here ({type(e).__name__}: {e}); is its class "
                         "importable by the workers (defined in a module, not only in a notebook cell)?") from None


def remote_error(message: str, error: BaseException) -> ActorError:
    return ActorError(f"{message} {remote_traceback(error)}")


# ================================================================ the call Future


class Reply(Future):
    """The Future of a call (an `engines.api.Future` on a `OneShot`); waiting for it first flushes its owner."""

    _new_event = OneShot

    def __init__(self, name: str, owner: "Endpoint", log=None):
        super().__init__(name, log)
        self.owner = owner

    def _fetch(self, timeout):
        self.owner.wait(self, timeout)          # send what its call may still be queued with (in-process: run it)
        super()._fetch(timeout)


# ================================================================ the shell


class Endpoint:
    """A process's messaging state behind a lock, and the I/O around it (the threaded form).

    Subclasses say how a frame leaves (`transmit`), what to do with the
    kinds of message that are not messaging's (`other`), and, for a worker,
    how woken actors run (`woken`).
    """

    KINDS = frozenset({"batch", "msg", "spawn", "retire", "moved", "reply", "credit", "lost", "trace"})

    def __init__(self, me, token: str, *, workers=(), window: int, send_timeout: float, batch: int,
                 linger: float, trace_cap: int, latencies=None):
        self.me, self.token = me, token
        self.state = messaging.new_state(me, workers, window=window)
        self.lock = threading.Lock()                        # guards ``state``; never taken twice by one thread
        self.cond = threading.Condition(self.lock)          # senders waiting for credit or a route wait on it
        self.flush_lock = threading.Lock()                  # one flush at a time: frames to a peer stay in order
        self.send_timeout, self.batch, self.latencies = send_timeout, batch, latencies
        self.events = Events(me, trace_cap)
        self.linger = _Linger(self, linger) if linger else None

    def register(self) -> None:
        """Be the endpoint of this process for refs of this session (threads an actor starts use it)."""
        _endpoints[self.token] = self

    # -- running verbs
    def apply(self, verb, *args):
        """``verb(state, *args)`` under the lock; then settle, wake and send what it left. Its result."""
        state = self.state
        with self.lock:
            result = verb(state, *args)
            effects = self._pending()
        self._release(effects)
        return result

    def _pending(self):
        """The effects the verbs left (under the lock), or None when there are none."""
        state = self.state
        return self._effects() if state["wake"] or state["outcomes"] or state["unblocked"] or state["log"] else None

    def _release(self, effects) -> None:
        """After the lock: act on ``effects``, and send what is queued."""
        if effects is not None:
            self._act(effects)
        if self.state["queued"]:
            self.queued()

    def _effects(self):
        """What the verbs left for the shell, taken out of the state (the lock held)."""
        state = self.state
        if state["unblocked"]:
            state["unblocked"] = False
            self.cond.notify_all()
        effects = state["outcomes"], state["wake"], state["log"]
        state["outcomes"], state["wake"], state["log"] = [], [], []
        return effects

    def _act(self, effects) -> None:
        outcomes, wake, notes = effects
        for waiter, ok, value, cls_name, method in outcomes:
            if type(value) is bytes:
                try:
                    value = unpack(value, "the reply of {}.{}()", cls_name, method)
                except ActorError as e:
                    ok, value = False, e
            waiter._set_result(value) if ok else waiter._set_error(value)
        if wake:
            self.woken(wake)
        for note in notes:
            log.warning("%s", note)

    # -- sending
    def send(self, ref: MiniActorRef, method: str, args, kwargs, reply: bool, internal: bool = False):
        """Send one message to ``ref``'s actor; a Reply for a call. May wait for credit or a new route.

        ``internal`` (the engine's own messages, possibly sent from a reader
        thread): never waits for credit, and its latency is not recorded.
        """
        code = self.me == DRIVER and not plain_args(args, kwargs)
        payload = pack((args, kwargs), "the arguments of {}.{}()", ref.cls_name, method, code=code)
        deadline = None
        while True:
            future = Reply(f"{ref.actor_id}.{method}", self, None if internal else self.latencies) if reply else None
            try:
                if self.apply(messaging.send, ref.actor_id, ref.cls_name, ref.home, method, payload, future,
                              not internal):
                    return future
            except ActorError as e:
                if not reply:
                    raise
                future = Reply(f"{ref.actor_id}.{method}", self)    # a call fails its Future, as on the worker
                future._set_error(e)
                return future
            deadline = self.blocked(ref, not internal, deadline)

    def blocked(self, ref: MiniActorRef, flow: bool, deadline):
        """`send` must wait (no route, or no credit): flush, then wait for a change, up to ``send_timeout``."""
        now = time.monotonic()
        deadline = now + self.send_timeout if deadline is None else deadline
        if now > deadline:
            with self.lock:
                raise messaging.why_waiting(self.state, ref.actor_id, ref.cls_name, ref.home, self.send_timeout)
        self.flush()                            # what we queued may be what the actor needs to make progress
        with self.cond:
            self.cond.wait_for(lambda: messaging.can_send(self.state, ref.actor_id, ref.cls_name, ref.home, flow),
                               timeout=min(1.0, max(0.0, deadline - now)))
        return deadline

    def queued(self) -> None:
        """Something is in the outbox: send it now if a batch is full, else within ``linger``."""
        if self.state["queued"] >= self.batch:
            self.flush()
        elif self.linger is not None:
            self.linger.arm()

    def flush(self) -> None:
        """Send everything queued, one frame per destination (``("batch", [...])`` for more than one)."""
        with self.flush_lock:
            with self.lock:
                out, kinds = messaging.take_outbox(self.state)
            for dest, messages in out.items():
                try:
                    nbytes = self.transmit(dest, messages[0] if len(messages) == 1 else ("batch", messages))
                except (OSError, ClusterError):
                    continue                    # that process is gone: its loss fails the calls it had
                self.events.sent(dest, nbytes, kinds[dest])

    def wait(self, future: Reply, timeout) -> None:
        """A caller is about to wait for ``future``: flush (its call may still be queued here)."""
        self.flush()

    # -- receiving
    def read(self, source, message) -> bool:
        """The cluster's delivery hook: take our kinds of message on the thread that read them."""
        if message[0] not in self.KINDS:
            return False
        try:
            self.receive(source, message)
        except Exception:
            log.exception("mini-actors: routing %s from %s failed", message[0], source)
        return True

    def receive(self, source, message) -> None:
        """Apply a message (or a batch) to the state under one lock; then act on it. Any thread."""
        kind, state, others = message[0], self.state, None
        with self.lock:
            if kind != "batch":
                if not messaging.receive(state, source, message):
                    others = [message]
            else:
                for m in message[1]:
                    if not messaging.receive(state, source, m):
                        others = others or []
                        others.append(m)
            effects = self._pending()
        self._release(effects)
        if others:
            for m in others:
                self.other(source, m)
        if kind == "lost":
            self.lost(message[1], message[2])

    def other(self, source, message) -> None:
        """A message messaging does not know (``trace``, ``flow``, ...)."""

    def lost(self, worker, why: str) -> None:
        """After ``worker``'s loss is applied: send what it left (restarts, new routes) at once."""
        self.flush()

    def woken(self, wake: list) -> None:
        """``[(actor, item | None)]``: actors spawned here, or idle ones handed a message (a worker's)."""

    # -- to implement
    def transmit(self, dest, message) -> int:
        """Send one message now; the bytes written."""
        raise NotImplementedError

    def close(self) -> None:
        self.apply(messaging.close, "its mini-actors session has closed")
        if self.linger is not None:
            self.linger.close()
        if _endpoints.get(self.token) is self:
            del _endpoints[self.token]


class InProcess:
    """The in-process form of an Endpoint (a mixin before it): one thread runs every process.

    So no flow control (nobody could wait for credit: ``window=0``), no
    linger (the caller flushes when it hands over), and a sender that
    finds no route fails at once.
    """

    def __init__(self, *args, **options):
        super().__init__(*args, **{**options, "window": 0, "linger": 0})

    def blocked(self, ref, flow, deadline):
        with self.lock:
            raise messaging.why_waiting(self.state, ref.actor_id, ref.cls_name, ref.home, self.send_timeout)

    def queued(self) -> None:
        pass


class _Linger:
    """Flushes what a process queued within about ``delay`` s, even if nobody waits for it.

    While messages keep coming it polls every ``delay`` s (flushing only if
    something is still queued); after a quiet spell (`IDLE` polls with the
    outbox empty) it sleeps until `arm` wakes it. So a busy sender never
    pays a wake-up per message.
    """

    IDLE = 200

    def __init__(self, endpoint: Endpoint, delay: float):
        self.endpoint, self.delay = endpoint, delay
        self.active, self.closed = False, False
        self.wake = threading.Event()
        threading.Thread(target=self._run, daemon=True, name="mini-actors linger").start()

    def arm(self) -> None:
        """Something was queued (the caller queued it before calling)."""
        if not self.active:
            self.active = True
            self.wake.set()

    def _run(self) -> None:
        state = self.endpoint.state
        while not self.closed:
            self.wake.wait()
            self.wake.clear()
            quiet = 0
            while self.active and not self.closed:
                time.sleep(self.delay)
                if state["queued"]:
                    quiet = 0
                    try:
                        self.endpoint.flush()
                    except Exception:
                        log.exception("mini-actors: a timed flush failed")
                elif (quiet := quiet + 1) >= self.IDLE:
                    self.active = False
                    if state["queued"]:         # queued while we were deciding: stay awake
                        self.active = True

    def close(self) -> None:
        self.closed = True
        self.wake.set()
