"""mini-data: answers against the serial engine, and the properties of the architecture.

Answers: flows that are not workloads of the repository (filters, keyed
reductions, a join, several sinks, more workers than partitions) give what
the serial engine gives, in the in-process form and with real processes.
Properties, read from the trace and from the operating system: two workers
really are busy at once; a keyed reduction moves bytes worker to worker and
the driver gets only results; a worker that dies fails the job promptly,
naming it and its step -- or, with recovery (the default), is replaced and the
run resumes from the last snapshot, exactly; no process outlives its session
or its driver.
"""

from __future__ import annotations

import functools
import math
import operator
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from conftest import meet, process_running, wait_until
from engines import get_engine
from engines.api import Dataflow, DataflowError
from engines.mini.cluster import InProcessHost
from engines.mini.dataparallel import DataWorker, drive
from engines.mini.trace import overlap, traffic
from engines.plan import compile


# ---------------------------------------------------------------- flows a new user might write


def sensor_flow():
    """Filter bad readings, average per sensor, join with the sensor's room, and a second sink."""
    flow = Dataflow("sensors")
    readings = flow.read([[("s1", 20.5), ("s2", -999.0), ("s1", 21.5)], [("s3", 18.0), ("s2", 19.0)], [],
                          [("s9", 30.0)]])
    good = readings.filter(lambda r: r[1] > -100, name="drop_bad")
    sums = good.map(lambda r: (r[0], (r[1], 1))).reduce_by_key(lambda a, b: (a[0] + b[0], a[1] + b[1]))
    means = sums.map(lambda kv: (kv[0], kv[1][0] / kv[1][1]))
    rooms = flow.read([[("s1", "lab"), ("s2", "hall")], [("s3", "lab")]]).map(tuple)
    means.join(rooms).map(lambda kv: (kv[1][1], kv[1][0])).reduce_by_key(max).collect("warmest_per_room")
    good.map(lambda r: r[0]).collect("seen")
    return flow


def letters_flow():
    """Callable partitions, a branching stream, a self-join, and keys that are tuples."""
    flow = Dataflow("letters")
    words = flow.read([lambda: "the quick brown fox".split(), lambda: "jumps over the lazy dog".split()])
    pairs = words.flat_map(lambda w: [((w[0], len(w)), 1)] if w else [])
    pairs.reduce_by_key(operator.add).collect("first_letter_and_length")
    firsts = words.key_by(lambda w: w[0])
    firsts.join(firsts).filter(lambda kv: kv[1][0] < kv[1][1]).map(lambda kv: kv[1]).collect("same_initial")
    return flow


FLOWS = [sensor_flow, letters_flow]


def canonical(out: dict) -> dict:
    return {sink: sorted(items, key=repr) for sink, items in out.items()}


@pytest.fixture(scope="module")
def serial():
    with get_engine("serial").start() as s:
        yield s


@pytest.fixture(scope="module", params=[1, 3])
def processes(request):
    with get_engine("mini-data").start(workers=request.param) as s:
        yield s


@pytest.mark.parametrize("make", FLOWS)
@pytest.mark.parametrize("workers", [1, 2, 5])
def test_the_in_process_form_agrees_with_serial(make, workers, serial):
    out, _ = drive(compile(make()), InProcessHost(workers, DataWorker), run=1)
    assert canonical(out) == canonical(serial.dataflow(make()))


@pytest.mark.parametrize("make", FLOWS)
def test_worker_processes_agree_with_serial(make, processes, serial):
    assert canonical(processes.dataflow(make())) == canonical(serial.dataflow(make()))


def test_the_in_process_form_is_deterministic():
    runs = [drive(compile(letters_flow()), InProcessHost(3, DataWorker), run=1)[0] for _ in range(2)]
    assert runs[0] == runs[1]                        # the same items in the same order


def test_a_step_error_names_the_step_and_the_session_goes_on(processes):
    flow = Dataflow("bad")
    flow.read([[1, 2], [0]]).map(lambda x: (x, 10 // x), name="divide").reduce_by_key(operator.add).collect("out")
    with pytest.raises(DataflowError, match=r"step 'divide'.*ZeroDivisionError"):
        processes.dataflow(flow)
    assert processes.dataflow(letters_flow())["first_letter_and_length"]     # the cluster is fine


# ---------------------------------------------------------------- properties of the architecture


def met(folder: str, me: str, other: str) -> list:
    """A partition that is made only while ``other`` is being made too (a barrier between their workers)."""
    meet(folder, me, (other,))
    return [("done", 1)]


def test_two_workers_are_busy_at_the_same_time(tmp_path):
    """Each worker's read can end only once the other's has begun, so their spans overlap, however loaded the
    machine; partitions read one after the other would fail the job with the barrier's TimeoutError."""
    folder = str(tmp_path)
    flow = Dataflow("meet")
    flow.read([functools.partial(met, folder, "p0", "p1"), functools.partial(met, folder, "p1", "p0")]) \
        .reduce_by_key(operator.add).collect("out")
    with get_engine("mini-data").start(workers=2) as session:
        assert session.dataflow(flow) == {"out": [("done", 2)]}
        rows = session.trace()
    reads = [r for r in rows if r["event"] == "span" and r["what"] == "split"]   # each worker reads its partition
    assert sorted(r["worker"] for r in reads) == [0, 1]
    assert overlap(reads) > 0


def distinct_keys(part: int) -> list:
    return [(part * 100_000 + i, 1) for i in range(20_000)]


def test_a_reduce_moves_bytes_worker_to_worker_and_the_driver_gets_only_results():
    flow = Dataflow("exchange")
    per_key = flow.read([lambda p=p: distinct_keys(p) for p in range(4)]).reduce_by_key(operator.add)
    per_key.map(lambda kv: (kv[0] % 2, kv[1])).reduce_by_key(operator.add).collect("by_parity")
    with get_engine("mini-data").start(workers=2) as session:
        before = sum(c.received for c in session.host.conns.values())
        assert sorted(session.dataflow(flow)["by_parity"]) == [(0, 40_000), (1, 40_000)]
        to_driver = sum(c.received for c in session.host.conns.values()) - before
        moved = traffic(session.trace())
    assert moved[(0, 1)] > 100_000 and moved[(1, 0)] > 100_000      # ~40,000 records crossed the mesh
    assert to_driver < 20_000                                       # two results, progress and trace rows


def kill_on(x, victim):
    if x == victim:
        os.kill(os.getpid(), signal.SIGKILL)
    return (x % 2, x)


def wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    """The pids still running after ``timeout`` (zombies count as gone)."""
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if process_running(p)]
        time.sleep(0.02)
    return alive


def test_a_worker_dying_mid_job_fails_it_promptly_naming_worker_and_step():
    flow = Dataflow("crash")
    flow.read([[1, 2], [3, 4]]).map(lambda x: kill_on(x, 3), name="explode").reduce_by_key(max).collect("out")
    with get_engine("mini-data").start(workers=2, recovery=False) as session:
        pids = session.worker_pids
        started = time.monotonic()
        with pytest.raises(DataflowError, match=rf"worker 1 \(pid {pids[1]}\) was killed by SIGKILL while running "
                                                r"step '.*explode.*' of flow 'crash'"):
            session.dataflow(flow)
        assert time.monotonic() - started < 10           # promptly: no heartbeat timeout was needed
        with pytest.raises(DataflowError, match="session is broken"):
            session.dataflow(flow)
    assert wait_gone(pids) == []


def test_a_hung_worker_is_found_by_its_missing_heartbeats():
    with get_engine("mini-data").start(workers=2, heartbeat_s=0.1, heartbeat_timeout_s=1.0, recovery=False) as session:
        pids = session.worker_pids
        os.kill(pids[1], signal.SIGSTOP)                  # alive, connected, and silent
        try:
            started = time.monotonic()
            with pytest.raises(DataflowError, match=r"worker 1 \(pid \d+\) sent no heartbeat for 1 s"):
                session.dataflow(letters_flow())
            assert time.monotonic() - started < 10
        finally:
            os.kill(pids[1], signal.SIGCONT)              # before the session closes, so it can stop
    assert wait_gone(pids) == []


def test_no_process_outlives_a_closed_session_or_a_killed_worker():
    with get_engine("mini-data").start(workers=2) as session:
        pids = session.worker_pids
        assert len(set(pids)) == 2 and os.getpid() not in pids
        os.kill(pids[0], signal.SIGKILL)
        assert wait_gone(pids[:1]) == []
    assert wait_gone(pids) == []


DRIVER = """
import time
from engines import get_engine
session = get_engine("mini-data").start(workers=2)
print(*session.worker_pids, flush=True)
time.sleep(60)
"""


def test_workers_exit_when_their_driver_is_killed():
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in driver.stdout.readline().split()]
        assert len(pids) == 2 and all(psutil.pid_exists(p) for p in pids)
        driver.kill()                                  # SIGKILL: no chance to clean up
        driver.wait()
        assert wait_gone(pids) == []
    finally:
        driver.kill()
        driver.stdout.close()


# ---------------------------------------------------------------- native streams


def readings(source: int, start: float, end: float) -> list:
    """Source ``source``: a reading ``(time, sensor, value)`` every half stream second; each 7th is 3 s late."""
    return [(i / 2 - (3.0 if i % 7 == 6 else 0.0), f"s{(i + source) % 3}", (i * 37 + source) % 50 - 5)
            for i in range(math.ceil(start * 2), math.ceil(end * 2))]


def stream_flow(duration: float = 30.0, speedup: float = 300.0):
    """Drop negative readings, a raw sink before the window, the max per sensor in 5-second windows, then a map."""
    import functools
    flow = Dataflow("sensor-stream")
    events = flow.stream([functools.partial(readings, i) for i in range(3)], timestamp=lambda e: e[0],
                         duration=duration, speedup=speedup)
    good = events.filter(lambda e: e[2] >= 0, name="non_negative")
    good.map(lambda e: e[1]).collect("sensors_seen")
    good.map(lambda e: (e[1], e[2])).window(5.0, max, lateness=1.0) \
        .map(lambda kv: (kv[0], kv[1][0], kv[1][1] > 40)).collect("hot")
    return flow


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_a_native_stream_in_process_agrees_with_serial(workers, serial):
    from engines.mini.dataparallel import drive_stream
    out, _, closes = drive_stream(compile(stream_flow()), InProcessHost(workers, DataWorker), run=1, tick=0.005)
    expected = serial.dataflow(stream_flow())
    assert canonical(out) == canonical(expected)
    assert len(closes) == len(out["hot"]) == 18               # 3 sensors x 6 windows, each stamped once


def test_a_native_stream_on_processes_emits_windows_while_the_stream_runs(processes, serial):
    arrivals = []
    processes.window_latencies.clear()
    started = time.time()
    from engines.mini.dataparallel import drive_stream
    out, rows, _ = drive_stream(compile(stream_flow(duration=40.0, speedup=20.0)), processes.host,
                                run=("stream-test", 1), on_window=lambda latency: arrivals.append(time.time()))
    assert canonical(out) == canonical(serial.dataflow(stream_flow(duration=40.0, speedup=20.0)))
    assert len(arrivals) == 24
    assert min(arrivals) < started + 40.0 / 20.0               # the first windows came before the stream's end
    n = processes.workers
    partials = {(r["worker"], r["to"]) for r in rows if r["event"] == "send" and r["what"] == "win"}
    assert partials == {(i, j) for i in range(n) for j in range(n) if i != j}   # owners hear every worker
    assert {r["worker"] for r in rows if r["event"] == "send" and r["what"] == "windows"} <= set(range(n))


def test_a_step_error_in_a_stream_names_the_step_and_the_session_goes_on(processes):
    import functools
    flow = Dataflow("bad-stream")
    flow.stream([functools.partial(readings, 0)], timestamp=lambda e: e[0], duration=10.0, speedup=100.0) \
        .map(lambda e: (e[1], 1 // (e[2] % 7)), name="divide").window(5.0, operator.add).collect("out")
    with pytest.raises(DataflowError, match=r"step 'divide'.*ZeroDivisionError"):
        processes.dataflow(flow)
    assert processes.dataflow(stream_flow())["hot"]             # the cluster is fine


def test_a_worker_dying_mid_stream_without_recovery_fails_it_promptly_naming_the_worker():
    import functools
    flow = Dataflow("crash-stream")
    flow.stream([functools.partial(readings, i) for i in range(2)], timestamp=lambda e: e[0], duration=20.0,
                speedup=20.0) \
        .map(lambda e: kill_on(int(e[0] * 2), 31) if e[1] == "s1" else (0, 1), name="explode") \
        .window(5.0, operator.add).collect("out")
    with get_engine("mini-data").start(workers=2, recovery=False) as session:
        pids = session.worker_pids
        started = time.monotonic()
        with pytest.raises(DataflowError, match=r"worker \d \(pid \d+\) was killed by SIGKILL while running "
                                                r"step 'stream_1\+.*explode.*' of flow 'crash-stream'"):
            session.dataflow(flow)
        assert time.monotonic() - started < 10
    assert wait_gone(pids) == []


# ---------------------------------------------------------------- recovery (engines.mini.recovery)


def counted_read(folder: str, part: int) -> list[str]:
    """A partition that notes each time it is read (a line in ``folder/reads``)."""
    with open(os.path.join(folder, "reads"), "a") as f:
        f.write(f"{part}\n")
    return [f"w{(part * 7 + j) % 13}" for j in range(200)]


def held_until_released(folder: str, kv):
    """A step that, the first time it runs on a worker, says so (a file named after its pid) and
    waits while ``folder/hold`` exists -- so the test can kill a worker in it, then let the others go."""
    marker = os.path.join(folder, f"in-step-{os.getpid()}")
    if not os.path.exists(marker):
        Path(marker).touch()
        while os.path.exists(os.path.join(folder, "hold")):
            time.sleep(0.01)
    return (kv[0][:1], kv[1])


def two_epoch_flow(folder: str, parts: int = 6) -> Dataflow:
    flow = Dataflow("two-epochs")
    counts = flow.read([functools.partial(counted_read, folder, p) for p in range(parts)]).count_by_key(name="counts")
    counts.collect("counts_out")
    counts.map(functools.partial(held_until_released, folder), name="held") \
        .reduce_by_key(operator.add, name="by_initial").collect("by_initial_out")
    return flow


@pytest.mark.parametrize("interval, reads, sig", [(None, 12, signal.SIGKILL), (0.0, 6, signal.SIGKILL),
                                                  (0.0, 6, signal.SIGSTOP)],
                         ids=["no-snapshots", "snapshot-every-epoch", "hung-worker"])
def test_a_worker_killed_mid_run_is_replaced_and_the_run_resumes_exactly(tmp_path, serial, interval, reads, sig):
    """Killed in the second stage: with a snapshot of epoch 1 only that stage runs again (each partition
    read once); without one, the whole input is read again. A worker that hangs (SIGSTOP) is found by its
    missing heartbeats and replaced the same way. The answer is exact every time."""
    folder = str(tmp_path)
    want = canonical(serial.dataflow(two_epoch_flow(folder)))
    os.remove(os.path.join(folder, "reads"))
    for marker in Path(folder).glob("in-step-*"):
        marker.unlink()
    Path(folder, "hold").touch()
    with get_engine("mini-data").start(workers=2, snapshot_interval_s=interval, heartbeat_s=0.1,
                                       heartbeat_timeout_s=1.0) as session:
        pids = session.worker_pids
        victim = pids[1]
        result: dict = {}
        runner = threading.Thread(target=lambda: result.update(out=session.dataflow(two_epoch_flow(folder))))
        runner.start()
        meet_markers = [os.path.join(folder, f"in-step-{pid}") for pid in pids]
        wait_until(lambda: all(os.path.exists(m) for m in meet_markers), 60, "both workers in the held step")
        os.kill(victim, sig)
        wait_until(lambda: session.worker_pids[1] != victim, 60, "a replacement for worker 1")
        os.remove(os.path.join(folder, "hold"))
        runner.join(120)
        assert canonical(result["out"]) == want
        assert sorted(open(os.path.join(folder, "reads")).read().split()) == sorted([str(p) for p in range(6)] * (reads // 6))
        assert canonical(session.dataflow(two_epoch_flow(folder))) == want     # the session goes on
        new_pids = session.worker_pids
    assert new_pids[0] == pids[0] and victim not in new_pids
    assert wait_gone(pids + new_pids) == []


def test_a_step_that_kills_every_worker_it_runs_on_stops_after_the_recoveries(serial):
    flow = Dataflow("poison")
    flow.read([[1, 2], [3, 4]]).map(lambda x: kill_on(x, 3), name="explode").reduce_by_key(max).collect("out")
    with get_engine("mini-data").start(workers=2, max_recoveries=2) as session:
        pids = session.worker_pids
        with pytest.raises(DataflowError, match=r"worker 1 \(pid \d+\) was killed by SIGKILL while running "
                                                r"step '.*explode.*' of flow 'poison', after 2 replacement"):
            session.dataflow(flow)
        with pytest.raises(DataflowError, match="session is broken"):
            session.dataflow(flow)
    assert wait_gone(pids) == []


def dies_once_at(folder: str, when: float, event):
    """A step that kills its own worker at the first event at stream time ``when`` -- once: a file in
    ``folder`` says it has happened, so the replacement and the replay go past it."""
    if event[0] == when:
        try:
            fd = os.open(os.path.join(folder, "killed"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return event                 # it has happened (every source has an event at that time)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)
    return event


def test_a_worker_killed_mid_stream_is_replaced_and_the_driver_gets_every_window_once(tmp_path, serial):
    """The stream starts again from its beginning on a fresh worker (recovery, the default): the
    result equals the unfaulted one -- no window twice, no raw event twice -- and windows delivered
    before the loss were emitted before it, each latency stamped once."""
    import functools

    folder = str(tmp_path)
    killer = functools.partial(dies_once_at, folder, 15.0)
    flow = Dataflow("sensor-stream")
    events = flow.stream([functools.partial(readings, i) for i in range(3)], timestamp=lambda e: e[0],
                         duration=30.0, speedup=15.0)
    good = events.map(killer, name="dies_once").filter(lambda e: e[2] >= 0, name="non_negative")
    good.map(lambda e: e[1]).collect("sensors_seen")
    good.map(lambda e: (e[1], e[2])).window(5.0, max, lateness=1.0) \
        .map(lambda kv: (kv[0], kv[1][0], kv[1][1] > 40)).collect("hot")
    with get_engine("mini-data").start(workers=2) as session:
        pids = session.worker_pids
        session.window_latencies.clear()
        out = session.dataflow(flow)
        victim = int(Path(folder, "killed").read_text())
        assert victim in pids and victim not in session.worker_pids      # a fresh worker took its place
        latencies = list(session.window_latencies.samples)
        assert canonical(session.dataflow(stream_flow())) == canonical(serial.dataflow(stream_flow()))
        new_pids = session.worker_pids
    expected = serial.dataflow(stream_flow(duration=30.0, speedup=15.0))
    assert canonical(out) == canonical(expected)
    assert len(out["hot"]) == len(set(map(repr, out["hot"]))) == 18
    assert len(out["sensors_seen"]) == len(expected["sensors_seen"])
    assert len(latencies) == 18
    assert wait_gone(pids + new_pids) == []
