"""Ray: remote functions and actors over a shared object store.

Ray gives both the task and the actor architecture one substrate. A call
to a remote function returns an **ObjectRef** at once; the task runs in a
worker process, its result is stored in the object store of that node (a
small one travels back inline with the reply), and passing the ObjectRef to
another task makes Ray move the value straight to where that task runs. An
actor is a dedicated worker process holding an object; its method calls
are queued and run one at a time. ``start(workers=N)`` starts a local
cluster (``address="local"``, never a stray running one) with ``num_cpus=N``:
at most N tasks run at once, one thread each.

- **tasks** (native): ``submit`` calls the user's function as a Ray remote
  function (``ray.remote(fn)``, made and shipped once per function, wrapped
  so that its error names the task); our `Future` arguments become their
  ObjectRefs, so Ray resolves them on the worker. Retries are Ray's
  (``max_retries`` with ``retry_exceptions``). Each task has **two
  returns**: its value, which stays in the object store of the node that
  made it until a dependent task or ``result()`` needs it, and a token
  (``None``) the driver watches with Ray's own completion callback
  (``ObjectRef.future()``, the mechanism behind ``await ref``): the Future
  is done -- and its latency stamped -- when the token arrives, as on Dask
  and mini-tasks, without pulling every value to the driver (watching the
  value itself moved 100 results of 4 MB through the driver: a chain of them
  took 1.1-1.3 times as long as the same chain in plain Ray; now 0.9-1.1).
  ``ray.wait(fetch_local=False)`` would serve too, but only by polling a
  changing set of refs from a thread.
- **dataflow** (emulated with Ray tasks): `engines.plan.evaluate` with
  `RayRunner`. Each partition is one task; a shuffle's ``split`` task is
  declared with ``num_returns=N`` so it returns **one ObjectRef per bucket**
  (no pick tasks, unlike Dask), and each owner's merge task takes its N
  bucket refs as arguments: the hash shuffle moves bucket by bucket, worker
  to worker, through the object store. Buckets and partitions are
  `engines.common.Whole` lists, which Ray pickles in one piece (a plain
  list of pairs it packs pair by pair: 8 times slower). Not Ray Data: its ``groupby`` runs
  through Arrow blocks and hands back Arrow types, and it has no join of
  arbitrary Python pairs -- a plain task graph is what a student can compare
  with the other engines stage for stage. A timed stream runs as
  micro-batches of such task graphs (`engines.streaming`).
- **actors** (native): each actor is a Ray actor (`_Host`, hosting the
  user's object, so errors name the actor and method as on every engine).
  ``call`` and ``tell`` are ``handle.remote(...)``; Ray itself runs the calls
  from one caller to one actor in the order they were sent. An `RayRef`
  carries its Ray actor handle, which Ray lets travel inside messages.

**A lost worker.** The processes a fault kills are the raylet's worker
processes (`fault_targets`: idle, running a task, or hosting an actor).
A task whose worker dies is run again by Ray, up to ``max_retries`` times
(Ray's default, 3, for a lost worker; a task submitted with ``retries=k``
gets ``k``), from lineage -- its arguments are still in the object store
-- so a dataflow or a task graph gives the right answer. An actor is not
restarted (Ray's default ``max_restarts=0``): a call to an actor whose
process died fails with an `ActorError` naming the actor (Ray's
``ActorDiedError`` inside), and so do all later calls. The variant option
``actor_max_restarts=N`` (recorded) lets Ray restart it up to N times with
fresh state -- its ``__init__`` again -- the call in flight still fails.

**Trace** (``trace_start`` / ``trace_stop``), from Ray's own task events:
every worker reports, for each task it runs, its state changes and its
profile events (argument deserialization, execution, storing the outputs)
to the GCS, read with Ray's state accessor (the one behind
``ray.timeline()``; the state API's ``list_tasks`` needs the dashboard,
which is off). One lane per worker process, ``"worker 0"``, ``"worker 1"``...
in order of first appearance (an actor is a process of its own, so a lane
of its own); a task's execution is a ``compute`` span (an actor's creation
too), an actor's message a ``message`` span, the fetching of arguments
and storing of outputs ``exchange`` spans. While recording, the driver
notes each task it submits and names tasks and actor calls after their
task and method (a message one actor sends another keeps Ray's name,
``_Host.handle``); the events reach the GCS asynchronously (about once a
second), so ``trace_stop`` waits, bounded, until those of every noted task
have arrived (and closing an actors context lets its actors exit, rather
than killing them at once, which would lose the events they had not yet
reported). Ray hands back every task event it keeps (up to 100,000
tasks), so ``trace_stop`` takes longer as a session runs more tasks (on
a busy 2-core machine: 1 s after a run of 70 tasks, 5 s after one of 3,000
in a session that had run 30,000). Not shown: bytes moved (Ray does not report
them), the scheduling done by the raylets and the driver's submits. Nothing
is noted while no trace records.

Ray pickles with its own copy of cloudpickle; a user's workload file, sent
by value, is registered with that copy too (`RaySession._by_value`).

Settings (``settings()``): ``num_cpus``, the dashboard off, worker output not
copied to the driver (``log_to_driver=False``; Ray's logs stay in its
session directory under ``log_dir``), token authentication (Ray 2.59+ turns
it on for new local clusters and writes a token under ``~/.ray``: here,
unless ``RAY_AUTH_MODE`` is set, a fresh token is given to the cluster
through the environment, so nothing is written to the home directory and
nothing warns). Existing cluster: ``start(workers, address="ray://host:10001")``
or ``address="auto"``; its workers must have archbench installed.

    >>> RayEngine().settings(2)["num_cpus"]
    2
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
import time
from pathlib import Path

from engines.adapters import LOG_DIR, AdapterEngine, AdapterSession, driver_path, environ, send_by_value_too
from engines.api import ActorError, ActorRef, Actors, DataflowError, Future, Session, Tasks
from engines.common import (HeldFuture, Whole, dependent_error, gather_held, in_one_piece, invoke, task_error,
                             task_name)
from engines.plan import Plan, Runner, evaluate, merge_join, merge_reduce, narrow, split
from engines.support import Support
from engines.tracing import Trace, span, worker_lane

_SOCKET_ROOM = 40  # Ray puts unix sockets under its temp dir; their paths must stay under 108 bytes
_traced: list | None = None   # while a trace records: the ids of the tasks this process submitted
_EVENTS_WAIT_S = 10.0         # how long trace_stop waits for the task events of those tasks


class RayEngine(AdapterEngine):
    name = "ray"
    architecture = "actors"
    description = "Ray tasks and actors, a local cluster (num_cpus=N) or a running one"
    supports = {
        "dataflow": Support.emulated("Ray tasks; each split task returns one ObjectRef per bucket, "
                                     "passed to the merge tasks", streams="streams as micro-batches"),
        "tasks": Support.native(),
        "actors": Support.native(),
    }
    requires = ("ray",)
    extra = "ray"
    options = ("address", "actor_max_restarts")

    def settings(self, workers: int, **options) -> dict:
        self.check_options(options)
        address = options.get("address")
        mode = os.environ.get("RAY_AUTH_MODE")
        return {
            "workers": workers,
            "address": address or "local",
            "num_cpus": None if address else workers,
            "include_dashboard": False,
            "log_to_driver": False,
            "object_store_memory": "Ray default (30% of system memory)",
            "auth_mode": mode or ("token (fresh, via the environment)" if not address else "Ray default"),
            "actors": "one Ray actor (process) per actor; Ray keeps per-caller order",
            # a lost worker (the module docstring): Ray's defaults, unless the variant option is given
            "task_max_retries": "3 (Ray default; a task submitted with retries=k: k, and its own errors too)",
            "actor_max_restarts": int(options.get("actor_max_restarts", 0)),
            "actor_restarts": (f"variant: a dead actor restarts up to {options['actor_max_restarts']} times, "
                               "with fresh state (its __init__ again)" if options.get("actor_max_restarts")
                               else "Ray default: a dead actor stays dead"),
            LOG_DIR: options.get(LOG_DIR),
        }

    def start(self, workers: int = 2, **options) -> Session:
        return RaySession(workers, self.supports, self.settings(workers, **options))


class RaySession(AdapterSession):
    engine = "ray"

    def __init__(self, workers, supports, settings):
        import ray

        super().__init__(workers, supports, settings, logger="ray", level=logging.WARNING)
        logs = self.logs
        local = settings["address"] == "local"
        auth = {}
        if local and "RAY_AUTH_MODE" not in os.environ:
            auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_AUTH_TOKEN_PATH": None}
        self._lanes: dict[bytes, str] = {}    # Ray worker id -> its lane, in order of first appearance
        self._trace_t0: float | None = None
        if auth:  # close runs it after the environment is restored: Ray then forgets our token mode
            self.undo.callback(_reload_auth_settings)
        # kept until close: the cluster's processes copy it at start, the driver's Ray reads the token
        self.undo.enter_context(environ(PYTHONPATH=driver_path(), **auth))
        self.undo.callback(_shutdown)
        with self.opening():
            if auth:
                _reload_auth_settings()
            kwargs = dict(log_to_driver=False, logging_level=logging.WARNING, namespace=f"archbench-{os.getpid()}")
            if local:
                kwargs.update(num_cpus=workers, include_dashboard=False, _temp_dir=_temp_dir(logs))
                self.settings["temp_dir"] = kwargs["_temp_dir"]
            ray.init(address=settings["address"], **kwargs)
            self._ray = ray
            self.settings["cluster_cpus"] = ray.cluster_resources().get("CPU")
            self._run = ray.remote(_run_task)
            self._remote = {fn: ray.remote(in_one_piece(fn)) for fn in (narrow, merge_reduce, merge_join)}
            self._split = ray.remote(_split_into)
            self._host = ray.remote(max_restarts=settings["actor_max_restarts"])(_Host)
            # start the worker processes now (start-up is timed apart from the run)
            ray.get([self._run.remote("warm-up", os.getpid) for _ in range(workers)])

    def fault_targets(self) -> list[tuple[int, str]]:
        """The local cluster's worker processes (the raylet's children that run tasks and actors).

        Each is named by its process title, which Ray sets to what it runs:
        ``ray::IDLE`` (started, waiting for a task), ``ray::<function>`` (a
        task running), ``ray::_Host`` (an actor's own process). Idle ones
        first, actors last: the harness kills the last, the one whose loss
        the workload feels. Ray's agents (dashboard, runtime env) are not
        workers and are left out. An existing cluster's processes are not ours.
        """
        if self.settings["address"] != "local":
            return []
        import psutil

        found = []
        for raylet in (p for p in psutil.Process().children() if _name(p) == "raylet"):
            for child in raylet.children():
                title = _name(child)
                if title.startswith("ray::") and not title.endswith("Agent"):
                    found.append((title != "ray::IDLE", title.startswith("ray::_Host"), child.pid, title))
        return [(pid, f"ray worker process ({title}: {_what_runs(title)})") for *_, pid, title in sorted(found)]

    def fault_reason(self) -> str:
        if self.settings["address"] != "local":
            return "the session drives an existing Ray cluster: its worker processes are not this session's to kill"
        return "no Ray worker process is running (they start with the first task or actor)"

    def _by_value(self) -> None:
        """Ray pickles with its own copy of cloudpickle: tell it the modules sent by value too."""
        from ray import cloudpickle

        send_by_value_too(cloudpickle)

    def run_plan(self, plan: Plan) -> dict[str, list]:
        self._by_value()
        return evaluate(plan, RayRunner(self), buckets=self.workers)

    def tasks(self) -> Tasks:
        self._by_value()
        return RayTasks(self)

    def actors(self) -> Actors:
        self._by_value()
        return RayActors(self)

    def trace_start(self) -> None:
        """From now on the tasks submitted here are noted (and named), to wait for their events."""
        global _traced
        self._trace_t0 = time.time()
        _traced = []

    def trace_stop(self) -> Trace:
        """The task events of every task that ran since `trace_start`, once those of the noted ones arrived."""
        global _traced
        ids, _traced = _traced or [], None
        t0, self._trace_t0 = self._trace_t0 or time.time(), None
        missing = ["bytes moved: Ray does not report them",
                   "scheduling (by the raylets) and the driver's submits: the task events show the workers' side"]
        try:
            events, late = _task_events(set(ids), self._ray.get_runtime_context().get_job_id(), _EVENTS_WAIT_S)
        except Exception as e:  # e.g. an install that serves task events from the dashboard, which is off
            return Trace([], source="Ray task events (GCS)", missing=[f"every task: Ray's task events could "
                                                                      f"not be read: {type(e).__name__}: {e}"])
        if late:
            missing.append(f"{late} of the {len(ids)} tasks submitted here: their events had not reached "
                           f"Ray's GCS {_EVENTS_WAIT_S:.0f} s after the run")
        return Trace(self._rows(events, t0), source="Ray task events (GCS: state changes and profile events "
                                                    "of each task)", missing=missing)

    def _rows(self, events: list, t0: float) -> list[dict]:
        """A span per task execution (and its argument fetch, its output store) that ended after ``t0``."""
        from ray.core.generated.common_pb2 import ACTOR_TASK, DRIVER_TASK

        runs = []
        for event in events:
            if event.task_info.type == DRIVER_TASK or event.task_info.name.endswith(".__ray_terminate__"):
                continue   # the driver's own record; an actor's exit at close (see RayActors.close)
            phases = {p.event_name: (p.start_time / 1e9, p.end_time / 1e9) for p in event.profile_events.events}
            states = event.state_updates.state_ts_ns
            run = phases.get("task:execute")
            if run is None and _RUNNING in states:   # no profile events (timeline off): the state changes
                end = states.get(_FINISHED) or states.get(_FAILED)
                run = (states[_RUNNING] / 1e9, end / 1e9) if end else None
            if run is not None and run[1] >= t0:
                runs.append((run, phases, event))
        rows = []
        for (start, end), phases, event in sorted(runs, key=lambda r: r[0]):
            worker = event.state_updates.worker_id or event.profile_events.component_id
            lane = self._lanes.setdefault(worker, worker_lane(len(self._lanes)))
            pid = event.state_updates.worker_pid or None
            name = event.task_info.name or event.task_info.func_or_class_name
            kind = "message" if event.task_info.type == ACTOR_TASK else "compute"
            rows.append(span(lane, name, kind, start, end, pid))
            for phase, what in (("task:deserialize_arguments", "arguments"), ("task:store_outputs", "outputs")):
                if phase in phases:
                    rows.append(span(lane, f"{what} {name}", "exchange", *phases[phase], pid))
        return rows



_RUNNING, _FINISHED, _FAILED = 8, 11, 12   # Ray's TaskStatus numbers


def _task_events(ids: set, job: str, wait_s: float) -> tuple[list, int]:
    """Ray's task events of job ``job``, once those of every task in ``ids`` have arrived (or ``wait_s``
    has passed); and how many of ``ids`` were still incomplete then.

    A task's events are complete when it has ended (finished or failed) and, if it finished while Ray
    records profile events, its execution's profile event is there too: a task's state changes and its
    profile events are reported by different processes, each about once a second.
    """
    import ray
    from ray._private.state import state

    timeline = ray._config.enable_timeline()
    job_id = bytes.fromhex(job)
    deadline = time.monotonic() + wait_s
    while True:
        began = time.monotonic()
        events = [e for e in state._get_all_task_events() if e.job_id == job_id]
        complete = {e.task_id for e in events if _ended(e, timeline)}
        late = len(ids - complete)
        if not late or time.monotonic() > deadline:
            return events, late
        time.sleep(min(0.25, max(0.02, time.monotonic() - began)))   # the next look, no sooner than this one took


def _ended(event, timeline: bool) -> bool:
    states = event.state_updates.state_ts_ns
    if _FAILED in states:
        return True
    return _FINISHED in states and (not timeline or any(p.event_name == "task:execute"
                                                         for p in event.profile_events.events))


def _name(process) -> str:
    """A process's title (Ray's workers rename themselves: ``ray::IDLE``), or its name; '' once it is gone."""
    import psutil

    try:
        argv = process.cmdline()
        return argv[0] if argv and argv[0].startswith("ray::") else process.name()
    except psutil.Error:
        return ""


def _what_runs(title: str) -> str:
    """What a Ray worker with process title ``title`` is doing, in words."""
    if title == "ray::IDLE":
        return "idle, waiting for a task"
    if title.startswith("ray::_Host"):
        return "an actor's own process"
    return "running a task"


def _shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _temp_dir(logs: Path) -> str:
    """Ray's session directory: in the log directory when its path is short enough for sockets."""
    link = logs / "ray"
    wanted = link.resolve()  # an earlier session's short directory, if the link exists
    if len(str(wanted)) <= _SOCKET_ROOM:
        wanted.mkdir(parents=True, exist_ok=True)
        return str(wanted)
    short = tempfile.mkdtemp(prefix="ray-")
    link.symlink_to(short, target_is_directory=True)  # the logs are still found from the log directory
    return short


def _reload_auth_settings() -> None:
    """Make an already imported Ray re-read RAY_AUTH_MODE / RAY_AUTH_TOKEN (as Ray does itself
    when it turns token authentication on: its settings are cached at import)."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


# ----------------------------------------------------------------- dataflow


def _split_into(*args):
    """`engines.plan.split`, returned as N values (Ray stores each bucket as its own object), each a
    `Whole`: Ray serializes a plain list of pairs pair by pair (8 times slower)."""
    buckets = [Whole(bucket) for bucket in split(*args)]
    return buckets if len(buckets) > 1 else buckets[0]


class RayRunner(Runner):
    """Each call a Ray task; handles are ObjectRefs, passed to the next stage's tasks as arguments."""

    def __init__(self, session: RaySession):
        self.session = session

    def map(self, fn, calls):
        if fn is split:  # a split returns one ref per bucket; `pick` is then plain indexing
            return [self._split_refs(args) for args in calls]
        remote = self.session._remote[fn]
        refs = [remote.remote(*args) for args in calls]
        if _traced is not None:
            _traced.extend(ref.task_id().binary() for ref in refs)
        return refs

    def _split_refs(self, args) -> list:
        n = args[-1]
        refs = self.session._split.options(num_returns=n).remote(*args)
        refs = refs if n > 1 else [refs]
        if _traced is not None:
            _traced.append(refs[0].task_id().binary())
        return refs

    def values(self, handles):
        import ray
        from ray.exceptions import RayTaskError

        try:
            return ray.get(handles)
        except RayTaskError as e:
            if isinstance(e.cause, DataflowError):
                raise e.cause from None
            raise DataflowError(f"a Ray task of the flow failed: {e}") from None


# ----------------------------------------------------------------- tasks


def _run_task(task: str, fn, /, *args, **kwargs):
    """What a Ray worker runs: the user's function; its error names the task."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:
        import ray

        raise task_error(task, e, worker=ray.get_runtime_context().get_worker_id()) from None


def _named(fn):
    """``fn`` as a Ray remote function takes it: ``run(task name, *args, **kwargs)``, with two
    returns: the value, and a token (None) that tells the driver the task is done without the value."""
    def run(task: str, /, *args, **kwargs):
        return _run_task(task, fn, *args, **kwargs), None

    run.__name__ = run.__qualname__ = getattr(fn, "__name__", type(fn).__name__)
    return run


def _cause(error: BaseException) -> BaseException:
    """The exception a Ray task raised, unwrapped from Ray's RayTaskError."""
    return getattr(error, "cause", None) or error


class RayFuture(HeldFuture):
    """A task's Future and the ObjectRef of its result (what a dependent task is given)."""

    ref = None

    def _pull(self, timeout):
        import ray

        try:
            return ray.get(self.ref, timeout=timeout)
        except Exception as e:    # the value was lost after the task finished (its node died)
            raise task_error(self.name, _cause(e)) from None


class RayTasks(Tasks):
    def __init__(self, session: RaySession):
        super().__init__(session)
        self._remotes: dict = {}  # (id(fn), retries) -> (fn, its remote function)

    def _remote(self, fn, retries: int):
        """The remote function for ``fn``: made (and shipped to the cluster) once per function."""
        key = (id(fn), retries)
        hit = self._remotes.get(key)
        if hit is None or hit[0] is not fn:
            if len(self._remotes) >= 1024:  # a new lambda per submit: do not keep them all
                self._remotes.clear()
            retry = {"max_retries": retries, "retry_exceptions": True} if retries else {}
            remote = self.session._ray.remote(num_returns=2, **retry)(_named(fn))
            hit = self._remotes[key] = (fn, remote)
        return hit[1]

    def submit(self, fn, *args, retries: int = 0, **kwargs) -> Future:
        name = task_name(fn)
        future = RayFuture(name, self.session.latencies)  # the latency clock starts here

        def ref_of(a):
            return a.ref if isinstance(a, RayFuture) else a

        remote = self._remote(fn, retries)
        if _traced is not None:   # a trace records: name the task as the other engines do, note it
            remote = remote.options(name=name)
        future.ref, token = remote.remote(name, *map(ref_of, args), **{k: ref_of(v) for k, v in kwargs.items()})
        if _traced is not None:
            _traced.append(token.task_id().binary())

        def landed(done) -> None:
            error = done.exception()
            if error is None:
                future._done()
                return
            future._set_error(dependent_error(name, _cause(error)))

        token.future().add_done_callback(landed)
        return future

    def gather(self, futures) -> list:
        """Wait for all, raise the first error in the order given, then fetch the values in one go."""
        return gather_held(futures, RayFuture, lambda held: self.session._ray.get([f.ref for f in held]))


# ----------------------------------------------------------------- actors


class _Host:
    """The Ray actor that hosts one user object; every message is one ``handle`` call."""

    def __init__(self, actor_id: str, cls: type, args: tuple, kwargs: dict):
        self.actor_id = actor_id
        self.obj = cls(*args, **kwargs)

    def handle(self, method: str, args: tuple, kwargs: dict):
        return invoke(self.obj, self.actor_id, method, args, kwargs)

    def tell(self, method: str, args: tuple, kwargs: dict) -> None:
        try:
            invoke(self.obj, self.actor_id, method, args, kwargs)
        except ActorError as e:  # no one to tell: into the actor's log (its stderr file)
            logging.getLogger("archbench.actors").warning("tell failed: %s", e)


class RayRef(ActorRef):
    """A Ray actor handle; it pickles (Ray lets handles travel) so actors can message each other."""

    def __init__(self, actor_id, cls_name, handle, log=None):
        super().__init__(actor_id, cls_name)
        self._handle, self._log = handle, log

    def __reduce__(self):
        return RayRef, (self.actor_id, self.cls_name, self._handle)

    def call(self, method, *args, **kwargs) -> Future:
        future = Future(f"{self.actor_id}.{method}", self._log)

        def landed(done) -> None:
            error = done.exception()
            if error is None:
                future._set_result(done.result())
                return
            error = _cause(error)
            if not isinstance(error, ActorError):  # the actor (or its process) is gone
                error = ActorError(f"{self.cls_name} actor {self.actor_id}: {method}() failed: "
                                   f"{type(error).__name__}: {error}")
            future._set_error(error)

        self._message(self._handle.handle, method, args, kwargs).future().add_done_callback(landed)
        return future

    def tell(self, method, *args, **kwargs) -> None:
        self._message(self._handle.tell, method, args, kwargs)

    def _message(self, handler, method, args, kwargs):
        if _traced is None:
            return handler.remote(method, args, kwargs)
        # a trace records here: the message is named after the actor and method, and noted
        ref = handler.options(name=f"{self.actor_id}.{method}").remote(method, args, kwargs)
        _traced.append(ref.task_id().binary())
        return ref


class RayActors(Actors):
    def __init__(self, session: RaySession):
        super().__init__(session)
        self._refs: list[RayRef] = []

    def spawn(self, cls, *args, name=None, **kwargs) -> ActorRef:
        def start() -> RayRef:
            actor_id = task_name(cls)
            handle = self.session._host.options(name=None).remote(actor_id, cls, args, kwargs)
            ref = RayRef(actor_id, cls.__name__, handle, self.session.latencies)
            self._refs.append(ref)
            return ref

        return self.register(name, start)

    def close(self) -> None:
        import ray

        if _traced is not None and self._refs:
            # a trace records: an actor killed at once loses the task events it has not reported yet; let
            # each exit as Ray lets an actor exit (after the messages queued before it), which reports them
            exits = [ref._handle.__ray_terminate__.remote() for ref in self._refs]
            ray.wait(exits, num_returns=len(exits), timeout=_EVENTS_WAIT_S)
        for ref in self._refs:
            ray.kill(ref._handle)
        self._refs, self._named = [], {}
