"""The floor a round trip between two processes stands on: a byte echoed over loopback TCP.

`round_trips` starts an echo server in a child process (TCP_NODELAY on
both ends, as every engine here sets it) and times ``n`` one-byte round
trips from this one. The benchmarks set a driver -> worker -> driver
round trip against it, measured in the same run.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

ECHO = r"""
import socket
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
conn, _ = server.accept()
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while data := conn.recv(64):
    conn.sendall(data)
"""


def round_trips(n: int) -> list[float]:
    """Seconds of each of ``n`` one-byte round trips to an echo process over loopback TCP."""
    server = subprocess.Popen([sys.executable, "-c", ECHO], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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
