"""The floor a round trip between two processes stands on: a byte echoed over loopback TCP.

`round_trips` starts an echo server in a child process (TCP_NODELAY on
both ends, as every engine here sets it) and times ``n`` one-byte round
trips from this one. The benchmarks set a driver -> worker -> driver
round trip against it, measured in the same run. ``unix=True`` echoes over
a Unix socket instead: the floor of a local mini cluster, whose processes
talk over those.
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
if len(sys.argv) > 1:                       # a Unix socket at this path
    server = socket.socket(socket.AF_UNIX)
    server.bind(sys.argv[1])
    server.listen()
    print(0, flush=True)
else:
    server = socket.create_server(("127.0.0.1", 0))
    print(server.getsockname()[1], flush=True)
conn, _ = server.accept()
if len(sys.argv) == 1:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while data := conn.recv(64):
    conn.sendall(data)
"""


def round_trips(n: int, unix: bool = False) -> list[float]:
    """Seconds of each of ``n`` one-byte round trips to an echo process over loopback TCP (or a Unix socket)."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "echo")
        server = subprocess.Popen([sys.executable, "-c", ECHO, *([path] if unix else [])],
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
                times = []
                for _ in range(n + 50):                 # the first 50 warm the connection up
                    start = time.perf_counter()
                    conn.sendall(b"x")
                    if conn.recv(64) != b"x":
                        raise RuntimeError("the echo server answered something else")
                    times.append(time.perf_counter() - start)
            return times[50:]
        finally:
            server.wait(timeout=10)
