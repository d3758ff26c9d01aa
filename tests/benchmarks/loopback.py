"""The floor a round trip between two processes stands on: a byte echoed over loopback TCP.

`round_trips` starts an echo server in a child process (TCP_NODELAY on
both ends, as every engine here sets it) and times ``n`` one-byte round
trips from this one. The benchmarks set a driver -> worker -> driver
round trip against it, measured in the same run. ``unix=True`` echoes over
a Unix socket instead: the floor of a local mini cluster, whose processes
talk over those. ``poll=True`` has both ends poll for the byte instead of
sleeping until it comes (a mini cluster polls for a while before it sleeps,
see `engines.mini.wire.Conn.readable`): what is left of the floor once no
process has to be woken.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time

ECHO = r"""
import socket, sys
path, poll = sys.argv[1], sys.argv[2] == "poll"
if path:                                    # a Unix socket at this path
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen()
    print(0, flush=True)
else:
    server = socket.create_server(("127.0.0.1", 0))
    print(server.getsockname()[1], flush=True)
conn, _ = server.accept()
if not path:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
conn.setblocking(not poll)
while True:
    try:
        data = conn.recv(64)
    except BlockingIOError:                 # polling: nothing yet, ask again
        continue
    if not data:
        break
    conn.sendall(data)
"""


#: the floors a benchmark sets beside its round trips: name -> `round_trips` options
FLOORS = {"loopback TCP": {},                                   # a byte echoed by another process
          "loopback Unix socket": {"unix": True},               # what a local mini cluster talks over
          "loopback Unix socket, polling": {"unix": True, "poll": True}}   # neither process asleep


def _recv(conn) -> bytes:
    """The next bytes of ``conn``; on a non-blocking socket, asking until they come."""
    while True:
        try:
            return conn.recv(64)
        except BlockingIOError:
            pass


def round_trips(n: int, unix: bool = False, poll: bool = False) -> list[float]:
    """Seconds of each of ``n`` one-byte round trips to an echo process over loopback TCP (or a Unix
    socket), both ends sleeping until the byte comes (or ``poll``-ing for it)."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "echo")
        server = subprocess.Popen([sys.executable, "-c", ECHO, path if unix else "", "poll" if poll else "sleep"],
                                  stdout=subprocess.PIPE, text=True)
        try:
            port = int(server.stdout.readline())
            if unix:
                conn = socket.socket(socket.AF_UNIX)
                conn.connect(path)
            else:
                conn = socket.create_connection(("127.0.0.1", port))
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with conn:
                conn.setblocking(not poll)
                times = []
                for _ in range(n + 50):                 # the first 50 warm the connection up
                    start = time.perf_counter()
                    conn.sendall(b"x")
                    if _recv(conn) != b"x":
                        raise RuntimeError("the echo server answered something else")
                    times.append(time.perf_counter() - start)
            return times[50:]
        finally:
            server.wait(timeout=10)
