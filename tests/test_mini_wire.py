"""The mini engine's wire and handshake: frames, caps, batching, and hostile peers.

Real sockets throughout. The property that matters most: nothing a peer
sends is unpickled before it has proved the secret -- checked with a pickle
whose unpickling would create a marker file.
"""

from __future__ import annotations

import os
import pickle
import socket
import stat

import pytest

from engines import get_engine
from engines.api import Dataflow
from engines.mini import auth
from engines.mini.wire import HEADER, MAGIC, MAX_FRAME, MSGS, PROOF, VERSION, Conn, WireError, decode, encode


def pair(trusted=True):
    a, b = socket.socketpair()
    return Conn(a, "b"), Conn(b, "a", trusted=trusted)


def frame(kind: int, payload: bytes, length: int | None = None) -> bytes:
    return HEADER.pack(MAGIC, VERSION, kind, len(payload) if length is None else length) + payload


class Marker:
    """Unpickling this creates ``path``: proof that someone unpickled it."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


# ---------------------------------------------------------------- frames


def test_a_batch_of_messages_travels_as_one_frame():
    left, right = pair()
    for i in range(100):
        left.queue(("part", i, [("k", i)]))
    written = left.flush()
    kind, payload = right.read_frame()
    assert kind == MSGS and written == left.sent == HEADER.size + len(payload)
    assert decode(payload) == [("part", i, [("k", i)]) for i in range(100)]
    assert left.flush() == 0          # nothing queued, nothing sent


def test_large_buffers_travel_out_of_band_and_code_by_value():
    import numpy                      # a core dependency: its absence is a broken install, not a skip
    array = numpy.arange(1_000_000, dtype="int64")
    parts = encode([array, lambda x: x + 1], code=True)
    assert any(memoryview(p).nbytes == array.nbytes for p in parts)   # the array's buffer, not a copy in the pickle
    got_array, fn = decode(b"".join(parts))
    assert (got_array == array).all() and fn(1) == 2


def test_frames_of_every_size_arrive_whole_and_in_order_however_the_stream_is_cut():
    import threading
    import numpy
    from engines.mini.wire import _READ_AHEAD
    sizes = [0, 1, 100, _READ_AHEAD - 200, _READ_AHEAD + 1, 5, 3 * _READ_AHEAD, 7, 40_000, 40_000]
    batches = [[numpy.full(n // 8, i, dtype="int64"), "x" * (n % 8)] for i, n in enumerate(sizes)]
    stream = b"".join(frame(MSGS, b"".join(encode(b))) for b in batches)
    for cut in (len(stream), 1_000, 7):          # all at once, then in pieces a frame's header may straddle
        left, right = pair()
        writer = threading.Thread(target=lambda: [left.sock.sendall(stream[i:i + cut])
                                                  for i in range(0, len(stream), cut)])
        writer.start()
        got = [decode(right.read_frame()[1]) for _ in batches]
        writer.join()
        for i, ((array, tail), (want, want_tail)) in enumerate(zip(got, batches)):
            # every array still holds its own values once the later frames are read: none shares the buffer
            assert tail == want_tail and (array == want).all() and (array == i).all()


def test_bytes_that_come_while_a_reader_polls_are_seen_with_no_time_left_to_sleep():
    import threading
    left, right = pair()
    assert not right.readable(0.0, spin=0.001)         # nothing comes: the poll ends, and says so
    writing = threading.Event()
    writer = threading.Thread(target=lambda: (writing.wait(), left.send(("late",))))
    writer.start()
    writing.set()                                      # the bytes leave while the reader is polling
    assert right.readable(0.0, spin=30.0)              # a timeout of 0: only the poll can have seen them
    writer.join()
    assert right.next_batch() == [("late",)]


def test_a_reader_told_to_poll_for_its_next_frame_does_so_once_and_reads_it_whole():
    import threading
    left, right = pair()
    right.poll_next = 30.0
    writer = threading.Thread(target=lambda: [left.send(("part", i, "x" * 100_000 * i)) for i in range(3)])
    writer.start()
    assert right.next_batch() == [("part", 0, "")]
    assert right.poll_next == 0.0                      # once: the next reads sleep until their bytes come
    assert [right.next_batch() for _ in range(2)] == [[("part", i, "x" * 100_000 * i)] for i in (1, 2)]
    writer.join()


class Seer:
    """A cluster runtime that tells the driver the kind of every message it is handed."""

    def __init__(self, ctx):
        self.ctx = ctx

    def handle(self, source, message):
        self.ctx.send("driver", ("saw", message[0]))


def test_the_drivers_hint_to_poll_is_taken_by_the_worker_and_never_reaches_its_runtime():
    from engines.mini.cluster import Host
    with Host(1, "test_mini_wire:Seer") as host:
        host.poll_hint(0)
        assert host.conns[0].pending == [("poll",)]    # it waits for the next frame, and goes with it
        for i in range(3):
            host.send(0, ("echo", i))
            assert host.recv(timeout=30) == (0, ("saw", "echo"))
            host.poll_hint(0)
    with Host(1, "test_mini_wire:Seer", spin=0.0) as host:
        host.poll_hint(0)                              # polling turned off: no hint
        assert host.conns[0].pending == []


def test_a_frame_above_the_cap_is_refused_before_its_payload_is_read():
    left, right = pair()
    left.sock.sendall(HEADER.pack(MAGIC, VERSION, MSGS, MAX_FRAME + 1))  # a header, and no 1 GiB behind it
    with pytest.raises(WireError, match="exceeds the cap"):
        right.read_frame()


def test_an_untrusted_peer_may_send_only_small_handshake_frames():
    left, right = pair(trusted=False)
    left.sock.sendall(frame(MSGS, b"".join(encode(["hello"]))))
    with pytest.raises(WireError, match="before authentication"):
        right.read_frame()
    left, right = pair(trusted=False)
    left.sock.sendall(frame(PROOF, b"", length=10_000))
    with pytest.raises(WireError, match="before authentication"):
        right.read_frame()
    left, right = pair(trusted=False)
    left.sock.sendall(pickle.dumps("not a frame"))
    with pytest.raises(WireError, match="not a mini-engine frame"):
        right.read_frame()


# ---------------------------------------------------------------- the handshake


def test_both_sides_must_know_the_secret():
    secret, got = auth.new_secret(), []
    with auth.Listener("127.0.0.1", 0, secret, got.append) as listener:
        conn = auth.connect(listener.address, secret)
        assert auth.wait_for(lambda: got, 5)
        conn.send(("hi", 1))
        assert next(got[0].messages()) == ("hi", 1)
        with pytest.raises(auth.AuthError):
            auth.connect(listener.address, b"not the secret")
        assert auth.wait_for(lambda: listener.dropped == 1, 5)
        conn.close()
    # an impostor listener (wrong secret) is not trusted by a connector either
    with auth.Listener("127.0.0.1", 0, b"impostor", got.append) as impostor:
        with pytest.raises(auth.AuthError):
            auth.connect(impostor.address, secret)


def test_no_secret_beyond_loopback_is_refused_with_the_reason(monkeypatch):
    monkeypatch.delenv(auth.SECRET_ENV, raising=False)
    with pytest.raises(auth.AuthError, match="refusing to listen on 10.0.0.7 without a shared secret.*ARCHBENCH_SECRET"):
        auth.cluster_secret(["127.0.0.1", "10.0.0.7"])
    monkeypatch.setenv(auth.SECRET_ENV, "shared")
    assert auth.cluster_secret(["10.0.0.7"]) == b"shared"


def test_loopback_processes_share_a_per_user_secret_only_the_user_can_read(monkeypatch, tmp_path):
    monkeypatch.delenv(auth.SECRET_ENV, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    first = auth.cluster_secret(["127.0.0.1"])
    assert first == auth.cluster_secret(["localhost"]) and len(first) >= 32
    path = tmp_path / "archbench" / "mini-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    with pytest.raises(auth.AuthError, match="readable by other users"):
        auth.cluster_secret(["127.0.0.1"])


# ---------------------------------------------------------------- hostile peers of a live cluster


def hostile(address, marker: str, how: str) -> None:
    """Connect to ``address``, send a marker pickle ``how``, and wait until the peer hangs up."""
    evil = b"".join(encode([Marker(marker)]))
    if isinstance(address, str):                 # a local cluster's Unix socket
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(10)
        sock.connect(address)
    else:
        sock = socket.create_connection(address, timeout=10)
    with sock:
        if how == "raw pickle":
            sock.sendall(pickle.dumps(Marker(marker)))
        elif how == "frame before the handshake":
            sock.sendall(frame(MSGS, evil))
        elif how == "wrong proof, then a frame":
            sock.recv(HEADER.size + auth.NONCE)                      # the challenge
            sock.sendall(frame(PROOF, os.urandom(auth.NONCE + 32)) + frame(MSGS, evil))
        while sock.recv(4096):                                       # until the peer closes
            pass


def test_a_local_driver_talks_to_its_workers_over_a_unix_socket_in_a_private_folder_removed_at_close():
    if not hasattr(socket, "AF_UNIX"):
        pytest.skip("this platform has no Unix sockets: a local cluster uses loopback TCP")
    with get_engine("mini-data").start(workers=2) as session:
        host = session.host
        folder = host.socket_dir
        assert os.path.dirname(host.listener.address) == folder
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700          # other users cannot even connect
        assert all(conn.sock.family == socket.AF_UNIX for conn in host.conns.values())
        assert all(type(addr) is tuple for addr, _pid in host.table.values())   # the mesh: TCP (bulk moves faster)
        flow = Dataflow("over-both")
        flow.read([[1, 2], [3, 4]]).map(lambda x: (x % 2, x)).reduce_by_key(max).collect("out")
        assert sorted(session.dataflow(flow)["out"]) == [(0, 4), (1, 3)]   # the records crossed the mesh
    assert not os.path.exists(folder)


def test_an_unauthenticated_peers_pickle_is_never_executed(tmp_path, caplog):
    marker = str(tmp_path / "pwned")
    with get_engine("mini-data").start(workers=2) as session:
        listeners = [session.host.listener.address] + [addr for addr, _pid in session.host.table.values()]
        for address in listeners:
            for how in ("raw pickle", "frame before the handshake", "wrong proof, then a frame"):
                hostile(address, marker, how)
        flow = Dataflow("after")
        flow.read([[1, 2], [3]]).map(lambda x: (x % 2, x)).reduce_by_key(max).collect("out")
        assert sorted(session.dataflow(flow)["out"]) == [(0, 2), (1, 3)]   # the cluster still works
    assert not os.path.exists(marker)
    assert "dropped a connection" in caplog.text                         # the driver's own listener logged it
