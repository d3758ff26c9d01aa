"""A worker process killed mid-run, on every engine that has one: what each engine does.

Each test starts a small run whose work waits (while a "hold" file exists)
until the test has killed the **last** of the session's `fault_targets`,
as ``archbench run --fault kill-worker`` does; then it lets the work go on
and checks the outcome: the right answer (Dask and Ray recompute from
lineage, Spark's executors on ``local-cluster``), or an error that names the
lost process (the pool breaks, ``local[N]`` Spark gives a task one attempt,
Bytewax runs without its recovery store, a Ray actor is not restarted) --
never a hang: every wait is bounded, and the session goes on afterwards.
Serial has no process to kill and says why.
"""

from __future__ import annotations

import functools
import operator
import os
import re
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from conftest import process_running, require_engine, running, wait_until
from engines import get_engine
from engines.api import ActorError, Dataflow, DataflowError

RUN_BOUND = 60.0   # seconds a faulted run may take, kill to end, before the test calls it hung


def held(folder: str, x):
    """A step that, the first time it runs in a process, says so (a file named after its pid) and
    waits while ``folder/hold`` exists: the test kills a process in it, then lets the others go."""
    marker = Path(folder, f"in-{os.getpid()}")
    if not marker.exists():
        marker.touch()
        while Path(folder, "hold").exists():
            time.sleep(0.01)
    return x


def held_flow(folder: str) -> Dataflow:
    flow = Dataflow("held")
    flow.read([[(k % 5, k) for k in range(p, 40, 4)] for p in range(4)]) \
        .map(functools.partial(held, folder), name="held").reduce_by_key(operator.add).collect("sums")
    return flow


WANT = sorted({k: sum(v for v in range(40) if v % 5 == k) for k in range(5)}.items())


def faulted(session, start, folder, busy: int = 2):
    """Run ``start()`` (it returns the answer) in a thread, kill the session's last fault target once
    ``busy`` processes are inside `held`, let them go; ``(answer or error, seconds, (pid, what))``."""
    for marker in Path(folder).glob("in-*"):
        marker.unlink()
    Path(folder, "hold").touch()
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = start()
        except Exception as e:
            outcome["error"] = e

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    wait_until(lambda: len(list(Path(folder).glob("in-*"))) >= busy, 60, f"{busy} processes in the held step")
    pid, what = session.fault_targets()[-1]
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    Path(folder, "hold").unlink()
    runner.join(RUN_BOUND)
    assert not runner.is_alive(), f"the run hung: still going {RUN_BOUND} s after {what} (pid {pid}) was killed"
    assert wait_gone([pid], 10) == set(), f"{what} (pid {pid}) still runs after SIGKILL"
    return outcome.get("value", outcome.get("error")), time.monotonic() - killed, (pid, what)


def descendants() -> set[int]:
    """The processes under this one, but multiprocessing's resource tracker (one per process, not an engine's)."""
    found = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                found.add(p.pid)
        except psutil.Error:
            pass
    return found


def wait_gone(pids, timeout: float = 20.0) -> set[int]:
    """The pids of ``pids`` still running after ``timeout`` s (none, once they have all gone)."""
    alive = set(pids)
    deadline = time.monotonic() + timeout
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if process_running(p)}
        time.sleep(0.02)
    return alive


# ---------------------------------------------------------------- the baselines


def test_serial_has_no_worker_to_kill_and_says_why():
    with get_engine("serial").start() as session:
        assert session.fault_targets() == []
        assert "one process" in session.fault_reason() and "kills the run itself" in session.fault_reason()


def test_pool_fails_the_run_naming_the_lost_process_and_starts_a_fresh_pool(tmp_path):
    before = descendants()
    with get_engine("pool").start(workers=2) as session:
        pids = session.worker_pids
        assert [what for _, what in session.fault_targets()] == ["pool worker 0", "pool worker 1"]
        error, seconds, (pid, _) = faulted(session, lambda: session.dataflow(held_flow(str(tmp_path))), tmp_path)
        assert isinstance(error, DataflowError)
        assert re.search(rf"pool worker 1 \(pid {pid}\) was killed by SIGKILL while running .*held.* of flow .held.", str(error))
        assert seconds < 10
        assert not set(session.worker_pids) & set(pids)                       # a fresh pool
        assert sorted(session.dataflow(held_flow(str(tmp_path)))["sums"]) == WANT   # the session goes on
        (tmp_path / "t").mkdir()
        with session.tasks() as tasks:                                         # a task with retries runs again
            answer, _, _ = faulted(session, lambda: tasks.submit(held, str(tmp_path / "t"), 7, retries=1).result(),
                                   tmp_path / "t", busy=1)
            assert answer == 7
            error, _, (pid, _) = faulted(session, lambda: tasks.submit(held, str(tmp_path / "t"), 7).result(),
                                         tmp_path / "t", busy=1)
            assert re.match(rf"task held-\d+ was lost: pool worker \d \(pid {pid}\) was killed by SIGKILL", str(error))
        started = session.worker_pids
    assert not wait_gone(pids + started) and descendants() <= before


# ---------------------------------------------------------------- the adapters


def test_dask_recomputes_the_lost_workers_share_and_its_nanny_restarts_it(tmp_path):
    require_engine("dask")
    session = running("dask")
    assert session.settings["nanny"] is True and session.settings["allowed_failures"] == 3
    answer, seconds, (pid, what) = faulted(session, lambda: session.dataflow(held_flow(str(tmp_path))), tmp_path)
    assert re.match(r"dask worker at tcp://\S+ \([1-9]\d* tasks running; the worker process -- its nanny", what)
    assert sorted(answer["sums"]) == WANT
    wait_until(lambda: len(session.worker_pids) == 2, 60, "the nanny's new worker")   # the shared cluster is whole
    assert pid not in session.worker_pids


def test_dask_runs_a_task_again_when_its_worker_is_killed(tmp_path):
    require_engine("dask")
    session = running("dask")
    with session.tasks() as tasks:
        answer, _, (_, what) = faulted(session, lambda: tasks.submit(held, str(tmp_path), 7).result(), tmp_path, busy=1)
    assert "(1 tasks running" in what and answer == 7
    wait_until(lambda: len(session.worker_pids) == 2, 60, "the nanny's new worker")


def test_ray_runs_the_lost_tasks_again(tmp_path):
    require_engine("ray")
    session = running("ray")
    assert session.settings["actor_max_restarts"] == 0 and session.settings["task_max_retries"].startswith("3")
    answer, _, (_, what) = faulted(session, lambda: session.dataflow(held_flow(str(tmp_path))), tmp_path)
    assert "running a task" in what
    assert sorted(answer["sums"]) == WANT
    (tmp_path / "t").mkdir()
    with session.tasks() as tasks:
        answer, _, _ = faulted(session, lambda: tasks.submit(held, str(tmp_path / "t"), 7).result(),
                               tmp_path / "t", busy=1)
    assert answer == 7


class Mortal:
    def wait(self, folder: str):
        return held(folder, "done")


def test_a_ray_actor_whose_process_is_killed_fails_its_call_naming_it(tmp_path):
    require_engine("ray")
    session = running("ray")
    with session.actors() as actors:
        mortal = actors.spawn(Mortal)
        error, seconds, (_, what) = faulted(session, lambda: mortal.call("wait", str(tmp_path)).result(),
                                            tmp_path, busy=1)
        assert "an actor's own process" in what
        assert isinstance(error, ActorError) and str(error).startswith(f"Mortal actor {mortal.actor_id}: wait() failed")
        assert seconds < 30


def test_spark_local_gives_a_task_one_attempt_so_the_job_fails_naming_the_python_worker(tmp_path):
    require_engine("spark")
    session = running("spark")
    assert session.settings["master"] == "local[2]" and session.settings["task_max_failures"].startswith("1")
    error, seconds, (pid, what) = faulted(session, lambda: session.dataflow(held_flow(str(tmp_path))), tmp_path)
    assert "Python worker" in what
    assert isinstance(error, DataflowError)
    assert re.search(rf"spark Python worker \d \(pid {pid}\) died in task \S+ of stage \S+, after 1 attempt",
                     str(error))
    assert seconds < 30
    assert sorted(session.dataflow(held_flow(str(tmp_path)))["sums"]) == WANT    # new Python workers


def test_bytewax_fails_the_run_at_once_naming_the_process_and_restarts_its_processes(tmp_path):
    require_engine("bytewax")
    before = descendants()
    with get_engine("bytewax").start(workers=2) as session:
        pids = session.worker_pids
        error, seconds, (pid, _) = faulted(session, lambda: session.dataflow(held_flow(str(tmp_path))), tmp_path)
        assert isinstance(error, DataflowError)
        assert re.search(rf"bytewax worker 1 \(pid {pid}\) was killed by SIGKILL during the run", str(error))
        assert seconds < 10
        assert not set(session.worker_pids) & set(pids)
        assert sorted(session.dataflow(held_flow(str(tmp_path)))["sums"]) == WANT
        started = session.worker_pids
    assert not wait_gone(pids + started) and descendants() <= before
