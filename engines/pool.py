"""The pool engine: ``concurrent.futures.ProcessPoolExecutor`` and nothing else.

The standard library's answer to "use my cores": N spawned processes take
anonymous work items from the driver and send results back to it. There is
no worker-to-worker channel and no state that outlives a work item, which is
exactly what makes it a useful baseline.

- **tasks** (native): ``submit`` pickles the function and its arguments
  (cloudpickle, so lambdas and a user's workload file travel by value) to a
  pool process. A dependency is resolved *on the driver*: the dependent
  task is submitted when its inputs have come back, and their values are
  sent out again -- every edge of the graph passes through the driver.
- **dataflow** (emulated): stages of per-partition work items; a shuffle's
  buckets come back to the driver, which regroups them by owner and sends
  each owner's buckets out again (`engines.plan.evaluate` with a pool map);
  a stream runs as micro-batches of such jobs (`engines.streaming`).
- **actors** (unsupported): a work item cannot be addressed again, so
  there is nowhere for an actor's state to live between messages.

**A lost worker.** A ``ProcessPoolExecutor`` whose process dies is
*broken*: it fails every work item it holds, running or queued, and takes
no more. Nothing is retried by the pool. A dataflow run then fails at once
with a `DataflowError` naming the process (``pool worker 1 (pid 4242) was
killed by SIGKILL``); each task in flight fails with a `TaskError` saying
the same. The session stays usable: the broken pool is replaced by a fresh
one of ``workers`` processes (a new ``worker_pids``) before the error is
raised, and a task submitted with ``retries=`` runs again on the new pool
-- the driver's retry is the only recovery there is.

    >>> with PoolEngine().start(workers=2) as s, s.tasks() as tasks:
    ...     a = tasks.submit(pow, 2, 5)
    ...     tasks.submit(lambda x, y: x + y, a, y=1).result()
    33
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import cloudpickle

from engines import Engine
from engines.api import DataflowError, Future, Session, TaskError, Tasks
from engines.common import run_retried, task_error, task_name
from engines.plan import Plan, Runner, call_label, evaluate, narrow, split
from engines.support import Support
from engines.tracing import Stamps, span, worker_lane

_barrier = None  # set in each pool process by _init, used once at start-up


def _init(barrier) -> None:
    global _barrier
    _barrier = barrier


def _report_pid() -> int:
    """Start-up check: every process must be up and answering (the barrier waits for all)."""
    _barrier.wait(timeout=60)
    return os.getpid()


def _run_pickled(payload: bytes, stamp: bool = False) -> bytes:
    """A work item: unpickle ``(fn, args, kwargs)``, run it, pickle the outcome ``(ok, value)``.

    With ``stamp`` (a trace is recording) the outcome carries a third item: ``(pid, start, end)``
    of the run, stamped here in the pool process.
    """
    fn, args, kwargs = cloudpickle.loads(payload)
    start = time.time()
    try:
        outcome = (True, fn(*args, **kwargs))
    except Exception as e:
        outcome = (False, e)
    if stamp:
        outcome += ((os.getpid(), start, time.time()),)
    return cloudpickle.dumps(outcome, protocol=5)


class PoolEngine(Engine):
    name = "pool"
    architecture = "baseline"
    description = "concurrent.futures.ProcessPoolExecutor: N processes, every edge through the driver"
    supports = {
        "dataflow": Support.emulated("per-partition work items; shuffles regrouped on the driver",
                                     streams="streams as micro-batches"),
        "tasks": Support.native(),
        "actors": Support.unsupported("pool work items are anonymous and stateless; no actor can live there"),
    }

    def settings(self, workers: int, **options) -> dict:
        return {"workers": workers, "start_method": "spawn", "serializer": "cloudpickle (protocol 5)",
                "max_tasks_per_child": None,
                "lost_process": "the pool breaks: its work items fail, a fresh pool is started (no retry)",
                **options}

    def start(self, workers: int = 2, **options) -> Session:
        return PoolSession(workers, self.supports, self.settings(workers, **options))


class PoolSession(Session):
    engine = "pool"

    def __init__(self, workers, supports, settings):
        super().__init__(workers, supports, settings)
        self._restarting = threading.Lock()
        self._current = _Pool(workers)
        self.stamps = Stamps()

    @property
    def _pool(self) -> ProcessPoolExecutor:
        return self._current.executor

    @property
    def _pids(self) -> list[int]:
        return self._current.pids

    @property
    def worker_pids(self) -> list[int]:
        return list(self._pids)

    def _restart(self, broken: "_Pool") -> None:
        """Replace the pool ``broken`` by a fresh one (once, however many callers saw it break)."""
        with self._restarting:
            if self._current is broken:
                # not waited for: this may run on the broken pool's own thread (a callback of a failed
                # work item), which then stops and joins the pool's other processes itself
                broken.executor.shutdown(wait=False, cancel_futures=True)
                self._current = _Pool(self.workers)

    def _submit(self, fn, args, kwargs):
        """Send one call to the pool; a concurrent.futures.Future of the pickled ``(ok, value[, stamp])``.

        A pool broken by a lost process is replaced first (a retried task lands on the new one).
        """
        payload = cloudpickle.dumps((fn, args, kwargs), protocol=5)
        current = self._current
        try:
            return current.executor.submit(_run_pickled, payload, self.stamps.recording)
        except BrokenProcessPool:
            self._restart(current)
            return self._pool.submit(_run_pickled, payload, self.stamps.recording)

    def _stamped(self, name: str, stamp: tuple) -> None:
        """Record the span a pool process stamped for work item ``name``."""
        pid, start, end = stamp
        lane = worker_lane(self._pids.index(pid)) if pid in self._pids else worker_lane(pid)
        self.stamps.add(span(lane, name, "compute", start, end, pid))

    def trace_start(self) -> None:
        self.stamps.start()

    def trace_stop(self):
        return self.stamps.stop("the pool processes' own stamps per work item",
                                ["bytes moved: every result returns to the driver; their sizes are not stamped"])

    def run_plan(self, plan: Plan) -> dict[str, list]:
        return evaluate(plan, PoolRunner(self, plan.name), buckets=self.workers)

    def tasks(self) -> Tasks:
        return PoolTasks(self)

    def close(self) -> None:
        self._current.close()


class _Pool:
    """One pool of the session: the executor, its processes' pids (sorted) and process objects.

    A pool whose process died is broken for good; the session replaces it
    by a new `_Pool` (`PoolSession._restart`), this one says what was lost.
    """

    def __init__(self, workers: int):
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(workers)
        self.executor = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(barrier,))
        # submitting N barrier tasks at once makes the pool start all N processes now,
        # so start-up is paid (and timed) here rather than inside the first run
        self.pids = sorted(f.result() for f in [self.executor.submit(_report_pid) for _ in range(workers)])
        # kept to read how a process ended once the pool has broken (the executor forgets its processes)
        self.procs = dict(self.executor._processes)

    def lost(self) -> str:
        """Which process of this pool ended, and how (``pool worker 1 (pid 4242) was killed by SIGKILL``).

        Read once the pool has broken: the process it saw die has an exit
        code; the pool then stops the others with SIGTERM, so a process
        ended so is named only when no other ended.
        """
        from multiprocessing.connection import wait

        from engines.mini.cluster import exit_status

        # the pool may see a process's pipe close a moment before the process has ended: wait (up to
        # 1 s) for one to end; then any that exited (its sentinel is ready) may not be reaped yet, and
        # while the pool's own thread reaps it, its exit code reads None here for a moment. So ask
        # again until one ended otherwise than by the pool's SIGTERM, or every one has ended
        deadline = time.monotonic() + 1
        for sentinel in wait([proc.sentinel for proc in self.procs.values()], timeout=1):
            next(proc for proc in self.procs.values() if proc.sentinel == sentinel).join(1)
        while True:
            ended = sorted((proc.exitcode == -signal.SIGTERM, pid) for pid, proc in self.procs.items()
                           if proc.exitcode not in (None, 0))
            settled = all(proc.exitcode is not None for proc in self.procs.values())
            if (ended and not ended[0][0]) or settled or time.monotonic() > deadline:
                break
            time.sleep(0.005)
        if not ended:
            return f"a pool process (of pids {', '.join(map(str, self.pids))}) ended abruptly"
        pid = ended[0][1]
        return f"pool worker {self.pids.index(pid)} (pid {pid}) {exit_status(self.procs[pid].exitcode)}"

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        for proc in self.procs.values():   # a pool broken by a lost process may not have joined them all
            proc.join(10)


class PoolRunner(Runner):
    """A stage's calls run in the pool; every result comes back to the driver,
    so a shuffle's buckets are regrouped here and sent out again."""

    def __init__(self, session: PoolSession, flow: str = "?"):
        self.session, self.flow = session, flow

    def map(self, fn, calls):
        session = self.session
        pending = [session._submit(fn, args, {}) for args in calls]
        current = session._current
        try:
            outcomes = [cloudpickle.loads(f.result()) for f in pending]
        except BrokenProcessPool:
            lost = current.lost()
            session._restart(current)
            steps = ", ".join(step.name for step in _steps(fn, calls[0]))
            raise DataflowError(f"{lost} while running {call_label(fn, calls[0])} (steps {steps}) of flow "
                                f"{self.flow!r}: the process pool broke and every work item in it failed (the "
                                "pool retries nothing); the session has started a fresh pool, run again") from None
        for args, (ok, value, *stamp) in zip(calls, outcomes):
            if stamp:
                self.session._stamped(call_label(fn, args), stamp[0])
            if not ok:
                raise value
        return [outcome[1] for outcome in outcomes]


def _steps(fn, args: tuple) -> tuple:
    """The flow's steps one call of `engines.plan.evaluate`'s functions runs."""
    if fn is narrow:
        return args[1]
    if fn is split:
        return (*args[1], args[2])
    return (args[0],)


class PoolTasks(Tasks):
    def submit(self, fn, *args, retries: int = 0, **kwargs) -> Future:
        future = Future(task_name(fn), self.session.latencies)

        def attempt(a, k, landed) -> None:
            cf = self.session._submit(fn, a, k)
            pool = getattr(self.session, "_current", None)   # the pool it went to (Spark's jobs: none)
            cf.add_done_callback(lambda cf: land(cf, landed, pool))

        def land(cf, landed, pool) -> None:
            try:
                ok, value, *stamp = cloudpickle.loads(cf.result())
            except BrokenProcessPool:  # a pool process died (only the pool engine's own futures raise this)
                landed(False, TaskError(f"task {future.name} was lost: {pool.lost()} while the task was "
                                        "in the pool, which broke (the session starts a fresh pool for the next "
                                        "submit; submit with retries= to run it again there)", task=future.name))
                return
            except Exception as e:  # the pool was shut down
                ok, value, stamp = False, e, ()
            if stamp:  # only the pool's own processes stamp (Spark's task emulation reuses this class)
                self.session._stamped(future.name, stamp[0])
            landed(ok, value if ok else task_error(future.name, value))

        run_retried(future, args, kwargs, retries, attempt)
        return future
