"""Cluster: worker processes, a full mesh between them, heartbeats, clean shutdown.

The substrate every mode of the minimal engine runs on. A `Host` (the
driver of a session, or one process of a multi-process cluster) starts its
workers, introduces them to each other and then only passes messages; what
a worker *does* with the messages it receives is a pluggable **runtime**:
the data-parallel mode (`engines.mini.dataparallel`) is one, a task
scheduler's worker or an actor host is another, on the same cluster.

Processes, not threads: Python runs one thread's bytecode at a time (the
GIL), so only processes use more than one core for Python code. Workers are
fresh interpreters (the *spawn* start method, done with `subprocess` so the
driver's ``__main__`` is never re-imported and no helper process is left
behind) -- never forked from a driver that may already run threads.

Life of a cluster of ``n`` workers, ``w`` per process (``n = w`` locally)::

    host                                        worker k (one per process)
    listen on an address; spawn workers ------> listen on a port of its own
                     <--- connect + handshake --  (auth.py: HMAC before any pickle)
                     <--- ("hello", k, pid, addr)
    [other processes: connect, swap worker tables]
    ("mesh", {id: (addr, pid)}) --------------> connect to every lower id (send ("peer", k)),
                                                accept every higher one: a full mesh
                     <--- ("meshed", k)
    ... runtime messages, both ways and worker to worker ...
    PING every `heartbeat` s  <------------->  PING every `heartbeat` s
    ("stop",) + BYE --------------------------> BYE to peers and host, exit

Failure: a worker that dies closes its sockets, so its host and its peers
see the stream end without a BYE at once; a worker that hangs misses
heartbeats for ``timeout`` s. Either way the host posts ``("lost", k, why,
incarnation)`` among its events, and peers hand ``("lost", k, why)`` to their
runtime. A worker whose host is gone -- connection closed, silent, or its
parent process changed -- exits at once (``os._exit``), even in the middle
of user code: no worker outlives its driver, even one killed with SIGKILL.

Replacement: ``host.replace(k)`` starts a fresh worker ``k`` in place of a
lost one (mini-data's recovery, `engines.mini.recovery`). It is sent
``("rejoin", table)`` instead of ``("mesh", ...)`` and connects to every
other worker; each of them hands its runtime ``("joined", k)`` and tells
the host, which returns once all have. ``incarnation`` counts a worker's
replacements, so a notice of the old one's loss read later is known for
what it is (``host.recovered(notice)``).

The runtime protocol. A worker builds ``Runtime(ctx, **options)`` from
the ``"module:Class"`` it was given, then calls ``runtime.handle(source,
message)`` for every message, one at a time, in arrival order (``source``
is a worker id or `DRIVER`). ``ctx`` -- this worker, or an in-process
stand-in -- offers ``ctx.me``, ``ctx.n``, ``ctx.send(dest, message, code=False)``
(bytes written; ``code=True`` pickles with cloudpickle),
``ctx.queue(dest, message)`` + ``ctx.flush(dest=None)`` (batching: queued
messages leave together in one frame), ``ctx.later(seconds, message)``
(a timer: the runtime is handed ``message``, from itself, once ``seconds``
have passed -- how a worker paces a stream without a thread of its own) and
``ctx.on_read(handler)`` (the delivery hook, below). Messages are tuples
whose first item names them; ``("stop",)`` and ``("mesh", ...)`` belong to the cluster, and a
runtime receives ``("lost", k, why)`` when peer ``k`` dies. A message that
cannot be unpickled, or a runtime that raises, is reported to the host as
``("runtime-error", k, text)`` -- promptly, never as a silent hang.

The delivery hook. A runtime that only routes what it receives -- into
its own queues, never running user code on the way -- may take messages
on the thread that read them and save the hop through the worker's inbox
and main thread: ``ctx.on_read(handler)`` has ``handler(source, message)``
called on that thread for every message read from a connection (and for
the ``("lost", k, why)`` of a peer); it returns True if it took the
message, False to have it queued for ``handle`` as usual. Set it in the
runtime's constructor: nothing is sent to a runtime before every worker
has built its own. `Host` offers the same for the driver,
``host.on_read(handler)``, instead of `Host.recv`.

Inline. A runtime whose class sets ``inline = True`` has the driver's
messages handled on the thread that read them whenever it is idle -- no
earlier message of the driver's still in the inbox, and no other message
being handled -- so a task sent by the driver starts without waiting for
the main thread to wake. ``handle`` is still called for one message at a
time (a lock), and the driver's messages in the order sent; the others
keep the inbox. It suits a runtime whose ``handle`` never waits for
another message (mini-tasks' worker) -- and it needs a driver whose
reader threads never block on a write to this worker (it may be busy
with a task while the driver writes).

Reading for oneself. A driver's caller that waits for the one answer still
to come from worker ``k`` may read ``k``'s connection itself,
``host.read_for(k, done)``: the reader thread steps aside between frames,
and the answer is delivered on the thread that waits for it, one thread
switch sooner. Everything else read meanwhile is delivered as the reader
thread would deliver it.

Polling. Most of a small round trip is spent waking processes: one asleep
in ``poll`` takes tens of microseconds to run again once its bytes come.
So a caller reading for itself first polls for its answer, without
sleeping, for ``spin`` s (`SPIN`, 250 us; the engines' ``spin_us``
setting, 0 to turn it off), and ``host.poll_hint(k)`` tells worker ``k``,
in the next frame sent to it, to poll as long for the driver's next
message once it has read that frame. A caller gives the hint when its
answer is the only one in flight -- a core is free then, and the next
request likely follows at once; with more in flight, nobody polls, so a
busy cluster's cores are not spent waiting. Nor after an answer that took
longer than ``spin`` s (the worker had other work, an actor its backlog):
polling resumes once an answer comes that fast again. A polling thread
yields its core to any other thread with work (``sched_yield``), and
sleeps once ``spin`` s have passed. On a 2-core machine this took a
mini-tasks hop from 213 to 111 us and a mini-actors call from 151 to 56 us
(p50), against 85 and 66 us for a byte echoed over loopback TCP in the same
runs (``tests/benchmarks``, medium).

`InProcessHost` runs the same runtimes as plain objects in one process,
with one FIFO of messages (each still pickled and unpickled, as on the
wire): a deterministic form of every mode, for debugging and teaching.

State of a `Host`: ``n``; ``local: list[int]`` (its workers' ids);
``procs: {id: Popen}``; ``conns: {id: Conn}`` (to its workers);
``table: {id: ((host, port), pid)}`` (every worker's mesh address);
``peers: {process id: Conn}`` (other processes); ``events: Queue`` of
``(source, message)``; ``reader``: the delivery hook or None; ``lost: {member: sentence}``; ``arrived: {barrier
tag: {process, ...}}``.

Worked example -- two workers running a runtime that echoes to the driver::

    >>> with Host(2, "engines.mini.cluster:Echo") as host:
    ...     _ = [host.send(k, ("echo", f"hi {k}")) for k in host.local]
    ...     sorted(host.recv(timeout=10)[1] for _ in host.local)
    [('echo', 'hi 0', 0), ('echo', 'hi 1', 1)]
"""

from __future__ import annotations

import heapq
import importlib
import itertools
import logging
from collections import deque
import os
import pickle
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from engines.api import ArchbenchError
from engines.mini import auth
from engines.mini.wire import HEADER, PING, WireError, decode, encode

log = logging.getLogger("archbench.mini")

DRIVER = "driver"
START_TIMEOUT = 60.0
SPIN = 250e-6         # s a reader expecting an answer at once polls before it sleeps (see "Polling")


class ClusterError(ArchbenchError):
    """The cluster could not start, or lost a member it needed."""


# ================================================================ the worker side


class WorkerProcess:
    """One worker: its connections, its inbox and its runtime. Runs in the worker process.

    It is also the runtime's ``ctx``. Reader threads (one per connection)
    turn frames into ``(source, message)`` items of ``inbox``; the main
    thread hands them to the runtime one at a time.
    """

    def __init__(self, spec: dict):
        self.spec = spec
        self.me, self.n = spec["wid"], spec["n"]
        self.inbox: queue.Queue = queue.Queue()
        self.reader = None                    # the runtime's delivery hook (`on_read`), if it set one
        self.runtime = None                   # an `inline` runtime, once built: see "Inline"
        self.handling = threading.Lock()      # held while the runtime handles a message
        self.from_driver = 0                  # the driver's messages in the inbox, not handled yet
        self.counting = threading.Lock()      # guards from_driver
        self.inline_busy = False              # the driver's reader thread is handling a message
        self.timers: list = []                # heap of (due, seq, message): the runtime's `later` calls
        self._seq = itertools.count()
        self.peers: dict = {}                 # worker id -> Conn
        self.meshed = threading.Condition()
        self.stopping = False
        secret = spec["secret"]
        self.listener = auth.Listener(spec["listen"], 0, secret, self._on_peer, name=f"worker {self.me}")
        self.host = auth.connect(auth.as_address(spec["host"]), secret, peer=DRIVER)   # a Unix socket, locally
        self.host.send(("hello", self.me, os.getpid(), self.listener.address))
        self._thread(self._read, DRIVER, self.host)
        self._thread(self._heartbeat)

    def _thread(self, fn, *args) -> None:
        threading.Thread(target=fn, args=args, daemon=True).start()

    # -- the mesh
    def _on_peer(self, conn) -> None:
        """A peer connected to us (the listener's thread): learn who, then read from it."""
        kind, payload = conn.read_frame()
        (hello,) = decode(payload)
        if not (type(hello) is tuple and hello[0] == "peer" and hello[1] in range(self.n)):
            raise WireError(f"expected ('peer', id), got {hello!r:.80}")
        rejoined = hello[1] in self.peers          # a fresh worker in place of a lost one
        self._add_peer(hello[1], conn)
        if rejoined:
            self._arrive(hello[1], ("joined", hello[1]))   # before the host hears it: ahead of any run
            self.host.send(("joined", self.me, hello[1]))
        self._read(hello[1], conn)

    def _add_peer(self, wid: int, conn) -> None:
        conn.peer = f"worker {wid}"
        with self.meshed:
            self.peers[wid] = conn
            self.meshed.notify_all()

    def _mesh(self, table: dict, everyone: bool = False) -> None:
        """Connect to every lower id (``everyone``: to every other, as a replacement does), wait for the rest."""
        for wid, (address, _pid) in sorted(table.items()):
            if wid < self.me or (everyone and wid != self.me):
                conn = auth.connect(auth.as_address(address), self.spec["secret"], peer=f"worker {wid}")
                conn.send(("peer", self.me))
                self._add_peer(wid, conn)
                self._thread(self._read, wid, conn)
        with self.meshed:
            if not self.meshed.wait_for(lambda: len(self.peers) == self.n - 1, timeout=START_TIMEOUT):
                missing = sorted(set(range(self.n)) - set(self.peers) - {self.me})
                raise ClusterError(f"worker {self.me}: workers {missing} never connected")

    # -- reading
    def _read(self, source, conn) -> None:
        def undecodable(error):
            self.host.send(("runtime-error", self.me, f"cannot unpickle a message from {conn.peer}: "
                                                      f"{type(error).__name__}: {error}"))
        clean, why = False, ""
        try:
            for message in conn.messages(on_error=undecodable):
                self._arrive(source, message)
            clean = True
        except (OSError, WireError) as e:
            why = str(e)
        if source == DRIVER:
            if clean or self.stopping:
                self.inbox.put((DRIVER, ("stop",)))
            else:
                self._exit(f"lost the driver ({why})")
        elif not clean and not self.stopping:
            self._arrive(source, ("lost", source, f"connection lost: {why}"))

    def _arrive(self, source, message) -> None:
        """A message read (on a reader thread): to the runtime's hook if it takes it, to an idle inline
        runtime if it is the driver's, else to the inbox."""
        if source == DRIVER and message[0] == "poll":       # see "Polling"
            self.host.poll_next = self.spec["spin"]
            return
        reader = self.reader
        if reader is not None and reader(source, message):
            return
        if source == DRIVER and self.runtime is not None and message[0] != "stop":
            if self.handling.acquire(blocking=False):
                try:
                    if not self.from_driver:            # nothing of the driver's is waiting: run it here
                        self.inline_busy = True         # (the driver's heartbeats wait unread meanwhile)
                        try:
                            return self._handle(source, message)
                        finally:
                            self.inline_busy = False
                            self.host.last_seen = time.monotonic()
                finally:
                    self.handling.release()
            with self.counting:
                self.from_driver += 1
        self.inbox.put((source, message))

    def _heartbeat(self) -> None:
        every, timeout = self.spec["heartbeat"], self.spec["timeout"]
        while not self.stopping:
            time.sleep(every)
            if os.getppid() != self.spec["parent"]:
                self._exit("its parent process is gone")
            if not self.inline_busy and time.monotonic() - self.host.last_seen > timeout:
                self._exit(f"no heartbeat from the driver for {timeout:.0f} s")
            try:
                self.host.send_frame(PING)
            except OSError:
                pass  # the reader sees the end of the stream and exits

    def _exit(self, why: str) -> None:
        if not self.stopping:
            log.warning("mini worker %s (pid %s) exits: %s", self.me, os.getpid(), why)
            os._exit(1)

    # -- the ctx a runtime uses
    def send(self, dest, message, *, code: bool = False) -> int:
        """Send now; bytes written. A message to oneself goes straight to the inbox (0 bytes)."""
        if dest == self.me:
            self.inbox.put((self.me, message))
            return 0
        return (self.host if dest == DRIVER else self.peers[dest]).send(message, code=code)

    def queue(self, dest, message, *, code: bool = False) -> None:
        if dest == self.me:
            self.inbox.put((self.me, message))
        else:
            (self.host if dest == DRIVER else self.peers[dest]).queue(message, code=code)

    def flush(self, dest=None) -> int:
        """Send what is queued for ``dest`` (default: for everyone); bytes written."""
        if dest is not None:
            return 0 if dest == self.me else (self.host if dest == DRIVER else self.peers[dest]).flush()
        return sum(conn.flush() for conn in [self.host, *self.peers.values()])

    def on_read(self, handler) -> None:
        """Have ``handler(source, message)`` called on the reader threads (see "The delivery hook")."""
        self.reader = handler

    def later(self, seconds: float, message) -> None:
        """Hand ``message`` to the runtime, from this worker, ``seconds`` from now (main thread only)."""
        heapq.heappush(self.timers, (time.monotonic() + seconds, next(self._seq), message))

    def _next(self):
        """The next ``(source, message)``: from the inbox, or a timer that is due."""
        while self.timers:
            wait = self.timers[0][0] - time.monotonic()
            if wait <= 0:
                return self.me, heapq.heappop(self.timers)[2]
            try:
                return self.inbox.get(timeout=wait)
            except queue.Empty:
                pass
        return self.inbox.get()

    # -- the main loop
    def run(self) -> None:
        source, message = self.inbox.get()
        if message[0] not in ("mesh", "rejoin"):
            return
        self._mesh(message[1], everyone=message[0] == "rejoin")
        module, cls = self.spec["runtime"].split(":")
        self.built = getattr(importlib.import_module(module), cls)(self, **self.spec["options"])
        if getattr(self.built, "inline", False):
            self.runtime = self.built
        self.host.send(("meshed", self.me))
        while True:
            source, message = self._next()
            if message[0] == "stop":
                break
            with self.handling:
                if source == DRIVER and self.runtime is not None:
                    with self.counting:
                        self.from_driver -= 1
                self._handle(source, message)

    def _handle(self, source, message) -> None:
        """The runtime handles one message (``handling`` held)."""
        try:
            self.built.handle(source, message)
        except Exception as e:  # a bug in the runtime: report it, keep serving
            log.exception("mini worker %s: runtime failed on %s", self.me, message[0])
            self.host.send(("runtime-error", self.me, f"{type(e).__name__}: {e}"))

    def close(self) -> None:
        self.stopping = True
        self.listener.close()
        for conn in [*self.peers.values(), self.host]:
            conn.close(bye=True)


def worker_main() -> None:
    """Entry point of a worker process: read the spec from stdin, serve until stopped."""
    spec = pickle.loads(sys.stdin.buffer.read())
    sys.stdin.close()
    sys.path[:] = spec["sys_path"]
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C is the driver's to handle
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    worker = WorkerProcess(spec)
    try:
        worker.run()
    finally:
        worker.close()


class Echo:
    """A runtime for demonstrations and tests: replies to ``("echo", x)`` with ``("echo", x, me)``."""

    def __init__(self, ctx):
        self.ctx = ctx

    def handle(self, source, message):
        if message[0] == "echo":
            self.ctx.send(DRIVER, ("echo", message[1], self.ctx.me))


# ================================================================ the host side


class Host:
    """Start ``workers`` worker processes running ``runtime`` and mesh them.

    Locally (``addresses`` None) the host listens on a Unix socket in a
    private folder (on loopback TCP where there are none) and the workers
    on loopback TCP, with a fresh random secret. As process ``process_id`` of a multi-process
    cluster, it listens on ``addresses[process_id]`` and the cluster's
    workers are ``process_id * workers ...``; ``secret`` must then be shared
    by all.
    """

    def __init__(self, workers: int, runtime: str, *, options: dict | None = None,
                 process_id: int = 0, addresses: list[tuple[str, int]] | None = None,
                 secret: bytes | None = None, heartbeat: float = 1.0, timeout: float = 30.0,
                 start_timeout: float = START_TIMEOUT, spin: float = SPIN):
        if workers < 1:
            raise ClusterError(f"a cluster needs at least one worker per process, got {workers}")
        local = not addresses
        addresses = addresses or [("127.0.0.1", 0)]
        self.process_id, self.processes = process_id, len(addresses)
        self.n = workers * self.processes
        self.local = [process_id * workers + k for k in range(workers)]
        self.procs: dict[int, subprocess.Popen] = {}
        self.conns: dict = {}
        self.pids: dict[int, int] = {}
        self.table: dict = {}
        self.peers: dict = {}
        self.events: queue.Queue = queue.Queue()
        self.reader = None                    # the driver's delivery hook (`on_read`), if it set one
        self.lost: dict = {}
        self.incarnation: dict = {}           # worker id -> how many times it was replaced
        self.joined: set = set()              # (worker, replacement) pairs that have met again
        self.arrived: dict = {}               # barrier tag -> processes that reached it
        self.closing = False
        self.heartbeat, self.timeout, self.spin = heartbeat, timeout, spin
        self._joined = threading.Condition()
        if secret is None:
            if self.processes > 1:
                raise ClusterError("a multi-process cluster needs a shared secret (see auth.cluster_secret)")
            secret = auth.new_secret()
        host, port = addresses[process_id]
        name = f"process {process_id}" if self.processes > 1 else "driver"
        self.socket_dir = _socket_dir() if local else None
        if self.socket_dir:
            self.listener = auth.Listener(os.path.join(self.socket_dir, "driver"), None, secret, self._on_conn,
                                          name=name)
        else:
            self.listener = auth.Listener(host, port, secret, self._on_conn, name=name)
        try:
            spec = {"n": self.n, "host": self.listener.address, "listen": host, "secret": secret,
                    "runtime": runtime, "options": dict(options or {}), "heartbeat": heartbeat, "spin": spin,
                    "timeout": 2 * timeout + heartbeat,   # a worker waits longer for its driver than the reverse
                    "parent": os.getpid(), "sys_path": list(sys.path)}
            self._spec = spec
            for wid in self.local:
                self._spawn({**spec, "wid": wid})
            self._wait(lambda: len(self.conns) == workers, start_timeout, "connect")
            self.table = {wid: (self.conns[wid].address, self.pids[wid]) for wid in self.local}
            if self.processes > 1:
                self._mesh_processes(addresses, secret, start_timeout)
            for wid in self.local:
                self.conns[wid].send(("mesh", self.table))
            self._wait(lambda: all(self.conns[w].meshed for w in self.local), start_timeout, "mesh")
        except BaseException:
            self.close()
            raise
        threading.Thread(target=self._heartbeat, daemon=True).start()

    @property
    def worker_pids(self) -> list[int]:
        return [self.pids[w] for w in self.local]

    # -- starting
    def _spawn(self, spec: dict) -> None:
        code = "from engines.mini.cluster import worker_main; worker_main()"
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, close_fds=True, env=env)
        self.procs[spec["wid"]] = proc
        proc.stdin.write(pickle.dumps(spec, protocol=5))   # the secret travels in a pipe, not argv
        proc.stdin.close()

    def _wait(self, condition, timeout: float, what: str, lost_ok: bool = False) -> None:
        """Wait for ``condition`` (checked when a connection changes); fail if a worker exits first
        (unless ``lost_ok``: waiting for a loss)."""
        deadline = time.monotonic() + timeout
        with self._joined:
            while not condition():
                for wid, proc in self.procs.items():
                    if proc.poll() is not None and not lost_ok:
                        raise ClusterError(f"worker {wid} (pid {proc.pid}) {exit_status(proc.returncode)} "
                                           f"before it could {what}; see its messages above")
                if self.lost and not lost_ok:
                    raise ClusterError(f"could not {what}: {'; '.join(self.lost.values())}")
                if time.monotonic() > deadline:
                    raise ClusterError(f"the cluster did not {what} within {timeout:.0f} s")
                self._joined.wait(0.05)

    def _on_conn(self, conn) -> None:
        """An authenticated connection (listener thread): a worker of ours or another process."""
        kind, payload = conn.read_frame()
        (hello,) = decode(payload)
        if type(hello) is tuple and hello[0] == "hello" and hello[1] in self.local and hello[1] not in self.conns:
            _, wid, pid, address = hello
            conn.peer, conn.address, conn.meshed = f"worker {wid}", auth.as_address(address), False
            with self._joined:
                self.conns[wid], self.pids[wid] = conn, pid
                self._joined.notify_all()
            self._read(wid, conn)
        elif type(hello) is tuple and hello[0] == "process" and hello[1] in range(self.processes):
            self._add_process(hello[1], conn)
            self._read(f"process {hello[1]}", conn)
        else:
            raise WireError(f"unexpected first message {hello!r:.80}")

    def _mesh_processes(self, addresses, secret, timeout: float) -> None:
        """Connect the processes (each to every lower id), then swap worker tables."""
        deadline = time.monotonic() + timeout
        for pid_ in range(self.process_id):
            while True:
                try:
                    conn = auth.connect(addresses[pid_], secret, peer=f"process {pid_}")
                    break
                except (ConnectionRefusedError, auth.AuthError, OSError) as e:
                    if time.monotonic() > deadline:
                        host, port = addresses[pid_]
                        raise ClusterError(f"could not reach process {pid_} at {host}:{port} within "
                                           f"{timeout:.0f} s: {e}") from None
                    time.sleep(0.1)
            conn.send(("process", self.process_id))
            self._add_process(pid_, conn)
            threading.Thread(target=self._read, args=(f"process {pid_}", conn), daemon=True).start()
        self._wait(lambda: len(self.peers) == self.processes - 1, timeout, "connect to the other processes")
        for conn in self.peers.values():
            conn.send(("workers", self.table))
        tables = 0
        while tables < self.processes - 1:
            source, message = self.recv(timeout=max(0.1, deadline - time.monotonic()))
            if message[0] == "workers":
                self.table.update(message[1])
                tables += 1
            elif message[0] == "lost":
                raise ClusterError(f"the cluster could not form: {message[2]}")

    def _add_process(self, pid_: int, conn) -> None:
        conn.peer = f"process {pid_}"
        with self._joined:
            self.peers[pid_] = conn
            self._joined.notify_all()

    # -- running
    def _read(self, source, conn) -> None:
        turn = conn.turn = _Turn() if isinstance(source, int) else None     # a worker's: see `read_for`
        undecodable = self._undecodable(source, conn)
        clean, why = False, "connection lost"
        try:
            while True:
                if turn is not None and turn.asked() and not turn.step_aside(conn, lambda: self.closing):
                    return                                   # closing while a caller had the connection
                if (turn is not None and turn.ended) or not self._take(source, conn, undecodable):
                    break                                    # BYE (read by a caller, or here)
            clean = True
        except (OSError, WireError) as e:
            why = f"connection lost ({e})"
        if not self.closing:
            self._lose(source, "closed its connection" if clean else why, wait=1.0, conn=conn)

    def _undecodable(self, source, conn):
        """What to do with a batch from ``conn`` that cannot be unpickled: report it, as a runtime error."""
        def report(error):
            self._arrive(source, ("runtime-error", source, f"the driver cannot unpickle a message from "
                                                           f"{conn.peer}: {type(error).__name__}: {error}"))
        return report

    def _take(self, source, conn, undecodable) -> bool:
        """Read one frame of ``conn`` and deliver its messages; False when the peer said BYE."""
        batch = conn.next_batch(on_error=undecodable)
        if batch is None:
            return False
        for message in batch:
            if message[0] in ("meshed", "barrier", "joined"):
                with self._joined:
                    if message[0] == "meshed":
                        conn.meshed = True
                    elif message[0] == "joined":
                        self.joined.add(message[1:])
                    else:
                        self.arrived.setdefault(message[1], set()).add(source)
                    self._joined.notify_all()
            else:
                self._arrive(source, message)
        return True

    def read_for(self, wid: int, done, timeout: float | None = None) -> bool:
        """Read worker ``wid``'s messages on this thread until ``done()`` (or ``timeout`` s); False if
        its reader thread has the connection now (then wait as usual: it delivers them).

        For a caller that waits for one answer from one worker (a task's result, an actor's reply):
        delivering the answer itself saves the hand-off from a reader thread, a thread switch. On a
        2-core machine a mini-actors call went from about 290 to 200 us, a mini-tasks hop from about
        262 to 248 us. The first wait asks; the reader thread steps aside after its next frame
        (`_Turn`), and later waits find the connection free. Messages for others are delivered on
        the way, as the reader thread would. If the connection fails, the reader thread gets it
        back and reports the loss.
        """
        conn = self.conns.get(wid)
        turn = getattr(conn, "turn", None)
        if turn is None or wid in self.lost or not turn.borrow():
            return False
        deadline = None if timeout is None else time.monotonic() + timeout
        undecodable = self._undecodable(wid, conn)
        ok, spin, start = False, self.spin if turn.quick else 0.0, time.perf_counter()
        try:
            while not done():
                left = READ_POLL if deadline is None else min(READ_POLL, deadline - time.monotonic())
                if left <= 0:
                    break
                ready, spin = conn.readable(left, spin), 0.0       # poll before the first sleep only
                if ready and not self._take(wid, conn, undecodable):
                    turn.ended = True                        # BYE: the reader thread ends cleanly
                    break
            ok = not turn.ended
            turn.quick = time.perf_counter() - start < self.spin    # poll next time only if that paid
        except (OSError, WireError):
            pass                                             # the reader thread reads the same end, and reports it
        finally:                                             # (also on Ctrl-C: never leave the connection unread)
            turn.end_borrow() if ok else turn.give_back()
        return ok

    def poll_hint(self, wid: int) -> None:
        """Tell worker ``wid``, in the next frame sent to it, that a caller waits for its answer and
        will send again at once: after that frame, it polls `spin` s for the next (see "Polling").
        Not while its last answer read here took longer than that: it was busy, and will be."""
        conn = self.conns.get(wid)
        turn = getattr(conn, "turn", None)
        if turn is not None and turn.quick and self.spin and wid not in self.lost:
            conn.queue(("poll",))

    def _lose(self, source, why: str, wait: float = 0.0, conn=None) -> None:
        """Post ``("lost", source, sentence)`` once per member; for a local worker, say how it ended
        (waiting up to ``wait`` s for its exit status: its connection just ended, so it is exiting).
        News of ``conn``, a worker's connection, is dropped once that worker has been replaced."""
        proc = self.procs.get(source)
        if proc is not None:
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                pass
            if proc.returncode is not None:
                why = exit_status(proc.returncode)
        with self._joined:
            replaced = conn is not None and isinstance(source, int) and self.conns.get(source) is not conn
            if source in self.lost or replaced:
                return
            self.lost[source] = why = f"{self.name(source)} {why}"
            notice = ("lost", source, why, self.incarnation.get(source, 0))
            self._joined.notify_all()
        self._arrive(source, notice)

    def on_read(self, handler) -> None:
        """Have ``handler(source, message)`` called on the threads that read the workers' messages (and
        post ``lost`` notices); what it does not take (returns False) goes to `recv` as usual."""
        self.reader = handler

    def _arrive(self, source, message) -> None:
        reader = self.reader
        if reader is None or not reader(source, message):
            self.events.put((source, message))

    # -- replacing a lost worker
    @property
    def can_replace(self) -> bool:
        """Whether `replace` can start a worker here: only where every worker is this host's own."""
        return self.processes == 1

    def replace(self, wid: int, timeout: float = START_TIMEOUT) -> None:
        """Start a fresh worker ``wid`` in place of the lost one, and mesh it with the others.

        The old process is killed (it may only be cut off) and its loss
        awaited; the new one connects to every other worker, each of which
        hands its runtime ``("joined", wid)`` and tells this host, and only
        then does `replace` return -- so a message sent after it reaches the
        new worker, not the old one's closed connection.
        """
        if not self.can_replace:
            raise ClusterError("a worker of a multi-process cluster cannot be replaced (start a new cluster)")
        old = self.procs[wid]
        if old.poll() is None:
            old.kill()
        old.wait()
        self._wait(lambda: wid in self.lost, timeout, f"see worker {wid} gone", lost_ok=True)
        with self._joined:          # one step for the readers and the heartbeat: the old worker is gone
            self.incarnation[wid] = self.incarnation.get(wid, 0) + 1
            del self.conns[wid]                      # its pid stays until the new one says hello
            self._spawn({**self._spec, "wid": wid})
            del self.lost[wid]
        self._wait(lambda: wid in self.conns, timeout, f"start worker {wid} again")
        self.table[wid] = (self.conns[wid].address, self.pids[wid])
        self.conns[wid].send(("rejoin", self.table))
        others = {(w, wid) for w in self.local if w != wid}
        self._wait(lambda: self.conns[wid].meshed and others <= self.joined, timeout, f"mesh worker {wid} again")
        self.joined -= others

    def recovered(self, notice: tuple) -> bool:
        """Whether a ``("lost", wid, why, incarnation)`` notice is of a worker since replaced."""
        return len(notice) > 3 and notice[3] < self.incarnation.get(notice[1], 0)

    def name(self, source) -> str:
        """``worker 1 (pid 4242)`` or ``process 1``: a member as error messages name it."""
        if isinstance(source, int):
            pid = self.pids.get(source) or self.table.get(source, (None, None))[1]
            return f"worker {source}" + (f" (pid {pid})" if pid else "")
        return str(source)

    def _heartbeat(self) -> None:
        while not self.closing:
            time.sleep(self.heartbeat)
            now = time.monotonic()
            members = [*self.conns.items(), *((f"process {p}", c) for p, c in self.peers.items())]
            for source, conn in members:
                if source in self.lost or self.closing:
                    continue
                proc = self.procs.get(source)
                if proc is not None and proc.poll() is not None:
                    self._lose(source, exit_status(proc.returncode), conn=conn)
                elif now - conn.last_seen > self.timeout:
                    self._lose(source, f"sent no heartbeat for {self.timeout:.0f} s", conn=conn)
                else:
                    try:
                        conn.send_frame(PING)
                    except OSError:
                        pass  # its reader reports the loss

    def send(self, wid: int, message, *, code: bool = False) -> int:
        """Send ``message`` to local worker ``wid``; bytes written."""
        if wid in self.lost:
            raise ClusterError(self.lost[wid])
        return self.conns[wid].send(message, code=code)

    def recv(self, timeout: float | None = None):
        """The next ``(source, message)`` from a worker or process (or a ``lost`` notice);
        None after ``timeout`` seconds."""
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None

    def barrier(self, tag, timeout: float | None = None) -> None:
        """Wait until every other process reaches ``barrier(tag)`` (nothing to do alone)."""
        for conn in self.peers.values():
            conn.send(("barrier", tag))
        everyone = {f"process {p}" for p in self.peers}
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._joined:
            while not everyone <= self.arrived.get(tag, set()):
                gone = [why for who, why in self.lost.items() if who in everyone]
                if gone:
                    raise ClusterError(f"{gone[0]} before barrier {tag!r}")
                if deadline is not None and time.monotonic() > deadline:
                    raise ClusterError(f"the other processes did not reach barrier {tag!r} within {timeout} s")
                self._joined.wait(0.1)

    def close(self, grace: float = 3.0) -> None:
        """Stop every worker (ask, then terminate, then kill; a lost one is killed at once) and close
        all connections. Safe twice."""
        if self.closing:
            return
        self.closing = True
        for wid, conn in list(self.conns.items()):
            if wid in self.lost:
                self.procs[wid].kill()    # lost yet running: hung, or cut off -- nothing to wait for
                continue
            try:
                conn.send(("stop",))
            except OSError:
                pass
        deadline = time.monotonic() + grace
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for conn in [*self.conns.values(), *self.peers.values()]:
            conn.close(bye=True)
        self.listener.close()
        if self.socket_dir:
            shutil.rmtree(self.socket_dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


READ_POLL = 0.005     # s: a caller reading for itself looks this often whether another thread settled its wait


class _Turn:
    """Who reads a worker's connection: its reader thread, or a caller borrowing it (`Host.read_for`).

    The reader thread never gives it up in the middle of a read: after a
    frame, if a caller has asked within `ASKED_FOR` s, it steps aside and
    looks every `PARKED_POLL` s. It takes the connection back when no
    caller has borrowed it for `ASKED_FOR` s, or when bytes are waiting
    while nobody borrows it: a message for someone else. Then, for `QUIET_FOR`
    s, it does not step aside again -- where others' messages come between a
    caller's waits, each would wait for its poll, and the caller gains nothing.
    """

    ASKED_FOR, PARKED_POLL, QUIET_FOR = 0.005, 0.001, 0.05

    def __init__(self):
        self.cond = threading.Condition()
        self.parked = self.borrowed = self.ended = False     # ended: a borrower read the peer's BYE
        self.quick = True                                    # the last answer a borrower read came within SPIN
        self.asked_at = self.freed_at = self.interrupted_at = -1.0

    def asked(self) -> bool:
        now = time.monotonic()
        return now - self.asked_at < self.ASKED_FOR and now - self.interrupted_at >= self.QUIET_FOR

    def borrow(self) -> bool:
        """A caller wants to read: True if the reader thread has stepped aside (the caller reads now)."""
        with self.cond:
            self.asked_at = time.monotonic()
            if not self.parked or self.borrowed:
                return False
            self.borrowed = True
            return True

    def end_borrow(self) -> None:
        with self.cond:
            self.borrowed = False
            self.freed_at = time.monotonic()

    def give_back(self) -> None:
        """The borrower hit an error: the reader thread reads again at once (and meets it too)."""
        with self.cond:
            self.borrowed = self.parked = False
            self.asked_at = -1.0
            self.cond.notify_all()

    def step_aside(self, conn, closing) -> bool:
        """The reader thread waits while callers read for themselves; False if ``closing()`` meanwhile."""
        with self.cond:
            self.parked = True
            while self.parked:
                self.cond.wait(self.PARKED_POLL)
                if closing():
                    return False
                if self.borrowed:
                    continue
                now = time.monotonic()
                if now - max(self.asked_at, self.freed_at) >= self.ASKED_FOR:
                    self.parked = False
                elif conn.readable():
                    self.parked, self.interrupted_at = False, now
            return True


def _socket_dir() -> str | None:
    """A private folder (mode 0700) for a local driver's Unix socket; None where there are none (TCP then).

    The driver's messages are small and wait for answers: a Unix socket skips
    the TCP stack, and a round trip through one takes about 40 us here, through
    loopback TCP about 70. The workers' mesh stays on TCP: its big batches of
    records moved 5-7 % slower over Unix sockets (the mini-data exchange
    benchmark, four runs alternated).
    """
    if not hasattr(socket, "AF_UNIX"):
        return None
    folder = tempfile.mkdtemp(prefix="archbench-")
    if len(os.path.join(folder, "driver")) > 100:    # a socket's path has a length limit
        os.rmdir(folder)
        return None
    return folder


def exit_status(code: int) -> str:
    """How a process ended, in words.

    >>> exit_status(-9), exit_status(3)
    ('was killed by SIGKILL', 'exited with code 3')
    """
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


# ================================================================ the in-process form


class InProcessHost:
    """``n`` runtimes as objects in this process, one FIFO of messages: deterministic.

    The same interface as `Host` (``n``, ``local``, ``send``, ``recv``,
    ``close``, ``lost``) and the same ctx for the runtimes, so a mode's
    driver and runtime run unchanged. ``recv`` delivers queued messages in
    the order they were sent until one is for the driver; every message is
    pickled and unpickled on the way (a flow that cannot travel fails here
    too, and the byte counts are the real ones) -- except a worker's message
    to itself, which, as in a worker process, goes straight in.

        >>> host = InProcessHost(2, Echo)
        >>> host.send(1, ("echo", "hi")) > 0, host.recv()
        (True, (1, ('echo', 'hi', 1)))
    """

    def __init__(self, workers: int, runtime, *, options: dict | None = None):
        if isinstance(runtime, str):
            module, cls = runtime.split(":")
            runtime = getattr(importlib.import_module(module), cls)
        self.n, self.local, self.lost, self.worker_pids = workers, list(range(workers)), {}, []
        self.name = "worker {}".format
        self.mail: deque = deque()                # (source, dest, message), oldest first
        self.timers: list = []                    # heap of (due, seq, worker, message): `ctx.later` calls
        self._seq = itertools.count()
        self.runtimes = [runtime(_InProcessCtx(self, k), **(options or {})) for k in range(workers)]

    def post(self, source, dest, message, code: bool = False) -> int:
        """Put a copy of ``message`` (through pickle, as on the wire) in the FIFO; its frame size."""
        payload = b"".join(encode([message], code=code))
        self.mail.append((source, dest, decode(payload)[0]))
        return HEADER.size + len(payload)

    def send(self, wid: int, message, *, code: bool = False) -> int:
        return self.post(DRIVER, wid, message, code)

    can_replace = False          # its workers never die: nothing to replace

    def recovered(self, notice: tuple) -> bool:
        return False

    def recv(self, timeout: float | None = None):
        while self.mail or self.timers:
            if not self.mail:                     # only timers are left: wait for the first, run it
                due, _, wid, message = heapq.heappop(self.timers)
                time.sleep(max(0.0, due - time.monotonic()))
                self.mail.append((wid, wid, message))
            source, dest, message = self.mail.popleft()
            if dest == DRIVER:
                return source, message
            self.runtimes[dest].handle(source, message)
        raise ClusterError("nothing is in flight but the driver is still waiting: the runtime never answered")

    def close(self) -> None:
        self.mail.clear()
        self.timers.clear()


class _InProcessCtx:
    """A worker's ctx in the in-process form: sends go into the host's FIFO."""

    def __init__(self, host: InProcessHost, me: int):
        self.host, self.me, self.n = host, me, host.n
        self.pending: list = []

    def send(self, dest, message, *, code: bool = False) -> int:
        if dest == self.me:                       # as in a worker process: straight in, not pickled
            self.host.mail.append((self.me, self.me, message))
            return 0
        self.flush(dest)
        return self.host.post(self.me, dest, message, code)

    def queue(self, dest, message, *, code: bool = False) -> None:
        if dest == self.me:
            self.host.mail.append((self.me, self.me, message))
        else:
            self.pending.append((dest, message, code))

    def on_read(self, handler) -> None:
        """One thread reads and handles here: every message goes to ``handle``, and a hook has nothing to save."""

    def later(self, seconds: float, message) -> None:
        heapq.heappush(self.host.timers, (time.monotonic() + seconds, next(self.host._seq), self.me, message))

    def flush(self, dest=None) -> int:
        keep, sent = [], 0
        for item in self.pending:
            if dest is None or item[0] == dest:
                sent += self.host.post(self.me, *item)
            else:
                keep.append(item)
        self.pending = keep
        return sent
