"""The adapters' own promises, beyond the contract every engine keeps.

- an adapter that cannot run here says what to install (checked on the
  reason builders, not by uninstalling anything);
- ``settings()`` is what ``start()`` used, and an unknown option lists the
  known ones;
- the option that points an adapter at a running cluster is honoured;
- partitions are made on the engine's workers, never on the driver;
- Dask actors keep per-sender order although Dask delivers concurrent calls
  in any order (the reordering is tested directly, then end to end);
- each engine's logs go to files under ``log_dir``.

Tests that need an engine use the session fixture (one cluster per engine
for the whole run); only the existing-cluster test starts one of its own.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import cloudpickle
import pytest

from conftest import require
from engines import get_engine
from engines.adapters import AdapterEngine, java_available, java_reason, missing_reason
from engines.api import ArchbenchError, Dataflow, DataflowError

ADAPTERS = ("spark", "dask", "ray", "bytewax")


def adapter(session) -> None:
    if session.engine not in ADAPTERS:
        pytest.skip(f"{session.engine} is not an adapter")


# ------------------------------------------------------- without an engine running


def test_a_missing_package_says_what_to_install():
    class Missing(AdapterEngine):
        name, requires, extra = "nothing", ("no_such_module_here",), "nothing"

    assert Missing().available() == (False, "no_such_module_here is not installed — pip install "
                                            "'archbench[nothing]'")
    assert missing_reason("ray", "ray") == "ray is not installed — pip install 'archbench[ray]'"


def test_a_missing_java_says_what_to_install(monkeypatch, tmp_path):
    assert "install openjdk-17-jre-headless" in java_reason(java_home=None, java_on_path=None)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    ok, why = java_available()
    assert not ok and f"JAVA_HOME={tmp_path} has no bin/java" in why


@pytest.mark.parametrize("name", ADAPTERS)
def test_an_unknown_option_lists_the_known_ones(name):
    with pytest.raises(ArchbenchError, match=rf"engine '{name}' has no option 'adress'; its options: .*log_dir"):
        get_engine(name).settings(2, adress="tcp://elsewhere:8786")


def test_spark_connect_is_refused_with_the_reason():
    with pytest.raises(ArchbenchError, match=r"Spark Connect.*DataFrames only.*spark://"):
        get_engine("spark").start(workers=2, master="sc://localhost:15002")


def test_the_existing_cluster_option_is_recorded():
    assert get_engine("spark").settings(2, master="spark://head:7077")["master"] == "spark://head:7077"
    assert get_engine("dask").settings(2, address="tcp://head:8786")["cluster"] == "existing scheduler"
    ray = get_engine("ray").settings(2, address="ray://head:10001")
    assert ray["address"] == "ray://head:10001" and ray["num_cpus"] is None


def test_dask_actors_restore_each_senders_order():
    """Messages delivered in the reverse of the order sent are handled in the order sent."""
    from engines.adapters.dask import _Host

    host = _Host("Log-1", list, (), {})

    def message(x):
        return cloudpickle.dumps(("append", (x,), {}))

    async def deliver_backwards():
        sends = [host.deliver("sender-a", n, message(f"a{n}"), True) for n in range(5)]
        sends += [host.deliver("sender-b", n, message(f"b{n}"), True) for n in range(3)]
        await asyncio.gather(*reversed(sends))

    asyncio.run(deliver_backwards())
    assert [x for x in host.obj if x[0] == "a"] == ["a0", "a1", "a2", "a3", "a4"]
    assert [x for x in host.obj if x[0] == "b"] == ["b0", "b1", "b2"]
    host.mailbox.shutdown()


def test_an_existing_dask_cluster_is_used():
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with get_engine("dask").start(workers=1, address=cluster.scheduler_address) as session:
            assert session.settings["address"] == cluster.scheduler_address
            assert session.settings["scheduler"] == cluster.scheduler_address
            with session.tasks() as tasks:
                assert tasks.submit(pow, 2, 8).result() == 256
        assert cluster.scheduler.workers  # closing the session left the cluster running


# ------------------------------------------------------- on the suite's sessions


def test_settings_are_what_start_used(session):
    adapter(session)
    planned = get_engine(session.engine).settings(session.workers)
    assert {k: v for k, v in planned.items() if k != "log_dir"}.items() <= session.settings.items()
    assert Path(session.settings["log_dir"]).is_dir()


def test_one_thread_per_worker(session):
    adapter(session)
    s = session.settings
    expected = {"spark": ("master", "local[2]"), "dask": ("threads_per_worker", 1),
                "ray": ("num_cpus", 2), "bytewax": ("worker_count_per_proc", 1)}[session.engine]
    assert s[expected[0]] == expected[1]
    if session.engine == "spark":
        assert s["spark.sql.shuffle.partitions"] == s["spark.default.parallelism"] == "2"
        assert s["spark.ui.showConsoleProgress"] == "false" and s["spark.driver.memory"] == "4g"


def _pid():
    return [os.getpid()]


def test_partitions_are_made_on_the_workers_not_the_driver(session):
    adapter(session)
    require(session, "dataflow")
    flow = Dataflow("where")
    flow.read([_pid] * 4).collect("pids")
    pids = set(session.dataflow(flow)["pids"])
    assert pids and os.getpid() not in pids
    if session.engine == "bytewax":  # partitions are shared out among all the processes
        assert pids == set(session.worker_pids) and len(pids) == session.workers


class Log:
    def __init__(self):
        self.items = []

    def add(self, x):
        self.items.append(x)

    def items_(self):
        return list(self.items)

    def send_many(self, other, prefix, n):
        for i in range(n):
            other.tell("add", f"{prefix}{i}")
        return n


def test_many_senders_each_keep_their_order(session):
    adapter(session)
    require(session, "actors")
    with session.actors() as actors:
        target, a, b = actors.spawn(Log), actors.spawn(Log), actors.spawn(Log)
        sent = [a.call("send_many", target, "a", 200), b.call("send_many", target, "b", 200)]
        for i in range(200):
            target.tell("add", f"d{i}")
        assert actors.gather(sent) == [200, 200]
        for _ in range(10_000):
            items = target.call("items_").result()
            if len(items) == 600:
                break
        for prefix in "abd":
            assert [x for x in items if x[0] == prefix] == [f"{prefix}{i}" for i in range(200)]


def test_engine_logs_go_to_files(session):
    adapter(session)
    flow = Dataflow("bad")
    flow.read([[1, 0]]).map(lambda x: 1 / x, name="invert").collect("out")
    with pytest.raises(DataflowError, match="invert"):
        session.dataflow(flow)
    logs = Path(session.settings["log_dir"])
    names = {p.name for p in logs.rglob("*") if p.is_file()}
    expected = {"spark": "spark.log", "dask": "dask-workers.log", "ray": "raylet.out",
                "bytewax": "bytewax-workers.log"}[session.engine]
    assert expected in names
    if session.engine in ("spark", "dask"):  # the failed task was logged there, not on the terminal
        text = next(logs.rglob(expected)).read_text()
        assert "ZeroDivisionError" in text
