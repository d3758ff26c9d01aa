"""The driver of mini-actors: placement, restarts, and the events it receives from the cluster.

The driver is one more `engines.mini.messaging.Sender` -- it messages
actors the way actors message each other, through an outbox batched per
worker -- plus what only it does:

- **Placement.** ``spawn`` puts an actor on the next live worker in turn
  (``worker=k`` to choose) and keeps its recipe: the class and arguments,
  pickled once, so a restart builds the same actor from the same bytes.
- **Receiving.** Replies, credit and loss notices are handled on the
  cluster's reader threads as they arrive (`engines.mini.messaging.deliver_directly`;
  or, with ``direct_receive=False``, by one thread reading ``host.recv()``);
  a waiting caller wakes when its Future is set.
- **Supervision.** On ``("lost", k, why)``: every call in flight to an
  actor of worker ``k`` fails naming the actor, the method and ``why``
  (``worker 1 (pid 4242) was killed by SIGKILL``); each of those actors is
  restarted -- a new incarnation, built fresh on a live worker -- while it
  has restarts left (``max_restarts``, default 3), or else marked dead with
  the reason; and every worker is told the new locations (``moved``), so
  refs held anywhere reach the new incarnation.

State, besides a Sender's (``where``, ``calls``, ``credit``, ``lost``, ``outbox``)::

    recipes  = {actor: (class name, payload | None, max_restarts)}   # None: it may not restart
    restarts = {actor: restarts so far}
    flows    = {run: SimpleQueue}         # dataflow runs listening for ("flow", run, ...)

Worked example -- supervision in the in-process form, where a loss is
simulated by calling ``on_lost`` (the real thing is tested with SIGKILL)::

    >>> from engines.mini.actors import MiniActorsEngine
    >>> class Tally:
    ...     def __init__(self): self.n = 0
    ...     def bump(self): self.n += 1; return self.n
    >>> with MiniActorsEngine().start(workers=2, processes=False) as s, s.actors() as actors:
    ...     t = actors.spawn(Tally, worker=1)
    ...     _ = [t.call("bump").result() for _ in range(3)]
    ...     s.driver.on_lost(1, "worker 1 was pulled out")
    ...     print(s.driver.where[t.actor_id][0], t.call("bump").result())
    0 1
"""

from __future__ import annotations

import itertools
import logging
import threading

import cloudpickle

from engines.api import ActorError, Future
from engines.mini import messaging
from engines.mini.cluster import DRIVER, ClusterError
from engines.mini.messaging import MiniActorRef, Reply, Sender, deliver_directly

log = logging.getLogger("archbench.mini")


class Driver(Sender):
    """The driver's side of a mini-actors session (see the module docstring)."""

    def __init__(self, host, token: str, *, max_restarts: int, direct: bool, **options):
        super().__init__(DRIVER, token, **options)
        self.host, self.n, self.max_restarts = host, host.n, max_restarts
        self.recipes: dict = {}
        self.restarts: dict = {}
        self.flows: dict = {}
        self.turn = itertools.count()
        self.spawned = itertools.count(1)
        messaging._senders[token] = self
        if self.threads and not (direct and deliver_directly(host, "events", self._on_event_checked)):
            threading.Thread(target=self._pump, daemon=True, name="mini-actors driver").start()

    # -- placement
    def live(self) -> list[int]:
        return [w for w in range(self.n) if w not in self.lost]

    def spawn(self, cls: type, args: tuple, kwargs: dict, worker: int | None, max_restarts: int | None) -> MiniActorRef:
        if not isinstance(cls, type):
            raise ActorError(f"spawn needs a class (its instances become the actor), got {type(cls).__name__} {cls!r}")
        payload = _pack_code((cls, args, kwargs), f"{cls.__name__} or its constructor arguments")
        limit = self.max_restarts if max_restarts is None else max_restarts
        with self.cond:
            live = self.live()
            if worker is None:
                if not live:
                    raise ActorError(f"cannot spawn {cls.__name__}: every worker is lost ({'; '.join(self.lost.values())})")
                worker = live[next(self.turn) % len(live)]
            elif worker not in live:
                why = f"it is lost ({self.lost[worker]})" if worker in self.lost else "there is no such worker"
                raise ActorError(f"cannot spawn {cls.__name__} on worker {worker}: {why}; live workers: {live}")
            aid = f"{cls.__name__}-{next(self.spawned)}"
            self.where[aid] = (worker, 0, "")
            self.recipes[aid] = (cls.__name__, payload if limit > 0 else None, limit)
            self.restarts[aid] = 0
        self.post(worker, ("spawn", aid, cls.__name__, 0, payload), "spawn")
        return MiniActorRef(aid, cls.__name__, self.token, worker)

    def retire(self, refs, why: str) -> None:
        """Stop actors: each handles what was sent before, then refuses, saying ``why``."""
        for ref in refs:
            with self.cond:
                worker = self.where.get(ref.actor_id, (None,))[0]
                self.where[ref.actor_id] = (None, 0, why)
                for table in (self.recipes, self.restarts, self.credit):   # a recipe may hold big arguments
                    table.pop(ref.actor_id, None)
            if worker is not None and worker not in self.lost:
                self.post(worker, ("retire", ref.actor_id, why), "retire")
        self.flush()

    # -- supervision
    def supervise(self, worker, why: str) -> None:
        """Restart the actors of a lost worker elsewhere, or mark them dead. Called with ``cond`` held."""
        live, moves, respawn = self.live(), [], []
        for aid, (at, inc, _) in list(self.where.items()):
            if at != worker or aid not in self.recipes:
                continue
            cls_name, payload, limit = self.recipes[aid]
            if self.restarts[aid] < limit and live:
                self.restarts[aid] += 1
                new = live[next(self.turn) % len(live)]
                self.where[aid] = (new, inc + 1, f"restarted on worker {new} with fresh state "
                                                 f"(restart {self.restarts[aid]} of {limit})")
                respawn.append((new, ("spawn", aid, cls_name, inc + 1, payload)))
            else:
                reason = f"max_restarts={limit} reached" if live else "no live worker is left"
                self.where[aid] = (None, inc + 1, f"its host {why}, and it was not restarted ({reason})")
            moves.append((aid, self.where[aid]))
        with self.out_lock:
            self.outbox.pop(worker, None)
            self.kinds.pop(worker, None)
            for new, message in respawn:
                self.enqueue(new, message, "spawn")
            for w in live if moves else ():
                self.enqueue(w, ("moved", moves), "moved")
        for flow in self.flows.values():
            flow.put(("lost", worker, why))

    def after_loss(self, aid) -> str:
        worker, _, why = self.where.get(aid, (None, 0, ""))
        if worker is None:
            return f"It is dead: {why}."
        return f"The actor was {why}; call again to reach it."

    # -- sending
    def transmit(self, dest, message) -> int:
        return 0 if dest in self.lost else self.host.send(dest, message)

    # -- receiving
    def on_event(self, source, message) -> bool:
        """One event from the cluster; False if it is not ours."""
        kind = message[0]
        if kind == "batch":
            for m in message[1]:
                self._on_event_checked(source, m)
        elif kind == "reply":
            self.on_reply(*message[1:])
        elif kind == "credit":
            self.on_credit(*message[1:])
        elif kind == "flow":
            listener = self.flows.get(message[1])
            if listener is not None:
                listener.put(message)
        elif kind == "lost":
            self.on_lost(message[1], message[2])
        elif kind == "runtime-error":
            log.error("mini-actors worker %s: %s", message[1], message[2])
        else:
            return False
        return True

    def _on_event_checked(self, source, message) -> None:
        if not self.on_event(source, message):
            log.warning("mini-actors driver: unexpected %r from %s", message[0], source)

    def _pump(self) -> None:
        """Without direct delivery: one thread takes the cluster's events and handles them."""
        while not self.closed:
            event = self.host.recv(timeout=0.2)
            if event is not None:
                self._on_event_checked(*event)

    def pump_once(self) -> None:
        """In-process form: run the cluster until a message for the driver comes, and handle it."""
        self.flush()
        try:
            source, message = self.host.recv()
        except ClusterError as e:
            raise ActorError(f"mini-actors (in-process): {e}") from None
        self._on_event_checked(source, message)

    def wait(self, future, timeout) -> None:
        if self.threads:
            self.flush()
            Future._fetch(future, timeout)
        else:
            while not future.done():
                self.pump_once()

    def settle(self) -> None:
        """In-process form: run every message in flight (tells included) until the cluster is quiet."""
        self.flush()
        while not self.threads and self.host.mail:
            try:
                self._on_event_checked(*self.host.recv())
            except ClusterError:
                break

    def trace(self, timeout: float = 30.0) -> list[dict]:
        """The trace rows of every process since the last call: the driver's, then each live worker's."""
        rows, futures = self.take_trace(), []
        for worker in self.live():
            with self.cond:
                cid = next(self.ids)
                futures.append(Reply(f"trace of worker {worker}", self))
                self.calls[cid] = (futures[-1], f"worker {worker}", "runtime", "trace", worker)
            self.post(worker, ("trace", cid), "trace")
        for future in futures:
            try:
                rows += future.result(timeout)
            except (ActorError, TimeoutError) as e:
                log.warning("mini-actors: no trace from %s: %s", future.name, e)
        return rows

    def close(self) -> None:
        try:
            self.settle()
            self.flush()
        finally:
            super().close()
            with self.cond:
                pending, self.calls = list(self.calls.values()), {}
            for future, aid, cls_name, method, _ in pending:
                future._set_error(ActorError(f"{cls_name} actor {aid}: {method}() got no reply before its "
                                             "mini-actors session closed"))


def _pack_code(obj, what: str) -> bytes:
    try:
        return cloudpickle.dumps(obj, protocol=5)
    except Exception as e:
        raise ActorError(f"{what} could not be pickled ({type(e).__name__}: {e}); the worker builds the "
                         "actor from a copy, so pass a class and plain arguments (or refs)") from None
