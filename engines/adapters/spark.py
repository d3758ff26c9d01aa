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
                   merge per key
``join``           ``join(other, N)`` of both sides' items checked to be pairs
                   (`engines.plan.checked_pairs`): ``(key, (left, right))`` per
                   matching pair
``collect``        ``collect()``: one job per sink
=================  ==========================================================

A stream read by two or more steps is ``persist()``-ed, so the second job
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
reused, the UI and console progress bars off. Logs: the JVM's log4j output
and its stdout/stderr go to files in ``log_dir``.

Existing cluster: ``start(workers, master="spark://host:7077")``. Spark
Connect (``sc://``) serves DataFrames only, not RDDs, so it is refused with
that reason.

    >>> SparkEngine().settings(2)["master"]
    'local[2]'
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import cloudpickle

from engines.adapters import (LOG_DIR, AdapterEngine, by_value_modules, driver_path, environ, java_available, log_dir,
                              pickle_by_value_fallback, send_by_value_too)
from engines.api import ArchbenchError, Dataflow, DataflowError, FilterFn, MapFn, NotAPair, Session, Step, Tasks
from engines.plan import checked_pairs, combine, source_items, step_error
from engines.streaming import run_microbatches

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
        "dataflow": "native; streams as micro-batches of RDD jobs",
        "tasks": "emulated: each submit is a one-partition Spark job; dependencies resolved on the driver",
        "actors": "unsupported: Spark executors run short-lived tasks of a job; "
                  "no object outlives its task to keep state or receive messages",
    }
    requires = ("pyspark",)
    extra = "spark"
    options = ("master",)

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
            "pyspark_python": sys.executable,
            "tasks": "one Spark job per submit",
            LOG_DIR: options.get(LOG_DIR),
        }

    def start(self, workers: int = 2, **options) -> Session:
        return SparkRDDSession(workers, self.supports, self.settings(workers, **options))


class SparkRDDSession(Session):
    engine = "spark"

    def __init__(self, workers, supports, settings):
        super().__init__(workers, supports, settings)
        master = settings["master"]
        if master.startswith("sc://"):
            raise ArchbenchError(f"spark master {master!r} is Spark Connect, which serves DataFrames only; "
                                 "this adapter runs RDDs -- give a spark://host:port master (or local[N])")
        self._closed = False
        logs = log_dir(settings[LOG_DIR], "spark")
        self.settings[LOG_DIR] = str(logs)
        self.sc = _start_context(settings, logs)
        self.settings["default_parallelism"] = self.sc.defaultParallelism   # a cluster's task slots
        try:
            # start the Python workers now (start-up is timed apart from the run)
            self.sc.parallelize(range(workers), workers).map(lambda _: os.getpid()).collect()
        except BaseException:
            _stop_context(self.sc)
            raise
        self._jobs = ThreadPoolExecutor(2 * workers, thread_name_prefix="spark-task-job")

    # ------------------------------------------------------------- dataflow

    def dataflow(self, flow: Dataflow) -> dict[str, list]:
        if flow.streaming:
            return run_microbatches(self, flow)
        _by_value()
        rdds: dict = {}
        out: dict[str, list] = {}
        consumers = Counter(name for step in flow.steps for name in step.inputs)
        try:
            self._translate(flow, rdds, out, consumers)
        finally:
            for name, rdd in rdds.items():
                if consumers[name] > 1:
                    rdd.unpersist()
        return out

    def _translate(self, flow: Dataflow, rdds: dict, out: dict, consumers: Counter) -> None:
        """Build an RDD per step into ``rdds``, and run a job per sink into ``out``. Mutates both."""
        for step in flow.steps:
            up = rdds[step.inputs[0]] if step.inputs else None
            if step.op == "read":
                from pyspark import cloudpickle as spark_cloudpickle  # the copy Spark sends functions with

                recipes = [spark_cloudpickle.dumps(p, protocol=5) for p in step.arg]
                rdds[step.name] = self.sc.parallelize(recipes, len(recipes)).flatMap(_Guard(step, _read))
            elif step.op == "flat_map" and isinstance(step.fn, MapFn):
                rdds[step.name] = up.map(_Guard(step, step.fn.fn))
            elif step.op == "flat_map" and isinstance(step.fn, FilterFn):
                rdds[step.name] = up.filter(_Guard(step, step.fn.pred))
            elif step.op == "flat_map":
                rdds[step.name] = up.flatMap(_Guard(step, step.fn))
            elif step.op == "reduce_by_key":
                combined = up.mapPartitions(_Guard(step, partial(_combine, step)), preservesPartitioning=True)
                rdds[step.name] = combined.reduceByKey(_Guard(step, step.fn), numPartitions=self.workers)
            elif step.op == "join":
                left, right = (rdds[name].mapPartitions(partial(checked_pairs, step=step)) for name in step.inputs)
                rdds[step.name] = left.join(right, numPartitions=self.workers)
            elif step.op == "collect":
                try:
                    out[step.arg] = up.collect()
                except Exception as e:
                    raise _dataflow_error(flow, step, e) from None
            else:
                raise DataflowError(f"step {step.name!r}: unknown op {step.op!r}")
            if consumers[step.name] > 1:  # a stream that branches is computed once, then kept
                rdds[step.name].persist()

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
        return self._jobs.submit(lambda: self.sc.parallelize([payload], 1).map(_run_pickled).collect()[0])

    # ------------------------------------------------------------- lifetime

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._jobs.shutdown(wait=True, cancel_futures=True)
        _stop_context(self.sc)


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


def _read(recipe: bytes):
    """One partition's items, made here on the executor."""
    from pyspark import cloudpickle as spark_cloudpickle

    return source_items(spark_cloudpickle.loads(recipe))


def raised_on_worker(error: Exception) -> DataflowError | None:
    """The DataflowError a Python worker raised, read back from the text of Spark's error; None if none did."""
    text = str(error)
    found = [(text.index(m), m) for m in (f"{c.__name__}: " for c in (DataflowError, NotAPair)) if m in text]
    if not found:
        return None
    at, marker = min(found)
    message = text[at + len(marker):]
    return DataflowError(message.split("\n\tat org.apache.spark")[0].split(" SQLSTATE:")[0].rstrip())


def _dataflow_error(flow: Dataflow, sink: Step, error: Exception) -> DataflowError:
    """Spark's error for a failed job, as the DataflowError a worker raised (or one naming the job)."""
    on_worker = raised_on_worker(error)
    if on_worker is not None:
        return on_worker
    text = str(error)
    return DataflowError(f"flow {flow.name!r}: the Spark job for sink {sink.arg!r} failed: "
                         f"{text.strip().splitlines()[-1] if text.strip() else type(error).__name__}\n\n{text}")


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
