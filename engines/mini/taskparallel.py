"""mini-tasks: the task-parallel architecture -- a scheduler places tasks, workers keep the data.

This is how Dask runs a task graph. The driver holds the **graph** and a
**scheduler** (`engines.mini.scheduler`: plain data and the verbs that
change it -- read it first). Worker processes hold the **data**: a task's
result stays on the worker that made it, and a task that needs it fetches
it from that worker directly, over the mesh of `engines.mini.cluster`. The
driver sees keys, sizes and locations; a value reaches it only when asked
for (``result()``, ``gather``) or when it is small and its Future is held.

Who does what::

    user thread     tasks.submit(fn, *args)  --> scheduler.submit: place it, or let it wait
                    future.result()          --> scheduler.want; send what the wait needs; wait
                                                 (for the only task in flight: read its worker's report
                                                 itself, `engines.mini.cluster.Host.read_for`)
    flusher thread  outbox -> one ("batch", [message, ...]) frame per worker, when kicked
                    and every LINGER s while submits come; what only frees memory
                    (releases) waits for it, or for the next task to the same worker
    reader threads  (the cluster's, one per worker, through its delivery hook ``on_read``)
                    a worker's message -> scheduler.report / lose_worker; settle Futures; wake
                    the flusher (a reader never writes: see `engines.mini.cluster`, "inline")
    receiver thread every 0.2 s: the deaths of Futures (results no longer held)
    worker          run what is ready, a slice at a time; fetch inputs from peers;
                    serve peers' fetches between tasks; report in batches
                    (`engines.mini.taskworker`: its messages and state)

Worked example -- a diamond on two workers, in one process (the
deterministic form: the same scheduler and worker code, one FIFO of
messages, each still pickled as on the wire)::

    >>> import operator
    >>> with MiniTasksEngine().start(workers=2, processes=False) as s:
    ...     with s.tasks() as tasks:
    ...         a = tasks.submit(bytes, 50_000)            # 50 kB: it stays on its worker
    ...         b = tasks.submit(len, a)                   # b and c wait for a (nothing is known
    ...         c = tasks.submit(bytes.count, a, 0)        # of len and count yet: they might be long)
    ...         print(tasks.submit(operator.add, b, c).result())
    ...     rows = s.trace()
    100000
    >>> [(r["step"].split("-")[0], r["worker"], r.get("fetched")) for r in rows if r["event"] == "span"]
    [('bytes', 0, None), ('count', 0, None), ('len', 1, {0: 50000}), ('add', 1, None)]
    >>> [(r["worker"], r["to"], r["what"]) for r in rows if r["event"] == "send" and r["what"] == "data"]
    [(0, 1, 'data')]

When ``a`` was done, ``count`` went where ``a`` is and ``len`` to the idle
worker 1, which fetched ``a``'s 50 kB from worker 0 itself: the driver
never saw them. ``add`` ran on worker 1 with ``len``'s result there;
``count``'s result (a small int, which the driver had been sent with its
report) came along inside ``add``'s run message.
"""

from __future__ import annotations

import itertools
import pickle
import threading
import time
import traceback
import weakref
from collections import deque

from engines.api import DataflowError, Future, Session, TaskError, Tasks
from engines.common import OneShot, plain_args, task_name
from engines.mini import scheduler
from engines.mini.cluster import DRIVER, ClusterError
from engines.mini.engine import MiniEngine, MiniSession
from engines.mini.taskworker import MAX_ROWS, SLICE, TaskWorker
from engines.plan import OnTasks, Plan, evaluate
from engines.support import Support

REPLY_TIMEOUT = 30.0     # s to wait for a worker's trace or stats
LINGER = 0.001           # s between the flusher's polls while submits keep coming (Dask's batched send: 2 ms)
LINGER_POLLS = 50        # polls with nothing to send before it sleeps until kicked
#: housekeeping: a worker frees memory when told; it can wait for the flusher (a batch of them within LINGER)
LAZY = frozenset({"release", "unheld", "drop"})

SUPPORTS = {
    "dataflow": Support.emulated("compiled to a task graph", streams="streams as micro-batches of such graphs"),
    "tasks": Support.native(),
    "actors": Support.unsupported("mini-tasks runs task graphs; stateful actors on the same workers are mini-actors"),
}


# ================================================================ the driver


def _lazy(msgs) -> bool:
    """Only housekeeping (`LAZY`): these messages may wait for the flusher."""
    return all(m[0] in LAZY for m in msgs)


def _plain(msgs) -> bool:
    """Do these messages' tasks take only plain arguments? Then the batch needs no cloudpickle (functions
    travel pickled already, in their own ``fn`` message)."""
    return all(m[0] != "run" or plain_args(m[3], m[4]) for m in msgs)


class MiniFuture(Future):
    """A task's Future. While it lives, the driver holds its result (see the scheduler's Release).

    The session, not the Future, stamps the task's latency: when the worker's report that it
    ended reaches the driver, whether or not the Future is still alive; the value comes only
    when asked for (or inline in that report, when it is small).
    """

    _new_event = OneShot

    def __init__(self, name: str, session: "MiniTasksSession"):
        super().__init__(name)
        self._session = session

    def _fetch(self, timeout):
        self._session._wait([self], timeout)

    def __del__(self):
        try:
            self._session._dropped.append(self.name)     # lock-free: applied at the next scheduler step
        except Exception:
            pass


class MiniTasks(Tasks):
    """One ``tasks()`` context. When it closes, the driver lets go of every result submitted in it."""

    def __init__(self, session: "MiniTasksSession"):
        super().__init__(session)
        self._keys: list[str] = []          # names, not Futures: a Future dropped early is released early

    def submit(self, fn, *args, retries: int = 0, **kwargs) -> Future:
        future = self.session._submit(fn, args, kwargs, retries)
        self._keys.append(future.name)
        return future

    def gather(self, futures) -> list:
        futures = list(futures)
        self.session._wait(futures, None)     # ask for all of them at once: one round trip, not one each
        return [f.result() for f in futures]

    def close(self) -> None:
        self.session._close_context(self._keys)
        self._keys = []


class MiniTasksSession(MiniSession):
    """A mini-tasks cluster and its scheduler; ``processes=False`` gives the deterministic in-process form."""

    engine = "mini-tasks"

    def __init__(self, workers, supports, settings, host, threaded: bool):
        super().__init__(workers, supports, settings, host)
        self._state = scheduler.new_state(host.local)
        self._lock = threading.Lock()             # the scheduler state, futures and outbox
        self._send_lock = threading.Lock()        # one flush at a time keeps each worker's messages in order
        self._futures: dict = {}                  # key -> weakref to its MiniFuture
        self._submitted: dict = {}                # key -> when it was submitted, until its end is heard
        self._dropped: deque = deque()            # keys whose Futures died
        self._replies: dict = {}                  # token -> {worker: reply}
        self._replied = threading.Condition()
        self._tokens = itertools.count(1)
        self._rows: list[dict] = []
        self._broken = ""
        self._closed = False
        self._threaded = threaded
        self._kicked = False
        self._lingering = False                   # the flusher polls every LINGER s (see _kick)
        self._kick_cv = threading.Condition()
        self._threads = []
        if threaded:
            host.on_read(self._read)
            for target in (self._receive, self._flusher):
                thread = threading.Thread(target=target, daemon=True, name=f"mini-tasks {target.__name__}")
                thread.start()
                self._threads.append(thread)

    # -- the models
    def tasks(self) -> Tasks:
        self._check()
        with self._lock:
            for w in self._state["alive"]:
                self._state["outbox"][w].append(("reset",))
            self._rows = []
        self._kick()
        return MiniTasks(self)

    def run_plan(self, plan: Plan) -> dict[str, list]:
        with self.tasks() as tasks:
            try:
                return evaluate(plan, OnTasks(tasks), buckets=self.workers)
            except TaskError as e:
                if isinstance(e.original, DataflowError):
                    raise DataflowError(str(e.original)) from None
                raise DataflowError(f"flow {plan.name!r} on mini-tasks: {e}") from None

    # -- submitting and waiting
    def _submit(self, fn, args, kwargs, retries) -> MiniFuture:
        self._check()
        if not callable(fn):
            raise TypeError(f"tasks.submit needs a callable, got {type(fn).__name__} {fn!r:.60}")
        key = task_name(fn)
        slots = []
        for i, a in enumerate(args):
            if isinstance(a, Future):
                slots.append((i, self._dep(a, key)))
        for k, v in kwargs.items():
            if isinstance(v, Future):
                slots.append((k, self._dep(v, key)))
        if slots:
            args = tuple(None if isinstance(a, Future) else a for a in args)
            kwargs = {k: None if isinstance(v, Future) else v for k, v in kwargs.items()}
        future = MiniFuture(key, self)
        with self._lock:
            self._take_dropped()
            fid = scheduler.function_id(self._state, fn)
            scheduler.submit(self._state, key, fid, args, kwargs, tuple(slots), retries)
            self._futures[key] = weakref.ref(future)
            self._submitted[key] = future._t_submit
            outcomes = self._take_outcomes()
        self._settle(outcomes)
        self._kick(now=False)
        return future

    def _dep(self, future: Future, key: str) -> str:
        if not isinstance(future, MiniFuture) or future._session is not self:
            raise TaskError(f"task {key}: the Future {future.name} comes from another session; "
                            "pass its value (.result()) instead", task=key)
        return future.name

    def _wait(self, futures, timeout) -> None:
        """Ask for the values of ``futures`` (one message per holder, in one flush) and wait for them."""
        pending = [f for f in futures if not f.done()]
        if not pending:
            return
        with self._lock:
            self._take_dropped()
            for f in pending:
                scheduler.want(self._state, f.name)
            outcomes = self._take_outcomes()
            source = scheduler.source_of(self._state, pending[0].name) if len(pending) == 1 else None
            if source is not None and scheduler.in_flight(self._state) > 1:
                source = None           # others' reports are coming too: leave the reading to the readers
        self._settle(outcomes)
        if source is not None and self._threaded:
            self.host.poll_hint(source)  # the next task follows at once, as likely as not: poll for it
        self._flush(urgent=True)
        if any(self._state["outbox"].values()):
            self._kick(now=False)       # housekeeping, left for the flusher
        if not self._threaded:
            return self._drive(lambda: all(f.done() for f in pending))
        if source is not None:          # the one answer to come, from one worker: read it here, not on a reader
            self.host.read_for(source, pending[0].done, timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        for f in pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not f._event.wait(left):
                raise TimeoutError(f"{f.name} not done after {timeout} s")

    def _close_context(self, keys) -> None:
        closing = []
        with self._lock:
            self._take_dropped()
            for key in keys:
                self._submitted.pop(key, None)      # its end is no longer awaited
                ref = self._futures.pop(key, None)
                if ref is None:
                    continue
                future = ref()
                if future is not None and not future.done():
                    closing.append(future)
                scheduler.drop(self._state, key)
            outcomes = self._take_outcomes()
        for future in closing:
            future._set_error(TaskError(f"task {future.name} was released when its tasks() context closed, "
                                        "before its result was asked for; call result() inside the with block",
                                        task=future.name))
        self._settle(outcomes)
        self._kick()

    # -- the scheduler's side effects
    def _take_dropped(self) -> None:
        """Apply the deaths of Futures (under the lock)."""
        while self._dropped:
            key = self._dropped.popleft()
            if key in self._futures and self._futures[key]() is None:
                del self._futures[key]
            scheduler.drop(self._state, key)

    def _heard(self, keys) -> None:
        """Stamp the latency of each task of ``keys`` whose end the driver has just heard, once (under the lock)."""
        now = time.perf_counter()
        for key in keys:
            submitted = self._submitted.pop(key, None)
            if submitted is not None:
                self.latencies.add(now - submitted)

    def _take_outcomes(self) -> list:
        """The outcomes the scheduler left, each with its Future's weakref (under the lock).

        A task the scheduler itself failed (an input failed, no worker left) ends here: its latency too."""
        outcomes, self._state["outcomes"] = self._state["outcomes"], []
        self._heard(key for key, error, _ in outcomes if error is not None)
        return [(key, error, payload, self._futures.get(key)) for key, error, payload in outcomes]

    def _settle(self, outcomes) -> None:
        """Give each Future its value or error (not under the lock: a callback may submit)."""
        for key, error, payload, ref in outcomes:
            future = ref() if ref is not None else None
            if future is None or future.done():
                continue
            if error is None and isinstance(payload, BaseException):
                error = payload
            if error is not None:
                future._set_error(error)
                continue
            try:
                value = pickle.loads(payload)
            except Exception as e:
                future._set_error(TaskError(f"the result of task {key} could not be unpickled on the driver: "
                                            f"{type(e).__name__}: {e}", task=key))
                continue
            future._set_result(value)

    def _kick(self, now: bool = True) -> None:
        """Wake the flusher (once per batch: it takes everything queued when it runs).

        A submit passes ``now=False``: while the flusher is lingering -- it
        sent something in its last `LINGER_POLLS` polls -- it will take the
        task within `LINGER` s anyway, and a caller who waits for the result
        sends it at once. So a burst of submits, or a caller that waits for
        each one, does not wake a thread per task.
        """
        if self._threaded and not self._kicked and (now or not self._lingering):
            with self._kick_cv:
                self._kicked = True
                self._kick_cv.notify()

    def _urgent(self) -> bool:
        """Is more than `LAZY` housekeeping queued for some worker?"""
        return any(msgs and not _lazy(msgs) for msgs in self._state["outbox"].values())

    def _flush(self, urgent: bool = False) -> bool:
        """Send each worker its queued messages as one batch; whether there were any.

        ``urgent`` (a caller about to wait): only to the workers with more
        than `LAZY` housekeeping queued, so a round trip costs one frame, not
        one more to free the previous result on the other worker.
        """
        with self._send_lock:
            with self._lock:
                outbox = self._state["outbox"]
                batches = [(w, msgs) for w, msgs in outbox.items()
                           if msgs and not (urgent and _lazy(msgs))]
                for w, _ in batches:
                    outbox[w] = []
            for w, msgs in batches:
                self._send(w, msgs)
        return bool(batches)

    def _send(self, w, msgs) -> None:
        try:
            nbytes = self.host.send(w, ("batch", msgs), code=not _plain(msgs))
        except (ClusterError, OSError):
            return          # the worker is lost; the cluster's notice places its tasks again
        except Exception:
            return self._send_each(w, msgs)   # something would not pickle: find it, fail only its task
        if len(self._rows) < MAX_ROWS:
            self._rows.append({"event": "send", "worker": DRIVER, "to": w, "bytes": nbytes, "items": len(msgs),
                               "step": "", "what": "batch", "time": time.time()})

    def _send_each(self, w, msgs) -> None:
        for m in msgs:
            try:
                self.host.send(w, m, code=True)
            except (ClusterError, OSError):
                return
            except Exception as e:
                if m[0] != "run":
                    raise
                error = TaskError(f"task {m[1]} could not be sent to worker {w}: {type(e).__name__}: {e}",
                                  task=m[1], worker=w)
                with self._lock:
                    scheduler.report(self._state, w, [("erred", m[1], error)])
                    outcomes = self._take_outcomes()
                self._settle(outcomes)

    # -- the threads (processes) or the loop (in-process)
    def _flusher(self) -> None:
        """Send what is queued when kicked; while submits keep coming, also every `LINGER` s (`_kick`)."""
        quiet = 0
        while True:
            with self._kick_cv:
                if not self._kicked and not self._closed:
                    self._kick_cv.wait(LINGER if self._lingering else None)
                if self._closed:
                    return
                kicked, self._kicked = self._kicked, False
            sent = self._flush()
            quiet = 0 if kicked or sent else quiet + 1
            self._lingering = quiet < LINGER_POLLS

    def _read(self, source, message) -> bool:
        """The cluster's delivery hook: apply a worker's message on the thread that read it, saving the
        hand-off to the receiver thread (a waiting caller is woken one thread switch sooner)."""
        if self._closed:
            return False
        try:
            self._apply([(source, message)], flush=False)
        except BaseException:
            self._break(f"the mini-tasks driver failed:\n{traceback.format_exc()}")
        if any(self._state["outbox"].values()):   # a reader thread never writes: a worker's reader may
            self._kick(now=self._urgent())        # be busy running its tasks
        return True

    def _receive(self) -> None:
        """Housekeeping, every 0.2 s: the deaths of Futures (and whatever the delivery hook left)."""
        try:
            while not self._closed:
                event = self.host.recv(timeout=0.2)
                if event is None:
                    if self._dropped:
                        self._apply([])
                    continue
                events = [event]
                while len(events) < 1000 and (event := self.host.recv(timeout=0)) is not None:
                    events.append(event)
                self._apply(events)
        except BaseException:
            if not self._closed:
                self._break(f"the mini-tasks driver failed:\n{traceback.format_exc()}")

    def _drive(self, done) -> None:
        """The in-process form: deliver messages, one at a time, until ``done()``."""
        while not done():
            self._flush()
            try:
                event = self.host.recv()
            except ClusterError as e:
                raise TaskError(f"mini-tasks (in-process): {e}") from None
            self._apply([event])

    def _apply(self, events, flush: bool = True) -> None:
        """Worker reports and cluster notices into the scheduler; settle, balance, flush (``flush``)."""
        replies = False
        decided = time.time()
        with self._lock:
            self._take_dropped()
            for source, message in events:
                kind = message[0]
                if kind == "report":
                    scheduler.report(self._state, source, message[1])
                    self._heard(entry[1] for entry in message[1] if entry[0] in ("done", "erred"))
                elif kind == "lost":
                    scheduler.lose_worker(self._state, message[1], message[2])
                    replies = True
                elif kind in ("trace", "stats"):
                    self._replies.setdefault(message[1], {})[source] = message[2]
                    replies = True
                elif kind == "runtime-error":
                    self._broken = f"mini-tasks worker {message[1]} failed (a bug in the engine): {message[2]}"
            scheduler.balance(self._state)
            outcomes = self._take_outcomes()
            if self._trace_t0 is not None and len(self._rows) < MAX_ROWS:   # the scheduler's decisions, traced
                self._rows.append({"event": "span", "worker": "scheduler", "step": "report+balance",
                                   "what": "schedule", "start": decided, "end": time.time()})
        self._settle(outcomes)
        if replies:
            with self._replied:
                self._replied.notify_all()
        if self._broken:
            self._break(self._broken)
        if flush:
            self._flush()

    # -- trace and statistics
    def _ask(self, kind: str) -> dict:
        """Every live worker's answer to ``(kind, token)``: ``{worker: reply}``."""
        token = next(self._tokens)
        with self._lock:
            for w in self._state["alive"]:
                self._state["outbox"][w].append((kind, token))
        self._flush()

        def answered():
            got = self._replies.get(token, {})
            return all(w in got for w in self._state["alive"])

        if self._threaded:
            with self._replied:
                if not self._replied.wait_for(answered, REPLY_TIMEOUT):
                    raise TaskError(f"mini-tasks: workers did not answer {kind!r} within {REPLY_TIMEOUT:.0f} s")
        else:
            self._drive(answered)
        return self._replies.pop(token, {})

    def trace(self) -> list[dict]:
        """Event rows (see `engines.mini.trace`) since the last ``tasks()`` (or ``dataflow``) began:
        a ``span`` per task run (``step`` is the task, ``fetched`` ``{peer: bytes}`` of its inputs), a
        ``send`` per fetch served (``to`` the peer), per value sent to the driver (``what="result"``),
        per report and per batch the driver sent."""
        rows = list(self._rows)
        for w, worker_rows in sorted(self._ask("trace").items()):
            rows.extend(worker_rows)
        return rows

    def worker_stats(self) -> dict:
        """``{worker: {"results", "bytes", "peak_bytes", "tasks_run", "queued", ...}}``: what each holds now;
        ``peak_bytes`` since the last ``tasks()`` began."""
        return self._ask("stats")

    # -- ending
    def _check(self) -> None:
        if self._closed:
            raise TaskError("this mini-tasks session is closed")
        if self._broken:
            raise TaskError(f"this mini-tasks session is broken ({self._broken}); start a new one")

    def _break(self, why: str) -> None:
        """Fail every unfinished Future with ``why``: a bug must not become a hang."""
        self._broken = self._broken or why
        with self._lock:
            futures = [ref() for ref in self._futures.values()]
        for future in futures:
            if future is not None and not future.done():
                future._set_error(TaskError(why))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._kick_cv:
            self._kick_cv.notify()
        super().close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._break("the mini-tasks session is closed")


# ================================================================ the engine


class MiniTasksEngine(MiniEngine):
    name = "mini-tasks"
    architecture = "task parallel"
    description = "archbench's own engine: a scheduler places a task graph; results move worker to worker"
    supports = SUPPORTS
    runtime, local_runtime = "engines.mini.taskworker:TaskWorker", TaskWorker

    def mode_settings(self) -> dict:
        return {"serializer": "one pickle per batch (cloudpickle unless every argument is plain); each function pickled once",
                "placement": "missing input bytes / bandwidth + queue x task time; chains placed ahead",
                "bandwidth_assumed_MBps": scheduler.BANDWIDTH / 1e6, "short_task_ms": scheduler.SHORT * 1e3,
                "fetch_latency_assumed_ms": scheduler.FETCH_LATENCY * 1e3,
                "inline_result_bytes": scheduler.INLINE, "slice_ms": SLICE * 1e3}

    def start(self, workers: int = 2, **options) -> Session:
        settings = self.settings(workers, **options)
        # in-process, deterministic: one task per turn of the message loop; no clock in the decisions
        host = self.start_host(settings, {"slice_s": settings["slice_ms"] / 1e3}, {"slice_s": 0.0, "timed": False})
        return MiniTasksSession(workers, self.supports, settings, host, threaded=settings["processes"])


# ================================================================ a static graph


def run_graph(tasks, graph: dict, keys=None) -> dict:
    """Run a graph given as ``{key: (fn, *args)}`` on any engine's task model; ``{key: value}``.

    An argument that is a key of the graph stands for that task's value (a
    dependency), as in a Dask graph. ``keys`` are the values wanted
    (default: every key); the other results are released when it returns.

    >>> import operator
    >>> from engines.serial import SerialEngine
    >>> graph = {"x": (pow, 2, 5), "y": (operator.add, "x", 1), "z": (max, "x", "y")}
    >>> with SerialEngine().start() as s, s.tasks() as tasks:
    ...     run_graph(tasks, graph, ["z", "y"])
    {'z': 33, 'y': 33}
    """
    futures: dict = {}
    for key in _topological(graph):
        fn, *args = graph[key]
        futures[key] = tasks.submit(fn, *(futures[a] if _is_key(a, graph) else a for a in args))
    keys = list(graph) if keys is None else list(keys)
    return dict(zip(keys, tasks.gather([futures[k] for k in keys])))


def _is_key(arg, graph) -> bool:
    try:
        return arg in graph
    except TypeError:            # unhashable: a list, a dict -- a value, not a key
        return False


def _topological(graph: dict) -> list:
    """The keys, each after the keys it depends on; a cycle is an error naming it.

    >>> _topological({"b": (abs, "a"), "a": (abs, 1)})
    ['a', 'b']
    >>> _topological({"a": (abs, "b"), "b": (abs, "a")})
    Traceback (most recent call last):
    ...
    ValueError: the graph has a cycle: a -> b -> a
    """
    order, state = [], {}            # state: 1 = on the current path, 2 = done
    for root in graph:
        stack = [(root, iter(graph[root][1:]))] if root not in state else []
        path = [root]
        state.setdefault(root, 1)
        while stack:
            key, args = stack[-1]
            for arg in args:
                if _is_key(arg, graph):
                    if state.get(arg) == 1:
                        cycle = path[path.index(arg):] + [arg]
                        raise ValueError(f"the graph has a cycle: {' -> '.join(map(str, cycle))}")
                    if arg not in state:
                        state[arg] = 1
                        stack.append((arg, iter(graph[arg][1:])))
                        path.append(arg)
                        break
            else:
                stack.pop()
                path.pop()
                state[key] = 2
                order.append(key)
    return order
