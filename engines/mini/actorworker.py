"""A mini-actors worker: the cluster runtime that hosts actors and runs their messages.

Its state and what happens to a message are `engines.mini.messaging`'s
(`start`, `deliver`, `next_message`, `handled`, `stop`); this is the
shell that runs user code. Two forms around the same state:

- `ActorHost` (a worker process). Each actor has its own thread, which
  builds it and then takes its mailbox one message at a time; when the
  mailbox is empty it flushes (the replies leave together) and sleeps on
  its **bell**, a queue through which the next message is handed to it. So a slow actor
  does not stall its neighbours, and a method may wait for another actor's
  reply (``other.call(...).result()``) while the worker keeps receiving.
  The cluster's reader threads only *route* -- a message goes into a
  mailbox, a reply to its Future -- through the cluster's delivery hook
  (``ctx.on_read``), which saves the hop through the worker's inbox and
  main thread; ``direct_receive=False`` keeps that hop, for comparison.
- `InProcessActorHost` (`engines.mini.cluster.InProcessHost`). Actors run
  on the one thread, inside ``handle``: each woken actor handles what its
  mailbox holds, one after the other (never one inside another's method),
  and everything queued leaves at the end.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque

from engines.api import ActorError
from engines.common import invoke
from engines.mini import messaging
from engines.mini.cluster import DRIVER
from engines.mini.endpoint import Endpoint, InProcess, Reply, pack, remote_error, run_as, running_actor, unpack

log = logging.getLogger("archbench.mini")


class ActorHost(Endpoint):
    """The cluster runtime of mini-actors in a worker process (see the module docstring)."""

    def __init__(self, ctx, token: str, window: int = 1024, send_timeout: float = 60.0, batch: int = 64,
                 linger: float = 0.002, trace_cap: int = 100_000, direct: bool = True):
        super().__init__(ctx.me, token, window=window, send_timeout=send_timeout, batch=batch, linger=linger,
                         trace_cap=trace_cap)
        self.ctx = ctx
        self.bells: dict = {}                   # actor -> the SimpleQueue its thread sleeps on while idle
        self.register()
        if direct:
            ctx.on_read(self.read)

    def handle(self, source, message) -> None:
        """One message from the cluster's main thread (all of them without the delivery hook)."""
        self.receive(source, message)

    def other(self, source, message) -> None:
        if message[0] == "trace":
            rows = pack(self.events.take(), "trace rows")
            self.apply(messaging.post, source, ("reply", message[1], True, rows), "trace")
            self.flush()

    def transmit(self, dest, message) -> int:
        return self.ctx.send(dest, message)

    # -- running actors
    def woken(self, wake: list) -> None:
        """Start a thread for an actor spawned here; hand an idle one its message (None: it stops)."""
        for actor, item in wake:
            bell = self.bells.get(actor["aid"])
            if bell is None:
                bell = self.bells[actor["aid"]] = queue.SimpleQueue()
                threading.Thread(target=self._serve, args=(actor, bell), daemon=True,
                                 name=f"actor {actor['aid']}").start()
            else:
                bell.put(item)

    def _serve(self, actor: dict, bell) -> None:
        """An actor's thread: build it, then handle its mailbox one message at a time until retired."""
        run_as(self, actor["aid"])
        obj, error = self.build(actor)
        item = self.apply(messaging.next_message, actor)
        while True:
            if item is not None:
                item = self.run(actor, obj, error, item)
                continue
            if actor["closed"]:
                break
            self.flush()                        # replies and tells leave together when the mailbox is empty
            item = bell.get()
        self.bells.pop(actor["aid"], None)
        self.flush()

    def build(self, actor: dict):
        """``(object, None)``, or ``(None, the ActorError every message will get)`` if it cannot start."""
        aid, cls_name, start = actor["aid"], actor["cls"], time.time()
        obj = error = None
        try:
            cls, args, kwargs = unpack(actor["recipe"], "the class or arguments of {}", cls_name)
            obj = cls(*args, **kwargs)
        except ActorError as e:
            error = ActorError(f"{cls_name} actor {aid} could not start: {e}")
        except BaseException as e:
            error = remote_error(f"{cls_name} actor {aid} could not start: {cls_name}.__init__ raised", e)
        if error is not None:
            log.error("%s", error)
        self.events.span(aid, "__init__", DRIVER, start, start, time.time())
        return obj, error

    def run(self, actor: dict, obj, error, item):
        """Handle one message: run the method, then report it (reply, credit). The next item of the mailbox."""
        source, (_, aid, cid, method, payload), arrived = item
        cls_name, start = actor["cls"], time.time()
        try:
            if error is not None:
                raise error
            args, kwargs = unpack(payload, "the arguments of {}.{}()", cls_name, method)
            value, ok = invoke(obj, aid, method, args, kwargs), True
        except ActorError as e:
            value, ok = e, False
        except BaseException as e:              # SystemExit and the like: the actor keeps serving
            value, ok = remote_error(f"{cls_name} actor {aid}: {method}() raised", e), False
        self.events.span(aid, method, source, arrived, start, time.time())
        reply = None
        if cid is not None:
            try:
                reply = pack(value, "the reply of {}.{}()", cls_name, method)
            except ActorError as e:
                ok, reply = False, pack(e, "an error")
        elif not ok:
            log.error("tell %s", value)         # a tell has no one to answer: say it where it can be seen
        return self.apply(messaging.handled, actor, source, cid, ok, reply)

    def wait(self, future: Reply, timeout) -> None:
        if future.name.rsplit(".", 1)[0] == running_actor():
            raise ActorError(f"{future.name}: an actor cannot wait for its own reply -- the message waits in "
                             "its mailbox until the method that waits for it returns; call the method "
                             "directly (self.method()), or tell")
        self.flush()


class InProcessActorHost(InProcess, ActorHost):
    """The in-process form (see the module docstring): actors run inside ``handle``, on its thread."""

    def __init__(self, ctx, token: str, **options):
        super().__init__(ctx, token, **options)
        self.built: dict = {}                   # actor -> (object, error), as `build` made them
        self.ready: deque = deque()             # (actor, item | None) woken, not run yet
        self.running = False

    def register(self) -> None:
        """The driver is the endpoint of this process; actors running here use this one (`run_as`)."""

    def handle(self, source, message) -> None:
        self.receive(source, message)
        self.flush()

    def woken(self, wake: list) -> None:
        """Run each woken actor until its mailbox is empty; one woken by a running actor runs after it."""
        self.ready.extend(wake)
        if self.running:
            return
        self.running, before = True, run_as(self, None)
        try:
            while self.ready:
                actor, item = self.ready.popleft()
                aid = actor["aid"]
                if aid not in self.built:
                    self.built[aid] = self.build(actor)
                run_as(self, aid)
                if item is None:
                    item = self.apply(messaging.next_message, actor)
                while item is not None:
                    item = self.run(actor, *self.built[aid], item)
                if actor["closed"]:
                    del self.built[aid]
        finally:
            self.running = False
            run_as(*before)

    def wait(self, future: Reply, timeout) -> None:
        raise ActorError(f"{future.name}: in the in-process form every actor runs on one thread, so a "
                         "method cannot wait for a reply; use tell, or processes=True")
