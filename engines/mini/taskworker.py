"""The mini-tasks worker: runs what is ready, keeps the results, serves them to its peers.

One `TaskWorker` lives in each worker process of a mini-tasks cluster
(`engines.mini.cluster` calls ``handle`` for every message, one at a time).
The scheduler (`engines.mini.scheduler`, in the driver) sends it tasks;
their results stay here, in ``store``, until the scheduler says ``release``
(or ``unheld``: drop it yourself once these local tasks have run). An input
held by a peer is fetched from that peer directly (``get`` -> ``data``); a
peer's fetch is served from ``store``. What happened goes back to the
driver in batched **reports** -- keys, sizes and durations; a value only
when the driver waits for it or it is small and its Future is held.

A worker is one thread: it handles a message, then runs ready tasks for up
to `SLICE` seconds, reports, and posts itself a ``("tick",)`` if more are
ready -- so a peer's fetch waits at most for the task in hand (Dask serves
fetches from a separate thread; one thread keeps this state lock-free and a
2-core machine free of thread switches).

Messages (the driver's come inside a ``("batch", [...])``; ``key`` is a task name)::

    driver -> worker  ("fn", fid, pickled)      ("forget-fn", fid)
                      ("run", key, fid, args, kwargs, slots, inputs, push, retries)
                      ("want", [key])  ("release", key)  ("drop", [key])  ("steal", [key])
                      ("unheld", key, consumers): drop key once these tasks have run here
                      ("reset",)  ("trace", token)  ("stats", token)
    worker -> driver  ("report", [entry, ...])  (entries: see scheduler.report)
                      ("trace", token, rows)  ("stats", token, {...})
    worker -> worker  ("get", [key])  ->  ("data", {key: value}, [absent key], {key: why not sent})

``slots`` say where each input's value goes among the arguments; ``inputs``
say who holds it (this worker itself: it is being made here, wait for it),
and carry its pickled value when it is small and the driver has it (then
nothing is fetched: the worker keeps it as a copy).

State of a `TaskWorker` (plain dicts)::

    fns      {fid: function}
    store    {key: value}            results held here (made here, or fetched copies); sizes {key: bytes}
    tasks    {key: [fn, args, kwargs, retries, {input key not here}, slots, fetched {peer: bytes}]}
    waiters  {key: [task key, ...]}  tasks here waiting for that input
    fetching {key: peer}             asked for, not arrived
    ready    deque([key, ...])       every input here: run next, in order
    wanted / small  {key, ...}       send the value with the report: always / if under INLINE bytes
    unheld   {key: {task key, ...}}  drop that result once these tasks (its last consumers) have run
    given    {key, ...}              tasks handed back to the scheduler (until sent here again)
    lost     {peer: why}

Worked example -- worker 0 of two, its cluster replaced by a stand-in that
records what it sends. ``a`` has no inputs; ``b`` needs ``a`` (made here:
it waits for it) and the driver waits for ``b``; ``c`` needs ``x``, which
worker 1 holds::

    >>> import operator
    >>> class Ctx:
    ...     me, n, sent = 0, 2, []
    ...     def send(self, dest, message, code=False):
    ...         self.sent.append((dest, message))
    ...         return 0
    ...     def flush(self, dest=None):
    ...         return 0
    >>> ctx = Ctx()
    >>> worker = TaskWorker(ctx, slice_s=1.0)
    >>> worker.handle(DRIVER, ("batch", [("fn", 1, cloudpickle.dumps(operator.add)),
    ...     ("run", "a", 1, (2, 3), {}, (), (), PUSH_NONE, 0),
    ...     ("run", "b", 1, (None, 10), {}, ((0, "a"),), (("a", 0, None),), PUSH_ALL, 0),
    ...     ("run", "c", 1, (None, 1), {}, ((0, "x"),), (("x", 1, None),), PUSH_NONE, 0)]))
    >>> [(dest, message[0]) for dest, message in ctx.sent]      # asked worker 1 for x; reported
    [(1, 'get'), ('driver', 'report')]
    >>> report = ctx.sent[1][1][1]
    >>> [entry[:2] for entry in report], pickle.loads(report[1][4])   # b's value came along
    ([('done', 'a'), ('done', 'b')], 15)
    >>> worker.handle(1, ("data", {"x": 41}, [], {}))            # worker 1 answers: c runs
    >>> [entry[:2] for entry in ctx.sent[-1][1][1]], worker.store["c"]
    ([('copy', 'x'), ('done', 'c')], 42)
"""

from __future__ import annotations

import itertools
import pickle
import sys
import time
from collections import deque

import cloudpickle

from engines.api import TaskError
from engines.common import task_error
from engines.mini.cluster import DRIVER
from engines.mini.scheduler import INLINE, PUSH_ALL, PUSH_NONE, PUSH_SMALL
from engines.mini.trace import Tracer

SLICE = 0.002            # s: a worker runs ready tasks this long, then looks at its inbox again
OUT_OF_BAND = 64 * 1024  # bytes: a pickled result this big travels beside the frame's pickle, uncopied
MAX_ROWS = 200_000       # trace rows a worker keeps per tasks() context


def sizeof(value, _depth: int = 0) -> int:
    """Estimated bytes of a value, without pickling it (containers are sampled).

    >>> sizeof(b"x" * 1000), sizeof(list(range(1000))) > 8000
    (1000, True)
    """
    if isinstance(value, (bytes, bytearray, str)):
        return len(value)
    if isinstance(value, memoryview):
        return value.nbytes
    nbytes = getattr(value, "nbytes", None)          # numpy arrays, pandas series
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(value, (list, tuple, set, frozenset, dict)) and value and _depth < 3:
        items = value.items() if isinstance(value, dict) else value
        sample = list(itertools.islice(items, 16))
        each = sum(sizeof(x, _depth + 1) for x in sample) / len(sample)
        return sys.getsizeof(value) + int(each * len(value))
    return sys.getsizeof(value)


class _Unloadable:
    """Stands for a function a worker could not unpickle: calling it says why."""

    def __init__(self, error: str):
        self.error = error

    def __call__(self, *args, **kwargs):
        raise TaskError(f"the function could not be loaded on this worker: {self.error}")


class TaskWorker:
    """The cluster runtime of mini-tasks, one per worker process (see the state above)."""

    def __init__(self, ctx, slice_s: float = SLICE, timed: bool = True):
        self.ctx, self.me, self.slice = ctx, ctx.me, slice_s
        self.timed = timed          # False: report every task as taking no time (the deterministic form)
        self.fns: dict = {}
        self.store: dict = {}
        self.sizes: dict = {}
        self.stored = self.peak = self.ran = 0
        self.tasks: dict = {}
        self.waiters: dict = {}
        self.fetching: dict = {}
        self.ready: deque = deque()
        self.wanted: set = set()
        self.small: set = set()
        self.unheld: dict = {}
        self.given: set = set()
        self.lost: dict = {}
        self.report: list = []
        self.tracer = Tracer(ctx.me)          # the rows of engines.mini.trace: a span per task, a send per transfer
        self.to_fetch: dict = {}
        self.tick_posted = False
        self.on = {"run": self._on_run, "fn": self._on_fn, "forget-fn": self._on_forget_fn,
                   "want": self._on_want, "release": self._on_release, "drop": self._on_drop,
                   "unheld": self._on_unheld,
                   "steal": self._on_steal, "get": self._on_get, "data": self._on_data,
                   "lost": self._on_lost, "tick": self._on_tick, "reset": self._on_reset,
                   "trace": self._on_trace, "stats": self._on_stats}

    #: the driver's messages are handled on the thread that read them when this worker is idle
    #: (`engines.mini.cluster`, "Inline"): a task starts without a thread switch
    inline = True

    def handle(self, source, message) -> None:
        """One message (or a batch of them); then fetch what is missing and run what is ready. Mutates."""
        if message[0] == "batch":
            on = self.on
            for m in message[1]:
                on[m[0]](source, m)
        else:
            self.on[message[0]](source, message)
        if self.to_fetch:
            for peer, keys in self.to_fetch.items():
                self._send(peer, ("get", keys))
            self.to_fetch = {}
        self._work()

    # -- tasks arriving
    def _on_run(self, source, m) -> None:
        _, key, fid, args, kwargs, slots, inputs, push, retries = m
        self.given.discard(key)
        self.tasks[key] = task = [self.fns[fid], args, kwargs, retries, set(), slots, None]
        if push == PUSH_ALL:
            self.wanted.add(key)
        elif push == PUSH_SMALL:
            self.small.add(key)
        missing = task[4]
        for dep, holder, value in inputs:
            if dep in self.unheld:               # one more consumer (a task recomputed after a loss)
                self.unheld[dep].add(key)
            if dep in self.store:
                continue
            if value is not None:                # small: the driver sent it along; keep it as a copy
                self.report.append(("copy", dep, self._keep(dep, pickle.loads(value))))
                continue
            if holder == self.me:
                if dep not in self.tasks:    # it was to be made here, but was given away meanwhile
                    return self._give_back([key], ("absent", self.me, [dep]))
            elif holder in self.lost:
                return self._give_back([key], ("lost", holder))
            elif dep not in self.fetching:
                self.fetching[dep] = holder
                self.to_fetch.setdefault(holder, []).append(dep)
            missing.add(dep)
            self.waiters.setdefault(dep, []).append(key)
        if not missing:
            self.ready.append(key)

    def _on_fn(self, source, m) -> None:
        try:
            self.fns[m[1]] = pickle.loads(m[2])
        except Exception as e:
            self.fns[m[1]] = _Unloadable(f"{type(e).__name__}: {e}")

    def _on_forget_fn(self, source, m) -> None:
        self.fns.pop(m[1], None)

    # -- running
    def _work(self) -> None:
        """Run ready tasks for one slice, post a tick if more are ready, send the report. Mutates."""
        ready = self.ready
        if ready:
            deadline = time.perf_counter() + self.slice
            while ready:
                key = ready.popleft()
                task = self.tasks.get(key)
                if task is None or task[4]:      # dropped or given back; or sent again and not ready yet
                    continue
                gone = [dep for _, dep in task[5] if dep not in self.store]
                if gone:                         # released here meanwhile: the scheduler will find it again
                    self._give_back([key], ("absent", self.me, gone))
                    continue
                del self.tasks[key]
                self._run(key, task)
                if time.perf_counter() >= deadline:
                    break
            if ready and not self.tick_posted:
                self.tick_posted = True
                self.ctx.send(self.me, ("tick",))
        if self.report:
            self._send_report()

    def _run(self, key, task) -> None:
        """Run one task (again if it raises and has retries left); keep its result here. Mutates."""
        fn, args, kwargs, retries, _, slots, fetched = task
        if slots:
            store, args, kwargs = self.store, list(args), dict(kwargs)
            for where, dep in slots:
                if type(where) is int:
                    args[where] = store[dep]
                else:
                    kwargs[where] = store[dep]
        start = time.time()
        for attempt in range(retries + 1):
            try:
                value, error = fn(*args, **kwargs), None
                break
            except BaseException as e:  # noqa: BLE001 -- a task's SystemExit is its failure, not ours
                error = e
        end = time.time()
        self.ran += 1
        if self.unheld and slots:
            self._consumed(key, slots, cancel=False)
        if len(self.tracer.rows) < MAX_ROWS:      # Tracer.span's row, built inline: cheaper than a `with`
            row = {"event": "span", "worker": self.me, "step": key, "what": "task", "start": start, "end": end}
            if fetched:
                row["fetched"] = fetched
            self.tracer.rows.append(row)
        wanted = key in self.wanted
        small = key in self.small
        self.wanted.discard(key)
        self.small.discard(key)
        if error is not None:
            self.waiters.pop(key, None)          # its dependents here wait for the driver's "drop"
            self.report.append(("erred", key, self._error(key, error)))
            return
        size = self._keep(key, value)
        payload = self._payload(key, value) if wanted or (small and size <= INLINE) else None
        self.report.append(("done", key, size, end - start if self.timed else 0.0, payload))
        self._arrived(key)

    def _arrived(self, key, source=None, size: int = 0) -> None:
        """Input ``key`` is here now (made here, or fetched from ``source``): ready what waited for it."""
        for t in self.waiters.pop(key, ()):
            task = self.tasks.get(t)
            if task is not None and key in task[4]:     # a stale entry (given back, sent again) counts once
                task[4].discard(key)
                if source is not None:
                    task[6] = fetched = task[6] or {}
                    fetched[source] = fetched.get(source, 0) + size
                if not task[4]:
                    self.ready.append(t)

    def _keep(self, key, value) -> int:
        size = sizeof(value)
        self.stored += size - self.sizes.get(key, 0)
        self.store[key], self.sizes[key] = value, size
        self.peak = max(self.peak, self.stored)
        return size

    def _error(self, key, error: BaseException) -> TaskError:
        return task_error(key, error, worker=self.me)

    def _payload(self, key, value):
        """``value`` pickled for the driver, or the TaskError saying why it cannot be."""
        try:
            try:
                data = pickle.dumps(value, protocol=5)
            except Exception:
                data = cloudpickle.dumps(value, protocol=5)
        except Exception as e:
            return TaskError(f"task {key} returned a {type(value).__name__} that cannot be pickled "
                             f"to the driver: {type(e).__name__}: {e}", task=key, worker=self.me)
        self._row(DRIVER, len(data), key, "result", 1)
        return pickle.PickleBuffer(data) if len(data) >= OUT_OF_BAND else data

    # -- the driver's other requests
    def _on_want(self, source, m) -> None:
        for key in m[1]:
            if key in self.store:
                self.report.append(("value", key, self._payload(key, self.store[key])))
            elif key in self.tasks:
                self.wanted.add(key)

    def _on_release(self, source, m) -> None:
        self.unheld.pop(m[1], None)
        self._free(m[1])

    def _free(self, key) -> None:
        size = self.sizes.pop(key, None)
        if size is not None:
            self.stored -= size
            del self.store[key]

    def _on_unheld(self, source, m) -> None:
        _, key, consumers = m
        if not self.given.isdisjoint(consumers):
            return                       # one went elsewhere and may fetch it from here: wait for "release"
        pending = {t for t in consumers if t in self.tasks}
        if pending:
            self.unheld[key] = pending
        else:
            self._free(key)

    def _consumed(self, key, slots, cancel: bool) -> None:
        """Task ``key`` has run (or was dropped): its inputs held for it alone may go. If it was handed
        back instead (``cancel``), it may fetch them from here: keep them for the scheduler's release."""
        for _, dep in slots:
            consumers = self.unheld.get(dep)
            if consumers is not None:
                if cancel:
                    del self.unheld[dep]
                else:
                    consumers.discard(key)
                    if not consumers:
                        del self.unheld[dep]
                        self._free(dep)

    def _on_drop(self, source, m) -> None:
        for key in m[1]:
            task = self.tasks.pop(key, None)
            self.wanted.discard(key)
            self.small.discard(key)
            if task is not None and self.unheld:
                self._consumed(key, task[5], cancel=False)

    def _on_steal(self, source, m) -> None:
        given = []
        for key in m[1]:
            if key in self.tasks and not any(key in self.tasks[t][4] for t in self.waiters.get(key, ())
                                             if t in self.tasks):
                task = self.tasks.pop(key)
                self.wanted.discard(key)
                self.small.discard(key)
                self.given.add(key)
                self._consumed(key, task[5], cancel=True)
                given.append(key)
        self.report.append(("gave-back", given, ("stolen",)))   # always answer: the scheduler waits for it

    def _give_back(self, keys, why) -> None:
        """Hand ``keys`` back to the scheduler, and the tasks here waiting for them. Mutates."""
        given, todo = [], list(keys)
        while todo:
            key = todo.pop()
            task = self.tasks.pop(key, None)
            if task is not None:
                given.append(key)
                self.given.add(key)
                self.wanted.discard(key)
                self.small.discard(key)
                self._consumed(key, task[5], cancel=True)
                todo.extend(self.waiters.pop(key, ()))
        if given:
            self.report.append(("gave-back", given, why))

    # -- peers
    def _on_get(self, source, m) -> None:
        """A peer's fetch: send what we hold, say what we do not."""
        found = {k: self.store[k] for k in m[1] if k in self.store}
        absent = [k for k in m[1] if k not in self.store]
        errors = {}
        self.ctx.flush(source)                   # a value that fails to pickle must take nothing else down
        try:
            nbytes = self.ctx.send(source, ("data", found, absent, errors))
        except OSError:
            return                               # the peer is gone; the cluster tells everyone
        except Exception:
            for k, v in list(found.items()):
                try:
                    cloudpickle.dumps(v, protocol=5)
                except Exception as e:
                    errors[k] = f"{type(e).__name__}: {e}"
                    del found[k]
            nbytes = self._send(source, ("data", found, absent, errors))
        if found:
            self._row(source, nbytes, "+".join(found), "data", len(found))

    def _on_data(self, source, m) -> None:
        _, found, absent, errors = m
        for key, value in found.items():
            if self.fetching.get(key) == source:
                del self.fetching[key]
            size = self._keep(key, value)
            self.report.append(("copy", key, size))
            self._arrived(key, source, size)
        for key in absent:
            self.fetching.pop(key, None)
            self._give_back(self.waiters.pop(key, ()), ("absent", source, [key]))
        for key, why in errors.items():
            self.fetching.pop(key, None)
            for t in self.waiters.pop(key, ()):
                if self.tasks.pop(t, None) is not None:
                    self.report.append(("erred", t, TaskError(
                        f"task {t} did not run: the result of {key} cannot be sent between workers: {why}",
                        task=t, worker=self.me)))

    def _on_lost(self, source, m) -> None:
        """Peer ``m[1]`` died: what we were fetching from it will never come. Mutates."""
        self.lost[m[1]] = m[2]
        for key in [k for k, peer in self.fetching.items() if peer == m[1]]:
            del self.fetching[key]
            self._give_back(self.waiters.pop(key, ()), ("lost", m[1]))

    def _on_tick(self, source, m) -> None:
        self.tick_posted = False

    # -- trace and statistics
    def _on_reset(self, source, m) -> None:
        self.tracer.take()
        self.peak = self.stored
        self.given.clear()

    def _on_trace(self, source, m) -> None:
        self._send_report()
        self._send(DRIVER, ("trace", m[1], self.tracer.rows))

    def _on_stats(self, source, m) -> None:
        self._send_report()
        self._send(DRIVER, ("stats", m[1], {"worker": self.me, "results": len(self.store), "bytes": self.stored,
                                             "peak_bytes": self.peak, "tasks_run": self.ran,
                                             "queued": len(self.tasks)}))

    def _row(self, to, nbytes: int, step: str, what: str, items: int) -> None:
        if len(self.tracer.rows) < MAX_ROWS:
            self.tracer.sent(to, nbytes, step, what, items=items)

    def _send_report(self) -> None:
        report, self.report = self.report, []
        if report:
            self._row(DRIVER, self._send(DRIVER, ("report", report)), "", "report", len(report))

    def _send(self, dest, message) -> int:
        try:
            return self.ctx.send(dest, message)
        except OSError:
            return 0                 # a peer that died: the cluster's ("lost", ...) follows
