"""The mini-tasks scheduler: a task graph as plain data, and the verbs that change it.

This module is the task-parallel architecture -- Dask's, in miniature. The
**driver** keeps the graph and decides where each task runs; the
**workers** (`engines.mini.taskworker.TaskWorker`) keep the data. A
result stays on the worker that made it; a task that needs it fetches it
from that worker directly; the scheduler sees only keys, sizes and
locations. Nothing here does I/O: every verb reads and mutates ``state``
and leaves messages for workers in ``state["outbox"]`` and finished
Futures in ``state["outcomes"]``; the session sends and settles them.

Policy
------

**Placing.** A task is sent to a worker as soon as it can start there
without the driver's help:

- when all its inputs are in memory: on the worker where it would start
  soonest, ``inputs it lacks there (bytes) / BANDWIDTH (+ FETCH_LATENCY if
  it lacks any) + tasks queued there x typical task time``. Big inputs
  pull a task to the worker holding most of their bytes (locality); small
  ones let the least loaded worker win; ties go round the workers in turn;
- when its function is known to be *short* (under `SHORT` on average) and
  every unfinished input is queued or running on one worker: on that
  worker, at once. The task waits there for its inputs, so a chain or a
  local subtree of short tasks runs as one loop, with no round trip
  through the driver between links (Dask calls this speculative
  assignment). A long task gains little from skipping a round trip and
  would give up being balanced, so it is placed when its inputs are ready;
  a function not run yet counts as long;
- otherwise it waits here until an input finishes.

**Transfer.** The ``run`` message lists where each input lives; the worker
fetches what it lacks from those peers over the mesh and tells us it
holds a copy (so a later task may be placed there, and the copy is
released with the original). Values come to the driver only in two cases:
the driver waits for it (``result()``, ``gather``), or it is small (under
`INLINE` bytes) and the driver holds its Future -- then it rides in the
completion report, as Ray returns small objects inline, instead of
costing a second round trip. A small value the driver has this way also
rides *in* the ``run`` message of a task that needs it elsewhere
(``payloads``), sparing that worker a fetch before it can start; large
values move only worker to worker.

**Release.** A result is kept while a dependent has not finished
(``waiters``) or the driver holds its Future (``held``: a Future that is
garbage collected, or whose ``tasks()`` context closes, lets go). When
both end, its holders are told to drop it. When the driver lets go first
and every remaining dependent is placed on the one worker that makes the
result, that worker is told at once (``unheld``) and drops it after they
run -- without waiting for their reports to come here and a release to go
back, so a chain running ahead of the driver keeps two results, not all.
Its *spec* outlives it as lineage while a dependent that might need
recomputing is in the graph, and is forgotten after. Nothing is
cancelled: a task whose Future is dropped before it runs still runs (a
side effect is not lost); its result is released as soon as it exists.

**Stealing.** When a worker has nothing to do while another has two or
more tasks, the busy one is asked to hand back up to half of its queue,
newest first: tasks whose inputs are all in memory -- but never one
shorter than `SHORT` (moving it costs more than running it) nor one a
local dependent is waiting for (that would break the chain it was placed
for). It returns what it has not started; those go to the idle worker.

**Failure.** A worker lost (the cluster's ``("lost", k, why)``, or a peer
that found it gone) has its queued and running tasks placed again, and
every result it alone held is gone: if something still needs one, it is
recomputed from its spec, and so on up the lineage through released
inputs. A worker that cannot get an input (its holder died, or no longer
has it) hands the task back (``gave-back``) and it is placed again once
the input exists again. A task that raises is retried on its worker if ``retries`` says
so; then it fails its Future with the remote traceback, and every task
downstream of it fails naming it. With no worker left, everything
unfinished fails: never a hang.

State (``state[name]``; *key* is a task's name, *w* a worker id)
------------------------------------------------------------------

::

    specs      {key: (fid, args, kwargs, deps, retries, slots)}   every task in the graph (its lineage);
                                         slots ((position or keyword, dep key), ...) say where each
                                         input's value goes in args/kwargs (None stands there meanwhile)
    dependents {key: {key: None}}        reverse edges, in submission order (no entry: no dependents)
    status     {key: "waiting" | "processing" | "memory" | "erred" | "released"}
    waiting    {key: {dep, ...}}         not placed yet: its inputs not in memory
    processing {w: {key: None}}          placed on w, not reported back (queued, fetching or running)
    where      {key: w}                  the same, per key
    who_has    {key: {w, ...}}           results in memory, and the workers holding them
    has_what   {w: {key, ...}}           the same, per worker
    nbytes     {key: int}                the size of each result in memory
    payloads   {key: bytes}              small results the driver has too (pickled), to send with tasks
    waiters    {key: {key, ...}}         dependents that have not finished: they need this result (or no entry)
    held       {key, ...}                the driver holds a live Future of it
    wanted     {key, ...}                the driver waits for its value
    errors     {key: TaskError}          why a task failed
    functions  {fid: [fn, pickled, tasks using it]}; fid_of {id(fn): fid}; idle_fns {fid: None} (LRU)
    sent_fns   {w: {fid, ...}}           functions a worker has
    duration   {fid: seconds}            running mean per function; task_time: the same over all
    stealing   {w: ({key, ...}, thief)}  a steal request in flight
    alive      [w, ...]                  workers in use; lost {w: why}
    outbox     {w: [message, ...]}       for the session to send
    outcomes   [(key, error, payload)]   for the session to settle (payload: a pickled value)

Worked example
--------------

Two workers. ``a`` has no inputs: the least loaded worker takes it. ``b``
needs ``a``; nothing is known of ``add`` yet (it might be long), so ``b``
waits here for ``a``::

    >>> import operator
    >>> state = new_state([0, 1])
    >>> fid = function_id(state, operator.add)
    >>> submit(state, "a", fid, (1, 2), {}, (), 0)
    >>> submit(state, "b", fid, (None, 10), {}, ((0, "a"),), 0)     # add(<a's value>, 10)
    >>> state["where"], state["waiting"]
    ({'a': 0}, {'b': {'a'}})
    >>> [m[:2] for m in state["outbox"][0]]          # the function goes once, then the task
    [('fn', 1), ('run', 'a')]

Worker 0 reports ``a`` done in 0.1 ms: ``b`` goes where ``a``'s bytes are.
``add`` is known to be short now, so ``c`` (it needs ``b``) is sent to
worker 0 at once, to wait there for ``b``; ``d`` has no inputs and goes to
the least loaded worker::

    >>> state["outbox"] = {0: [], 1: []}
    >>> report(state, 0, [("done", "a", 28, 0.0001, None)])
    >>> submit(state, "c", fid, (None, 1), {}, ((0, "b"),), 0)
    >>> submit(state, "d", fid, (5, 5), {}, (), 0)
    >>> state["where"]
    {'b': 0, 'c': 0, 'd': 1}
    >>> state["outbox"][0][1][6]                     # c's inputs: b, on worker 0 itself (no value sent)
    (('b', 0, None),)

The driver lets go of ``a`` (the user dropped its Future). Its last
consumer ``b`` is on ``a``'s own worker, which may therefore drop ``a`` as
soon as ``b`` has run, without waiting for a release from here::

    >>> drop(state, "a")
    >>> state["outbox"][0][-1]
    ('unheld', 'a', ('b',))

Worker 0 reports ``b`` and ``c``; ``c``'s small value came inline (its
Future is held), and ``a`` is released (worker 0 may have dropped it
already)::

    >>> state["outbox"] = {0: [], 1: []}
    >>> report(state, 0, [("done", "b", 28, 0.0001, None), ("done", "c", 28, 0.0001, b"pickled 14")])
    >>> state["status"], state["outcomes"]
    ({'a': 'released', 'b': 'memory', 'c': 'memory', 'd': 'processing'}, [('c', None, b'pickled 14')])
    >>> state["outbox"][0]
    [('release', 'a')]

Worker 1 dies before reporting ``d``: ``d`` goes to worker 0::

    >>> lose_worker(state, 1, "worker 1 was killed by SIGKILL")
    >>> state["where"], state["outbox"][0][-1][:2]
    ({'d': 0}, ('run', 'd'))
"""

from __future__ import annotations

from collections import OrderedDict

import cloudpickle

from engines.api import TaskError
from engines.common import first_line

BANDWIDTH = 200e6       # bytes/s assumed for a transfer between workers (pickle + loopback + unpickle)
INLINE = 16 * 1024      # bytes: a result this small rides in its report when the driver holds its Future
SHORT = 0.001           # s: functions faster than this on average are placed ahead (chains) and never stolen
FETCH_LATENCY = 0.0003  # s: what asking a peer for an input costs beside its bytes (a round trip)
STEAL_SCAN = 64         # how many of a victim's newest tasks are considered for stealing
IDLE_FNS = 64           # functions no task uses any more, kept for a while (LRU) before workers forget them
PUSH_NONE, PUSH_SMALL, PUSH_ALL = 0, 1, 2   # run message: send the value with the report? (never / if small / always)


def new_state(workers) -> dict:
    """An empty graph over ``workers`` (their ids)."""
    workers = list(workers)
    return {
        "specs": {}, "dependents": {}, "status": {}, "waiting": {},
        "processing": {w: {} for w in workers}, "where": {}, "who_has": {}, "has_what": {w: set() for w in workers},
        "nbytes": {}, "payloads": {}, "waiters": {}, "held": set(), "wanted": set(), "errors": {},
        "functions": {}, "fid_of": {}, "idle_fns": OrderedDict(), "sent_fns": {w: set() for w in workers},
        "next_fid": 1, "duration": {}, "task_time": 0.001, "stealing": {},
        "alive": workers, "lost": {}, "turn": 0,
        "outbox": {w: [] for w in workers}, "outcomes": [],
    }


# ================================================================ the driver's verbs


def function_id(state, fn) -> int:
    """The id of ``fn``, pickling it the first time it is seen (by identity). Mutates ``functions``.

    Each worker unpickles it once. So a closure whose captured state changes
    between submissions is sent as it was first seen: pass changing state as an argument.
    """
    fid = state["fid_of"].get(id(fn))
    if fid is None:
        fid = state["next_fid"]
        state["next_fid"] += 1
        pickled = cloudpickle.dumps(fn, protocol=5)   # by value where it must be: lambdas, closures, __main__
        state["functions"][fid] = [fn, pickled, 0]         # fn is kept so its id cannot be reused
        state["fid_of"][id(fn)] = fid
    return fid


def submit(state, key, fid, args, kwargs, slots, retries) -> None:
    """Add task ``key``: ``fn(*args, **kwargs)`` with its inputs' values put in ``slots``. Mutates.

    Raises TaskError when a dependency is no longer in the graph (its Future's context closed).
    """
    status, specs = state["status"], state["specs"]
    deps = tuple(dict.fromkeys(k for _, k in slots)) if slots else ()
    for d in deps:
        if d not in status:
            raise TaskError(f"task {key} depends on {d}, which was released when its tasks() context "
                            "closed; submit the dependency again in this context", task=key)
    specs[key] = (fid, args, kwargs, deps, retries, slots)
    _use_function(state, fid, +1)
    state["held"].add(key)
    dependents, waiters = state["dependents"], state["waiters"]
    for d in deps:                           # sets are made only for keys that have dependents:
        dependents.setdefault(d, {})[key] = None     # fewer objects for the garbage collector to walk
        waiters.setdefault(d, set()).add(key)
    bad = next((d for d in deps if status[d] == "erred"), None)
    if bad is not None:
        status[key] = "waiting"
        _fail(state, key, _downstream(key, bad, state["errors"][bad]))
        return
    status[key] = "waiting"
    for d in deps:
        if status[d] == "released":
            _recompute(state, d)
    state["waiting"][key] = {d for d in deps if status[d] != "memory"}
    _place(state, [key])


def want(state, key) -> None:
    """The driver waits for ``key``'s value: have it sent when it exists. Mutates."""
    status = state["status"].get(key)
    if status is None:
        state["outcomes"].append((key, TaskError(f"task {key} was released when its tasks() context closed; "
                                                 "ask for results inside the with block", task=key), None))
        return
    if key in state["wanted"] or status == "erred":
        return
    state["wanted"].add(key)
    if status == "processing":
        state["outbox"][state["where"][key]].append(("want", [key]))
    elif status == "memory":
        state["outbox"][_a_holder(state, key)].append(("want", [key]))
    elif status == "released":           # its value was lost with a worker: compute it again
        _recompute(state, key)


def source_of(state, key):
    """The worker whose report will bring ``key``'s value (the one running it, or a holder), or None."""
    status = state["status"].get(key)
    if status == "processing":
        return state["where"][key]
    if status == "memory":
        return _a_holder(state, key)
    return None


def in_flight(state) -> int:
    """How many tasks are waiting or running."""
    return len(state["waiting"]) + sum(map(len, state["processing"].values()))


def drop(state, key) -> None:
    """The driver no longer holds a Future of ``key``: release the result if nothing else needs it. Mutates."""
    if key not in state["held"]:
        return
    state["held"].discard(key)
    state["wanted"].discard(key)
    _release_if_unneeded(state, key)
    _release_after_local_use(state, key)
    _forget_if_unneeded(state, key)


# ================================================================ a worker's report


def report(state, w, entries) -> None:
    """Apply worker ``w``'s report, a list of entries. Mutates. The entries::

        ("done", key, nbytes, seconds, payload or None)   ran; holds the result (payload: its pickled value)
        ("erred", key, TaskError)                         raised (after its retries)
        ("value", key, payload)                           a wanted value it already held
        ("copy", key, nbytes)                             fetched a copy of an input from a peer
        ("gave-back", [key, ...], why)                    will not run these: why is ("stolen",),
                                                          ("lost", peer) or ("absent", peer, [input, ...])
    """
    if w not in state["alive"]:
        return                          # a worker we gave up on: what it says no longer counts
    for entry in entries:
        kind = entry[0]
        if kind == "done":
            finished(state, w, *entry[1:])
        elif kind == "erred":
            _erred(state, w, entry[1], entry[2])
        elif kind == "value":
            state["wanted"].discard(entry[1])
            state["outcomes"].append((entry[1], None, entry[2]))
            _keep_payload(state, entry[1], entry[2])
        elif kind == "copy":
            _copied(state, w, entry[1], entry[2])
        elif kind == "gave-back":
            _gave_back(state, w, entry[1], entry[2])


def finished(state, w, key, nbytes, seconds, payload) -> None:
    """Task ``key`` ran on ``w``, which holds its result of ``nbytes``. Mutates."""
    status = state["status"].get(key)
    if status not in ("processing", "waiting"):
        if status == "memory":          # it ran twice (recomputed, but a copy turned up first): keep both
            _copied(state, w, key, nbytes)
        else:                           # released or forgotten meanwhile: nobody wants it
            state["outbox"][w].append(("release", key))
        return
    _unplace(state, key)
    state["waiting"].pop(key, None)
    state["status"][key] = "memory"
    state["who_has"][key] = {w}
    state["has_what"][w].add(key)
    state["nbytes"][key] = nbytes
    if seconds is not None:
        fid = state["specs"][key][0]
        old = state["duration"].get(fid)
        state["duration"][fid] = seconds if old is None else 0.8 * old + 0.2 * seconds
        state["task_time"] = 0.95 * state["task_time"] + 0.05 * seconds
    if payload is not None:
        state["wanted"].discard(key)
        state["outcomes"].append((key, None, payload))
        _keep_payload(state, key, payload)
    _finished_inputs(state, key)
    ready = []
    for d in state["dependents"].get(key, ()):
        pending = state["waiting"].get(d)
        if pending is not None and key in pending:
            pending.discard(key)
            ready.append(d)
    _place(state, ready)
    _release_if_unneeded(state, key)
    _forget_if_unneeded(state, key)


def lose_worker(state, w, why: str) -> None:
    """Worker ``w`` is gone: place its tasks again, recompute what it alone held and is needed. Mutates."""
    if w not in state["alive"]:
        return
    state["alive"].remove(w)
    state["lost"][w] = why
    state["outbox"].pop(w, None)
    state["sent_fns"].pop(w, None)
    state["stealing"].pop(w, None)
    for thief_of in [v for v, (_, thief) in state["stealing"].items() if thief == w]:
        state["stealing"][thief_of] = (state["stealing"][thief_of][0], None)
    again = list(state["processing"].pop(w))
    for key in again:
        state["where"].pop(key, None)
        state["status"][key] = "waiting"
    for key in state["has_what"].pop(w):
        holders = state["who_has"][key]
        holders.discard(w)
        if not holders:
            _lost_value(state, key)
    _replace(state, again)


def balance(state) -> None:
    """Ask a busy worker to give tasks to an idle one (see Stealing above). Mutates ``stealing``, ``outbox``."""
    processing, alive = state["processing"], state["alive"]
    idle = [w for w in alive if not processing[w] and w not in {t for _, t in state["stealing"].values()}]
    if not idle:
        return
    victim = max(alive, key=lambda w: len(processing[w]))
    queue = processing[victim]
    if len(queue) < 2 or victim in state["stealing"]:
        return
    status, specs, where, duration = state["status"], state["specs"], state["where"], state["duration"]
    keys = []
    for i, key in enumerate(reversed(queue)):
        if i >= STEAL_SCAN or len(keys) >= len(queue) // 2:
            break
        fid, _, _, deps, _, _ = specs[key]
        if duration.get(fid, SHORT) < SHORT:
            continue
        if any(status[d] != "memory" for d in deps):
            continue                     # waits for a local input: it belongs where it is
        if any(where.get(d) == victim for d in state["dependents"].get(key, ())):
            continue                     # a local dependent waits for it
        keys.append(key)
    if keys:
        state["stealing"][victim] = (set(keys), idle[0])
        state["outbox"][victim].append(("steal", keys))


# ================================================================ internals: placing


def _place(state, keys) -> None:
    """Send each waiting task of ``keys`` to a worker if it can start there (see Placing). Mutates.

    A task placed may make its own waiting dependents placeable (a chain): they are tried next.
    """
    status, waiting, where, stealing = state["status"], state["waiting"], state["where"], state["stealing"]
    specs, duration = state["specs"], state["duration"]
    todo = list(keys)
    if not state["alive"]:                  # nowhere to run: fail, never wait forever
        error = TaskError(f"mini-tasks has no worker left ({'; '.join(state['lost'].values())}); "
                          "start a new session")
        for key in todo:
            if status.get(key) == "waiting":
                _fail(state, key, error)
        return
    while todo:
        key = todo.pop()
        pending = waiting.get(key)
        if pending is None or status.get(key) != "waiting":
            continue
        if not pending:
            _dispatch(state, key, _best_worker(state, key))
        else:
            if duration.get(specs[key][0], SHORT) >= SHORT:
                continue                     # long, or not known yet: place it when its inputs are ready
            places = {where.get(d) for d in pending}
            if len(places) != 1:
                continue
            w = places.pop()
            if w is None or (w in stealing and not stealing[w][0].isdisjoint(pending)):
                continue
            _dispatch(state, key, w)
        todo.extend(d for d in state["dependents"].get(key, ()) if d in waiting)


def _best_worker(state, key) -> int:
    """The worker where ``key`` would start soonest: missing input bytes over bandwidth, plus its queue.

    Without inputs: the least loaded, the first of them on a tie -- so a caller who waits for each
    task in turn keeps one worker busy (warm) and lets the others sleep, instead of waking each in turn.
    """
    alive, processing = state["alive"], state["processing"]
    deps = state["specs"][key][3]
    turn, n = state["turn"], len(alive)
    state["turn"] = turn + 1
    if not deps:
        return min(alive, key=lambda w: len(processing[w]))
    nbytes, who_has = state["nbytes"], state["who_has"]
    total, have = 0, {}
    for d in deps:
        size = nbytes[d]
        total += size
        for h in who_has[d]:
            have[h] = have.get(h, 0) + size
    per_task = state["task_time"]
    best, best_cost = None, None
    for i in range(n):
        w = alive[(turn + i) % n]
        lacking = total - have.get(w, 0)
        cost = lacking / BANDWIDTH + (FETCH_LATENCY if lacking else 0.0) + len(processing[w]) * per_task
        if best_cost is None or cost < best_cost:
            best, best_cost = w, cost
    return best


def _dispatch(state, key, w) -> None:
    """Send ``key`` to worker ``w``: its function first if ``w`` lacks it, then the run message. Mutates."""
    fid, args, kwargs, deps, retries, slots = state["specs"][key]
    state["waiting"].pop(key, None)
    state["status"][key] = "processing"
    state["where"][key] = w
    state["processing"][w][key] = None
    out = state["outbox"][w]
    if fid not in state["sent_fns"][w]:
        state["sent_fns"][w].add(fid)
        out.append(("fn", fid, state["functions"][fid][1]))
    inputs = ()
    if deps:
        status, payloads = state["status"], state["payloads"]
        inputs = []
        for d in deps:
            holder = _a_holder(state, d, w) if status[d] == "memory" else w
            inputs.append((d, holder, payloads.get(d) if holder != w else None))
        inputs = tuple(inputs)
    push = PUSH_ALL if key in state["wanted"] else PUSH_SMALL if key in state["held"] else PUSH_NONE
    out.append(("run", key, fid, args, kwargs, slots, inputs, push, retries))


def _keep_payload(state, key, payload) -> None:
    if type(payload) is bytes and len(payload) <= INLINE and state["status"].get(key) == "memory":
        state["payloads"][key] = payload


def _a_holder(state, key, prefer=None) -> int:
    holders = state["who_has"][key]
    return prefer if prefer in holders else next(iter(holders))


def _unplace(state, key) -> None:
    w = state["where"].pop(key, None)
    if w is not None:
        state["processing"][w].pop(key, None)


def _replace(state, keys) -> None:
    """Put ``keys`` (back) into waiting: recompute released inputs, then place them. Mutates."""
    status, specs = state["status"], state["specs"]
    keys = list(keys)
    for key in keys:
        deps = specs[key][3]
        for d in deps:
            if status[d] == "released":
                _recompute(state, d)
        state["waiting"][key] = {d for d in deps if status[d] != "memory"}
    _place(state, keys)


def _recompute(state, key) -> None:
    """``key``'s result is gone but needed: run it again, and first whatever released input it needs.

    Walks up the lineage through released inputs, marking each waiting
    again (its inputs must be kept until it has run). Mutates.
    """
    status, specs, waiters = state["status"], state["specs"], state["waiters"]
    again, todo = [], [key]
    while todo:
        k = todo.pop()
        if status[k] != "released":
            continue
        status[k] = "waiting"
        again.append(k)
        for d in specs[k][3]:
            waiters.setdefault(d, set()).add(k)
            todo.append(d)
    _replace(state, reversed(again))


def _lost_value(state, key) -> None:
    """No worker holds ``key`` any more: recompute it now if something needs it, else on demand. Mutates."""
    state["status"][key] = "released"
    state["who_has"].pop(key, None)
    state["nbytes"].pop(key, None)
    state["payloads"].pop(key, None)
    for d in state["dependents"].get(key, ()):
        pending = state["waiting"].get(d)
        if pending is not None:          # a dependent not placed yet: this input is no longer ready
            pending.add(key)
    if state["waiters"].get(key) or key in state["wanted"]:
        _recompute(state, key)


# ================================================================ internals: finishing and failing


def _finished_inputs(state, key) -> None:
    """``key`` no longer needs its inputs: release those nothing else needs. Mutates."""
    waiters = state["waiters"]
    for d in state["specs"][key][3]:
        left = waiters.get(d)
        if left is not None:
            left.discard(key)
            if not left:
                del waiters[d]
        _release_if_unneeded(state, d)


def _release_if_unneeded(state, key) -> None:
    if state["status"].get(key) == "memory" and not state["waiters"].get(key) and key not in state["held"]:
        for w in state["who_has"].pop(key):
            state["has_what"][w].discard(key)
            state["outbox"][w].append(("release", key))
        state["nbytes"].pop(key, None)
        state["payloads"].pop(key, None)
        state["status"][key] = "released"


def _release_after_local_use(state, key) -> None:
    """If every task still needing ``key`` is placed on the one worker making or holding it, let that
    worker drop it once they have run (``("unheld", key, consumers)``). Mutates ``outbox``."""
    waiters, status = state["waiters"].get(key), state["status"].get(key)
    if not waiters:
        return
    if status == "processing":
        w = state["where"][key]
    elif status == "memory" and len(state["who_has"][key]) == 1:
        w = next(iter(state["who_has"][key]))
    else:
        return
    where = state["where"]
    if all(where.get(t) == w for t in waiters):
        state["outbox"][w].append(("unheld", key, tuple(waiters)))


def _forget_if_unneeded(state, key) -> None:
    """Drop ``key`` from the graph once it is released or erred, unheld, and no task in the graph
    depends on it (lineage no longer needs it); then its inputs may follow. Mutates."""
    status, specs, dependents = state["status"], state["specs"], state["dependents"]
    todo = [key]
    while todo:
        k = todo.pop()
        if status.get(k) not in ("released", "erred") or k in state["held"] or dependents.get(k):
            continue
        fid, _, _, deps, _, _ = specs.pop(k)
        for table in (status, dependents, state["waiters"], state["errors"]):
            table.pop(k, None)
        _use_function(state, fid, -1)
        for d in deps:
            left = dependents.get(d)
            if left is not None:
                left.pop(k, None)
                if not left:
                    del dependents[d]
            if d in status:
                todo.append(d)


def _use_function(state, fid, change: int) -> None:
    """Count the tasks using ``fid``; when none is left for long (LRU), workers forget it. Mutates."""
    entry = state["functions"][fid]
    entry[2] += change
    idle = state["idle_fns"]
    if entry[2] > 0:
        idle.pop(fid, None)
        return
    idle[fid] = None
    idle.move_to_end(fid)
    while len(idle) > IDLE_FNS:
        old, _ = idle.popitem(last=False)
        fn = state["functions"].pop(old)[0]
        state["fid_of"].pop(id(fn), None)
        for w, fids in state["sent_fns"].items():
            if old in fids:
                fids.discard(old)
                state["outbox"][w].append(("forget-fn", old))


def _erred(state, w, key, error) -> None:
    status = state["status"].get(key)
    if status not in ("processing", "waiting") or state["where"].get(key) not in (w, None):
        return
    _fail(state, key, error)


def _fail(state, key, error) -> None:
    """``key`` failed with ``error``; so does every task downstream of it, naming it. Mutates.

    A downstream task already on a worker is told to drop it (it would wait forever for ``key``).
    """
    todo = [(key, error)]
    while todo:
        k, err = todo.pop()
        if state["status"].get(k) not in ("waiting", "processing"):
            continue
        w = state["where"].get(k)
        if w is not None and k != key and w in state["outbox"]:
            state["outbox"][w].append(("drop", [k]))
        _unplace(state, k)
        state["waiting"].pop(k, None)
        state["status"][k] = "erred"
        state["errors"][k] = err
        state["wanted"].discard(k)
        state["outcomes"].append((k, err, None))
        _finished_inputs(state, k)
        todo.extend((d, _downstream(d, k, err)) for d in state["dependents"].get(k, ()))
    _forget_if_unneeded(state, key)


def _downstream(key, failed, error) -> TaskError:
    """The error of ``key``, which cannot run because its input ``failed`` raised ``error``."""
    return TaskError(f"task {key} did not run: dependency {failed} failed: {first_line(error)}",
                     task=key, dependency=failed, original=getattr(error, "original", None))


def _copied(state, w, key, nbytes) -> None:
    """``w`` fetched a copy of ``key``: one more holder. Mutates."""
    status = state["status"].get(key)
    if status == "memory":
        state["who_has"][key].add(w)
        state["has_what"][w].add(key)
    elif status in ("waiting", "processing"):   # its holder died after sending it, and it is being
        finished(state, w, key, nbytes, None, None)   # recomputed: the copy is as good as a new one
    else:                               # released meanwhile: the copy is not needed either
        state["outbox"][w].append(("release", key))


def _gave_back(state, w, keys, why) -> None:
    """``w`` will not run ``keys`` (see `report`): learn what ``why`` says, then place them again. Mutates."""
    thief = None
    if why[0] == "stolen":
        thief = state["stealing"].pop(w, (None, None))[1]
    elif why[0] == "lost":
        lose_worker(state, why[1], f"worker {w} lost its connection to worker {why[1]}")
    elif why[0] == "absent":
        peer = why[1]
        for d in why[2]:
            if peer in state["who_has"].get(d, ()):
                state["who_has"][d].discard(peer)
                state["has_what"][peer].discard(d)
                if not state["who_has"][d]:
                    _lost_value(state, d)
    again = []
    for key in keys:
        if state["status"].get(key) == "processing" and state["where"].get(key) == w:
            _unplace(state, key)
            state["status"][key] = "waiting"
            again.append(key)
    if thief is not None and thief in state["alive"]:
        status = state["status"]
        ready = [k for k in again if all(status[d] == "memory" for d in state["specs"][k][3])]
        for key in ready:                # a stolen task's inputs are in memory: straight to the thief
            _dispatch(state, key, thief)
        again = [k for k in again if k not in ready]
    _replace(state, again)
