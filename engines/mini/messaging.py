"""mini-actors' messaging as plain data: routes, credit, calls, mailboxes and restarts, and the verbs on them.

This module is the actor architecture -- Ray's, Akka's, in miniature. An
**actor** is an object that lives in one worker process and keeps its
state between messages. Nobody calls its methods: senders put
**messages** in its **mailbox**, and it handles them one at a time, in
order. Every process that sends -- the driver and each worker, since
actors message each other directly, worker to worker -- has one ``state``
(`new_state`); the verbs below read and change it. Nothing here does I/O,
starts a thread or runs user code: a verb leaves messages for other
processes in ``state["outbox"]``, outcomes of calls for the caller's
Futures in ``state["outcomes"]``, and actors to start, or to hand a
message to, in ``state["wake"]``; the shells (`engines.mini.endpoint`, around
this state in every process; `engines.mini.actorworker` and
`engines.mini.actordriver`) send them, settle them and run the actors.
Payloads are bytes pickled by the shell: here they are only carried.

Policy
------

**Routing.** A ref is plain data: the actor's id, its class name and
``home``, the worker it was spawned on. A message goes to the worker that
``where`` names for the actor, or else to ``home``. ``where`` changes only
when supervision moves an actor: the driver then tells every worker
(``moved``). A message to an actor of this same worker is put in its
mailbox at once, without leaving the process.

**Mailboxes and ordering.** Each actor hosted here has a mailbox, a FIFO
of ``(sender, message, arrival time)``; its shell takes one item at a time
(`next_message`), runs the method, and reports (`handled`, which gives the
next item). An idle actor (its mailbox ran empty) is handed a new message
directly, with its wake-up; a busy one finds it in the mailbox when it is
done -- the same order either way. Messages from
one sender to one actor keep their order: they leave in order, travel one
connection (a FIFO), are delivered in the order read and wait in one
mailbox. Nothing is promised between different senders. A message that
overtakes its actor's ``spawn`` waits in a mailbox made for it.

**Back-pressure** (credit-based flow control, per sender process and
actor). A sender may have at most ``window`` messages to one actor that the
actor has not handled yet: `send` says ``False`` (wait) beyond that. The
hosting worker counts the messages it handles from each sender and, every
``window // 2`` of them, sends that sender a ``credit`` (the running
count). So a flood of tells is slowed to the actor's pace, and a mailbox
holds at most ``window`` messages per sending process. Credit counts one
incarnation of an actor: a restarted actor starts with a full window.
``window=0`` turns flow control off (the in-process form, where nobody
could wait for credit). The engine's own messages (``flow=False``) never
wait.

**Supervision** (the driver's state only). When a worker is lost, every
call in flight to it fails, naming the actor, the method and how the host
died. Each actor it hosted is restarted -- a new incarnation, built from
the same recipe (class and arguments, pickled once at spawn) on the next
live worker, so its state is fresh -- while it has restarts left
(``max_restarts``), or else marked stopped with the reason; every live
worker is told where it went. A worker that learns of a move fails its own
calls to the old place. Tells in flight are lost (at-most-once, as in Ray
and Akka).

Messages (``cid`` a call id, None for a tell)::

    to a worker   ("spawn", actor, class name, incarnation, recipe)   ("retire", actor, why)
                  ("msg", actor, cid, method, payload of (args, kwargs))
                  ("moved", [(actor, (worker | None, incarnation, why)), ...])   ("lost", worker, why)
    to a sender   ("reply", cid, ok, payload of the value or error | the ActorError of a refusal)
                  ("credit", actor, incarnation, handled so far)

The cluster also hands a process ``("lost", worker, why)``; the shells add
their own kinds (``batch``, ``trace``, ``flow``).

State (``state[name]``; *w* a worker id, *actor* an actor id such as ``"Counter-1"``)
-------------------------------------------------------------------------------------

::

    me        w | "driver"                        whose state this is
    window    int                                 credit per sender and actor (0: no flow control)
    clock     () -> float                         stamps arrivals in mailboxes (``time.time``)
    where     {actor: (w | None, incarnation, why)}   routes (the driver: every actor it spawned);
                                                  None: stopped or dead, ``why`` says how
    credit    {actor: [incarnation, admitted, credited]}   in flight = admitted - credited
    calls     {cid: (waiter, actor, class name, method, w)}   asked, not answered (waiter: the shell's Future);
                                                  next_cid: the next call id
    lost      {w: why}
    closed    "" | why                            the session has closed: nothing more is sent
    hosted    {actor: {"aid", "cls", "inc", "recipe", "mailbox": deque, "handled": {sender: n},
                       "credited": {sender: n}, "idle": bool, "closed": bool}}   actors hosted here
                                                  (recipe None: not spawned yet, its mail waits)
    retired   {actor: why}                        stopped here; late messages are refused with that;
                                                  warned {actor, ...}: a refused tell was logged
    workers, recipes {actor: (class name, recipe | None, max_restarts)}, restarts {actor: n},
    turn, spawned                                 the driver's placement and supervision
    outbox    {dest: [message, ...]}; kinds {dest: {kind: n}}; queued   to send (kinds: for the trace)
    outcomes  [(waiter, ok, payload | ActorError, class name, method)]   for the shell to settle
    wake      [(hosted, item | None), ...]        actors to start (spawned: None), to hand ``item``
                                                  (it was idle), or to stop (idle and retired: None)
    unblocked bool                                credit or a route changed: a waiting sender may go on
    log       [sentence, ...]                     warnings for the shell to log

Worked example
--------------

A driver and two workers, and a ``wire`` that carries what each queued to
its destination, in order (the shells do this with sockets)::

    >>> procs = {p: new_state(p, [0, 1], window=4, clock=lambda: 0.0) for p in ("driver", 0, 1)}
    >>> driver, w0 = procs["driver"], procs[0]
    >>> def wire():
    ...     for state in procs.values():
    ...         for dest, messages in take_outbox(state)[0].items():
    ...             for message in messages:
    ...                 receive(procs[dest], state["me"], message)

The driver places a ``Counter`` (round robin: worker 0) and keeps its
recipe. The spawn and two messages leave together; on worker 0 the spawn
makes a mailbox and asks the shell to start the actor (``wake``), and the
messages wait in it, in order, until it is built::

    >>> spawn(driver, "Counter", b"<Counter, args>", None, 3)
    ('Counter-1', 0)
    >>> send(driver, "Counter-1", "Counter", 0, "add", b"<2>"), send(driver, "Counter-1", "Counter", 0, "add", b"<3>", "f")
    (True, True)
    >>> wire()
    >>> counter = w0["hosted"]["Counter-1"]
    >>> [(h["aid"], item) for h, item in w0["wake"]], [(m[2], m[3], m[4]) for _, m, _ in counter["mailbox"]]
    ([('Counter-1', None)], [(None, 'add', b'<2>'), (1, 'add', b'<3>')])

The shell takes one message at a time, runs it and reports. The second is
a call (``cid`` 1): its reply goes back, and after ``window // 2 = 2``
messages from the driver so does a credit. The driver's Future ``"f"`` is
settled with the reply::

    >>> source, message, _ = next_message(w0, counter)
    >>> handled(w0, counter, source, message[2], True, None)[1][3]     # the next message in the mailbox
    'add'
    >>> handled(w0, counter, source, 1, True, b"<5>") is None          # the mailbox is empty: it idles
    True
    >>> w0["outbox"]
    {'driver': [('reply', 1, True, b'<5>'), ('credit', 'Counter-1', 0, 2)]}
    >>> wire()
    >>> driver["outcomes"], driver["credit"]
    ([('f', True, b'<5>', 'Counter', 'add')], {'Counter-1': [0, 2, 2]})

Back-pressure: with the actor busy (nothing handled), the driver may have
only ``window = 4`` messages in flight to it; the fifth must wait::

    >>> [send(driver, "Counter-1", "Counter", 0, "add", b"<1>") for _ in range(5)]
    [True, True, True, True, False]

Worker 0 dies while a call is in flight. The call fails naming the actor,
the method and the cause; the actor is restarted on worker 1 from its
recipe as incarnation 1 (fresh state), and worker 1 learns the new route::

    >>> driver["outcomes"] = []
    >>> _ = take_outbox(driver)
    >>> send(driver, "Counter-1", "Counter", 0, "add", b"<1>", "g")
    False
    >>> credited(driver, "Counter-1", 0, 6); send(driver, "Counter-1", "Counter", 0, "add", b"<1>", "g")
    True
    >>> receive(driver, 0, ("lost", 0, "worker 0 (pid 42) was killed by SIGKILL"))
    True
    >>> print(driver["outcomes"][0][2])
    Counter actor Counter-1: add() was lost in flight: its host worker 0 (pid 42) was killed by SIGKILL. The actor was restarted on worker 1 with fresh state (restart 1 of 3); call again to reach it.
    >>> driver["outbox"][1]
    [('spawn', 'Counter-1', 'Counter', 1, b'<Counter, args>'), ('moved', [('Counter-1', (1, 1, 'restarted on worker 1 with fresh state (restart 1 of 3)'))])]
    >>> send(driver, "Counter-1", "Counter", 0, "add", b"<1>"), driver["credit"]["Counter-1"]
    (True, [1, 1, 0])
"""

from __future__ import annotations

import time
from collections import deque

from engines.api import ActorError

DRIVER = "driver"          # the same as engines.mini.cluster.DRIVER


def new_state(me, workers=(), *, window: int = 1024, clock=time.time) -> dict:
    """The messaging state of process ``me`` in a cluster of ``workers``; ``clock`` stamps arrivals."""
    return {
        "me": me, "window": window, "clock": clock,
        "where": {}, "credit": {}, "calls": {}, "next_cid": 1, "lost": {}, "closed": "",
        "hosted": {}, "retired": {}, "warned": set(),
        "workers": list(workers), "recipes": {}, "restarts": {}, "turn": 0, "spawned": 0,
        "outbox": {}, "kinds": {}, "queued": 0, "outcomes": [], "wake": [], "unblocked": False, "log": [],
    }


def name(who) -> str:
    """A process as error messages name it: ``the driver`` or ``worker 1``."""
    return "the driver" if who == DRIVER else f"worker {who}"


def live_workers(state) -> list:
    return [w for w in state["workers"] if w not in state["lost"]]


# ================================================================ sending (every process)


def send(state, aid, cls_name: str, home, method: str, payload, waiter=None, flow: bool = True) -> bool:
    """Queue ``("msg", aid, cid, method, payload)`` for the actor; False if it must wait. Mutates.

    A call (``waiter`` given: the shell's Future, settled through
    ``outcomes``) is registered under a new ``cid``. False: its host is lost
    and no new route is known yet, or (``flow``) the sender is out of
    credit. Raises ActorError when the actor is stopped.
    """
    worker, inc = _route(state, aid, cls_name, home)
    if worker in state["lost"]:
        return False
    if flow and state["window"]:
        entry = state["credit"].get(aid)
        if entry is None or entry[0] != inc:
            entry = state["credit"][aid] = [inc, 0, 0]
        if entry[1] - entry[2] >= state["window"]:
            return False
        entry[1] += 1
    cid = None if waiter is None else expect(state, waiter, aid, cls_name, method, worker)
    post(state, worker, ("msg", aid, cid, method, payload), "tell" if cid is None else "call")
    return True


def can_send(state, aid, cls_name: str, home, flow: bool = True) -> bool:
    """Would `send` go on now (queue, or raise that the actor is stopped)? What a waiting sender waits for."""
    try:
        worker, inc = _route(state, aid, cls_name, home)
    except ActorError:
        return True
    if worker in state["lost"]:
        return False
    entry = state["credit"].get(aid) if flow and state["window"] else None
    return entry is None or entry[0] != inc or entry[1] - entry[2] < state["window"]


def why_waiting(state, aid, cls_name: str, home, seconds: float) -> ActorError:
    """The error of a sender that has waited ``seconds`` in vain: a lost host, or back-pressure."""
    worker = (state["where"].get(aid) or (home,))[0]
    if worker in state["lost"]:
        return ActorError(f"{cls_name} actor {aid}: its host {state['lost'][worker]}, and no new "
                          f"location was announced within {seconds:.0f} s")
    return ActorError(f"back-pressure: {cls_name} actor {aid} has not handled {state['window']} messages from "
                      f"{name(state['me'])} in {seconds:.0f} s; is it stuck, or are two actors flooding each "
                      "other (then one must call and wait)? A bigger window (mailbox=...) only delays this")


def expect(state, waiter, aid, cls_name: str, method: str, worker) -> int:
    """Register a call to ``worker`` whose reply settles ``waiter``; its cid. Mutates ``calls``."""
    cid = state["next_cid"]
    state["next_cid"] = cid + 1
    state["calls"][cid] = (waiter, aid, cls_name, method, worker)
    return cid


def post(state, dest, message, kind: str) -> None:
    """Queue ``message`` for process ``dest``; one for this process is received here and now. Mutates."""
    if dest == state["me"]:
        receive(state, dest, message)
        return
    out = state["outbox"].get(dest)
    if out is None:
        out = state["outbox"][dest] = []
        state["kinds"][dest] = {}
    out.append(message)
    kinds = state["kinds"][dest]
    kinds[kind] = kinds.get(kind, 0) + 1
    state["queued"] += 1


def take_outbox(state) -> tuple[dict, dict]:
    """What is queued, ``({dest: [message, ...]}, {dest: {kind: n}})``, leaving the outbox empty. Mutates."""
    out, kinds = state["outbox"], state["kinds"]
    state["outbox"], state["kinds"], state["queued"] = {}, {}, 0
    return out, kinds


def _route(state, aid, cls_name, home):
    """``(worker, incarnation)`` of the actor; raises ActorError if it is stopped."""
    worker, inc, why = state["where"].get(aid) or (home, 0, "")
    if state["closed"]:
        worker, why = None, state["closed"]
    if worker is None:
        raise ActorError(f"{cls_name} actor {aid} is stopped: {why}")
    return worker, inc


# ================================================================ receiving (every process)


def receive(state, source, message) -> bool:
    """Apply one message from ``source`` (not a batch); False if it is not one of messaging's. Mutates."""
    kind = message[0]
    if kind == "msg":
        deliver(state, source, message)
    elif kind == "reply":
        replied(state, message[1], message[2], message[3])
    elif kind == "credit":
        credited(state, message[1], message[2], message[3])
    elif kind == "spawn":
        start(state, *message[1:])
    elif kind == "retire":
        stop(state, message[1], message[2])
    elif kind == "moved":
        moved(state, message[1])
    elif kind == "lost":
        lose_worker(state, message[1], message[2])
    else:
        return False
    return True


def replied(state, cid, ok: bool, payload) -> None:
    """The answer to call ``cid`` came: leave it for its waiter. Mutates ``calls``, ``outcomes``."""
    entry = state["calls"].pop(cid, None)
    if entry is not None:                   # else failed already (its host was lost)
        waiter, _, cls_name, method, _ = entry
        state["outcomes"].append((waiter, ok, payload, cls_name, method))


def credited(state, aid, inc: int, handled: int) -> None:
    """Incarnation ``inc`` of the actor has handled ``handled`` of our messages. Mutates ``credit``."""
    entry = state["credit"].get(aid)
    if entry is not None and entry[0] == inc and handled > entry[2]:
        entry[2] = handled
        state["unblocked"] = True


def lose_worker(state, worker, why: str) -> None:
    """``worker`` is gone: its calls fail; the driver restarts its actors (see Supervision). Mutates."""
    if worker in state["lost"]:
        return
    state["lost"][worker] = why
    state["unblocked"] = True
    if state["me"] == DRIVER:
        _supervise(state, worker, why)
    for cid in [cid for cid, call in state["calls"].items() if call[4] == worker]:
        _fail(state, cid, f"its host {why}")


def moved(state, moves) -> None:
    """New routes from the driver; calls sent to an actor's old place fail (that incarnation is gone). Mutates."""
    calls = state["calls"]
    for aid, place in moves:
        state["where"][aid] = place
        for cid in [cid for cid, call in calls.items() if call[1] == aid and call[4] != place[0]]:
            _fail(state, cid, f"its host {name(calls[cid][4])} was lost")
    state["unblocked"] = True


def close(state, why: str) -> None:
    """Nothing more is sent; every call still waiting fails. Mutates."""
    state["closed"] = why
    state["unblocked"] = True
    for cid in list(state["calls"]):
        waiter, aid, cls_name, method, _ = state["calls"].pop(cid)
        error = ActorError(f"{cls_name} actor {aid}: {method}() got no reply before its mini-actors session closed")
        state["outcomes"].append((waiter, False, error, cls_name, method))


def _fail(state, cid, how: str) -> None:
    waiter, aid, cls_name, method, _ = state["calls"].pop(cid)
    error = ActorError(f"{cls_name} actor {aid}: {method}() was lost in flight: {how}. {_after_loss(state, aid)}")
    state["outcomes"].append((waiter, False, error, cls_name, method))


def _after_loss(state, aid) -> str:
    if state["me"] != DRIVER:
        return "The driver restarts it elsewhere if it has restarts left; call again to reach it."
    worker, _, why = state["where"].get(aid, (None, 0, ""))
    return f"It is dead: {why}." if worker is None else f"The actor was {why}; call again to reach it."


# ================================================================ hosting (a worker)


def start(state, aid, cls_name: str, inc: int, recipe) -> None:
    """``spawn``: host incarnation ``inc`` here; the shell builds it from ``recipe`` (``wake``). Mutates."""
    hosted = _mailbox(state, aid)
    hosted.update(cls=cls_name, inc=inc, recipe=recipe)
    state["wake"].append((hosted, None))


def deliver(state, source, message) -> None:
    """``msg``: hand it to its actor if idle (``wake``), else put it in its mailbox; refuse it if retired. Mutates."""
    aid = message[1]
    hosted = state["hosted"].get(aid)
    if hosted is None:
        why = state["retired"].get(aid)
        if why is not None:
            _refuse(state, source, message, why)
            return
        hosted = _mailbox(state, aid)       # it overtook its actor's spawn: it waits for it
    if hosted["idle"]:                      # the mailbox is empty: nothing can come before it
        hosted["idle"] = False
        state["wake"].append((hosted, (source, message, state["clock"]())))
    else:
        hosted["mailbox"].append((source, message, state["clock"]()))


def next_message(state, hosted):
    """The next ``(sender, message, arrived)`` for the actor, or None: then it idles until handed one. Mutates.

    After a retirement it gets what came before, then None, and ``closed``.
    """
    mailbox = hosted["mailbox"]
    while mailbox:
        item = mailbox.popleft()
        if item is not None:
            return item
        hosted["closed"] = True             # the retirement's marker: refuse what is left
        _refuse_all(state, hosted, state["retired"].get(hosted["aid"], "it was retired"))
    hosted["idle"] = True
    return None


def handled(state, hosted, source, cid, ok: bool, reply):
    """One message from ``source`` ran: queue the reply of a call and the sender's credit when due.

    Returns the next item of the mailbox, as `next_message`. Mutates.
    """
    if cid is not None:
        post(state, source, ("reply", cid, ok, reply), "reply")
    window = state["window"]
    if window:
        count = hosted["handled"][source] = hosted["handled"].get(source, 0) + 1
        if count - hosted["credited"].get(source, 0) >= window // 2:
            hosted["credited"][source] = count
            post(state, source, ("credit", hosted["aid"], hosted["inc"], count), "credit")
    return next_message(state, hosted)


def stop(state, aid, why: str) -> None:
    """``retire``: the actor handles what came before, then refuses everything, saying ``why``. Mutates."""
    state["retired"][aid] = why
    hosted = state["hosted"].pop(aid, None)
    if hosted is None:
        return
    if hosted["recipe"] is None:            # never spawned here: what waited for it is refused now
        hosted["closed"] = True
        _refuse_all(state, hosted, why)
        return
    if hosted["idle"]:                      # its mailbox is empty: it stops now
        hosted["idle"], hosted["closed"] = False, True
        state["wake"].append((hosted, None))
    else:
        hosted["mailbox"].append(None)      # a marker: it stops after what came before


def _mailbox(state, aid) -> dict:
    hosted = state["hosted"].get(aid)
    if hosted is None:
        hosted = state["hosted"][aid] = {"aid": aid, "cls": aid.rsplit("-", 1)[0], "inc": 0, "recipe": None,
                                         "mailbox": deque(), "handled": {}, "credited": {}, "idle": False,
                                         "closed": False}
    return hosted


def _refuse(state, source, message, why: str) -> None:
    _, aid, cid, method, _ = message
    error = ActorError(f"{aid.rsplit('-', 1)[0]} actor {aid} is stopped: {why}; {method}() was not run")
    if cid is not None:
        post(state, source, ("reply", cid, False, error), "reply")
    elif aid not in state["warned"]:        # once per actor: senders that do not know yet may send many
        state["warned"].add(aid)
        state["log"].append(f"tell {error} (further tells to it are dropped silently)")


def _refuse_all(state, hosted, why: str) -> None:
    mailbox = hosted["mailbox"]
    while mailbox:
        item = mailbox.popleft()
        if item is not None:
            _refuse(state, item[0], item[1], why)


# ================================================================ placing and supervising (the driver)


def spawn(state, cls_name: str, recipe, worker, max_restarts: int) -> tuple[str, int]:
    """Place a new actor on ``worker`` (None: the next live one in turn); ``(actor id, worker)``. Mutates.

    Raises ActorError when ``worker`` is lost or unknown, or no worker is left.
    """
    live = live_workers(state)
    if worker is None:
        if not live:
            raise ActorError(f"cannot spawn {cls_name}: every worker is lost ({'; '.join(state['lost'].values())})")
        worker = _next_worker(state, live)
    elif worker not in live:
        why = f"it is lost ({state['lost'][worker]})" if worker in state["lost"] else "there is no such worker"
        raise ActorError(f"cannot spawn {cls_name} on worker {worker}: {why}; live workers: {live}")
    state["spawned"] += 1
    aid = f"{cls_name}-{state['spawned']}"
    state["where"][aid] = (worker, 0, "")
    state["recipes"][aid] = (cls_name, recipe if max_restarts > 0 else None, max_restarts)
    state["restarts"][aid] = 0
    post(state, worker, ("spawn", aid, cls_name, 0, recipe), "spawn")
    return aid, worker


def retire(state, aid, why: str) -> None:
    """Stop an actor: it handles what was sent before, then refuses, saying ``why``. Mutates."""
    worker = state["where"].get(aid, (None,))[0]
    state["where"][aid] = (None, 0, why)
    for table in (state["recipes"], state["restarts"], state["credit"]):   # a recipe may hold big arguments
        table.pop(aid, None)
    if worker is not None and worker not in state["lost"]:
        post(state, worker, ("retire", aid, why), "retire")


def ask_worker(state, worker, waiter, kind: str) -> None:
    """Ask ``worker``'s runtime (not an actor) ``(kind, cid)``; its reply settles ``waiter``. Mutates."""
    cid = expect(state, waiter, f"worker {worker}", "runtime", kind, worker)
    post(state, worker, (kind, cid), kind)


def _supervise(state, worker, why: str) -> None:
    """Restart the actors of lost ``worker`` elsewhere, or mark them dead; tell the live workers."""
    live, moves = live_workers(state), []
    dropped = state["outbox"].pop(worker, ())
    state["kinds"].pop(worker, None)
    state["queued"] -= len(dropped)
    for aid, (at, inc, _) in list(state["where"].items()):
        if at != worker or aid not in state["recipes"]:
            continue
        cls_name, recipe, limit = state["recipes"][aid]
        if state["restarts"][aid] < limit and live:
            n = state["restarts"][aid] = state["restarts"][aid] + 1
            new = _next_worker(state, live)
            state["where"][aid] = (new, inc + 1, f"restarted on worker {new} with fresh state (restart {n} of {limit})")
            post(state, new, ("spawn", aid, cls_name, inc + 1, recipe), "spawn")
        else:
            reason = f"max_restarts={limit} reached" if live else "no live worker is left"
            state["where"][aid] = (None, inc + 1, f"its host {why}, and it was not restarted ({reason})")
        moves.append((aid, state["where"][aid]))
    for w in live if moves else ():
        post(state, w, ("moved", moves), "moved")


def _next_worker(state, live):
    turn = state["turn"]
    state["turn"] = turn + 1
    return live[turn % len(live)]
