"""mini-data against serial and Bytewax, and its exchange against the pickle and loopback ceilings.

Two workloads, both made on the workers from a seed: ``wordcount`` and the
keyed reduce ``groupby`` (sum, count and mean per key). Each runs on
``serial``, ``mini-data`` with 1 and 2 workers, and Bytewax 0.21 with 1
worker, 2 worker threads and 2 processes -- through the registry's
``bytewax`` adapter when there is one (two processes), and as the
equivalent Bytewax flow written here in two named forms: ``generic`` (the plain translation, one stateful update
per record) and ``combined`` (each batch folded in a dict first, the
hand-tuned form -- what mini-data does for every flow).

The exchange benchmark moves records with distinct keys (nothing to
combine) worker to worker and reports MB/s from the trace -- one
direction, from the moment the last worker ends its split (the other is
idle, waiting) until the receiver starts merging: pickling, sending,
receiving and unpickling, pipelined by chunks -- beside pickle dumps/loads
MB/s of the same records and raw loopback TCP MB/s, measured in the same run. A table of medians and ratios is printed at the
end. No time is asserted; every answer is checked (outside the timing)::

    ARCHBENCH_BENCH_SIZE=medium python -m pytest tests/benchmarks/test_bench_mini_data.py --benchmark-enable
"""

from __future__ import annotations

import functools
import json
import operator
import pickle
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import require_engine
from engines import get_engine
from engines.adapters.bytewax_run import list_sink
from engines.api import Dataflow
from engines.mini.trace import traffic
from workloads import get_workload

pytestmark = pytest.mark.timeout(1800)     # medium sizes on a shared machine: slow peers, several rounds

SEED = 1
ROUNDS = {"tiny": 1, "small": 3, "medium": 3, "large": 1}
EXCHANGE_ITEMS = {"tiny": 5_000, "small": 50_000, "medium": 250_000, "large": 1_000_000}   # per partition, 4 partitions
TIMES: dict[tuple[str, str], list[float]] = {}
EXTRA: dict[str, float] = {}


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def sessions():
    """Sessions started on first use, all closed at the end of the module."""
    started: dict = {}

    def get(name: str, workers: int):
        if (name, workers) not in started:
            started[name, workers] = get_engine(name).start(workers=workers)
        return started[name, workers]

    yield get
    for session in started.values():
        session.close()


@functools.lru_cache(maxsize=None)
def case(workload: str, size: str):
    wl = get_workload(workload)
    inputs = wl.generate(seed=SEED, **wl.sizes[size])
    return wl, inputs, wl.reference(inputs)


def measure(benchmark, key: tuple[str, str], target, size: str, setup=None, warmup: bool = True):
    """Time ``target`` with pytest-benchmark (a few rounds) and keep the wall times for the summary.

    A warm-up round (not counted) lets a session's workers import the workload first.
    """
    def timed(*args):
        start = time.perf_counter()
        result = target(*args)
        TIMES.setdefault(key, []).append(time.perf_counter() - start)
        return result
    warmups = int(warmup and setup is None and size != "large")
    if setup is None:
        result = benchmark.pedantic(timed, rounds=ROUNDS[size], warmup_rounds=warmups, iterations=1)
    else:
        result = benchmark.pedantic(timed, setup=setup, rounds=ROUNDS[size], iterations=1)
    del TIMES[key][:warmups if len(TIMES[key]) > warmups else 0]     # the warm-up rounds are not counted
    return result


@pytest.fixture(scope="module", autouse=True)
def summary(request, bench_size):
    yield
    if TIMES:
        with request.config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
            report(request.config.pluginmanager.get_plugin("terminalreporter").write_line, bench_size)


def report(write, bench_size: str) -> None:
    """Print the times and the ratios the issue asks for, from the minima and from the medians."""
    write(f"\nmini-data benchmarks at size {bench_size!r}: seconds, min / median of the rounds")
    for workload in ("wordcount", "groupby"):
        rows = {engine: ts for (w, engine), ts in TIMES.items() if w == workload}
        if not rows:
            continue
        write(f"  {workload}: " + ", ".join(f"{e} {min(ts):.2f}/{statistics.median(ts):.2f}" for e, ts in rows.items()))
        for name, stat in (("min", min), ("median", statistics.median)):
            t = {e: stat(ts) for e, ts in rows.items()}
            line = []
            if "serial" in t and "mini-data x2" in t:
                line.append(f"efficiency serial/(2 x mini-data x2) {t['serial'] / (2 * t['mini-data x2']):.2f}")
            if "serial" in t and "mini-data x1" in t:
                line.append(f"mini-data x1/serial {t['mini-data x1'] / t['serial']:.2f}")
            bytewax = {e: v for e, v in t.items() if e.startswith("bytewax") and not e.endswith("x1")}
            if "mini-data x2" in t and bytewax:
                best = min(bytewax, key=bytewax.get)
                line.append(f"best Bytewax at 2 workers ({best}) / mini-data x2 {bytewax[best] / t['mini-data x2']:.2f}")
            write(f"    from the {name}s: " + "; ".join(line))
    if EXTRA:
        write("  exchange and ceilings (MB/s): " + ", ".join(f"{k} {v:,.0f}" for k, v in EXTRA.items()))


# ---------------------------------------------------------------- mini-data and serial


ENGINES = [("serial", 1), ("mini-data", 1), ("mini-data", 2)]


@pytest.mark.parametrize("workload", ["wordcount", "groupby"])
@pytest.mark.parametrize("engine, workers", ENGINES, ids=[f"{e}-x{w}" for e, w in ENGINES])
def test_engine(benchmark, sessions, bench_size, workload, engine, workers):
    wl, inputs, want = case(workload, bench_size)
    session = sessions(engine, workers)
    name = "serial" if engine == "serial" else f"{engine} x{workers}"
    got = measure(benchmark, (workload, name), functools.partial(wl.run, session, inputs), bench_size)
    wl.check(got, want)


# ---------------------------------------------------------------- Bytewax


def _bytewax_flow(workload: str, form: str, inputs, out: list, gate=None):
    """The Bytewax 0.21 flow equivalent to ``workload``; its items are appended to ``out``.

    ``gate()``, if given, holds the sources back (polled, never blocking) until it says go.
    """
    from collections import Counter

    import bytewax.operators as op
    from bytewax.dataflow import Dataflow as BytewaxFlow
    from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

    from workloads import groupby, wordcount

    class Part(StatefulSourcePartition):          # one partition, made on the worker, one batch
        def __init__(self, make, recipe):
            self.make, self.recipe, self.done = make, recipe, False

        def next_batch(self):
            if gate is not None and not gate():
                return []
            if self.done:
                raise StopIteration()
            self.done = True
            return self.make(*self.recipe)

        def snapshot(self):
            return None

    class Recipes(FixedPartitionedSource):
        def __init__(self, make):
            self.make = make

        def list_parts(self):
            return [str(i) for i in range(len(inputs))]

        def build_part(self, step_id, for_part, resume_state):
            return Part(self.make, inputs[int(for_part)])

    flow = BytewaxFlow(workload)
    if workload == "wordcount":
        lines = op.input("lines", flow, Recipes(wordcount.make_lines))
        if form == "generic":
            words = op.flat_map_batch("split", lines, lambda batch: [w for line in batch for w in line.split()])
            result = op.count_final("count", words, lambda w: w)
        else:
            counted = op.flat_map_batch("count_batch", lines,
                                        lambda batch: Counter(w for line in batch for w in line.split()).items())
            result = op.reduce_final("sum", counted, operator.add)
    else:
        rows = op.input("rows", flow, Recipes(groupby.make_rows))
        if form == "generic":
            partials = op.map("partial", rows, groupby.to_partial)
        else:
            def fold(batch):
                acc: dict = {}
                for key, value in map(groupby.to_partial, batch):
                    old = acc.get(key)
                    acc[key] = value if old is None else groupby.add_partials(old, value)
                return acc.items()
            partials = op.flat_map_batch("fold_batch", rows, fold)
        result = op.map("finish", op.reduce_final("sum", partials, groupby.add_partials), groupby.finish)
    op.output("out", result, list_sink(out))
    return flow


def _bytewax_in_process(workload: str, form: str, inputs, workers: int) -> dict:
    from bytewax.testing import cluster_main, run_main
    out: list = []
    flow = _bytewax_flow(workload, form, inputs, out)
    run_main(flow) if workers == 1 else cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return {"counts" if workload == "wordcount" else "stats": out}


_PROCESS = """
import json, pickle, sys, threading, time
sys.path[:0] = [{here!r}, {tests!r}]      # this module, and the conftest beside the tests it imports
from bytewax.testing import cluster_main
from test_bench_mini_data import _bytewax_flow, case
go, ready = [], []

def gate():                       # polled by the sources once the cluster is connected
    if not ready:
        ready.append(print("ready", flush=True))
    return bool(go)

def wait_for_go():
    sys.stdin.readline()
    go.append(time.perf_counter())

threading.Thread(target=wait_for_go, daemon=True).start()
wl, inputs, _ = case({workload!r}, {size!r})
out = []
cluster_main(_bytewax_flow({workload!r}, {form!r}, inputs, out, gate), {addresses!r}, int(sys.argv[1]),
             worker_count_per_proc=1)
seconds = time.perf_counter() - go[0]
pickle.dump(out, open(sys.argv[2], "wb"))
print("seconds", json.dumps(seconds), flush=True)
"""


def _bytewax_processes(workload: str, form: str, size: str, tmp: Path):
    """Two Bytewax processes, started and connected outside the timing (their sources wait for a
    go); ``(setup, go, procs)`` for pedantic."""
    ports = []
    for _ in range(2):
        with socket.create_server(("127.0.0.1", 0)) as s:
            ports.append(s.getsockname()[1])
    here = Path(__file__).parent
    code = _PROCESS.format(here=str(here), tests=str(here.parent), workload=workload, size=size, form=form,
                           addresses=[f"127.0.0.1:{p}" for p in ports])
    procs: list = []

    def setup():
        procs[:] = [subprocess.Popen([sys.executable, "-c", code, str(i), str(tmp / f"out-{i}.pickle")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for i in range(2)]
        for p in procs:
            _line(p, "ready")
        return (), {}

    def go():
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        seconds = [json.loads(_line(p, "seconds").split()[1]) for p in procs]
        for p in procs:
            p.wait(timeout=60)
        return seconds

    return setup, go, procs


def _line(proc, word: str) -> str:
    """The next line of ``proc`` that starts with ``word`` (Bytewax prints its retries on stdout too)."""
    for line in proc.stdout:
        if line.startswith(word):
            return line
    raise RuntimeError(f"a Bytewax process ended (status {proc.wait()}) before printing {word!r}")


BYTEWAX = [("generic", "x1"), ("generic", "x2 threads"), ("generic", "x2 processes"),
           ("combined", "x1"), ("combined", "x2 threads"), ("combined", "x2 processes")]


@pytest.mark.parametrize("workload", ["wordcount", "groupby"])
@pytest.mark.parametrize("form, how", BYTEWAX, ids=[f"{f}-{h.replace(' ', '-')}" for f, h in BYTEWAX])
def test_bytewax(benchmark, bench_size, workload, form, how, tmp_path):
    require_engine("bytewax")
    wl, inputs, want = case(workload, bench_size)
    key = (workload, f"bytewax-{form} {how}")
    if how == "x2 processes":
        if benchmark.disabled:
            pytest.skip("two Bytewax processes take seconds to connect: measured only with --benchmark-enable")
        setup, go, procs = _bytewax_processes(workload, form, bench_size, tmp_path)
        try:
            measure(benchmark, key, go, bench_size, setup=setup)
        finally:
            for p in procs:
                p.kill()
        got = [item for i in range(2) for item in pickle.loads((tmp_path / f"out-{i}.pickle").read_bytes())]
        wl.check({"counts" if workload == "wordcount" else "stats": got}, want)
        return
    workers = 1 if how == "x1" else 2
    got = measure(benchmark, key, functools.partial(_bytewax_in_process, workload, form, inputs, workers), bench_size,
                  warmup=False)
    wl.check(got, want)


@pytest.mark.parametrize("workload", ["wordcount", "groupby"])
def test_bytewax_adapter(benchmark, sessions, bench_size, workload):
    """The registry's Bytewax adapter, when it exists: the same workload code as every engine."""
    require_engine("bytewax")
    wl, inputs, want = case(workload, bench_size)
    got = measure(benchmark, (workload, "bytewax adapter x2"),
                  functools.partial(wl.run, sessions("bytewax", 2), inputs), bench_size)
    wl.check(got, want)


# ---------------------------------------------------------------- exchange and its ceilings


def unique_records(part: int, n: int) -> list:
    """``n`` records with distinct keys and a 64-character payload: nothing to combine."""
    return [(part * 10_000_000 + i, f"{i:064d}") for i in range(n)]


def test_exchange_mb_per_s(benchmark, sessions, bench_size):
    n = EXCHANGE_ITEMS[bench_size]
    flow = Dataflow("exchange")
    moved = flow.read([functools.partial(unique_records, p, n) for p in range(4)]).reduce_by_key(lambda a, b: a)
    moved.map(lambda kv: (kv[0] % 2, 1)).reduce_by_key(operator.add).collect("n")
    session = sessions("mini-data", 2)
    rates = []

    def run():
        out = session.dataflow(flow)
        rows, step = session.trace(), "reduce_by_key_2"
        spans = [r for r in rows if r["event"] == "span" and r["step"].endswith(step)]
        split_end = {r["worker"]: r["end"] for r in spans if r["what"] == "split"}
        merge_start = {r["worker"]: r["start"] for r in spans if r["what"] == "merge"}
        last = max(split_end, key=split_end.get)           # when it finishes, the other worker is idle, waiting
        other = 1 - last
        sent = traffic([r for r in rows if r["event"] == "send" and r["step"] == step])[(last, other)]
        # pickle, send, receive and unpickle of one direction, with no computing in between
        rates.append(sent / max(merge_start[other] - split_end[last], 1e-9) / 1e6)
        return out

    got = measure(benchmark, ("exchange", "mini-data x2"), run, bench_size)
    assert sorted(got["n"]) == [(0, 2 * n), (1, 2 * n)]
    EXTRA["worker-to-worker exchange"] = statistics.median(rates)
    benchmark.extra_info["exchange_MB_per_s"] = EXTRA["worker-to-worker exchange"]


def test_pickle_mb_per_s(benchmark, bench_size):
    bucket = unique_records(0, EXCHANGE_ITEMS[bench_size])
    data = pickle.dumps(bucket, protocol=5)
    loads = []

    def dumps():
        return pickle.dumps(bucket, protocol=5)

    measure(benchmark, ("ceiling", "pickle dumps"), dumps, bench_size)
    for _ in range(3):
        start = time.perf_counter()
        pickle.loads(data)
        loads.append(time.perf_counter() - start)
    EXTRA["pickle dumps"] = len(data) / statistics.median(TIMES["ceiling", "pickle dumps"]) / 1e6
    EXTRA["pickle loads"] = len(data) / statistics.median(loads) / 1e6
    benchmark.extra_info.update(dumps_MB_per_s=EXTRA["pickle dumps"], loads_MB_per_s=EXTRA["pickle loads"])


def test_loopback_tcp_mb_per_s(benchmark, bench_size):
    total = {"tiny": 16, "small": 128, "medium": 512, "large": 1024}[bench_size] << 20
    chunk = bytes(1 << 20)

    def transfer():
        with socket.create_server(("127.0.0.1", 0)) as server:
            sender = threading.Thread(target=_send_all, args=(server.getsockname(), chunk, total))
            sender.start()
            conn, _ = server.accept()
            buf, got = bytearray(1 << 20), 0
            with conn:
                while got < total:
                    got += conn.recv_into(buf)
            sender.join()
        return got

    assert measure(benchmark, ("ceiling", "loopback"), transfer, bench_size) == total
    EXTRA["loopback TCP"] = total / statistics.median(TIMES["ceiling", "loopback"]) / 1e6
    benchmark.extra_info["loopback_MB_per_s"] = EXTRA["loopback TCP"]


def _send_all(address, chunk: bytes, total: int) -> None:
    with socket.create_connection(address) as sock:
        for _ in range(total // len(chunk)):
            sock.sendall(chunk)
