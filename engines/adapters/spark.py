"""Spark: a dataflow *is* an RDD job.

Spark is the data-parallel peer. The driver (this process) turns a chain of
RDD operations into a job; the job is cut into **stages** at every shuffle,
and each stage runs one task per partition on the executors' task slots
(``local[N]``: one JVM with N slots, each slot feeding a Python worker
process). The neutral `Dataflow` maps onto RDD operations one step at a time:

=================  ==========================================================
archbench step     RDD operation
=================  ==========================================================
``read``           ``parallelize(recipes, len(recipes)).flatMap(read)``: one
                   partition per recipe, so a callable partition is *called
                   on the executor* that reads it -- the data never passes
                   through the driver
``map``            ``map(fn)`` (a `MapFn`)
``filter``         ``filter(pred)`` (a `FilterFn`)
``flat_map``       ``flatMap(fn)``; Spark fuses consecutive narrow steps into
                   one pass over a partition, as `engines.plan.fuse` does
``reduce_by_key``  ``mapPartitions(combine)`` then ``reduceByKey(fn, N)``: each
                   partition combined by `engines.plan.combine` (which checks
                   every item is a pair) before Spark's combiner, shuffle and
                   merge per key; the ``(key, 1)`` pairs of a ``count_by_key``
                   are not made: each partition's keys are counted at once
                   (`engines.plan.count_keys`, a ``Counter``), as a PySpark
                   user writes a word count
``join``           ``join(other, N)`` of both sides' items checked to be pairs
                   (`engines.plan.checked_pairs`): ``(key, (left, right))`` per
                   matching pair
``collect``        ``collect()``: one job per sink
=================  ==========================================================

The translation walks the compiled plan (`engines.plan.compile`): an RDD
per stage, a pipe's narrow steps chained on its stage's RDD (`_piped`). A
*shared* stage (read by two or more) is ``persist()``-ed, so the second job
reuses it rather than computing it again (and unpersisted at the end). A
timed stream (`Dataflow.stream`) runs as micro-batches, one set of jobs per
batch (`engines.streaming`), which is how Spark Structured Streaming runs too.

A failing user function is named: each one runs inside `_Guard`, which
turns its exception into a `DataflowError` naming the step (Spark sends
the Python traceback back as text, and `_dataflow_error` finds it there).

A user's workload file is sent by value. PySpark pickles functions with its
own copy of cloudpickle, which is told so (`_by_value`), and records with
plain pickle, which in the Python workers then falls back to that copy for a
record of the user's own class.

**Tasks** are emulated, and the emulation is the lesson: every
``submit`` is a Spark *job* of one partition (``parallelize([call],
1).map(run).collect()``). Dependencies are resolved on the driver, as in the
`pool` engine, whose task model this reuses with a Spark job as the work
item -- so the difference between the two columns is Spark's per-job cost
(scheduling a stage, shipping a closure, a Python worker round trip).

**Actors** are not offered: an executor runs short-lived tasks of a job;
no object outlives its task to keep state and receive messages.

Settings that matter (all in ``settings()``): ``local[N]`` (N task slots, one
thread each), ``spark.default.parallelism`` and
``spark.sql.shuffle.partitions`` = N (the default 200 costs ~1 s on small
data), ``spark.driver.memory`` 4g (1g ran out of heap and hung),
``spark.python.unix.domain.socket.enabled`` (the driver-to-Python-worker
channel; cuts a Python task's fixed cost several times), Python workers
reused, the UI and console progress bars off, the event log on (below).
Logs: the JVM's log4j output and its stdout/stderr go to files in
``log_dir``.

**Trace** (``trace_start`` / ``trace_stop``): read from Spark's own **event
log**, which is on from start-up (a JVM freezes the setting), written as
plain JSON lines (not compressed, not rolled) to ``spark-events/`` in
``log_dir``: about 9 KB per job, written by a listener thread behind the
jobs. ``trace_stop`` waits until Spark's listener bus is empty and the file
holds the end of every job it saw start (at most `TRACE_WAIT` s), then reads
the events written since ``trace_start`` (`trace_rows`). Each finished task
is a ``compute`` span from its launch to its finish, named after its job
(the task's function, or the flow and sink) and its stage. In ``local[N]``
every task runs in one executor (the driver's JVM) with N task slots, so
the lanes ``worker 0`` ... ``worker N-1`` are **slots**: each task is packed
into the lowest slot free at its launch. A map task's shuffle bytes written
are a send from its lane to ``shuffle`` (its shuffle files), a result task's
result a send to ``driver``; each job's wait from submission to its first
task, and each later stage's, is a ``schedule`` span on ``driver``. It
cannot show which task read which task's shuffle bytes (Spark's metrics are
totals per task), where inside a task the time went (deserialising, the
Python worker, the JVM, the shuffle write: one span), nor which Python
worker process ran a task. Times are Spark's, in milliseconds.

**A lost worker.** What a fault can kill depends on the master (setting
``master``; `fault_targets`). On ``local[N]`` (the default) the executor
is the driver's own JVM, so the processes to kill are its **Python
workers** (the pyspark daemon's children, one per busy task slot). A task
whose Python worker dies fails, and ``local[N]`` gives a task **one**
attempt (setting ``task_max_failures``): the job fails at once with a
`DataflowError` naming the lost worker and the task; the daemon starts new
workers, so the session goes on. ``local[N,F]`` gives F attempts: the task
runs again and the answer is right. On ``local-cluster[N,C,M]`` (N
executors of C cores and M MB, which the installed pyspark runs) each
**executor** is its own JVM and is what a fault kills: Spark reruns the
lost tasks, and any shuffle output lost with the executor, elsewhere
(``spark.task.maxFailures`` 4), and the local cluster starts a new
executor -- recovered (measured on two busy cores, a flow of 4 small
partitions: 1.9 s with an executor killed against 1.8 s unfaulted on
``local-cluster[2,1,1024]``, whose start takes 14 s against about 7 s;
1.6 s against 0.9 s with a Python worker killed on ``local[2,4]``). The default stays
``local[N]``: it is what the timed figures measure, and in it Spark's own
rule is one attempt.

Existing cluster: ``start(workers, master="spark://host:7077")``. Spark
Connect (``sc://``) serves DataFrames only, not RDDs, so it is refused with
that reason.

    >>> SparkEngine().settings(2)["master"]
    'local[2]'
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial

import cloudpickle

from engines.adapters import (LOG_DIR, AdapterEngine, AdapterSession, by_value_modules, driver_path, environ,
                              gone, java_available, pickle_by_value_fallback, send_by_value_too)
from engines.api import ArchbenchError, CountOne, DataflowError, NotAPair, Session, Step, Tasks
from engines.plan import (Pipe, Plan, checked_pairs, combine, count_keys, counting, narrow_call, source_items,
                          step_error)
from engines.support import Support
from engines.tracing import Trace, send, span, worker_lane

_LOG4J = """\
# archbench: Spark's JVM logs go to a file, not the terminal
status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = {path}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d{{HH:mm:ss.SSS}} %p %c{{1}}: %m%n
rootLogger.level = warn
rootLogger.appenderRef.file.ref = file
"""


class SparkEngine(AdapterEngine):
    name = "spark"
    architecture = "data parallel"
    description = "Apache Spark (PySpark RDDs), local[N] or a spark:// master"
    supports = {
        "dataflow": Support.native(streams="streams as micro-batches of RDD jobs"),
        "tasks": Support.emulated("each submit is a one-partition Spark job; dependencies resolved on the driver"),
        "actors": Support.unsupported("Spark executors run short-lived tasks of a job; "
                                      "no object outlives its task to keep state or receive messages"),
    }
    requires = ("pyspark",)
    extra = "spark"
    options = ("master", "event_log")
    #: a cell that will be traced starts the JVM with its event log on (a static setting); a timed-only
    #: run does not write one (a task-overhead run writes ~9 kB a job: hundreds of MB)
    trace_options = {"event_log": True}

    def available(self) -> tuple[bool, str]:
        ok, why = super().available()
        return (ok, why) if not ok else java_available()

    def settings(self, workers: int, **options) -> dict:
        self.check_options(options)
        master = options.get("master") or f"local[{workers}]"
        return {
            "workers": workers,
            "master": master,
            "spark.default.parallelism": str(workers),
            "spark.sql.shuffle.partitions": str(workers),
            "spark.driver.memory": "4g",
            "spark.python.unix.domain.socket.enabled": "true",
            "spark.python.worker.reuse": "true",
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.driver.host": "127.0.0.1" if master.startswith("local") else None,
            # the trace's instrument (trace_start / trace_stop): on from start-up when asked (event_log=True)
            "spark.eventLog.enabled": "true" if options.get("event_log") else "false",  # <log_dir>/spark-events
            "spark.eventLog.compress": "false",      # Spark 4 compresses it (zstd) by default
            "spark.eventLog.rolling.enabled": "false",  # Spark 4 rolls it by default: one file here
            "spark.eventLog.includeTaskMetricsAccumulators": "false",  # repeats "Task Metrics": half the size
            "pyspark_python": sys.executable,
            "tasks": "one Spark job per submit",
            "task_max_failures": task_max_failures(master),
            LOG_DIR: options.get(LOG_DIR),
        }

    def start(self, workers: int = 2, **options) -> Session:
        return SparkRDDSession(workers, self.supports, self.settings(workers, **options))


class SparkRDDSession(AdapterSession):
    engine = "spark"

    def __init__(self, workers, supports, settings):
        master = settings["master"]
        if master.startswith("sc://"):
            raise ArchbenchError(f"spark master {master!r} is Spark Connect, which serves DataFrames only; "
                                 "this adapter runs RDDs -- give a spark://host:port master (or local[N])")
        super().__init__(workers, supports, settings)   # Spark's own logs: log4j, set up by _start_context
        self._closed = False
        logs = self.logs
        self._events = None             # the event log's folder, where Spark writes it
        if self.settings.get("spark.eventLog.enabled") == "true":
            self._events = logs / _EVENTS
            self._events.mkdir(exist_ok=True)
            self.settings["spark.eventLog.dir"] = self._events.as_uri()
        self._recording: _Recording | None = None
        self._jobs = ThreadPoolExecutor(2 * workers, thread_name_prefix="spark-task-job")  # threads made on use
        self.sc = None
        with self.opening():
            self.sc = _start_context(self.settings, logs)
            self.settings["default_parallelism"] = self.sc.defaultParallelism   # a cluster's task slots
            # start the Python workers now (start-up is timed apart from the run)
            self.sc.parallelize(range(workers), workers).map(lambda _: os.getpid()).collect()

    # ------------------------------------------------------------- dataflow

    def run_plan(self, plan: Plan) -> dict[str, list]:
        _by_value()
        rdds: dict = {}
        out: dict[str, list] = {}
        try:
            self._translate(plan, rdds, out)
        finally:
            for stage in plan.stages:
                if stage.shared and stage.name in rdds:
                    rdds[stage.name].unpersist()
        return out

    def _translate(self, plan: Plan, rdds: dict, out: dict) -> None:
        """Build an RDD per stage into ``rdds``, and run a job per sink into ``out``. Mutates both."""
        for stage in plan.stages:
            step = stage.step
            if stage.op == "read":
                from pyspark import cloudpickle as spark_cloudpickle  # the copy Spark sends functions with

                recipes = [spark_cloudpickle.dumps(p, protocol=5) for p in step.arg]
                rdds[stage.name] = self.sc.parallelize(recipes, len(recipes)).flatMap(_Guard(step, _read))
            elif stage.op == "narrow":
                rdds[stage.name] = _piped(rdds, stage.inputs[0])
            elif stage.op == "reduce_by_key":
                pipe = stage.inputs[0]
                ones = pipe.ops[-1] if pipe.ops else None
                one = counting(ones, step)
                if one is not None:  # count_by_key: count the keys its ones step is given
                    counted = _piped(rdds, Pipe(pipe.stage, pipe.ops[:-1]))
                    combined = counted.mapPartitions(_Guard(ones, partial(_count, one)))
                else:
                    combined = _piped(rdds, pipe).mapPartitions(_Guard(step, partial(_combine, step)),
                                                                preservesPartitioning=True)
                rdds[stage.name] = combined.reduceByKey(_Guard(step, step.fn), numPartitions=self.workers)
            elif stage.op == "join":
                left, right = (_piped(rdds, pipe).mapPartitions(partial(checked_pairs, step=step))
                               for pipe in stage.inputs)
                rdds[stage.name] = left.join(right, numPartitions=self.workers)
            elif stage.op == "collect":
                try:
                    with self._described(f"{plan.name}: collect {stage.name}"):
                        out[stage.name] = _piped(rdds, stage.inputs[0]).collect()
                except Exception as e:
                    raise _dataflow_error(plan, step, e, self._lost()) from None
            else:
                raise DataflowError(f"stage {stage.name!r}: a {stage.op} runs as a stream (micro-batches)")
            if stage.shared:  # a stage that branches is computed once, then kept
                rdds[stage.name].persist()

    # ------------------------------------------------------------- tasks

    def tasks(self) -> Tasks:
        from engines.pool import PoolTasks

        _by_value()
        return PoolTasks(self)

    def _submit(self, fn, args, kwargs):
        """One task as one Spark job; a concurrent.futures.Future of the pickled ``(ok, value)``.

        The interface `engines.pool.PoolTasks` drives (dependencies resolved
        on the driver, retries, latency stamped when the job's result is back).
        """
        from engines.pool import _run_pickled

        payload = cloudpickle.dumps((fn, args, kwargs), protocol=5)
        name = getattr(fn, "__name__", type(fn).__name__)   # the trace names the job after it

        def job():
            with self._described(name):
                return self.sc.parallelize([payload], 1).map(_run_pickled).collect()[0]
        return self._jobs.submit(job)

    @contextmanager
    def _described(self, name: str):
        """While a trace records, the jobs started in the block carry ``name`` (the trace's span names).

        A job description is a property of the calling thread; it is removed again
        after the block, so no later job (spark-df's on this thread too) inherits it.
        """
        if self._recording is None:
            yield
            return
        self.sc.setJobDescription(name)
        try:
            yield
        finally:
            self.sc.setJobDescription(None)

    # ------------------------------------------------------------- trace

    def trace_start(self) -> None:
        """Note where Spark's event log ends now: `trace_stop` reads what it writes from here on."""
        if self._events is None:
            self._recording = None
            return
        self._drain()
        log = _event_log(self._events, self.sc.applicationId)
        self._recording = _Recording(time.time(), log, log.stat().st_size if log else 0)

    def trace_stop(self) -> Trace:
        """The tasks, jobs and shuffle bytes Spark's event log recorded since `trace_start`.

        The log is written by a listener on Spark's listener bus, behind the
        jobs; a job's end flushes it. So: wait until the bus is empty, then
        read until every job that started has its end in the file (or 10 s).
        """
        rec, self._recording = self._recording, None
        if rec is None:
            why = ("the event log is off (spark.eventLog.enabled)" if self._events is None
                   else "trace_stop without trace_start")
            return Trace([], source="Spark event log", missing=[why])
        deadline = time.monotonic() + TRACE_WAIT
        while True:
            self._drain()
            log = rec.log or _event_log(self._events, self.sc.applicationId)
            events = _read_events(log, rec.offset) if log else []
            started = {e["Job ID"] for e in events if e["Event"] == "SparkListenerJobStart"}
            ended = {e["Job ID"] for e in events if e["Event"] == "SparkListenerJobEnd"}
            if started <= ended or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        master = self.settings["master"]
        slots = self.workers if master.startswith("local") else None
        rows = trace_rows(events, slots, self._jvm_pid() if slots else None)
        missing = list(TRACE_MISSING)
        if started - ended:
            missing.append(f"jobs {sorted(started - ended)} had not ended in the event log "
                           f"{TRACE_WAIT:g} s after the trace stopped: their tasks so far only")
        if slots is None:
            missing.append(f"executor processes on {master}: lanes are each executor's task slots, "
                           "packed from launch and finish times, without their process ids")
        return Trace(rows, source=f"Spark event log ({_EVENTS}/ in the session's log_dir): "
                                  "SparkListenerTaskEnd, JobStart, StageSubmitted events", missing=missing)

    def _drain(self) -> None:
        """Wait (up to `TRACE_WAIT`) until Spark's listener bus has delivered every event posted so far."""
        try:
            self.sc._jsc.sc().listenerBus().waitUntilEmpty(int(TRACE_WAIT * 1000))
        except Exception:  # timed out (a busy bus): trace_stop's wait on the file decides
            pass

    def fault_targets(self) -> list[tuple[int, str]]:
        """On ``local-cluster[N,C,M]``: the executors, each its own JVM. On ``local[N]``: the Python
        worker processes (the pyspark daemon's children; the one JVM is driver and executor at once).
        Elsewhere (a ``spark://`` master): none of ours.

        The listing is kept: when a job fails because a process died, its error names those of the
        listing that are gone (`_lost`) -- Spark's own error does not say which process it was.
        """
        self._seen = self._targets()
        return list(self._seen)

    def _lost(self) -> str:
        """The processes of the last `fault_targets` listing that are gone now, named ('' if none)."""
        return gone(getattr(self, "_seen", ()))

    def _targets(self) -> list[tuple[int, str]]:
        import psutil

        jvm = self._jvm_pid()
        if jvm is None or not self.settings["master"].startswith("local"):
            return []
        try:
            children = psutil.Process(jvm).children()
        except psutil.Error:
            return []
        if self.settings["master"].startswith("local-cluster"):
            executors = sorted((int(_argument(p, "--executor-id")), p.pid) for p in children
                               if (_argument(p, "--executor-id") or "").isdigit())
            return [(pid, f"spark executor {executor} (its own JVM, started by the local cluster's worker)")
                    for executor, pid in executors]
        workers = sorted(w.pid for daemon in children if "pyspark.daemon" in _cmdline(daemon)
                         for w in _children(daemon))
        return [(pid, f"spark Python worker {i} (a child of the pyspark daemon; the executor is the one "
                      f"{self.settings['master']} JVM, pid {jvm}, which is not killed)")
                for i, pid in enumerate(workers)]

    def fault_reason(self) -> str:
        if not self.settings["master"].startswith("local"):
            return (f"the session drives the cluster at {self.settings['master']}: its executors are not "
                    "processes of this session")
        return "no Python worker of Spark is running (they start with the first task)"

    def _jvm_pid(self) -> int | None:
        try:
            return int(self.sc._jvm.java.lang.ProcessHandle.current().pid())
        except Exception:
            return None

    # ------------------------------------------------------------- lifetime

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._jobs.shutdown(wait=True, cancel_futures=True)
        if self.sc is not None:     # None: its start failed (and let go of the JVM it tried)
            _stop_context(self.sc)
        super().close()


def _cmdline(process) -> str:
    import psutil

    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def _children(process) -> list:
    import psutil

    try:
        return process.children()
    except psutil.Error:
        return []


def _argument(process, flag: str) -> str | None:
    """The value after ``flag`` on ``process``'s command line (None if it has none, or is gone)."""
    words = _cmdline(process).split()
    return words[words.index(flag) + 1] if flag in words[:-1] else None


def task_max_failures(master: str) -> str:
    """How many attempts Spark gives a task on ``master``, and why.

    >>> task_max_failures("local[2]"), task_max_failures("local[2,4]")
    ('1 (local[N]: one attempt per task; local[N,F] allows F)', '4 (local[N,F])')
    """
    if master.startswith("local["):
        inside = master[len("local["):-1].split(",")
        if len(inside) == 2:
            return f"{inside[1].strip()} (local[N,F])"
        return "1 (local[N]: one attempt per task; local[N,F] allows F)"
    return "4 (spark.task.maxFailures, Spark's default on a cluster)"


class _Guard:
    """A user function as Spark calls it; an exception becomes a DataflowError naming the step."""

    def __init__(self, step: Step, fn):
        self.step = Step(step.op, step.name, step.inputs, step.fn)  # without a read's partitions
        self.fn = fn

    def __reduce__(self):
        return _guard_on_worker, (self.step, self.fn, bool(by_value_modules()))

    def __call__(self, *args):
        try:
            return self.fn(*args)
        except Exception as e:
            raise step_error(e, (self.step,)) from None


def _by_value() -> None:
    """PySpark pickles functions with its own copy of cloudpickle: tell it the modules sent by value too."""
    from pyspark import cloudpickle

    send_by_value_too(cloudpickle)


def _guard_on_worker(step: Step, fn, by_value: bool) -> _Guard:
    """A `_Guard` arriving in a Python worker; records of a user's own classes will pickle there."""
    if by_value:
        from pyspark import cloudpickle

        pickle_by_value_fallback(cloudpickle)  # Spark's workers send records with plain pickle
    return _Guard(step, fn)


def _combine(step: Step, items):
    """The map side's combine, as `engines.plan` does it (which checks that every item is a pair)."""
    return combine(items, step.fn, step).items()


def _count(one: CountOne, keys):
    """The map side of a ``count_by_key``: each key of the partition and how many times it came."""
    return count_keys(keys, one).items()


def _piped(rdds: dict, pipe: Pipe):
    """The RDD of a pipe: its stage's RDD through Spark's own map, filter or flatMap per narrow step
    (Spark fuses them into one loop per partition)."""
    rdd = rdds[pipe.stage]
    for step in pipe.ops:
        kind, fn = narrow_call(step)
        rdd = {"map": rdd.map, "filter": rdd.filter, "flat_map": rdd.flatMap}[kind](_Guard(step, fn))
    return rdd


def _read(recipe: bytes):
    """One partition's items, made here on the executor."""
    from pyspark import cloudpickle as spark_cloudpickle

    return source_items(spark_cloudpickle.loads(recipe))


_DEATHS = ("Python worker exited unexpectedly", "ExecutorLostFailure", "Executor Process Lost",
           "Remote RPC client disassociated")   # Spark's words for a lost Python worker or executor


def raised_on_worker(error: Exception) -> DataflowError | None:
    """The DataflowError a Python worker raised, read back from the text of Spark's error; None if none did."""
    text = str(error)
    found = [(text.index(m), m) for m in (f"{c.__name__}: " for c in (DataflowError, NotAPair)) if m in text]
    if not found:
        return None
    at, marker = min(found)
    message = text[at + len(marker):]
    return DataflowError(message.split("\n\tat org.apache.spark")[0].split(" SQLSTATE:")[0].rstrip())


def _dataflow_error(plan: Plan, sink: Step, error: Exception, lost: str = "") -> DataflowError:
    """Spark's error for a failed job, as the DataflowError a worker raised (or one naming the job).

    ``lost``: the processes of the session seen earlier that are gone now, named by `SparkRDDSession._lost`.
    """
    on_worker = raised_on_worker(error)
    if on_worker is not None:
        return on_worker
    text = str(error)
    failure = re.search(r"Task (\S+) in stage (\S+) failed (\d+) times", text)
    died = next((m for m in _DEATHS if m in text), None)
    if died is not None:
        where = f" in task {failure[1]} of stage {failure[2]}, after {failure[3]} attempt(s)" if failure else ""
        return DataflowError(f"flow {plan.name!r}: the Spark job for sink {sink.arg!r} failed: "
                             f"{lost or 'a process of Spark'} died{where} (Spark: {died!r}); the task's "
                             f"attempts ran out (task_max_failures)\n\n{text}")
    return DataflowError(f"flow {plan.name!r}: the Spark job for sink {sink.arg!r} failed: "
                         f"{text.strip().splitlines()[-1] if text.strip() else type(error).__name__}\n\n{text}")


# ----------------------------------------------------------------- the event log, as a trace

_EVENTS = "spark-events"   # the event log's folder in the session's log_dir
TRACE_WAIT = 10.0          # seconds trace_stop waits for the log to hold the end of every job it saw start

TRACE_MISSING = (
    "which task's shuffle bytes went to which task: Spark's task metrics give a map task's shuffle bytes "
    "written and a reduce task's bytes read as totals, not per block; the sends are each map task's bytes "
    "written, from its lane to 'shuffle' (its shuffle files), and each result task's result, to 'driver'",
    "time inside a task: deserialising it, its Python worker, the JVM and the shuffle write are one compute "
    "span (Spark sums their times per task without placing them)",
    "which Python worker process ran a task: a lane is a task slot, not a process",
)

_WANTED = tuple(b'{"Event":"SparkListener' + name + b'"' for name in
                (b"TaskEnd", b"JobStart", b"JobEnd", b"StageSubmitted"))


class _Recording:
    """A trace being recorded: since when, in which event log file, from which byte."""

    def __init__(self, t0: float, log, offset: int):
        self.t0, self.log, self.offset = t0, log, offset


def _event_log(folder, app_id: str):
    """The event log file of application ``app_id`` in ``folder`` (``<app id>.inprogress`` while it runs)."""
    found = sorted(folder.glob(f"{app_id}*"))
    return found[0] if found else None


def _read_events(path, offset: int) -> list[dict]:
    """The events the log holds from byte ``offset`` on that a trace reads: task ends, job starts and ends,
    stage submissions. A line cut by the offset, or still being written at the end, is left out."""
    with open(path, "rb") as f:
        f.seek(max(offset - 1, 0))
        data = f.read()
    if offset > 0:   # begin at a line's start: the byte before the offset ends a line, or skip to one
        cut = data.find(b"\n")
        data = data[cut + 1:] if cut >= 0 else b""
    events = []
    for line in data.split(b"\n"):
        if line.startswith(_WANTED):
            try:
                events.append(json.loads(line))
            except ValueError:   # the last line, half written
                pass
    return events


def _op(stage_name: str) -> str:
    """``"reduceByKey at file.py:180"`` -> ``"reduceByKey"``: the RDD operation a stage ends with."""
    return stage_name.split(" at ")[0]


def trace_rows(events: list[dict], slots: int | None, pid: int | None = None) -> list[dict]:
    """`engines.tracing` rows from Spark's event log events (parsed JSON lines).

    Each finished task is a ``compute`` span from its launch to its finish on
    a **slot lane**: an executor's tasks are packed into its slots, each task
    into the lowest slot free at its launch (``slots`` per executor; ``None``:
    as many as it takes). Slots are numbered ``worker 0, 1, ...`` in order of
    first use -- in ``local[N]`` the one executor's N slots. A map task's shuffle
    bytes written are a send to ``"shuffle"``, a result task's result a send to
    ``"driver"``; each job's wait from submission to its first task launch, and
    each later stage's, is a ``schedule`` span on ``"driver"``.

    >>> task = lambda tid, stage, a, b, **m: {"Event": "SparkListenerTaskEnd", "Stage ID": stage,
    ...     "Task Type": m.get("type", "ShuffleMapTask"), "Task End Reason": {"Reason": "Success"},
    ...     "Task Info": {"Task ID": tid, "Index": tid, "Attempt": 0, "Launch Time": a, "Finish Time": b,
    ...                   "Executor ID": "driver"},
    ...     "Task Metrics": {"Shuffle Write Metrics": {"Shuffle Bytes Written": m.get("wrote", 0)},
    ...                      "Result Size": m.get("result", 0)}}
    >>> job = {"Event": "SparkListenerJobStart", "Job ID": 0, "Submission Time": 900, "Stage IDs": [0],
    ...        "Stage Infos": [{"Stage ID": 0, "Stage Name": "reduceByKey at f.py:1"}], "Properties": {}}
    >>> rows = trace_rows([job, task(0, 0, 1000, 3000, wrote=50), task(1, 0, 1000, 2000),
    ...                    task(2, 0, 2000, 2500, wrote=7)], slots=2)
    >>> [(r["lane"], r["start"], r["end"]) for r in rows if r["event"] == "span"]
    [('driver', 0.9, 1.0), ('worker 0', 1.0, 3.0), ('worker 1', 1.0, 2.0), ('worker 1', 2.0, 2.5)]
    >>> [(r["lane"], r["peer"], r["bytes"]) for r in rows if r["event"] == "send"]
    [('worker 0', 'shuffle', 50), ('worker 1', 'shuffle', 7)]
    """
    stage_name: dict = {}
    stage_job: dict = {}
    stage_submitted: dict = {}
    job_label: dict = {}
    job_submitted: dict = {}
    tasks = []
    for e in events:
        kind = e["Event"]
        if kind == "SparkListenerTaskEnd":
            tasks.append(e)
        elif kind == "SparkListenerJobStart":
            job = e["Job ID"]
            job_submitted[job] = e.get("Submission Time")
            job_label[job] = (e.get("Properties") or {}).get("spark.job.description")
            for info in e.get("Stage Infos", ()):
                stage_name[info["Stage ID"]] = info.get("Stage Name", "")
            for stage in e.get("Stage IDs", ()):
                stage_job[stage] = job
        elif kind == "SparkListenerStageSubmitted":
            info = e["Stage Info"]
            stage_name[info["Stage ID"]] = info.get("Stage Name", "")
            stage_submitted[info["Stage ID"]] = info.get("Submission Time")

    rows: list[dict] = []
    first_launch: dict = {}   # stage -> its first task's launch (ms)
    busy: dict = {}           # executor -> [finish time (ms) of the task in each slot]
    lanes: dict = {}          # (executor, slot) -> lane number
    tasks.sort(key=lambda e: (e["Task Info"]["Launch Time"], e["Task Info"]["Task ID"]))
    for e in tasks:
        info, stage = e["Task Info"], e["Stage ID"]
        launch, finish = info["Launch Time"], info.get("Finish Time") or info["Launch Time"]
        first_launch[stage] = min(first_launch.get(stage, launch), launch)
        slot_ends = busy.setdefault(info.get("Executor ID", "?"), [])
        free = [i for i, end in enumerate(slot_ends) if end <= launch]
        if free:
            slot = free[0]
        elif slots is None or len(slot_ends) < slots:
            slot = len(slot_ends)
            slot_ends.append(0)
        else:   # Spark stamps a finish when it has handled the result, a moment after the slot was free
            slot = min(range(len(slot_ends)), key=slot_ends.__getitem__)
        slot_ends[slot] = max(slot_ends[slot], finish)
        lane = worker_lane(lanes.setdefault((info.get("Executor ID", "?"), slot), len(lanes)))
        label = job_label.get(stage_job.get(stage)) or _op(stage_name.get(stage, f"stage {stage}"))
        name = f"{label} (stage {stage} task {info['Index']})"
        if info.get("Attempt"):
            name += f" attempt {info['Attempt']}"
        reason = (e.get("Task End Reason") or {}).get("Reason", "Success")
        if reason != "Success":
            name += f": {reason}"
        rows.append(span(lane, name, "compute", launch / 1000, finish / 1000, pid))
        metrics = e.get("Task Metrics") or {}
        wrote = (metrics.get("Shuffle Write Metrics") or {}).get("Shuffle Bytes Written", 0)
        if wrote:
            rows.append(send(lane, "shuffle", wrote, finish / 1000, label))
        if e.get("Task Type") == "ResultTask" and metrics.get("Result Size"):
            rows.append(send(lane, "driver", metrics["Result Size"], finish / 1000, label))

    waits = []
    for job, submitted in job_submitted.items():
        stages = [s for s, j in stage_job.items() if j == job and s in first_launch]
        if submitted and stages:
            first = min(stages, key=first_launch.get)
            waits.append((f"job {job}: submitted, until its first task", submitted, first_launch[first]))
            for stage in stages:
                if stage != first and stage_submitted.get(stage):
                    waits.append((f"stage {stage}: submitted, until its first task",
                                  stage_submitted[stage], first_launch[stage]))
    return [span("driver", name, "schedule", a / 1000, b / 1000, pid) for name, a, b in waits if b >= a] + rows


# ----------------------------------------------------------------- the JVM

_one_jvm = threading.Lock()  # static Spark settings are frozen when the JVM starts: one at a time


def _start_context(settings: dict, logs):
    """Start a JVM with ``settings`` (its output into ``logs``) and a SparkContext on it."""
    if not _one_jvm.acquire(blocking=False):
        raise ArchbenchError("a Spark session is already running in this process; close it first "
                             "(Spark freezes its settings when its JVM starts: one JVM per process)")
    try:
        # PySpark warns on import that pandas 3 is "not fully supported"; the RDD
        # adapter does not touch pandas, and Arrow round trips were checked apart
        warnings.filterwarnings("ignore", message=r"PySpark does not yet fully support pandas",
                                category=FutureWarning)
        from pyspark import SparkConf, SparkContext
        from pyspark.java_gateway import launch_gateway

        # the executors' Python workers must run this interpreter (with this project on its path)
        os.environ["PYSPARK_PYTHON"] = sys.executable
        os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
        (logs / "log4j2.properties").write_text(_LOG4J.format(path=logs / "spark.log"))
        conf = SparkConf().setMaster(settings["master"]).setAppName("archbench")
        for key, value in settings.items():
            if key.startswith("spark.") and value is not None:
                conf.set(key, value)
        conf.set("spark.driver.extraJavaOptions",
                 f"-Dlog4j2.configurationFile=file:{logs / 'log4j2.properties'}")
        if settings["master"].startswith("local"):
            conf.set("spark.driver.bindAddress", "127.0.0.1")
        with open(logs / "spark-jvm.out", "ab") as out, environ(PYTHONPATH=driver_path()):
            gateway = launch_gateway(conf, popen_kwargs={"stdout": out, "stderr": out})
        return SparkContext(conf=conf, gateway=gateway)
    except BaseException:
        _one_jvm.release()
        raise


def _stop_context(sc) -> None:
    """Stop the SparkContext and its JVM, and wait for the JVM to exit."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    try:
        sc.stop()
    finally:
        try:
            if gateway is not None:
                gateway.shutdown()
                proc = getattr(gateway, "proc", None)
                if proc is not None:
                    proc.stdin.close()  # the JVM exits when its stdin closes
                    try:
                        proc.wait(timeout=30)
                    except Exception:
                        proc.kill()
                        proc.wait()
        finally:
            SparkContext._gateway = None
            SparkContext._jvm = None
            _one_jvm.release()
