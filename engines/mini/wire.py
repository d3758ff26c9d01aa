"""The wire: how messages travel between the processes of a mini cluster.

Everything the minimal engine sends -- a flow to run, a bucket of records
for another worker, a heartbeat -- crosses a connection as **frames**: TCP,
or a Unix socket between a local driver and its workers.
A frame is a fixed 8-byte header and a payload::

    header = magic b"mb" | version (1 byte) | kind (1 byte) | payload length (4 bytes, big-endian)

The header is decoded with `struct`, never with pickle, so a process can
look at what a peer sends *before it trusts the peer*: a wrong magic, an
unknown kind or a length above the cap drops the connection before its
payload is allocated, let alone unpickled.

Kinds of frame:

- ``CHALLENGE``, ``PROOF``, ``WELCOME`` -- the handshake (`engines.mini.auth`):
  raw nonces and HMACs, at most `HANDSHAKE_CAP` bytes, never unpickled.
- ``MSGS`` -- a **batch** of messages, pickled together. Only an
  authenticated connection reads these.
- ``PING`` -- a heartbeat, empty. ``BYE`` -- an orderly goodbye, empty: the
  peer is leaving on purpose, so the end of the stream is not a crash.

A ``MSGS`` payload is pickle protocol 5 with out-of-band buffers (large
binary buffers such as numpy arrays travel beside the pickle, uncopied)::

    payload = count (4 bytes) | count x buffer length (8 bytes each) | pickle | buffer 0 | buffer 1 ...

Data (buckets of records) is pickled with the standard C pickler -- fast,
one pickle per batch, never one per record. Messages that carry code (a
flow's functions, a task) are pickled with cloudpickle, which sends lambdas
and functions of a notebook or a user's file by value. Data that the
standard pickler refuses falls back to cloudpickle too.

**Batching**: `Conn.queue` holds messages; `Conn.flush` sends everything
queued as one frame (one pickle, one system call). `Conn.send` is queue and
flush. A runtime queues small messages and flushes before it waits for an
answer -- the rule that keeps batching from ever deadlocking.

State of a `Conn` (one per connection, either end):
``sock``; ``peer`` (who is at the other end, for messages and logs);
``pending: list`` of queued messages and ``pending_code: bool`` (does one
carry code); ``_buf``, the bytes read ahead, of which ``[_at, _end)`` are
not taken yet; ``last_seen: float`` (``time.monotonic()`` of the last frame
read, for heartbeats); ``poll_next: float`` (s to poll before sleeping for
the next frame, once: see `readable`); ``sent: int`` and ``received: int`` bytes.

Worked example -- a batch of two messages over a socket pair::

    >>> import socket
    >>> a, b = socket.socketpair()
    >>> left, right = Conn(a, "right"), Conn(b, "left")
    >>> left.queue(("part", 1, [("a", 2)])); left.queue(("end", 1))
    >>> left.flush() == left.sent      # one frame carried both
    True
    >>> kind, payload = right.read_frame(); kind == MSGS
    True
    >>> decode(payload)
    [('part', 1, [('a', 2)]), ('end', 1)]
    >>> left.close(); right.close()
"""

from __future__ import annotations

import os
import pickle
import select
import socket
import struct
import threading
import time

import cloudpickle

MAGIC = b"mb"
VERSION = 1
HEADER = struct.Struct("!2sBBI")   # magic, version, kind, payload length

CHALLENGE, PROOF, WELCOME, MSGS, PING, BYE = 1, 2, 3, 4, 5, 6
KINDS = {CHALLENGE: "challenge", PROOF: "proof", WELCOME: "welcome", MSGS: "msgs", PING: "ping", BYE: "bye"}

HANDSHAKE_CAP = 256                 # bytes a not-yet-trusted peer may send in one frame
MAX_FRAME = min(int(os.environ.get("ARCHBENCH_MAX_FRAME", 1 << 30)), (1 << 32) - 1)   # 1 GiB by default
_SMALL = 1 << 16                    # below this, a frame is joined into one write
_READ_AHEAD = 1 << 16               # bytes a reader takes from the socket at once (small frames: one call)


_yield = getattr(os, "sched_yield", lambda: None)


class WireError(ConnectionError):
    """The peer broke the protocol (bad magic, unknown kind, frame too big)."""


class PeerClosed(ConnectionError):
    """The stream ended. ``clean`` is True when the peer said BYE first."""

    def __init__(self, message: str, clean: bool = False):
        super().__init__(message)
        self.clean = clean


# ---------------------------------------------------------------- pickling


def encode(messages: list, *, code: bool = False) -> list:
    """A ``MSGS`` payload for ``messages``, as a list of buffers to write in order.

    ``code=True`` pickles with cloudpickle (functions by value where needed);
    otherwise the C pickler, falling back to cloudpickle for what it refuses.

    >>> decode(b"".join(encode([1, "two", (3,)])))
    [1, 'two', (3,)]
    """
    buffers: list = []
    if code:
        body = cloudpickle.dumps(messages, protocol=5, buffer_callback=buffers.append)
    else:
        try:
            body = pickle.dumps(messages, protocol=5, buffer_callback=buffers.append)
        except Exception:  # a lambda or a class of __main__ among the data
            buffers = []
            body = cloudpickle.dumps(messages, protocol=5, buffer_callback=buffers.append)
    raws = [b.raw() for b in buffers]
    prefix = struct.pack(f"!I{len(raws)}Q", len(raws), *(r.nbytes for r in raws))
    return [prefix, body, *raws]


def decode(payload) -> list:
    """The messages of a ``MSGS`` payload. Call it only on an authenticated connection."""
    view = memoryview(payload)
    (count,) = struct.unpack_from("!I", view, 0)
    sizes = struct.unpack_from(f"!{count}Q", view, 4)
    start = 4 + 8 * count
    end = len(view) - sum(sizes)
    buffers, at = [], end
    for size in sizes:
        buffers.append(view[at:at + size])
        at += size
    return pickle.loads(view[start:end], buffers=buffers)


def check_size(nbytes: int, cap: int = MAX_FRAME) -> None:
    """Refuse a frame above the cap (before allocating anything for it)."""
    if nbytes > cap:
        raise WireError(f"a frame of {nbytes:,} bytes exceeds the cap of {cap:,} bytes; "
                        "send smaller batches or raise ARCHBENCH_MAX_FRAME")


# ---------------------------------------------------------------- connections


class Conn:
    """One end of a framed connection. Sending is thread-safe; reading is for one thread.

    ``trusted`` turns True when the handshake succeeds; until then only
    handshake frames up to `HANDSHAKE_CAP` bytes are accepted.
    """

    def __init__(self, sock: socket.socket, peer="?", *, trusted: bool = True):
        self.sock = sock
        self.peer = peer
        self.trusted = trusted
        self.pending: list = []
        self.pending_code = False
        self.last_seen = time.monotonic()
        self.sent = 0
        self.received = 0
        self._lock = threading.Lock()
        self._buf = memoryview(bytearray(_READ_AHEAD))     # read ahead: [_at, _end) is not taken yet
        self._at = self._end = 0
        self._poll = None                                  # made on the first `readable`
        self.poll_next = 0.0                               # s to poll before sleeping for the next frame, once
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def __repr__(self):
        return f"<Conn to {self.peer}>"

    # writing
    def send_frame(self, kind: int, parts=(b"",)) -> int:
        """Write one frame (header + ``parts``); the number of bytes written."""
        length = sum(memoryview(p).nbytes for p in parts)
        check_size(length)
        header = HEADER.pack(MAGIC, VERSION, kind, length)
        with self._lock:
            if length < _SMALL:
                self.sock.sendall(b"".join([header, *parts]))
            else:
                self.sock.sendall(header)
                for part in parts:
                    self.sock.sendall(part)
            self.sent += HEADER.size + length
        return HEADER.size + length

    def queue(self, message, *, code: bool = False) -> None:
        """Hold ``message`` for the next `flush` (it goes in the same frame as the others)."""
        with self._lock:
            self.pending.append(message)
            self.pending_code = self.pending_code or code

    def flush(self) -> int:
        """Send every queued message as one frame; bytes written (0 if nothing was queued)."""
        with self._lock:
            messages, code = self.pending, self.pending_code
            self.pending, self.pending_code = [], False
        if not messages:
            return 0
        return self.send_frame(MSGS, encode(messages, code=code))

    def send(self, message, *, code: bool = False) -> int:
        """Queue ``message`` and flush: it leaves now, with anything queued before it."""
        self.queue(message, code=code)
        return self.flush()

    # reading
    def read_frame(self) -> tuple[int, memoryview]:
        """The next frame's ``(kind, payload)``. Checks the header before taking the payload.

        Raises `PeerClosed` at the end of the stream and `WireError` when the
        header is wrong; an untrusted peer may send handshake frames only.
        Bytes are read ahead into a buffer of `_READ_AHEAD` bytes, so a small
        frame costs one system call, not two (its header, then its payload).
        """
        header = self._ahead(HEADER.size)
        magic, version, kind, length = HEADER.unpack(header)
        if magic != MAGIC or version != VERSION:
            raise WireError(f"not a mini-engine frame (header {bytes(header[:4])!r})")
        if kind not in KINDS:
            raise WireError(f"unknown frame kind {kind}")
        if not self.trusted and (kind not in (CHALLENGE, PROOF, WELCOME) or length > HANDSHAKE_CAP):
            raise WireError(f"a {KINDS[kind]} frame of {length} bytes before authentication")
        check_size(length)
        if length <= _READ_AHEAD:
            payload = bytearray(self._ahead(length))         # a copy: the buffer is reused
        else:                                                # a big frame: read it in place
            payload = bytearray(length)
            have = self._end - self._at
            payload[:have] = self._buf[self._at:self._end]
            self._at = self._end = 0
            self._read_into(memoryview(payload)[have:])
        self.last_seen = time.monotonic()
        self.received += HEADER.size + length
        return kind, memoryview(payload)

    def _ahead(self, n: int) -> memoryview:
        """The next ``n`` bytes of the stream (``n <= _READ_AHEAD``), reading ahead as much as has come."""
        if self._end - self._at < n:
            if self._at + n > _READ_AHEAD:                   # move what is left to the front
                left = self._end - self._at
                self._buf[:left] = self._buf[self._at:self._end]
                self._at, self._end = 0, left
            if self.poll_next and self._end == self._at:     # asked to expect the next frame soon
                spin, self.poll_next = self.poll_next, 0.0
                self.readable(0.0, spin)
            while self._end - self._at < n:
                got = self.sock.recv_into(self._buf[self._end:])
                if got == 0:
                    raise PeerClosed(f"{self.peer} closed the connection")
                self._end += got
        start = self._at
        self._at += n
        return self._buf[start:self._at]

    def _read_into(self, view: memoryview) -> None:
        got = 0
        while got < len(view):
            n = self.sock.recv_into(view[got:])
            if n == 0:
                raise PeerClosed(f"{self.peer} closed the connection")
            got += n

    def messages(self, on_error=None):
        """Yield every message the peer sends, until it says BYE (then return).

        Heartbeats only refresh ``last_seen``. Raises `PeerClosed` if the
        stream ends without a BYE (the peer died) and `WireError` on garbage.
        A batch that cannot be unpickled (a class or module this process
        lacks) goes to ``on_error(exception)`` and reading goes on -- frames
        stay aligned; without ``on_error`` it raises.
        """
        while (batch := self.next_batch(on_error)) is not None:
            yield from batch

    def next_batch(self, on_error=None) -> list | None:
        """The messages of the next frame (none for a heartbeat), or None when the peer says BYE;
        errors as in `messages`."""
        kind, payload = self.read_frame()
        if kind == MSGS:
            try:
                return decode(payload)
            except Exception as e:
                if on_error is None:
                    raise
                on_error(e)
                return []
        if kind == BYE:
            return None
        if kind != PING:
            raise WireError(f"unexpected {KINDS[kind]} frame from {self.peer}")
        return []

    def readable(self, timeout: float = 0.0, spin: float = 0.0) -> bool:
        """Are bytes waiting to be read -- read ahead already, or arriving within ``timeout`` s?

        With ``spin``, poll without sleeping for up to ``spin`` s first. A
        process asleep in ``poll`` takes tens of microseconds to wake when
        the bytes come (more on a VM whose CPU has gone idle): most of a small
        round trip. A reader that expects an answer within microseconds, and
        has a core to spare, asks again and again instead, letting any thread
        with work run first between two asks; it sleeps once ``spin`` s have
        passed, so a slow answer costs no more CPU than that.
        """
        if self._end > self._at:
            return True
        if self._poll is None:
            self._poll = select.poll()
            self._poll.register(self.sock, select.POLLIN)
        if spin:
            until = time.perf_counter() + spin
            while time.perf_counter() < until:
                if self._poll.poll(0):
                    return True
                _yield()                                     # a thread with work to do goes first
        return bool(self._poll.poll(timeout * 1000))

    def close(self, *, bye: bool = False) -> None:
        """Close the socket; with ``bye``, first tell the peer this is on purpose. Safe twice."""
        if bye:
            try:
                self.flush()
                self.send_frame(BYE)
            except OSError:
                pass
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
