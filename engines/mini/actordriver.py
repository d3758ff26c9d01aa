"""The driver of mini-actors: the session's side of the messaging, and the events it receives.

The driver is one more sender (an `engines.mini.endpoint.Endpoint`): it
messages actors the way actors message each other. Its state is
`engines.mini.messaging`'s, with the parts only the driver has --
placement (`spawn`: the next live worker in turn, or ``worker=k``; the
recipe kept for restarts) and supervision (on ``("lost", k, why)``:
calls in flight fail, actors restart elsewhere while they have restarts
left, every worker learns the new routes). This shell turns the session's
requests into those verbs and the cluster's events into `receive`:

- `Driver` (worker processes): events are taken on the cluster's reader
  threads (`engines.mini.cluster.Host.on_read`; or, with
  ``direct_receive=False``, by one thread reading ``host.recv()``); a
  waiting caller wakes when its Future is set -- or, waiting for the only
  call in flight, reads the reply itself (`Driver.wait`).
- `InProcessDriver` (`engines.mini.cluster.InProcessHost`): nothing runs
  on its own; waiting for a Future runs the cluster until it is settled.

Worked example -- supervision in the in-process form, where a loss is
simulated by handing the driver the cluster's notice (the real thing is
tested with SIGKILL)::

    >>> from engines.mini.actors import MiniActorsEngine
    >>> class Tally:
    ...     def __init__(self): self.n = 0
    ...     def bump(self): self.n += 1; return self.n
    >>> with MiniActorsEngine().start(workers=2, processes=False) as s, s.actors() as actors:
    ...     t = actors.spawn(Tally, worker=1)
    ...     _ = [t.call("bump").result() for _ in range(3)]
    ...     s.driver.receive(1, ("lost", 1, "worker 1 was pulled out"))
    ...     print(s.driver.state["where"][t.actor_id], t.call("bump").result())
    (0, 1, 'restarted on worker 0 with fresh state (restart 1 of 3)') 1
"""

from __future__ import annotations

import logging
import threading

from engines.api import ActorError
from engines.mini import messaging
from engines.mini.cluster import DRIVER, ClusterError
from engines.mini.endpoint import Endpoint, InProcess, MiniActorRef, Reply, pack_recipe

log = logging.getLogger("archbench.mini")


class Driver(Endpoint):
    """The driver's side of a mini-actors session, with worker processes (see the module docstring)."""

    KINDS = frozenset({"batch", "reply", "credit", "flow", "lost", "runtime-error"})

    def __init__(self, host, token: str, *, max_restarts: int, direct: bool, **options):
        super().__init__(DRIVER, token, workers=range(host.n), **options)
        self.host, self.max_restarts, self.direct = host, max_restarts, direct
        self.flows: dict = {}                   # run -> SimpleQueue: dataflow runs listening for ("flow", run, ...)
        self.register()
        self.listen(direct)

    def listen(self, direct: bool) -> None:
        """Take the cluster's events as they arrive: on its reader threads, or on a thread of our own."""
        if direct:
            self.host.on_read(self.read)
        else:
            threading.Thread(target=self._pump, daemon=True, name="mini-actors driver").start()

    def _pump(self) -> None:
        while not self.state["closed"]:
            event = self.host.recv(timeout=0.2)
            if event is not None:
                self.read_or_warn(*event)

    def read_or_warn(self, source, message) -> None:
        if not self.read(source, message):
            log.warning("mini-actors driver: unexpected %r from %s", message[0], source)

    # -- what the session asks
    def live(self) -> list[int]:
        with self.lock:
            return messaging.live_workers(self.state)

    def spawn(self, cls: type, args: tuple, kwargs: dict, worker: int | None, max_restarts: int | None) -> MiniActorRef:
        if not isinstance(cls, type):
            raise ActorError(f"spawn needs a class (its instances become the actor), got {type(cls).__name__} {cls!r}")
        recipe = pack_recipe((cls, args, kwargs), f"{cls.__name__} or its constructor arguments")
        limit = self.max_restarts if max_restarts is None else max_restarts
        aid, home = self.apply(messaging.spawn, cls.__name__, recipe, worker, limit)
        return MiniActorRef(aid, cls.__name__, self.token, home)

    def retire(self, refs, why: str) -> None:
        """Stop actors: each handles what was sent before, then refuses, saying ``why``."""
        for ref in refs:
            self.apply(messaging.retire, ref.actor_id, why)
        self.flush()

    def trace(self, timeout: float = 30.0) -> list[dict]:
        """The trace rows of every process since the last call: the driver's, then each live worker's."""
        rows, futures = self.events.take(), []
        for worker in self.live():
            futures.append(Reply(f"trace of worker {worker}", self))
            self.apply(messaging.ask_worker, worker, futures[-1], "trace")
        for future in futures:
            try:
                rows += future.result(timeout)
            except (ActorError, TimeoutError) as e:
                log.warning("mini-actors: no trace from %s: %s", future.name, e)
        return rows

    def next_flow(self, listener):
        """The next message of a dataflow run listening on ``listener`` (a SimpleQueue)."""
        return listener.get()

    def settle(self) -> None:
        """Send what is queued (the in-process form also runs it)."""
        self.flush()

    def close(self) -> None:
        try:
            self.settle()
        finally:
            super().close()

    def wait(self, future: Reply, timeout) -> None:
        """Send what the call may be queued with. If it is the only call in flight (and the cluster's
        reader threads deliver, ``direct``), read its worker's messages here until the reply is in
        (`engines.mini.cluster.Host.read_for`): a thread switch less per call."""
        worker = None
        if self.direct:
            with self.lock:
                calls = self.state["calls"]
                worker = next(iter(calls.values()))[4] if len(calls) == 1 else None   # (waiter, ..., worker)
            if type(worker) is int:
                self.host.poll_hint(worker)      # the next call follows at once, as likely as not: poll for it
        self.flush()
        if type(worker) is int:
            self.host.read_for(worker, future.done, timeout)

    # -- what the cluster says
    def transmit(self, dest, message) -> int:
        return 0 if dest in self.state["lost"] else self.host.send(dest, message)

    def other(self, source, message) -> None:
        if message[0] == "flow":
            listener = self.flows.get(message[1])
            if listener is not None:
                listener.put(message)
        elif message[0] == "runtime-error":
            log.error("mini-actors worker %s: %s", message[1], message[2])
        else:
            log.warning("mini-actors driver: unexpected %r from %s", message[0], source)

    def lost(self, worker, why: str) -> None:
        for listener in list(self.flows.values()):
            listener.put(("lost", worker, why))
        super().lost(worker, why)


class InProcessDriver(InProcess, Driver):
    """The in-process form: waiting runs the cluster (one FIFO, in order) until what is waited for is there."""

    def listen(self, direct: bool) -> None:
        """Nothing arrives on its own here: `pump_once` fetches."""

    def pump_once(self) -> None:
        """Run the cluster until a message for the driver comes, and handle it."""
        self.flush()
        try:
            source, message = self.host.recv()
        except ClusterError as e:
            raise ActorError(f"mini-actors (in-process): {e}") from None
        self.read_or_warn(source, message)

    def wait(self, future, timeout) -> None:
        while not future.done():
            self.pump_once()

    def next_flow(self, listener):
        while listener.empty():
            self.pump_once()
        return listener.get_nowait()

    def settle(self) -> None:
        """Run every message in flight (tells included) until the cluster is quiet."""
        self.flush()
        while self.host.mail:
            try:
                self.read_or_warn(*self.host.recv())
            except ClusterError:
                break
