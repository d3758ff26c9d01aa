"""Dask: a scheduler walks a graph of tasks; results stay on the workers.

Dask distributed is the task-parallel peer. The client (this process) sends
tasks to a **scheduler**, which hands each ready task to a worker; a task's
result stays in the memory of the worker that made it, and a task that
needs it fetches it from that worker directly. ``start(workers=N)`` runs a
``LocalCluster`` of N worker *processes*, one thread each (a thread-only
cluster would skip pickling, which every other engine pays).

- **tasks** (native): ``submit`` is ``client.submit``; our `Future`
  arguments become Dask futures, so a dependency's value moves worker to
  worker and never visits the driver. Completion is observed with Dask's
  own done-callback (the scheduler tells the client that a key finished),
  which stamps the latency then; the value itself is fetched from its
  worker only when ``result()`` or ``gather`` asks for it. Retries are
  Dask's (``retries=``); a task's error is raised on the worker as a
  `TaskError` carrying the worker's traceback.
- **dataflow** (emulated, as Dask itself does it): the flow is compiled into
  a graph of futures by `engines.plan.evaluate` over this task model (the
  graph ``dask.bag`` builds): per partition a task running the fused
  narrow steps, or a ``split`` task that also combines and cuts its output
  into N buckets; per bucket a small ``getitem`` task (it runs where the
  split's output lives, so only that bucket moves); per owner a ``merge``
  task (reduce or join) over its buckets from every partition. Buckets and
  partitions travel as `engines.common.Whole` lists, which Dask pickles in
  one piece (a plain list it serializes item by item: 30 times slower). Not
  ``dask.bag`` itself: a bag has no join of two bags, and its ``foldby``
  reduces through a tree rather than a hash shuffle -- the futures graph is
  the same shape dask.bag builds for ``groupby``, and keeps every engine's
  stages identical. A timed stream runs as micro-batches of such graphs
  (`engines.streaming`).
- **actors** (native): each actor is a Dask actor (``client.submit(cls,
  actor=True)``) hosting the user's object in `_Host`. Dask runs the calls
  of one actor one at a time, but **not in the order they were sent**: each
  call is its own RPC over a pool of connections. Per-sender order is
  restored the way TCP restores it: each sender process numbers its
  messages to each actor (`_sequence`), and the host parks a message that
  arrives early until its predecessors from the same sender have been
  queued (`_Host.deliver`). Messages are then handled, in that order, by
  one thread per actor.

**A lost worker.** ``processes=True`` runs each worker under a **nanny**
(setting ``nanny``): the nanny lives in this process, on the LocalCluster's
event loop, and the worker is its child process -- the process a fault
kills (`fault_targets`). When a worker dies, its nanny starts a new one
(a new pid, a new address), and the scheduler recomputes from lineage
every task that was running there or whose result lived only there: a
dataflow or a task graph gives the right answer, a little later. A task
running on workers that die ``allowed_failures`` times (Dask's
``distributed.scheduler.allowed-failures``, 3) fails with Dask's
``KilledWorker``. An actor's state is not recomputed: a call to an actor
whose worker died fails with an `ActorError` naming the actor.

**Trace** (``trace_start`` / ``trace_stop``), from Dask's own instruments:
the scheduler's task stream (`TaskStreamPlugin`, read from a cursor taken
at ``trace_start``, so no task of the run is missed) gives each task's
``compute`` span on its worker's lane (``"worker 0"``, ``"worker 1"``...:
the workers in order of their pids) and each fetch of its inputs as an
``exchange`` span on the fetching worker (reading or writing spilled data:
``io``; unpickling a task: ``schedule``); the workers' own transfer logs
give each fetch's bytes (a ``send`` from the worker that held them), and
the results the scheduler gathered for the driver (a ``send`` to
``"scheduler"``, which relays them). Dask actors are not tasks, so the
task stream shows only their creation: while recording, `_Host` stamps
each message it handles (``message`` spans on its worker's lane). Not
shown: the scheduler's own work, the time a message waits before its
actor takes it, and the bytes of a dask.dataframe ``p2p`` shuffle (moved by
Dask's shuffle extension, outside the transfer logs). Nothing is stamped
while no trace records, and on a cluster of its own the session removes the
task stream plugin again at ``trace_stop``.

A user's workload file is sent by value (its functions and classes are in
no module a worker can import), while Dask pickles arguments and results
with plain pickle: with such a file loaded, each argument and result travels
inside `_ByValue`, as cloudpickle bytes.

Settings (``settings()``): workers, one thread each, processes, Dask's fixed
batching intervals (client→scheduler 10 ms, scheduler→worker 5 ms: most of
a hop's latency; untuned here), the per-worker memory limit. Logs: the
driver's ``distributed`` logger and each worker's output go to files in
``log_dir``. Existing cluster: ``start(workers, address="tcp://host:8786")``
connects a client to that scheduler instead of starting a LocalCluster (its
workers must have archbench installed).

    >>> DaskEngine().settings(2)["threads_per_worker"]
    1
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import os
import threading
import time
import uuid
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import cloudpickle

from engines.adapters import LOG_DIR, AdapterEngine, AdapterSession, by_value_modules
from engines.api import ActorError, ActorRef, Actors, Future, Session, Tasks
from engines.common import HeldFuture, Whole, dependent_error, gather_held, invoke, task_error, task_name
from engines.plan import OnTasks, Plan, evaluate
from engines.support import Support
from engines.tracing import Trace, send, span, worker_lane

_LOG_ENV = "ARCHBENCH_DASK_WORKER_LOG"   # tells a worker (via `dask_setup`) where its output goes
_token = uuid.uuid4().hex[:8]             # keeps this process's task keys apart on a shared scheduler


class DaskEngine(AdapterEngine):
    name = "dask"
    architecture = "task parallel"
    description = "Dask distributed: a LocalCluster of N worker processes, or a running scheduler"
    supports = {
        "dataflow": Support.emulated("compiled to a graph of Dask futures (split, getitem and merge tasks "
                                     "per shuffle: the graph dask.bag builds)", streams="streams as micro-batches"),
        "tasks": Support.native(),
        "actors": Support.native(),
    }
    requires = ("dask", "distributed")
    extra = "dask"
    options = ("address",)

    def settings(self, workers: int, **options) -> dict:
        self.check_options(options)
        existing = options.get("address")
        theirs = "the existing cluster's own"
        return {
            "workers": workers,
            "address": existing,
            "cluster": "existing scheduler" if existing else "LocalCluster",
            "threads_per_worker": theirs if existing else 1,
            "processes": theirs if existing else True,
            "memory_limit": theirs if existing else "auto (system memory / workers)",
            "batched_send": "client→scheduler 10ms, scheduler→worker 5ms (Dask defaults)",
            "dashboard": None,
            "actors": "Dask actors; per-sender order restored with sequence numbers",
            # a lost worker (see the module docstring): a nanny restarts it, the scheduler reruns its tasks
            "nanny": theirs if existing else True,   # the session adds allowed_failures (Dask's config, read there)
            LOG_DIR: options.get(LOG_DIR),
        }

    def start(self, workers: int = 2, **options) -> Session:
        return DaskSession(workers, self.supports, self.settings(workers, **options))


class DaskSession(AdapterSession):
    engine = "dask"

    def __init__(self, workers, supports, settings):
        from distributed import Client, LocalCluster

        super().__init__(workers, supports, settings, logger="distributed")
        logs = self.logs
        self._cluster = None
        self._lanes: dict[str, tuple[str, int | None]] = {}   # worker address -> (its lane, its pid)
        self._trace_from: tuple[float, int] | None = None       # while recording: (time, task stream cursor)
        with self.opening():
            if settings["address"]:
                self.client = Client(settings["address"])
            else:
                with warnings.catch_warnings():
                    # the scheduler always opens an HTTP port (health checks), 8787 if free; when
                    # another Dask cluster holds it, it takes another and warns: harmless here
                    warnings.filterwarnings("ignore", message=r"Port \d+ is already in use", category=UserWarning)
                    self._cluster = LocalCluster(
                        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                        host="127.0.0.1", silence_logs=logging.WARNING,
                        preload=["engines.adapters.dask"], env={_LOG_ENV: str(logs / "dask-workers.log")})
                self.client = Client(self._cluster)
            self.client.wait_for_workers(workers if self._cluster else 1)
            self.settings["scheduler"] = self.client.scheduler.address
            if self._cluster is not None:
                self.settings["allowed_failures"] = _allowed_failures()
            self.settings["cluster_workers"] = len(self.client.scheduler_info()["workers"])

    @property
    def worker_pids(self) -> list[int]:
        """The worker processes now: a nanny replaces one that dies, with a new pid (existing cluster: none)."""
        return sorted(self.client.run(os.getpid).values()) if self._cluster is not None else []

    def fault_targets(self) -> list[tuple[int, str]]:
        """The worker processes now: idle ones first, then those the scheduler has tasks running on
        (the harness kills the last); in order of address within each.

        Each is the nanny's child: the nanny itself runs in this process, on
        the LocalCluster's event loop, and starts the worker again when it dies.
        """
        if self._cluster is None:
            return []
        pids = self.client.run(os.getpid)
        processing = self.client.processing()
        order = sorted(pids, key=lambda address: (bool(processing.get(address)), address))
        return [(pids[address], f"dask worker at {address} ({len(processing.get(address, ()))} tasks running; "
                                f"the worker process -- its nanny, in the driver, restarts it)") for address in order]

    def fault_reason(self) -> str:
        return ("the session drives an existing Dask cluster: its workers are not processes of this session, "
                "so it does not kill them")

    def run_plan(self, plan: Plan) -> dict[str, list]:
        # internal tasks: no latency samples, a step's DataflowError passes through as raised, lists move whole
        tasks = DaskTasks(self, log=None, raw_errors=True, whole_lists=True)
        return evaluate(plan, OnTasks(tasks), buckets=self.workers)

    def tasks(self) -> Tasks:
        return DaskTasks(self)

    def actors(self) -> Actors:
        return DaskActors(self)

    def trace_start(self) -> None:
        """Take the task stream's cursor (the first call installs the plugin) and start the workers' stamps."""
        client = self.client
        index = client.sync(client.scheduler.get_task_stream_index)
        self._trace_from = (time.time(), index)
        self._name_lanes(client.run(_trace_on))

    def trace_stop(self):
        """The task stream since `trace_start`, each fetch with its bytes, each actor message as stamped."""
        client = self.client
        t0, index = self._trace_from or (time.time(), None)
        self._trace_from = None
        records = client.sync(client.scheduler.get_task_stream, start_index=index) if index is not None else []
        if self._cluster is not None:   # our own cluster, no dashboard: no one else reads the task stream
            client.sync(client.scheduler.unregister_scheduler_plugin, name="task-stream")
        workers = client.run(_trace_off, t0)
        self._name_lanes({address: w["pid"] for address, w in workers.items()})
        rows, missing = _trace_rows(records, workers, self._lane, "driver" if client.direct_to_workers else "scheduler")
        return Trace(rows, source="Dask task stream (scheduler TaskStreamPlugin), the workers' transfer logs, "
                                  "actor messages stamped by the adapter", missing=missing)

    def _name_lanes(self, pids: dict[str, int]) -> None:
        """Give each worker not seen before the next lane: ``worker 0`` ... in order of pid. Mutates `_lanes`."""
        for address in sorted((a for a in pids if a not in self._lanes), key=lambda a: (pids[a], a)):
            self._lanes[address] = (worker_lane(len(self._lanes)), pids[address])

    def _lane(self, address: str) -> tuple[str, int | None]:
        """``(lane, pid)`` of the worker at ``address`` (one gone before it could be asked: a new lane)."""
        if address not in self._lanes:
            self._lanes[address] = (worker_lane(len(self._lanes)), None)
        return self._lanes[address]

    def close(self) -> None:
        client, cluster = getattr(self, "client", None), self._cluster
        self.client, self._cluster = None, None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        super().close()


def _allowed_failures() -> int:
    """How many workers may die while running one task before Dask fails it (``KilledWorker``)."""
    import dask.config

    return int(dask.config.get("distributed.scheduler.allowed-failures"))


def dask_setup(worker) -> None:
    """Worker preload (LocalCluster only): this worker's output goes to the log file, not the terminal."""
    path = os.environ.get(_LOG_ENV)
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)


# ----------------------------------------------------------------- trace

_TRACE_LOG_LENGTH = 100_000   # while recording, the workers' transfer logs keep this many (as the task stream)
_KIND_OF_ACTION = {"compute": "compute", "transfer": "exchange", "disk-read": "io", "disk-write": "io",
                   "deserialize": "schedule"}
_stamps: list | None = None    # on a worker, while a trace records: (actor, method, start, end) per message
_log_lengths: dict = {}        # on a worker, while a trace records: the transfer logs' own lengths
_log_marks: dict = {}          # on a worker, while a trace records: each transfer log's length at the start
_LOGS = ("transfer_incoming_log", "transfer_outgoing_log")


def _trace_on(dask_worker) -> int:
    """On each worker (``client.run``): start stamping actor messages, keep the whole transfer logs; its pid."""
    global _stamps
    _stamps = []
    for name in _LOGS:
        log = getattr(dask_worker, name)
        if log.maxlen is not None and log.maxlen < _TRACE_LOG_LENGTH:
            _log_lengths.setdefault(name, log.maxlen)
            log = deque(log, maxlen=_TRACE_LOG_LENGTH)
            setattr(dask_worker, name, log)
        _log_marks[name] = len(log)
    return os.getpid()


def _trace_off(t0: float, dask_worker) -> dict:
    """On each worker: stop stamping; what it stamped and logged since ``t0``, and its pid."""
    global _stamps
    stamps, _stamps = _stamps or [], None
    incoming, outgoing = (_logged(dask_worker, name, t0) for name in _LOGS)
    incoming = [(e["start"], e["stop"], e["who"], e["total"]) for e in incoming]
    outgoing = [(e["start"], e["who"], e["total"], list(e["keys"])) for e in outgoing]
    for name, maxlen in list(_log_lengths.items()):
        setattr(dask_worker, name, deque(getattr(dask_worker, name), maxlen=maxlen))
        del _log_lengths[name]
    return {"pid": os.getpid(), "stamps": stamps, "incoming": incoming, "outgoing": outgoing}


def _logged(dask_worker, name: str, t0: float) -> list[dict]:
    """The entries of a worker's transfer log ``name`` appended since `_trace_on` (else: begun since ``t0``)."""
    log = getattr(dask_worker, name)
    mark = _log_marks.pop(name, None)
    if mark is None or len(log) == log.maxlen:   # not marked, or full (entries dropped): by their clock
        return [e for e in log if e["start"] >= t0]
    return list(itertools.islice(log, mark, None))


def _key_name(key) -> str:
    """A task key as a span's name: ours without this process's token, Dask's own (``('chunk-ab12', 3)``) short."""
    from dask.utils import key_split

    if isinstance(key, str):
        return key[: -len(_token) - 1] if key.endswith(f"-{_token}") else key
    if isinstance(key, tuple) and key:
        return "-".join([key_split(key[0]), *map(str, key[1:])])
    return str(key)


def _trace_rows(records: list, workers: dict, lane, results_to: str) -> tuple[list, list]:
    """`engines.tracing` rows from task stream ``records`` and the workers' logs; and what they miss.

    ``lane(address)`` is ``(lane, pid)``; ``results_to``: who fetches results from the workers for the
    driver (the scheduler, unless the client fetches them directly).
    """
    fetched = {(address, who, start, stop): total for address, w in workers.items()
               for start, stop, who, total in w["incoming"]}
    rows, unknown, p2p = [], 0, False
    for record in records:
        address = record.get("worker")
        here, pid = lane(address)
        name = _key_name(record["key"])
        p2p = p2p or "shuffle-transfer" in name or "p2p" in name
        for ss in record.get("startstops", ()):
            action = ss["action"]
            rows.append(span(here, name if action == "compute" else f"{action} {name}",
                             _KIND_OF_ACTION.get(action, "schedule"), ss["start"], ss["stop"], pid))
            if action == "transfer":
                nbytes = fetched.get((address, ss.get("source"), ss["start"], ss["stop"]))
                if nbytes is None:
                    unknown += 1
                else:
                    rows.append(send(lane(ss["source"])[0], here, nbytes, ss["start"], name))
    for address, w in workers.items():
        here, pid = lane(address)
        for start, who, total, keys in w["outgoing"]:
            if who not in workers:   # not a worker's fetch (its own log has it): results for the driver
                names = [_key_name(k) for k in keys]
                rows.append(send(here, results_to, total, start,
                                 "results " + ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")))
        rows += [span(here, f"{actor}.{method}", "message", start, end, pid)
                 for actor, method, start, end in w["stamps"]]
    missing = ["the scheduler's own work (deciding, dispatching): the task stream shows what the workers did",
               "actor messages: the time each waits (in transit, parked for its sender's order, queued behind "
               "the actor's previous message) before it is handled"]
    if results_to == "scheduler":
        missing.append("the scheduler relaying gathered results to the driver: only the workers' sends are logged")
    if unknown:
        missing.append(f"bytes of {unknown} fetches: not in the workers' transfer logs")
    if p2p:
        missing.append("bytes of the p2p shuffle: Dask's shuffle extension moves them outside the transfer logs")
    return rows, missing


# ----------------------------------------------------------------- tasks




class _ByValue:
    """An object that travels as cloudpickle bytes, inside a wrapper that `_unwrap` takes off.

    Dask pickles arguments and results with plain pickle, which names a
    function or class by its module -- a module that a worker cannot import
    when it is a user's workload file (cloudpickle sends those by value).
    The bytes are decoded only where the object is used: the scheduler
    passes the wrapper on as it came.
    """

    def __init__(self, obj=None, blob: bytes | None = None):
        self._obj, self._blob = obj, blob

    @property
    def obj(self):
        if self._blob is not None:
            self._obj, self._blob = cloudpickle.loads(self._blob), None
        return self._obj

    def __reduce__(self):
        blob = self._blob if self._blob is not None else cloudpickle.dumps(self._obj, protocol=5)
        return _ByValue, (None, blob)


def _unwrap(x):
    return x.obj if isinstance(x, _ByValue) else x


def _sendable(fn, args: tuple, kwargs: dict) -> tuple:
    """``(fn, args, kwargs, by_value)`` as Dask can send them: by value if a user's file is loaded.

    The Dask futures among the arguments stay as they are, so Dask still sees
    the dependencies. Without a workload file, nothing changes.
    """
    if not by_value_modules():
        return fn, args, kwargs, False
    from distributed import Future as DaskFuture_

    def wrap(x):
        return x if isinstance(x, DaskFuture_) else _ByValue(x)

    return _ByValue(fn), tuple(map(wrap, args)), {k: wrap(v) for k, v in kwargs.items()}, True


def _run_task(name: str, fn, args: tuple, kwargs: dict, by_value: bool, wrap: bool, whole: bool = False):
    """What a worker runs: the user's function; its error names the task (unless ``wrap`` is off).

    ``by_value``: a user's workload file is loaded, so the result travels by value too.
    ``whole``: a list result travels as a `engines.common.Whole`, in one piece.
    """
    try:
        result = _unwrap(fn)(*map(_unwrap, args), **{k: _unwrap(v) for k, v in kwargs.items()})
    except Exception as e:
        if not wrap:
            raise
        raise task_error(name, e, worker=_worker_address()) from None
    if whole and type(result) is list:
        result = Whole(result)
    return _ByValue(result) if by_value else result


def _worker_address() -> str | None:
    """The address of the Dask worker this runs on (None outside one)."""
    from distributed import get_worker

    try:
        return get_worker().address
    except ValueError:
        return None


class DaskFuture(HeldFuture):
    """A Dask future seen through the archbench Future.

    Done (and its latency stamped) when Dask reports the key finished;
    the value is fetched from its worker on the first ``result()``.
    """

    def __init__(self, name, log, raw_errors: bool):
        super().__init__(name, log)  # the latency clock starts here, before the submit
        self._dask = None
        self._raw = raw_errors

    def _attach(self, dask_future) -> None:
        self._dask = dask_future
        dask_future.add_done_callback(self._landed)

    def _landed(self, dask_future) -> None:
        """Dask's callback thread: the scheduler has told the client this key is done."""
        if dask_future.status == "finished":
            self._done()
            return
        try:
            error = dask_future.exception()
        except BaseException as e:  # cancelled, or the client is closing
            error = e
        self._set_error(self._named(error))

    def _named(self, error: BaseException) -> BaseException:
        return error if self._raw else dependent_error(self.name, error)

    def _pull(self, timeout):
        return _unwrap(self._dask.result(timeout))


class DaskTasks(Tasks):
    def __init__(self, session: DaskSession, log="session", raw_errors: bool = False, whole_lists: bool = False):
        super().__init__(session)
        self._log = session.latencies if log == "session" else log
        self._raw = raw_errors
        self._whole = whole_lists

    def submit(self, fn, *args, retries: int = 0, **kwargs) -> Future:
        name = task_name(fn)

        def dask_of(a):
            return a._dask if isinstance(a, DaskFuture) else a

        future = DaskFuture(name, self._log, self._raw)
        a = tuple(dask_of(x) for x in args)
        k = {key: dask_of(v) for key, v in kwargs.items()}
        future._attach(self.session.client.submit(_run_task, name, *_sendable(fn, a, k), not self._raw, self._whole,
                                                  key=f"{name}-{_token}", retries=retries, pure=False))
        return future

    def gather(self, futures) -> list:
        """Wait for all, raise the first error in the order given, then fetch the values in one go."""
        return gather_held(futures, DaskFuture,
                           lambda held: [_unwrap(v) for v in self.session.client.gather([f._dask for f in held])])


# ----------------------------------------------------------------- actors

_sender = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"   # this process, as a sender of actor messages
_counters: dict[str, itertools.count] = {}            # actor key -> numbers of our next messages to it
_counters_lock = threading.Lock()


def _sequence(actor_key: str) -> int:
    """The number of this process's next message to ``actor_key`` (0, 1, 2, ...). Mutates `_counters`."""
    with _counters_lock:
        counter = _counters.get(actor_key)
        if counter is None:
            counter = _counters[actor_key] = itertools.count()
        return next(counter)


class _Host:
    """The Dask actor that hosts one user object and restores per-sender order.

    State, all touched only on the worker's event loop:
    ``expected[sender]`` -- the number of the next message from ``sender``;
    ``parked[(sender, n)]`` -- an asyncio future that message ``n`` (arrived
    early) waits on until message ``n - 1`` from that sender is queued.
    ``mailbox`` -- one thread: messages run one at a time, in queue order.
    """

    def __init__(self, actor_id: str, cls: type, args: tuple, kwargs: dict):
        self.actor_id = actor_id
        self.obj = _unwrap(cls)(*map(_unwrap, args), **{k: _unwrap(v) for k, v in kwargs.items()})
        self.expected: dict[str, int] = {}
        self.parked: dict[tuple[str, int], asyncio.Future] = {}
        self.mailbox = ThreadPoolExecutor(1, thread_name_prefix=f"actor-{actor_id}")

    async def deliver(self, sender: str, n: int, message: bytes, reply: bool):
        """Dask runs this coroutine on the worker's event loop, as each message arrives."""
        loop = asyncio.get_running_loop()
        if n != self.expected.get(sender, 0):
            waiting = self.parked[(sender, n)] = loop.create_future()
            await waiting
        self.expected[sender] = n + 1
        # the context carries the Dask worker, so a method can message other actors
        handled = loop.run_in_executor(self.mailbox, contextvars.copy_context().run, self._handle, message, reply)
        successor = self.parked.pop((sender, n + 1), None)
        if successor is not None:
            successor.set_result(None)
        return await handled

    def _handle(self, message: bytes, reply: bool):
        method, args, kwargs = cloudpickle.loads(message)
        stamps = _stamps   # a list while a trace records (`_trace_on`)
        start = time.time() if stamps is not None else 0.0
        try:
            return invoke(self.obj, self.actor_id, method, args, kwargs)
        except ActorError as e:
            if reply:
                raise
            logging.getLogger("distributed.worker").warning("tell failed (no one to tell): %s", e)
        finally:
            if stamps is not None:
                stamps.append((self.actor_id, method, start, time.time()))


async def _settle(actor_future, future: Future, ref: "DaskRef", method: str) -> None:
    """On the event loop: the reply of one call becomes the outcome of its Future."""
    try:
        value = await actor_future
    except ActorError as e:
        future._set_error(e)
    except Exception as e:  # the RPC failed: the actor's worker is gone
        future._set_error(ActorError(f"{ref.cls_name} actor {ref.actor_id}: {method}() failed: "
                                     f"{type(e).__name__}: {e}"))
    else:
        future._set_result(value)


class DaskRef(ActorRef):
    """A Dask actor's address; pickles to plain data and finds its Dask proxy where it lands."""

    def __init__(self, actor_id, cls_name, key, address, proxy=None, log=None):
        super().__init__(actor_id, cls_name)
        self.key, self.address = key, address
        self._proxy, self._log = proxy, log

    def __reduce__(self):
        return DaskRef, (self.actor_id, self.cls_name, self.key, self.address)

    def _send(self, method, args, kwargs, reply: bool):
        # pickled before a number is taken: a message that cannot be pickled must leave no gap
        message = cloudpickle.dumps((method, args, kwargs), protocol=5)
        if self._proxy is None:
            from distributed.actor import Actor

            self._proxy = Actor(_Host, self.address, self.key)
        return self._proxy.deliver(_sender, _sequence(self.key), message, reply)

    def call(self, method, *args, **kwargs) -> Future:
        future = Future(f"{self.actor_id}.{method}", self._log)
        actor_future = self._send(method, args, kwargs, True)
        self._proxy._io_loop.add_callback(_settle, actor_future, future, self, method)
        return future

    def tell(self, method, *args, **kwargs) -> None:
        self._send(method, args, kwargs, False)


class DaskActors(Actors):
    def __init__(self, session: DaskSession):
        super().__init__(session)
        self._futures: list = []                 # Dask futures that keep the actors alive

    def spawn(self, cls, *args, name=None, **kwargs) -> ActorRef:
        def start() -> DaskRef:
            actor_id = task_name(cls)
            future = self.session.client.submit(_Host, actor_id, *_sendable(cls, args, kwargs)[:3], actor=True,
                                                key=f"actor-{actor_id}-{_token}")
            try:
                proxy = future.result()
            except Exception as e:
                raise ActorError(f"{cls.__name__} actor {actor_id}: __init__ raised {type(e).__name__}: {e}") from e
            self._futures.append(future)
            return DaskRef(actor_id, cls.__name__, future.key, proxy._address, proxy, self.session.latencies)

        return self.register(name, start)

    def close(self) -> None:
        for future in self._futures:
            with _counters_lock:
                _counters.pop(future.key, None)
            future.release()
        self._futures, self._named = [], {}
