"""The Flink job process: one long-lived Python process in Flink's own environment, driven over a pipe.

The ``flink`` engine's session (`engines.adapters.flink`) starts this
module with the interpreter of the environment ``archbench setup flink``
made (``python -m engines.adapters.flink_job FD``), and talks to it over
one end of a socket pair (file descriptor ``FD``) in **frames**: an 8-byte
big-endian length, then a pickle. The conversation::

    job process -> driver   ("ready", {"pid", "flink", "warmup"})      once, after a warm-up job
    driver -> job process   ("plan", plan, tick, tracing)               run a compiled flow
                            ("sql", tables, queries, tracing)           run Flink SQL queries (flink-sql)
                            None                                        stop
    job process -> driver   ("started", source, wall time)              while a stream runs
                            ("windows", sink, items, closes)            while a stream runs
                            ("ok", {sink: items}, {"wall", "net", "stamps"})  the run's answer
                            ("error", DataflowError)                    or why it failed

The plan arrives pickled by the driver's cloudpickle: module-level
functions by reference (this process has the driver's import directories
on its ``PYTHONPATH``), a user's ``--workload-file`` by value (so this
environment has the driver's cloudpickle, 3.x, over Beam's pin). Nothing
imported here at module level needs more than the standard library;
pyflink is imported when the first job is built.

Inside, every job builds a fresh ``StreamExecutionEnvironment`` (Flink
starts a mini-cluster per job: one JobManager and one TaskManager with
``workers`` slots in a JVM that the gateway started), translates the plan
(`engines.adapters.flink_translate`) and executes it. Flink's Python
workers -- separate processes (``process`` mode), one per slot's Python
operators -- send their results to an **inbox**, a loopback socket of
this process: one short connection per message, so a message is whole
before the worker's task ends, and so before ``execute`` returns.
"""

from __future__ import annotations

import os
import pickle
import select
import socket
import struct
import sys
import threading
import time

#: Flink's configuration for every job: loopback, fixed parallelism, Python workers in processes
CONFIG = {
    "execution.batch.adaptive.auto-parallelism.enabled": "false",  # BATCH mode keeps set_parallelism
    "python.execution-mode": "process",        # Python functions in worker processes (not threads in the JVM)
    "restart-strategy.type": "none",           # Flink's default without checkpoints: a lost worker fails the job
    "rest.bind-address": "127.0.0.1",
    "rest.address": "127.0.0.1",
    "jobmanager.bind-host": "127.0.0.1",
    "taskmanager.bind-host": "127.0.0.1",
    "taskmanager.host": "127.0.0.1",
}
STREAM_CONFIG = {
    # a stream's Python operators pass their records on in bundles of 10: a bundle per record keeps up
    # with only about a thousand records a second (the windows fall ever further behind), and the bundle
    # time alone does not flush a bigger bundle in time (with 100 the windows came 3 s late, with 10,000
    # all at the end)
    "python.fn-execution.bundle.time": "{tick_ms}",
    "python.fn-execution.bundle.size": "10",
    "pipeline.auto-watermark-interval": "{tick_ms}ms",
}


def write_frame(conn: socket.socket, data: bytes) -> None:
    conn.sendall(struct.pack("!Q", len(data)) + data)


def read_frame(conn: socket.socket) -> bytes | None:
    """The next frame's bytes; None when the other end has closed."""
    head = _read(conn, 8)
    if head is None:
        return None
    body = _read(conn, struct.unpack("!Q", head)[0])
    if body is None:
        raise EOFError("the connection closed inside a frame")
    return body


def _read(conn: socket.socket, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = conn.recv(min(n - got, 1 << 20))
        if not chunk:
            return None if got == 0 else b"".join(chunks)
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def dumps(obj) -> bytes:
    """Pickle ``obj`` for the driver; cloudpickle where plain pickle fails (a user's class, sent by value)."""
    try:
        return pickle.dumps(obj, protocol=5)
    except (pickle.PicklingError, AttributeError, TypeError):
        import cloudpickle

        return cloudpickle.dumps(obj, protocol=5)


class Inbox:
    """A loopback socket the Python workers report to; ``on_message`` sees each message as it comes.

    A thread accepts and reads the connections; `drain` (after a job)
    reads every connection still waiting, so no message of the job is lost.
    """

    def __init__(self, on_message):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.setblocking(False)
        self.port = self.server.getsockname()[1]
        self.on_message = on_message
        self.lock = threading.Lock()
        threading.Thread(target=self._loop, name="inbox", daemon=True).start()

    def _loop(self) -> None:
        while True:
            select.select([self.server], [], [], 0.05)
            self.drain()

    def drain(self) -> None:
        """Read every connection waiting now, each to its end."""
        with self.lock:
            while True:
                try:
                    conn, _ = self.server.accept()
                except BlockingIOError:
                    return
                with conn:
                    conn.setblocking(True)
                    while (data := read_frame(conn)) is not None:
                        self.on_message(pickle.loads(data))


class Job:
    """What one run collects from the workers: sinks' items, a stream's messages, the first error."""

    def __init__(self, sinks, forward):
        self.sinks = {sink: [] for sink in sinks}
        self.stamps: list[tuple] = []   # (lane, name, kind, start, end, pid) per span, while a trace records
        self.error = None
        self.forward = forward
        self.lock = threading.Lock()

    def take(self, message: tuple) -> None:
        kind = message[0]
        with self.lock:
            if kind == "items":
                self.sinks[message[1]].extend(message[2])
            elif kind == "error":
                self.error = self.error or message[1]
            elif kind == "stamps":
                self.stamps.extend(message[1])
            else:                      # "started", "windows": the driver hears them while the stream runs
                self.forward(message)


class Server:
    """The job process's state: the pipe to the driver, the inbox, the job being run."""

    def __init__(self, conn: socket.socket, workers: int):
        self.conn, self.workers = conn, workers
        self.send_lock = threading.Lock()
        self.job: Job | None = None
        self.inbox = Inbox(self._message)

    def _message(self, message: tuple) -> None:
        if self.job is not None:
            self.job.take(message)

    def send(self, message) -> None:
        data = dumps(message)
        with self.send_lock:
            write_frame(self.conn, data)

    def environment(self, streaming: bool, tick: float = 0.02):
        """A fresh execution environment: Flink's settings (`CONFIG`), the runtime mode, parallelism."""
        from pyflink.common import Configuration
        from pyflink.datastream import RuntimeExecutionMode, StreamExecutionEnvironment

        conf = Configuration()
        settings = {**CONFIG, **(STREAM_CONFIG if streaming else {})}
        for key, value in settings.items():
            conf.set_string(key, value.format(tick_ms=max(1, round(tick * 1000))))
        env = StreamExecutionEnvironment.get_execution_environment(conf)
        env.set_runtime_mode(RuntimeExecutionMode.STREAMING if streaming else RuntimeExecutionMode.BATCH)
        env.set_parallelism(self.workers)
        env.set_python_executable(sys.executable)
        return env

    def run(self, sinks, build, name: str, streaming: bool = False, tick: float = 0.02) -> tuple:
        """Build a job with ``build(env, inbox port)`` and execute it; the reply for the driver."""
        self.job = job = Job(sinks, self.send)
        start = time.perf_counter()
        try:
            env = self.environment(streaming, tick)
            build(env, self.inbox.port)
            result = env.execute(name)
            net = result.get_net_runtime() / 1000
            failure = None
        except Exception as e:   # a user function's error reached the inbox before the job failed
            net, failure = None, e
        finally:
            self.inbox.drain()
            self.job = None
        wall = time.perf_counter() - start
        if job.error is not None:
            return "error", job.error
        if failure is not None:
            from engines.errors import DataflowError

            return "error", DataflowError(f"the Flink job {name!r} failed: {_summary(failure)}")
        return "ok", job.sinks, {"wall": wall, "net": net, "stamps": job.stamps}

    def serve(self) -> None:
        from engines.adapters import flink_translate as ft

        warm = self.run(["warmup"], lambda env, port: ft.warm_up(env, port), "warm-up")
        self.send(("ready", {"pid": os.getpid(), "flink": _version(), "warmup": warm[2] if warm[0] == "ok"
                             else None, "warmup_error": None if warm[0] == "ok" else str(warm[1])}))
        while (data := read_frame(self.conn)) is not None:
            message = pickle.loads(data)
            if message is None:
                return
            try:
                self.send(self.handle(message, ft))
            except Exception as e:  # a plan this process cannot build: the driver gets why
                from engines.errors import DataflowError

                self.send(("error", e if isinstance(e, DataflowError) else
                           DataflowError(f"the Flink job process could not run it: {type(e).__name__}: {e}")))

    def handle(self, message: tuple, ft) -> tuple:
        kind = message[0]
        if kind == "plan":
            _, plan, tick, tracing = message
            if plan.streaming:
                return self.run(plan.sinks, lambda env, port: ft.translate_stream(env, plan, port, tick, tracing),
                                plan.name or "flow", streaming=True, tick=tick)
            return self.run(plan.sinks, lambda env, port: ft.translate(env, plan, port, tracing), plan.name or "flow")
        if kind == "sql":
            from engines.adapters import flink_tables

            _, tables, queries, tracing = message
            return flink_tables.run(self, tables, queries, tracing)
        raise ValueError(f"unknown message {kind!r}")


def _summary(error: BaseException) -> str:
    """The first lines of a Java exception that has the cause in it (Py4J's text is long)."""
    text = str(error)
    lines = [line for line in text.splitlines() if "Caused by" in line or "Error" in line][:3]
    return " / ".join(lines) if lines else text[:500]


def _version() -> str:
    from importlib import metadata

    return metadata.version("apache-flink")


def main(argv: list[str]) -> None:
    fd, workers = int(argv[1]), int(argv[2])
    conn = socket.socket(fileno=fd)
    Server(conn, workers).serve()


if __name__ == "__main__":
    main(sys.argv)
