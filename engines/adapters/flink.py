"""Flink: a stream-first engine -- a dataflow graph of operators, run by parallel task slots.

Apache Flink compiles a program into a **job graph** of operators and runs
it on a cluster: a JobManager schedules the graph's tasks into TaskManager
*slots*; each operator runs as ``parallelism`` parallel subtasks, records
flow between them over network channels, and a keyed operator gets every
record of a key on one subtask (``key_by`` hashes the key to a key group).
State lives in the operators (keyed state: a value, a list, per key), not
in the records. A stream carries **watermarks** beside its records: "no
record older than *t* will follow", which is what lets an event-time window
fire. A bounded program runs the same graph in ``BATCH`` mode, where Flink
sorts each keyed input and emits a keyed result once per key at the end.

PyFlink writes that graph in Python: each Python function runs in a Python
**worker process** beside the JVM (Apache Beam's Fn API carries records
between them, pickled), so every record crosses JVM -> Python -> JVM at
each Python operator -- Flink's per-record cost in Python is that
crossing, not Flink's engine. PyFlink chains consecutive Python operators
into one worker call.

How archbench drives it. apache-flink cannot share the project's
environment (`engines.adapters.flink_env`: ``archbench setup flink`` makes
one), so the session is **one long-lived process** in that environment
(`engines.adapters.flink_job`), started with the session and driven over a
socket pair in length-prefixed pickle frames. ``session.dataflow(flow)``
compiles the flow here (`engines.plan.compile`), ships the `Plan` there,
where it becomes a DataStream program (`engines.adapters.flink_translate`:
``rebalance`` + ``flat_map`` for reads and narrow steps, ``key_by().process()``
for ``reduce_by_key``, ``connect().key_by().process()`` for ``join``), run
in BATCH mode at parallelism = workers; the sinks' items come back here and
the harness checks them in its own process. Each job is a fresh Flink
mini-cluster (a JobManager and a TaskManager with ``workers`` slots in the
job process's JVM): its start-up, 0.5-1.2 s, is inside every run; the
session's first job (an empty warm-up at start) measures it apart
(``settings["job_start_s"]``: a job's wall time minus Flink's net run time).

**What a key costs.** In BATCH mode a keyed operator whose function is
Python finishes its bundle every time the key changes: Flink's sorted
input and single-key state backend drop a key's state when the next key
starts, so the JVM waits for the Python worker to hand back everything of
the key it had (``AbstractPythonFunctionOperator.processElementsOfCurrentKeyIfNeeded``
-> ``invokeFinishBundle``, seen in a ``jstack`` of a running job): one
synchronous round trip between the JVM and the Python worker per key.
Keyed by the pair's key, a reduce of 100,000 keys spent 504 s there on 2
cores. So the reduce and the join key Flink's operators by a *bucket* of
keys (``32 x workers`` buckets), and the records between operators are
chunks of items, a bucket's pairs in one record before a keyed operator:
the JVM <-> Python crossing is paid per chunk, and each bucket's keys are
folded in a Python dict (`engines.adapters.flink_translate` has the
numbers). Turning the batch state backend off
(``execution.batch-state-backend.enabled=false``) is no way out: the
reduce then keeps rolling state through Beam's state channel and emits an
update per record. Flink SQL (``flink-sql``) runs the group-by in the JVM,
but its rows enter the JVM one by one from the Python function that makes
them: at small, ``groupby`` took 8.3 s there and 3.9 s here (one run).

Streams run **natively**: a STREAMING job with event time, watermarks and
Flink's ``TumblingEventTimeWindows``; each window result is sent back as
Flink fires it and timestamped when it reaches this process
(``session.window_latencies``), as on mini-data and Bytewax.

**A lost worker** (``archbench run --fault``). The processes a fault may
kill are the job's Python workers (`fault_targets`): they exist only while
a job runs Python functions, so the harness lists them when the fault is
due (``targets_per_run``). Without checkpoints Flink's restart strategy is
``none`` (set explicitly in `engines.adapters.flink_job.CONFIG`, so it is
recorded): the job fails at once and the error names the worker that died;
the session goes on, and the next job starts fresh workers. A worker lost
just as its task starts can leave the task waiting on it for ever (Beam's
runner does not notice); a job still running `LOST_GRACE_S` after a listed
worker vanished is therefore ended by killing the job process, which the
session starts again (`_next_frame`).

**Tasks** and **actors** are not offered: a Flink job is a static graph
fixed before it runs (nothing submits a function to it while it runs), and
keyed state is reachable only by records flowing through its operator --
there is no address to send a message to.

Contained: the JVM's logs and temporary files (jars, mini-cluster folders)
go to the session's log directory (``FLINK_LOG_DIR``,
``JVM_ARGS=-Djava.io.tmpdir``); Flink's REST server, JobManager and
TaskManager bind to 127.0.0.1. Not bound by Flink's settings: Beam's gRPC
servers between the JVM and the Python workers (Beam picks their address),
and the Py4J gateway (PyFlink binds it to localhost itself). ``close()``
stops the job process and kills whatever of its process tree remains.

    >>> FlinkEngine().settings(2)["parallelism"]
    2
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import cloudpickle

from engines.adapters import LOG_DIR, AdapterEngine, AdapterSession, driver_path, gone, java_available
from engines.adapters import flink_env
from engines.adapters.flink_job import CONFIG, STREAM_CONFIG, read_frame, write_frame
from engines.api import DataflowError, Plan, Session
from engines.common import kill_all
from engines.support import Support
from engines.tracing import Stamps, span

TRACE_SOURCE = "stamps in the Flink adapter's Python functions, taken in Flink's Python worker processes"
TRACE_MISSING = (
    "a stream window's merge, per record, is not stamped: a span per record would cost more than the record "
    "(a batch job's operators are stamped per chunk)",
    "the JVM's side: records moving between tasks, Flink's scheduling of one stage after another, the Python "
    "workers' start and the mini-cluster's start show as idle",
    "bytes moved between workers: Flink's network stack does not report them to Python",
)

STREAM_TICK = 0.02   # wall seconds between a stream source's reads (as mini-data's and Bytewax's)
START_TIMEOUT = 180  # seconds the job process may take to start Flink and run its warm-up job
LOST_GRACE_S = 15.0  # a lost Python worker's job still running this long after: it hangs on it (`_next_frame`)
WORKER_MARK = "pyflink.fn_execution"   # in the command line of Flink's Python worker processes


class FlinkEngine(AdapterEngine):
    name = "flink"
    architecture = "data parallel"
    description = "Apache Flink (PyFlink DataStream API) in its own environment, driven over a pipe"
    supports = {
        "dataflow": Support.native(streams="streams natively (event-time windows and watermarks, STREAMING mode)"),
        "tasks": Support.unsupported("a Flink job is a static graph of operators fixed before it runs; "
                                     "there is no call to run one function on a worker"),
        "actors": Support.unsupported("Flink's keyed state is reached only by the records flowing through "
                                      "its operator; it is not an actor with an address to message"),
    }
    options = ("stream_tick_s", "env")

    def available(self) -> tuple[bool, str]:
        ok, why = java_available()
        if not ok:
            return False, why
        why = flink_env.missing(flink_env.env_path())
        return not why, why

    def version(self) -> str:
        return flink_env.installed_version(flink_env.env_path()) or "unknown"

    def settings(self, workers: int, **options) -> dict:
        self.check_options(options)
        env = Path(options.get("env") or flink_env.env_path())
        return {
            "workers": workers,
            "parallelism": workers,
            "runtime_mode": "BATCH (flows), STREAMING (streams)",
            "python_execution_mode": "process: Python workers in processes of their own (Beam Fn API)",
            "deployment": "a local mini-cluster per job in the job process's JVM, `workers` task slots",
            "flink_version": flink_env.installed_version(env) or "not installed",
            "flink_env": str(env),
            **{f"flink.{k}": v for k, v in CONFIG.items()},
            **{f"flink.stream.{k}": v for k, v in STREAM_CONFIG.items()},
            "stream_tick_s": float(options.get("stream_tick_s", STREAM_TICK)),
            LOG_DIR: options.get(LOG_DIR),
        }

    def start(self, workers: int = 2, **options) -> Session:
        ok, why = self.available() if not options.get("env") else (True, "")
        if not ok:
            raise DataflowError(f"engine 'flink' is unavailable: {why}")
        return FlinkSession(workers, self.supports, self.settings(workers, **options))


class FlinkSession(AdapterSession):
    engine = "flink"
    targets_per_run = True      # the Python workers are started per job: listed when the fault is due
    streams_natively = True

    def __init__(self, workers, supports, settings):
        super().__init__(workers, supports, settings)
        self._proc: subprocess.Popen | None = None
        self._conn: socket.socket | None = None
        self._lock = threading.Lock()
        self.jobs: list[dict] = []       # per job: its wall time and Flink's net run time (seconds)
        self.stamps = Stamps()           # the Python workers' stamps, kept while a trace records
        self._seen: list[tuple[int, str]] = []   # the last fault_targets listing
        with self.opening():
            self._start()

    def _start(self) -> None:
        env = Path(self.settings["flink_env"])
        tmp = self.logs / "flink-tmp"
        tmp.mkdir(exist_ok=True)
        here, there = socket.socketpair()
        project = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join([project, driver_path()])
        child_env = {**os.environ, "PYTHONPATH": path, "FLINK_LOG_DIR": str(self.logs),
                     "JVM_ARGS": f"-Djava.io.tmpdir={tmp}", "_python_worker_execution_mode": "process",
                     "TMPDIR": str(tmp)}
        log = open(self.logs / "flink-job.log", "ab")
        try:
            self._proc = subprocess.Popen(
                [str(flink_env.python_of(env)), "-m", "engines.adapters.flink_job", str(there.fileno()),
                 str(self.workers)], pass_fds=[there.fileno()], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env=child_env, cwd=str(self.logs), start_new_session=True)
        finally:
            there.close()
            log.close()
        self._conn = here
        here.settimeout(START_TIMEOUT)
        try:
            data = read_frame(here)
        except socket.timeout:
            raise DataflowError(f"the Flink job process did not start within {START_TIMEOUT} s; "
                                f"see {self.logs / 'flink-job.log'}") from None
        here.settimeout(None)
        if data is None:
            self._proc.wait(10)
            raise DataflowError(f"the Flink job process exited while starting (status {self._proc.returncode}); "
                                f"see {self.logs / 'flink-job.log'}")
        _, info = pickle.loads(data)
        if info["warmup"] is None:
            raise DataflowError(f"Flink's warm-up job failed: {info['warmup_error']}")
        warm = info["warmup"]
        self.settings.update({"flink_version": info["flink"], "job_process_pid": info["pid"],
                              "warmup_job_s": round(warm["wall"], 3),
                              "job_start_s": round(warm["wall"] - (warm["net"] or 0.0), 3)})

    def run_plan(self, plan: Plan) -> dict[str, list]:
        tick = self.settings["stream_tick_s"]
        starts: list[float] = []
        arrivals: list[tuple[float, list]] = []

        def during(message: tuple) -> None:
            if message[0] == "started":
                starts.append(message[2])
            else:
                arrivals.append((time.time(), message[3]))
                out[message[1]].extend(message[2])

        out: dict[str, list] = {sink: [] for sink in plan.sinks}
        try:
            reply = self._call(("plan", plan, tick, self.stamps.recording), during)
        finally:
            if starts:        # stream time 0 is when the last source started reading
                speedup = plan.source.step.arg.speedup
                for when, closes in arrivals:
                    for closes_at in closes:
                        self.window_latencies.add(when - (max(starts) + closes_at / speedup))
        for sink, items in reply.items():
            out[sink].extend(items)
        return out

    def _call(self, message: tuple, during=lambda message: None):
        """Send one request to the job process; its answer (a stream's messages on the way go to ``during``)."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                raise DataflowError(self._gone())
            write_frame(self._conn, cloudpickle.dumps(message, protocol=5))
            while True:
                data = self._next_frame()
                if data is None:
                    raise DataflowError(self._gone())
                reply = pickle.loads(data)
                if reply[0] in ("started", "windows"):
                    during(reply)
                    continue
                if reply[0] == "error":
                    raise self._named(reply[1])
                info = reply[2]
                for lane, name, kind, start, end, pid in info.pop("stamps", ()):
                    self.stamps.add(span(lane, name, kind, start, end, pid))
                self.jobs.append(info)
                self._seen = []          # a listing speaks of one job's workers only
                return reply[1]

    def _gone(self) -> str:
        status = self._proc.poll() if self._proc else None
        return (f"the Flink job process has exited (status {status}); see {self.logs / 'flink-job.log'} -- "
                "start a new session")

    def trace_start(self) -> None:
        """From the next job on, the Python workers stamp the adapter's functions and send the stamps back."""
        self.stamps.start()

    def trace_stop(self):
        return self.stamps.stop(TRACE_SOURCE, list(TRACE_MISSING))

    def _next_frame(self) -> bytes | None:
        """The job process's next message. While one is awaited, a Python worker of the last `fault_targets`
        listing that is gone for `LOST_GRACE_S` with the job still running means the job hangs on it (Beam's
        runner can wait for ever on a worker lost as its task starts): the job process is killed and
        started afresh, and the run fails naming the worker."""
        lost_since = None
        while True:
            ready, _, _ = select.select([self._conn], [], [], 0.5)
            if ready:
                return read_frame(self._conn)
            if not self._seen or not gone(self._seen):
                continue
            lost_since = lost_since or time.monotonic()
            if time.monotonic() - lost_since >= LOST_GRACE_S:
                lost, self._seen = gone(self._seen), []
                proc, self._proc = self._proc, None
                _stop(proc, None, wait=0)
                self._conn.close()
                self._start()
                raise DataflowError(f"the job lost its Python worker(s): {lost}, and was still running "
                                    f"{LOST_GRACE_S:g} s later, waiting on it; the job process was killed and "
                                    "started again")

    def _named(self, error: Exception) -> Exception:
        """A job's failure, naming the Python workers of the last `fault_targets` listing that are gone."""
        lost = gone(self._seen)
        self._seen = []
        if not lost:
            return error
        return DataflowError(f"the job lost its Python worker(s): {lost} (gone when it failed); Flink restarts "
                             f"no job without checkpoints (restart strategy: none, its default): {error}")

    def fault_targets(self) -> list[tuple[int, str]]:
        """Flink's Python worker processes of the job running now (the JVM's task threads are not processes).

        The listing is kept: a job that fails because one died names it (`_named`).
        """
        self._seen = self._targets()
        return list(self._seen)

    def _targets(self) -> list[tuple[int, str]]:
        import psutil

        if self._proc is None:
            return []
        try:
            tree = psutil.Process(self._proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        targets = []
        for proc in tree:
            try:
                if WORKER_MARK in " ".join(proc.cmdline()):
                    targets.append((proc.pid, f"flink python worker {len(targets)}"))
            except psutil.Error:
                continue
        return targets

    def fault_reason(self) -> str:
        return ("no Flink Python worker was running: Flink starts them per job, for the Python functions of "
                "a job (a SQL job's operators have none), and its task slots are threads of the job "
                "process's JVM")

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            _stop(proc, self._conn)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        super().close()


def _stop(proc: subprocess.Popen, conn: socket.socket | None, wait: float = 15) -> None:
    """Ask the job process to stop, then kill whatever is left of its process tree (the JVM, Python workers)."""
    import psutil

    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    try:
        if conn is not None:
            write_frame(conn, pickle.dumps(None))
        proc.wait(wait)
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)   # the session's process group: everything it started
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    kill_all(tree)
