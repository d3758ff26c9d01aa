"""Messaging for mini-actors: what every process that sends to actors has.

The driver and every worker are each a `Sender`: they route refs by a
location table, keep the calls waiting for replies, and count credit (the
flow control described in `engines.mini.actors`). Here too: the ref
(`MiniActorRef`), pickled payloads whose errors teach, the call Future
(`Reply`), the linger timer that bounds how long a queued message waits,
and delivery on the threads that read the connections.

State of a `Sender` (guarded by ``cond``)::

    where  = {actor: (worker | None, incarnation, why)}  # None: stopped or dead, ``why`` says how
    calls  = {cid: (Reply, actor, class name, method, worker)}   # asked, not answered yet
    credit = {actor: [incarnation, admitted, credited]}  # flow control: in flight = admitted - credited
    lost   = {worker: why}
    outbox = {destination: [message, ...]}               # queued, not sent yet (guarded by ``out_lock``)

    >>> pack(([1, "a"], {}), "the arguments of X.f()") == pickle.dumps(([1, "a"], {}), protocol=5)
    True
    >>> pack(threading.Lock(), "the reply of X.f()")
    Traceback (most recent call last):
    ...
    engines.api.ActorError: the reply of X.f() could not be pickled (TypeError: cannot pickle '_thread.lock' object); an actor gets a copy of each argument and its caller a copy of each reply, so send plain data or refs
"""

from __future__ import annotations

import itertools
import logging
import pickle
import queue
import threading
import time

import cloudpickle

from engines.api import ActorError, ActorRef, Future
from engines.common import remote_traceback
from engines.mini.cluster import DRIVER, ClusterError

log = logging.getLogger("archbench.mini")

_local = threading.local()        # .sender: the Sender of the actor this thread runs
_senders: dict = {}               # session token -> the Sender of this process
_PLAIN = frozenset({int, float, str, bytes, bool, type(None)})
MINE = ("batch", "msg", "spawn", "retire", "moved", "reply", "credit", "trace", "lost", "flow", "runtime-error")


# ================================================================ refs and payloads


class MiniActorRef(ActorRef):
    """The address of a mini actor: plain data, so it pickles into messages and other actors.

    ``call``/``tell`` go through the `Sender` of the process they run in --
    the actor's host worker when used inside an actor, the driver outside.
    """

    def __init__(self, actor_id: str, cls_name: str, token: str, home: int):
        super().__init__(actor_id, cls_name)
        self.token, self.home = token, home

    def call(self, method: str, *args, **kwargs) -> Future:
        return sender_for(self).send(self, method, args, kwargs, reply=True)

    def tell(self, method: str, *args, **kwargs) -> None:
        sender_for(self).send(self, method, args, kwargs, reply=False)

    def __reduce__(self):
        return MiniActorRef, (self.actor_id, self.cls_name, self.token, self.home)

    def __eq__(self, other):
        return isinstance(other, MiniActorRef) and (other.actor_id, other.token) == (self.actor_id, self.token)

    def __hash__(self):
        return hash((self.actor_id, self.token))


def sender_for(ref: MiniActorRef) -> "Sender":
    """The Sender that messages ``ref`` from this thread: the running actor's host, else this process's."""
    sender = getattr(_local, "sender", None)
    if sender is not None and sender.token == ref.token:
        return sender
    sender = _senders.get(ref.token)
    if sender is None:
        raise ActorError(f"{ref.cls_name} actor {ref.actor_id}: its mini-actors session is not running in "
                         "this process (it has closed, or the ref was sent outside its cluster); "
                         "spawn the actor again in a running session")
    return sender


def pack(obj, what: str, *, code: bool = False) -> bytes:
    """Pickle ``obj`` for a message (cloudpickle when ``code`` or when pickle refuses); errors teach."""
    try:
        if not code:
            try:
                return pickle.dumps(obj, protocol=5)
            except Exception:
                pass
        return cloudpickle.dumps(obj, protocol=5)
    except Exception as e:
        raise ActorError(f"{what} could not be pickled ({type(e).__name__}: {e}); an actor gets a copy of "
                         "each argument and its caller a copy of each reply, so send plain data or refs") from None


def unpack(payload: bytes, what: str):
    try:
        return pickle.loads(payload)
    except Exception as e:
        raise ActorError(f"{what} could not be unpickled here ({type(e).__name__}: {e}); is its class "
                         "importable by the workers (defined in a module, not only in a notebook cell)?") from None


def remote_error(message: str, error: BaseException) -> ActorError:
    return ActorError(f"{message} {remote_traceback(error)}")


class _Once:
    """A one-shot event made of one lock (held until set): what a Future needs of ``threading.Event``.

    An Event is a Condition and two locks -- about ten times the cost of
    the rest of a call's bookkeeping here -- and its wake-up goes through a
    waiter list. One lock is made in a fraction of that and wakes its waiter directly.
    """

    __slots__ = ("_lock", "_set")

    def __init__(self):
        self._lock = threading.Lock()
        self._lock.acquire()
        self._set = False

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:                      # Future._settle calls it once, under its own lock
        if not self._set:
            self._set = True
            self._lock.release()

    def wait(self, timeout=None) -> bool:
        if self._set:
            return True
        if self._lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            self._lock.release()                # let the next waiter through
        return self._set


class Reply(Future):
    """The Future of a call; waiting for it first flushes what its sender has queued.

    It is an `engines.api.Future` built with a one-lock event (`_Once`)
    instead of a ``threading.Event``: the attributes below are the ones
    ``Future.__init__`` sets.
    """

    def __init__(self, name: str, owner: "Sender", log=None):
        self.name, self._log, self.owner = name, log, owner
        self._t_submit = time.perf_counter()
        self._event = _Once()
        self._lock = threading.Lock()
        self._callbacks = []
        self._value = self._error = None

    def _fetch(self, timeout):
        self.owner.wait(self, timeout)


# ================================================================ senders


class Sender:
    """What every process that messages actors has: locations, calls awaiting replies, credit.

    Subclasses say how a frame leaves (`transmit`) and how a caller waits for a reply (`wait`).
    """

    def __init__(self, me, token: str, *, window: int, send_timeout: float, threads: bool,
                 batch: int, linger: float, trace_cap: int, latencies=None):
        self.me, self.token, self.threads = me, token, threads
        self.window = window if threads else 0          # in one thread, nobody could wait for credit
        self.send_timeout, self.batch, self.latencies = send_timeout, batch, latencies
        self.cond = threading.Condition(threading.Lock())   # never taken twice by one thread
        self.where: dict = {}
        self.calls: dict = {}
        self.credit: dict = {}
        self.lost: dict = {}
        self.ids = itertools.count(1)
        self.events: list = []                  # trace events as tuples; rows are made by take_trace
        self.trace_cap, self.overflow = trace_cap, {}
        self.outbox: dict = {}                  # dest -> [message, ...] queued, not sent yet
        self.kinds: dict = {}                   # dest -> {kind: count} of those, for the trace
        self.queued = 0
        self.out_lock, self.flush_lock = threading.Lock(), threading.Lock()
        self.linger = _Linger(self, linger) if threads and linger else None
        self.closed = False

    # -- sending
    def send(self, ref: MiniActorRef, method: str, args, kwargs, reply: bool, internal: bool = False):
        """Queue one message for ``ref``'s actor; a Reply for a call. May wait for credit or a new location.

        ``internal`` (the engine's own messages, possibly sent from a reader
        thread): never waits for credit, and its latency is not recorded.
        """
        code = self.me == DRIVER and not (_PLAIN.issuperset(map(type, args))
                                          and (not kwargs or _PLAIN.issuperset(map(type, kwargs.values()))))
        payload = pack((args, kwargs), f"the arguments of {ref.cls_name}.{method}()", code=code)
        try:
            dest, cid, future = self._admit(ref, method, reply, not internal)
        except ActorError as e:
            if not reply:
                raise
            future = Reply(f"{ref.actor_id}.{method}", self)       # a call fails its Future, as on the worker
            future._set_error(e)
            return future
        self.post(dest, ("msg", ref.actor_id, cid, method, payload), "call" if reply else "tell")
        return future

    def _admit(self, ref: MiniActorRef, method: str, reply: bool, flow: bool):
        """Where the message goes, once it may; registers a call atomically with the choice. Mutates the state."""
        deadline = time.monotonic() + self.send_timeout
        while True:
            with self.cond:
                dest = self._place(ref, flow)
                if dest is not None:
                    if flow and self.window:
                        self.credit[ref.actor_id][1] += 1
                    if not reply:
                        return dest, None, None
                    cid = next(self.ids)
                    future = Reply(f"{ref.actor_id}.{method}", self, self.latencies if flow else None)
                    self.calls[cid] = (future, ref.actor_id, ref.cls_name, method, dest)
                    return dest, cid, future
                if not self.threads or time.monotonic() > deadline:
                    raise self._stuck(ref)
            self.flush()                        # what we queued may be what the actor needs to make progress
            with self.cond:
                self.cond.wait_for(lambda: self._place(ref, flow, probe=True) is not None,
                                   timeout=min(1.0, max(0.0, deadline - time.monotonic())))

    def _place(self, ref: MiniActorRef, flow: bool, probe: bool = False):
        """The worker to send to now, or None to wait (host being replaced, or out of credit)."""
        aid = ref.actor_id
        worker, inc, why = self.where.get(aid) or (ref.home, 0, "")
        if self.closed:
            worker, why = None, "its mini-actors session has closed"
        if worker is None:
            if probe:
                return "stopped"                # stop waiting: the caller raises
            raise ActorError(f"{ref.cls_name} actor {aid} is stopped: {why}")
        if worker in self.lost:
            return None
        if flow and self.window:
            entry = self.credit.get(aid)
            if entry is None or entry[0] != inc:
                entry = self.credit[aid] = [inc, 0, 0]
            if entry[1] - entry[2] >= self.window:
                return None
        return worker

    def _stuck(self, ref: MiniActorRef) -> ActorError:
        worker, _, _ = self.where.get(ref.actor_id) or (ref.home, 0, "")
        if worker in self.lost:
            return ActorError(f"{ref.cls_name} actor {ref.actor_id}: its host {self.lost[worker]}, and no new "
                              f"location was announced within {self.send_timeout:.0f} s")
        return ActorError(f"back-pressure: {ref.cls_name} actor {ref.actor_id} has not handled {self.window} "
                          f"messages from {_name(self.me)} in {self.send_timeout:.0f} s; is it stuck, or are two "
                          "actors flooding each other (then one must call and wait)? A bigger window "
                          "(mailbox=...) only delays this")

    # -- receiving
    def on_reply(self, cid, ok: bool, payload) -> None:
        entry = self.calls.pop(cid, None)
        if entry is None:
            return                              # failed already (its host was lost) or cancelled
        future, aid, cls_name, method, _ = entry
        try:
            value = unpack(payload, f"the reply of {cls_name}.{method}()")
        except ActorError as e:
            ok, value = False, e
        future._set_result(value) if ok else future._set_error(value)

    def on_credit(self, aid, inc, handled: int) -> None:
        with self.cond:
            entry = self.credit.get(aid)
            if entry is not None and entry[0] == inc and handled > entry[2]:
                entry[2] = handled
                self.cond.notify_all()

    def on_lost(self, worker, why: str) -> None:
        """Fail the calls in flight to ``worker``; the driver also restarts its actors (`supervise`)."""
        with self.cond:
            if worker in self.lost:
                return
            self.lost[worker] = why
            failed = [self.calls.pop(cid) for cid, c in list(self.calls.items()) if c[4] == worker]
            self.supervise(worker, why)
            self.cond.notify_all()
        for future, aid, cls_name, method, _ in failed:
            future._set_error(ActorError(f"{cls_name} actor {aid}: {method}() was lost in flight: its host "
                                         f"{why}. {self.after_loss(aid)}"))
        self.flush()

    def on_moved(self, moves) -> None:
        """New locations from the driver; calls sent to an old one fail (that incarnation is gone)."""
        with self.cond:
            failed = []
            for aid, place in moves:
                self.where[aid] = place
                failed += [self.calls.pop(cid) for cid, c in list(self.calls.items())
                           if c[1] == aid and c[4] != place[0]]
            self.cond.notify_all()
        for future, aid, cls_name, method, worker in failed:
            future._set_error(ActorError(f"{cls_name} actor {aid}: {method}() was lost in flight: its host "
                                         f"{_name(worker)} was lost. {self.after_loss(aid)}"))

    def supervise(self, worker, why: str) -> None:
        """Called with ``cond`` held when ``worker`` is lost. Workers leave it to the driver."""

    def after_loss(self, aid) -> str:
        return "The driver restarts it elsewhere if it has restarts left; call again to reach it."

    # -- trace
    def sent(self, to, nbytes: int, kinds: dict) -> None:
        """Record a frame sent (``kinds``: messages in it by kind); past ``trace_cap`` events, only totals."""
        if "trace" in kinds:
            return                              # fetching the trace is not part of what it shows
        if len(self.events) < self.trace_cap:
            self.events.append(("send", time.time(), to, nbytes, kinds))
        else:
            total = self.overflow.setdefault(to, {})
            for kind, n in kinds.items():
                total[kind] = total.get(kind, 0) + n
            total[None] = total.get(None, 0) + nbytes

    def span(self, aid: str, method: str, sender, arrived: float, start: float, end: float) -> None:
        if len(self.events) < self.trace_cap:
            self.events.append(("span", aid, method, sender, arrived, start, end))

    def take_trace(self) -> list[dict]:
        """The events since the last call as rows of `engines.mini.trace` (kept as tuples until now: cheaper)."""
        events, overflow, self.events, self.overflow = self.events, self.overflow, [], {}
        rows, me = [], self.me
        for event in events:
            if event[0] == "span":
                _, aid, method, sender, arrived, start, end = event
                rows.append({"event": "span", "worker": me, "step": aid, "what": "message", "method": method,
                             "sender": sender, "wait": start - arrived, "start": start, "end": end})
            else:
                _, at, to, nbytes, kinds = event
                rows.append({"event": "send", "worker": me, "to": to, "bytes": nbytes, "items": sum(kinds.values()),
                             "step": "actors", "what": "+".join(sorted(kinds)), "time": at})
        now = time.time()
        for to, kinds in overflow.items():
            nbytes = kinds.pop(None)
            rows.append({"event": "send", "worker": me, "to": to, "bytes": nbytes, "items": sum(kinds.values()),
                         "step": "actors", "what": "+".join(sorted(kinds)) + " (beyond trace_cap)", "time": now})
        return rows

    # -- batching
    def post(self, dest, message, kind: str) -> None:
        """Queue ``message`` for ``dest``; it leaves with the next flush (see "Batching")."""
        if dest == self.me and self.threads:
            self.transmit(dest, message)        # to ourselves: routed at once, here (never inside a flush)
            return
        with self.out_lock:
            queued = self.enqueue(dest, message, kind)
        if queued >= self.batch:
            self.flush()
        elif self.linger is not None:
            self.linger.arm()

    def enqueue(self, dest, message, kind: str) -> int:
        """Add to the outbox (``out_lock`` held); how many messages are queued. Mutates the outbox."""
        self.outbox.setdefault(dest, []).append(message)
        kinds = self.kinds.setdefault(dest, {})
        kinds[kind] = kinds.get(kind, 0) + 1
        self.queued += 1
        return self.queued

    def flush(self) -> None:
        """Send everything queued, one ``("batch", [...])`` frame per destination."""
        with self.flush_lock:                   # one flush at a time: batches to a destination stay in order
            with self.out_lock:
                out, kinds, self.outbox, self.kinds, self.queued = self.outbox, self.kinds, {}, {}, 0
            for dest, messages in out.items():
                try:
                    nbytes = self.transmit(dest, messages[0] if len(messages) == 1 else ("batch", messages))
                except (OSError, ClusterError):
                    continue                    # that process is gone: its loss fails the calls it had
                if dest != self.me:
                    self.sent(dest, nbytes, kinds[dest])

    # -- to implement
    def transmit(self, dest, message) -> int:
        """Send one message now; the bytes written."""
        raise NotImplementedError

    def wait(self, future: Reply, timeout) -> None:
        raise NotImplementedError

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()              # senders waiting for credit stop waiting
        if self.linger is not None:
            self.linger.close()
        if _senders.get(self.token) is self:
            del _senders[self.token]


def _name(who) -> str:
    return "the driver" if who == DRIVER else f"worker {who}"


class _Linger:
    """Flushes what a process queued within about ``delay`` s, even if nobody waits for it.

    While messages keep coming it polls every ``delay`` s (flushing only if
    something is still queued); after a quiet spell (`IDLE` polls with the
    outbox empty) it sleeps until `arm` wakes it. So a busy sender never
    pays a wake-up per message.
    """

    IDLE = 200

    def __init__(self, sender: "Sender", delay: float):
        self.sender, self.delay = sender, delay
        self.active, self.closed = False, False
        self.wake = threading.Event()
        threading.Thread(target=self._run, daemon=True, name="mini-actors linger").start()

    def arm(self) -> None:
        """Something was queued (the caller queued it before calling)."""
        if not self.active:
            self.active = True
            self.wake.set()

    def _run(self) -> None:
        sender = self.sender
        while not self.closed:
            self.wake.wait()
            self.wake.clear()
            quiet = 0
            while self.active and not self.closed:
                time.sleep(self.delay)
                if sender.queued:
                    quiet = 0
                    try:
                        sender.flush()
                    except Exception:
                        log.exception("mini-actors: a timed flush failed")
                elif (quiet := quiet + 1) >= self.IDLE:
                    self.active = False
                    if sender.queued:           # queued while we were deciding: stay awake
                        self.active = True

    def close(self) -> None:
        self.closed = True
        self.wake.set()


class _Direct(queue.Queue):
    """An inbox that hands our messages to ``handle`` on the thread that read them.

    The cluster delivers every message through a queue to one main thread:
    a thread hop per message. A mini-actors runtime never runs user code
    on the delivering thread -- it only routes (into a mailbox, a Future,
    a credit count) -- so it can take messages where they are read.
    Anything else (``("stop",)``) still goes through the queue.

    It stands in for a hook the cluster does not offer (yet): it swaps the
    worker's ``inbox`` and the host's ``events`` queue, and if either is no
    longer a ``queue.Queue``, `deliver_directly` says so and the runtime
    falls back to the cluster's own delivery (``direct_receive=False``).
    """

    def __init__(self, handle):
        super().__init__()
        self.handle = handle

    def put(self, item, block=True, timeout=None):
        source, message = item
        if type(message) is tuple and message and message[0] in MINE:
            try:
                self.handle(source, message)
            except Exception:
                log.exception("mini-actors: routing %s from %s failed", message[0], source)
            return
        super().put(item, block, timeout)


def deliver_directly(owner, attribute: str, handle) -> bool:
    """Replace ``owner.<attribute>`` (a queue of ``(source, message)``) by a `_Direct`; False if it is not one."""
    old = getattr(owner, attribute, None)
    if not isinstance(old, queue.Queue):
        return False
    direct = _Direct(handle)
    setattr(owner, attribute, direct)
    while True:                                 # anything that arrived before the switch
        try:
            direct.put(old.get_nowait())
        except queue.Empty:
            return True


def to_driver(message: tuple) -> None:
    """Send ``message`` to the driver from inside an actor's method (the engine's own operator actors use it)."""
    sender = getattr(_local, "sender", None)
    if sender is None or sender.me == DRIVER:
        raise ActorError("to_driver is for methods of actors running in a mini-actors worker")
    sender.post(DRIVER, message, message[0])
