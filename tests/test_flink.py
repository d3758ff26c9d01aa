"""The Flink engine's own promises, beyond the adapters' shared ones (tests/test_adapters.py).

- until ``archbench setup flink`` has made Flink's environment, the engine
  is unavailable and says to run that command; a setup that cannot work
  (no network) says why and what to do, and one without Java goes on,
  saying Flink will need it;
- the session is quiet and contained: Flink's temporary files go into the
  session's log folder, not the system's, and nothing of its process tree
  (the job process, the JVM, the Python workers) outlives ``close()``;
- ``fault_targets()`` names Flink's Python worker processes while a job
  runs, and nothing between jobs (the task slots are JVM threads); killing
  one fails the run, naming it, and the session runs the next job.

The tests that need Flink share a session of their own, started once with
2 workers: the last of them closes it (the suite's shared session must stay
open for the other tests).
"""

from __future__ import annotations

import threading
from pathlib import Path

import psutil
import pytest

from conftest import process_running, require_engine, wait_until
from engines import get_engine
from engines.adapters import flink_env, java_available
from engines.api import Dataflow, DataflowError


# ------------------------------------------------------- without Flink running


def test_without_its_environment_flink_is_unavailable_and_names_the_setup_command(tmp_path, monkeypatch):
    monkeypatch.setenv(flink_env.ENV_VAR, str(tmp_path / "no-env-here"))
    engine = get_engine("flink")
    ok, why = engine.available()
    if ok:
        pytest.fail("flink is available without its environment")
    assert "archbench setup flink" in why
    if java_available()[0]:    # with Java here, the missing environment is the reason
        assert f"{tmp_path / 'no-env-here'} does not exist" in why
    assert get_engine("flink-sql").available() == (False, why)


def test_an_environment_with_another_flink_names_both_versions(tmp_path):
    dist = tmp_path / "lib" / "python3.11" / "site-packages" / "apache_flink-1.20.0.dist-info"
    dist.mkdir(parents=True)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").touch()
    why = flink_env.missing(tmp_path)
    assert f"apache-flink 1.20.0, archbench pins {flink_env.FLINK_VERSION}" in why
    assert "archbench setup flink" in why
    dist.rename(dist.with_name(f"apache_flink-{flink_env.FLINK_VERSION}.dist-info"))
    assert flink_env.missing(tmp_path) == ""


def test_without_java_the_setup_notes_flink_will_need_it_and_the_engine_names_java(tmp_path, monkeypatch):
    # the environment installs without Java (the README's test command sets it up on any machine);
    # the engine then names Java as what it lacks
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    note = flink_env.java_note()
    assert note.startswith("note: Flink will need Java to run") and f"JAVA_HOME={tmp_path / 'no-jdk'}" in note
    ok, why = get_engine("flink").available()
    assert not ok and "has no bin/java" in why


def test_a_failed_download_points_at_the_network():
    stderr = "ERROR: Could not find a version that satisfies the requirement apache-flink==2.3.0\n" \
             "ERROR: No matching distribution found for apache-flink==2.3.0"
    message = flink_env._failed("installing apache-flink==2.3.0", stderr)
    assert message.startswith("failed while installing apache-flink==2.3.0:")
    assert "No matching distribution" in message and "Is PyPI reachable?" in message
    assert "Is PyPI reachable?" not in flink_env._failed("importing pyflink", "ImportError: libjvm")


# ------------------------------------------------------- a session of its own


def tree_of(pid: int) -> list[psutil.Process]:
    try:
        return [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def held_flow(release: Path) -> Dataflow:
    """A flow whose two partitions wait until the file ``release`` exists: the job runs until the test lets go."""
    flow = Dataflow("held")
    flow.read([lambda i=i, r=str(release): _wait_for(r, i) for i in range(2)], name="held").collect("out")
    return flow


def _wait_for(release: str, i: int) -> list[int]:
    import os
    import time

    deadline = time.monotonic() + 60
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.02)
    return [i]


@pytest.fixture(scope="module")
def own_session(tmp_path_factory):
    require_engine("flink")
    logs = tmp_path_factory.mktemp("flink-logs")
    session = get_engine("flink").start(workers=2, log_dir=str(logs))
    yield session, logs
    session.close()


def test_flinks_logs_and_temporary_files_go_into_the_log_folder(own_session):
    session, logs = own_session
    assert session.settings["job_start_s"] > 0
    flow = Dataflow("nums")
    flow.read([[1, 2], [3]], name="nums").collect("out")
    assert sorted(session.dataflow(flow)["out"]) == [1, 2, 3]
    tmp = session.logs / "flink-tmp"
    assert session.logs == logs
    assert tmp.is_dir() and any(tmp.iterdir()), f"no JVM temporary files under {tmp}"
    jvm_logs = list(logs.glob("flink-*-python-vm.log"))       # Flink's own log (FLINK_LOG_DIR), not site-packages'
    assert jvm_logs and jvm_logs[0].stat().st_size > 0, sorted(p.name for p in logs.iterdir())


def test_a_key_with_more_pairs_than_a_record_holds_is_joined_whole(own_session):
    # records between operators carry chunks of at most 10,000 items: one key's 25,000 pairs span three
    session, _ = own_session
    flow = Dataflow("hot key")
    many = flow.read([[("hot", i) for i in range(12_500)] for _ in range(2)], name="many").map(tuple)
    few = flow.read([[("hot", "a"), ("cold", "b")], [("hot", "c")]], name="few").map(tuple)
    many.join(few).collect("pairs")
    pairs = session.dataflow(flow)["pairs"]
    assert len(pairs) == 50_000
    assert sorted(set(pairs)) == sorted({("hot", (i, side)) for i in range(12_500) for side in "ac"})


def test_fault_targets_are_the_python_workers_of_the_running_job(own_session, tmp_path):
    session, _ = own_session
    assert session.fault_targets() == []          # between jobs: no Python worker exists
    release = tmp_path / "release"
    got: dict = {}
    runner = threading.Thread(target=lambda: got.update(session.dataflow(held_flow(release))))
    runner.start()
    try:
        wait_until(lambda: len(session.fault_targets()) >= 1, timeout=60, what="Flink's Python workers to start")
        targets = session.fault_targets()
        assert all(label.startswith("flink python worker ") for _, label in targets)
        job_tree = {p.pid for p in tree_of(session.settings["job_process_pid"])}
        assert {pid for pid, _ in targets} <= job_tree
    finally:
        release.touch()
        runner.join(90)
    assert sorted(got["out"]) == [0, 1]
    wait_until(lambda: session.fault_targets() == [], timeout=30, what="the job's Python workers to end")


def test_a_python_worker_killed_mid_job_fails_the_run_naming_it_and_the_session_goes_on(own_session, tmp_path):
    import os
    import signal

    session, _ = own_session
    assert session.settings["flink.restart-strategy.type"] == "none"
    release = tmp_path / "release"               # never touched: the job ends only by the fault
    errors: list = []
    runner = threading.Thread(target=lambda: _catch(errors, session.dataflow, held_flow(release)))
    runner.start()
    wait_until(lambda: len(session.fault_targets()) >= 1, timeout=60, what="Flink's Python workers to start")
    pid, what = session.fault_targets()[-1]
    os.kill(pid, signal.SIGKILL)
    runner.join(120)
    assert not runner.is_alive(), "the run did not end after its Python worker was killed"
    assert len(errors) == 1 and isinstance(errors[0], DataflowError), errors
    assert f"{what} (pid {pid})" in str(errors[0])
    flow = Dataflow("after")
    flow.read([[5], [6]], name="after").collect("out")
    assert sorted(session.dataflow(flow)["out"]) == [5, 6]


def _catch(errors: list, fn, *args) -> None:
    try:
        fn(*args)
    except Exception as e:
        errors.append(e)


def test_nothing_of_the_session_outlives_close(own_session):     # last: it closes the module's session
    session, _ = own_session
    tree = tree_of(session.settings["job_process_pid"])
    assert any(p.name() == "java" for p in tree), "the job process runs Flink's JVM as a child"
    session.close()
    left = [p.pid for p in tree if process_running(p.pid)]
    assert left == [], f"still running after close: {left}"
