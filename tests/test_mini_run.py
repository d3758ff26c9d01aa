"""The run script, as a user runs it: a flow module in a folder, real processes, real ports.

``python -m engines.mini.run module[:getter] -w N [-i ID -a ADDRS] [--output DIR]``
must give the right totals with ``-w2`` and as two ``-i``/``-a`` processes on
loopback, ignore a hostile connection, and turn each usage mistake into one
line on stderr with a non-zero status.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from engines.mini.wire import encode

FLOW = '''
import functools
import math
import operator
from engines.api import Dataflow

def lines(part):
    return [f"w{i % 7} w{i % 3} w{part}" for i in range(part * 50, part * 50 + 50)]

def get_flow(parts=6):
    flow = Dataflow("totals")
    words = flow.read([lambda p=p: lines(p) for p in range(parts)]).flat_map(str.split)
    words.count_by_key().collect("counts")
    words.filter(lambda w: w in ("w1", "w2")).map(lambda w: (w, 1)).reduce_by_key(operator.add).collect("ones_twos")
    return flow

flow = get_flow()

def get_many(n):
    many = Dataflow("many")
    many.read([list(range(n))]).collect("items")
    return many

def arrivals(source, start, end):
    # ten events per stream second, in order: (time, key)
    return [(i / 10, f"k{(i + source) % 3}") for i in range(math.ceil(start * 10), math.ceil(end * 10))]

def get_stream():
    stream = Dataflow("windows")
    stream.stream([functools.partial(arrivals, s) for s in range(3)], timestamp=lambda e: e[0],
                  duration=20.0, speedup=40.0).map(lambda e: (e[1], 1)).window(10.0, operator.add).collect("counts")
    return stream
'''


def expected(parts: int = 6) -> dict:
    words = Counter(w for p in range(parts) for i in range(p * 50, p * 50 + 50) for w in f"w{i % 7} w{i % 3} w{p}".split())
    return {"counts": dict(words), "ones_twos": {w: words[w] for w in ("w1", "w2")}}


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "user_flow.py").write_text(FLOW)
    return tmp_path


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def run(folder: Path, *args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "ARCHBENCH_SECRET": "test-secret", **(env or {})}
    return subprocess.run([sys.executable, "-m", "engines.mini.run", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=60, **kwargs)


def start(folder: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "ARCHBENCH_SECRET": "test-secret", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "engines.mini.run", *args], cwd=folder, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def totals(out: Path) -> dict:
    """Sum every ``<sink>-<process>.jsonl`` of ``out`` per sink and key."""
    got: dict = {}
    for path in out.glob("*.jsonl"):
        sink = path.stem.rsplit("-", 1)[0]
        for line in path.read_text().splitlines():
            key, value = json.loads(line)
            got.setdefault(sink, Counter())[key] += value
    return {sink: dict(c) for sink, c in got.items()}


def test_two_workers_write_each_sink_to_a_file(folder):
    done = run(folder, "user_flow", "-w", "2", "--output", "out")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (folder / "out").iterdir()) == ["counts-0.jsonl", "ones_twos-0.jsonl"]
    assert totals(folder / "out") == expected()


def test_a_getter_call_and_stdout(folder):
    done = run(folder, "user_flow:get_flow(3)", "-w", "2")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert {r["item"][0]: r["item"][1] for r in rows if r["sink"] == "counts"} == expected(3)["counts"]


def test_a_reader_that_leaves_early_is_not_an_error(folder):
    """``... | head -1``: the rest of the output is unwanted; no traceback, status 0."""
    proc = start(folder, "user_flow:get_many(100_000)", "-w", "2")     # far more than a pipe holds
    first = proc.stdout.readline()
    proc.stdout.close()                      # as head does, after its line
    assert proc.wait(timeout=60) == 0
    assert json.loads(first)["sink"] == "items"
    assert "Traceback" not in proc.stderr.read()


def two_processes(folder: Path, env: dict | None = None, before_second=None,
                  flow: str = "user_flow") -> list[subprocess.Popen]:
    addresses = ";".join(f"127.0.0.1:{p}" for p in free_ports(2))
    procs = [start(folder, flow, "-w", "2", "-i", "0", "-a", addresses, "--output", "out", env=env)]
    if before_second is not None:
        before_second(addresses.split(";")[0])
    procs.append(start(folder, flow, "-w", "2", "-i", "1", "-a", addresses, "--output", "out", env=env))
    return procs


def finish(procs: list[subprocess.Popen]) -> list[tuple[int, str]]:
    try:
        return [(p.wait(timeout=60), p.communicate()[1]) for p in procs]
    finally:
        for p in procs:
            p.kill()


def test_two_processes_on_loopback_give_the_totals(folder):
    results = finish(two_processes(folder))
    assert [code for code, _ in results] == [0, 0], results
    assert sorted(p.name for p in (folder / "out").iterdir()) == \
        ["counts-0.jsonl", "counts-1.jsonl", "ones_twos-0.jsonl", "ones_twos-1.jsonl"]
    assert totals(folder / "out") == expected()


def test_a_stream_over_two_processes_gives_each_window_once(folder):
    results = finish(two_processes(folder, flow="user_flow:get_stream()"))
    assert [code for code, _ in results] == [0, 0], results
    windows = [tuple(json.loads(line)) for path in (folder / "out").glob("counts-*.jsonl")
               for line in path.read_text().splitlines()]
    # 3 sources x 100 events per window; source s gives key k{(i + s) % 3}: each key 100 times per window
    assert sorted(windows) == [(f"k{k}", [start, 100]) for k in range(3) for start in (0.0, 10.0)]


class Marker:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_hostile_connection_runs_nothing_and_the_cluster_finishes(folder):
    marker = str(folder / "pwned")

    def attack(address: str):
        host, port = address.rsplit(":", 1)
        for payload in (pickle.dumps(Marker(marker)), b"".join(encode([Marker(marker)]))):
            for _ in range(100):                       # until process 0 listens
                try:
                    sock = socket.create_connection((host, int(port)), timeout=10)
                    break
                except ConnectionRefusedError:
                    subprocess.run([sys.executable, "-c", "import time; time.sleep(0.05)"])
            with sock:
                sock.sendall(payload)
                while sock.recv(4096):                 # until process 0 drops us
                    pass

    # no ARCHBENCH_SECRET: loopback processes share the per-user secret (kept in a temporary folder here)
    env = {"ARCHBENCH_SECRET": "", "XDG_RUNTIME_DIR": str(folder)}
    results = finish(two_processes(folder, env=env, before_second=attack))
    assert [code for code, _ in results] == [0, 0], results
    assert "dropped a connection" in results[0][1]
    assert totals(folder / "out") == expected()
    assert not os.path.exists(marker)


@pytest.mark.parametrize("args, message", [
    (["no_such_module"], "cannot import the flow module 'no_such_module'"),
    (["user_flow:nope"], "module 'user_flow' has no 'nope'; it has: arrivals, flow, get_flow, get_many, get_stream, lines"),
    (["user_flow:get_flow(4"], "bad getter 'get_flow(4'"),
    (["user_flow:get_flow"], "is a function, not a Dataflow (did you mean to call it?"),
    (["user_flow", "-i", "0", "-a", "127.0.0.1"], "-a: '127.0.0.1' is not host:port"),
    (["user_flow", "-i", "2", "-a", "127.0.0.1:7000;127.0.0.1:7001"], "-i 2 is out of range"),
    (["user_flow", "-w", "x"], "invalid int value: 'x'"),
])
def test_mistakes_give_one_clear_line(folder, args, message):
    done = run(folder, *args)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and message in done.stderr, done.stderr


def test_a_port_in_use_gives_one_clear_line(folder):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        done = run(folder, "user_flow", "-i", "0", "-a", f"127.0.0.1:{port}")
    assert done.returncode == 2
    assert done.stderr.strip().endswith(f"cannot listen on 127.0.0.1:{port} (process 0 in -a): address already in use")
    assert len(done.stderr.splitlines()) == 1


def test_a_failing_step_exits_non_zero_naming_it(folder):
    (folder / "bad_flow.py").write_text(
        "from engines.api import Dataflow\n"
        "flow = Dataflow('bad')\n"
        "flow.read([[1, 0]]).map(lambda x: 1 / x, name='invert').collect('out')\n")
    done = run(folder, "bad_flow", "-w", "2")
    assert done.returncode == 1
    assert "step 'invert'" in done.stderr and "ZeroDivisionError" in done.stderr
