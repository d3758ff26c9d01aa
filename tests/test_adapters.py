"""The adapters' own promises, beyond the contract every engine keeps.

- an adapter that cannot run here says what to install (checked on the
  reason builders, not by uninstalling anything);
- ``settings()`` is what ``start()`` used, and an unknown option lists the
  known ones;
- the option that points an adapter at a running cluster is honoured;
- partitions are made on the engine's workers, never on the driver;
- Dask actors keep per-sender order although Dask delivers concurrent calls
  in any order (the reordering is tested directly, then end to end);
- each engine's logs go to files under ``log_dir``;
- a user's own workload file (``--workload-file``), whose functions and
  classes travel by value, runs on each adapter, records of its own classes
  included.

Tests that need an engine use the session fixture (one cluster per engine
for the whole run, which the idiomatic variants share with their generic
engine); only the existing-cluster test starts one of its own.
"""

from __future__ import annotations

import ast
import asyncio
import logging
import os
import sys
import textwrap
from pathlib import Path

import cloudpickle
import pytest

from conftest import require, require_engine, require_workload, wait_until
from engines import get_engine
from engines.adapters import LOG_DIR, AdapterEngine, AdapterSession, java_available, java_reason, log_dir, missing_reason
from engines.api import ArchbenchError, Dataflow, DataflowError
from workloads import _registry, get_workload, load_workload_file

ADAPTERS = ("spark", "spark-df", "dask", "dask-df", "ray", "bytewax", "flink", "flink-sql")


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


def engine_imports(module: str) -> set[str]:
    """The ``engines`` modules that ``module`` imports, at its top or inside a function (read, not run)."""
    path = Path(__file__).parent.parent.joinpath(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("engines"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("engines"))
    return found


def test_the_bytewax_translations_share_their_run_state_without_an_import_cycle():
    assert "engines.adapters.bytewax_run" in engine_imports("engines.adapters.bytewax_streams")
    reached, todo = set(), ["engines.adapters.bytewax_streams"]
    while todo:          # everything the stream translation imports, and what that imports ...
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo.extend(engine_imports(module))
    assert "engines.adapters.bytewax" not in reached      # ... never comes back to the batch translation


def test_a_missing_java_says_what_to_install(monkeypatch, tmp_path):
    assert "install openjdk-17-jre-headless" in java_reason(java_home=None, java_on_path=None)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    ok, why = java_available()
    assert not ok and f"JAVA_HOME={tmp_path} has no bin/java" in why


def test_a_relative_log_directory_is_made_absolute(tmp_path, monkeypatch):
    # `archbench run --trace --out results/x` gives Spark a relative log dir; its event log needs a file URI
    monkeypatch.chdir(tmp_path)
    logs = log_dir("results/x/logs", "spark")
    assert logs.is_absolute() and logs.is_dir()
    assert logs == tmp_path / "results" / "x" / "logs"
    assert (logs / "spark-events").as_uri().startswith("file:///")


def test_a_session_that_fails_to_start_is_closed_and_gives_its_logger_back(tmp_path):
    logger = logging.getLogger("archbench.a-framework")
    handlers = list(logger.handlers)

    class Failing(AdapterSession):
        engine = "framework"
        closes = 0

        def __init__(self):
            super().__init__(1, {}, {LOG_DIR: str(tmp_path)}, logger=logger.name)
            with self.opening():
                logger.warning("starting the cluster")
                raise ConnectionError("no cluster at that address")

        def close(self):
            Failing.closes += 1
            super().close()

    with pytest.raises(ConnectionError, match="no cluster at that address"):
        Failing()
    assert Failing.closes == 1 and logger.handlers == handlers
    assert "starting the cluster" in (tmp_path / "framework-driver.log").read_text()


@pytest.mark.parametrize("name", ADAPTERS)
def test_an_unknown_option_lists_the_known_ones(name):
    with pytest.raises(ArchbenchError, match=rf"engine '{name}' has no option 'adress'; its options: .*log_dir"):
        get_engine(name).settings(2, adress="tcp://elsewhere:8786")


def test_spark_connect_is_refused_with_the_reason():
    with pytest.raises(ArchbenchError, match=r"Spark Connect.*DataFrames only.*spark://"):
        get_engine("spark").start(workers=2, master="sc://localhost:15002")


def test_the_existing_cluster_option_is_recorded():
    for spark in ("spark", "spark-df"):
        assert get_engine(spark).settings(2, master="spark://head:7077")["master"] == "spark://head:7077"
    for dask in ("dask", "dask-df"):
        assert get_engine(dask).settings(2, address="tcp://head:8786")["cluster"] == "existing scheduler"
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
    require_engine("dask")
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with get_engine("dask").start(workers=1, address=cluster.scheduler_address) as session:
            assert session.settings["address"] == cluster.scheduler_address
            assert session.settings["scheduler"] == cluster.scheduler_address
            with session.tasks() as tasks:
                assert tasks.submit(pow, 2, 8).result() == 256
        assert cluster.scheduler.workers  # closing the session left the cluster running


# ------------------------------------------------------- on the suite's sessions


def test_a_second_spark_session_is_refused_and_the_running_one_goes_on(session):
    if session.engine != "spark":
        pytest.skip("one JVM per process: a Spark test")
    with pytest.raises(ArchbenchError, match="a Spark session is already running in this process"):
        get_engine("spark").start(workers=1)      # its failed start closes only what it opened
    assert session.sc.parallelize([1, 2, 3], 2).sum() == 6


def test_settings_are_what_start_used(session):
    adapter(session)
    engine = get_engine(session.engine)
    planned = engine.settings(session.workers, **engine.trace_options)   # the suite starts them traceable
    assert {k: v for k, v in planned.items() if k != "log_dir"}.items() <= session.settings.items()
    assert Path(session.settings["log_dir"]).is_dir()


def test_one_thread_per_worker(session):
    adapter(session)
    s = session.settings
    expected = {"spark": ("master", "local[2]"), "spark-df": ("master", "local[2]"),
                "dask": ("threads_per_worker", 1), "dask-df": ("threads_per_worker", 1),
                "ray": ("num_cpus", 2), "bytewax": ("worker_count_per_proc", 1),
                "flink": ("parallelism", 2), "flink-sql": ("parallelism", 2)}[session.engine]
    assert s[expected[0]] == expected[1]
    if session.engine in ("spark", "spark-df"):
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
        items = []

        def all_arrived():   # a's and b's tells may still be on their way: ask until the target has them
            items[:] = target.call("items_").result()
            return len(items) == 600

        wait_until(all_arrived, 60, "all 600 messages at the target")
        for prefix in "abd":
            assert [x for x in items if x[0] == prefix] == [f"{prefix}{i}" for i in range(200)]


def _invert_rows():
    return [(1 / x,) for x in (1, 0)]


def test_engine_logs_go_to_files(session):
    adapter(session)
    if get_engine(session.engine).columnar:  # a variant fails in a frame's partition
        with pytest.raises(DataflowError, match="_invert_rows"):
            session.collect(session.frame([_invert_rows], {"x": float}))
    else:
        flow = Dataflow("bad")
        flow.read([[1, 0]]).map(lambda x: 1 / x, name="invert").collect("out")
        with pytest.raises(DataflowError, match="invert"):
            session.dataflow(flow)
    logs = Path(session.settings["log_dir"])
    names = {name for _, _, files in os.walk(logs) for name in files}   # a JVM may be removing its temp files
    expected = {"spark": "spark.log", "spark-df": "spark.log", "dask": "dask-workers.log",
                "dask-df": "dask-workers.log", "ray": "raylet.out", "bytewax": "bytewax-workers.log",
                "flink": "flink-job.log", "flink-sql": "flink-job.log"}[session.engine]
    assert expected in names
    if expected in ("spark.log", "dask-workers.log"):  # the failed task was logged there, not on the terminal
        text = next(logs.rglob(expected)).read_text()
        assert "ZeroDivisionError" in text


USER_FILE = textwrap.dedent('''
    """A new user's workloads: records, results and messages are instances of their own classes."""
    import functools
    import operator
    from dataclasses import dataclass

    from engines.api import Dataflow
    from workloads import Workload

    @dataclass(frozen=True)
    class Sale:
        shop: str
        amount: int

    def sales(part):
        return [Sale(f"s{(part + i) % 3}", (i * 7) % 11 - 2) for i in range(40)]

    class Sales(Workload):
        name, model = "user-sales", "dataflow"
        sizes = dict.fromkeys(("tiny", "small", "medium", "large"), {"parts": 3})

        def generate(self, *, seed, parts):
            return list(range(parts))

        def reference(self, parts):
            totals = {}
            for sale in (s for p in parts for s in sales(p) if s.amount > 0):
                totals[sale.shop] = totals.get(sale.shop, 0) + sale.amount
            return {"by_town": [(f"town-{k}", v) for k, v in totals.items()],
                    "big": [s for p in parts for s in sales(p) if s.amount > 6]}

        def run(self, session, parts):
            flow = Dataflow("sales")
            good = flow.read([functools.partial(sales, p) for p in parts]).filter(lambda s: s.amount > 0)
            totals = good.map(lambda s: (s.shop, s)).reduce_by_key(lambda a, b: Sale(a.shop, a.amount + b.amount))
            towns = flow.read([[(f"s{i}", f"town-s{i}") for i in range(3)]]).map(tuple)
            totals.join(towns).map(lambda kv: (kv[1][1], kv[1][0].amount)).collect("by_town")
            good.filter(lambda s: s.amount > 6).collect("big")
            return session.dataflow(flow)

        def units(self, parts):
            return len(parts)

    @dataclass
    class Part:
        total: int

    def square(i):
        return Part(i * i)

    def add(*parts, extra=Part(0)):
        return Part(sum(p.total for p in parts) + extra.total)

    class Tree(Workload):
        name, model = "user-tree", "tasks"
        sizes = dict.fromkeys(("tiny", "small", "medium", "large"), {"n": 8})

        def generate(self, *, seed, n):
            return n

        def reference(self, n):
            return 2 * (sum(i * i for i in range(n)) + 1)

        def run(self, session, n):
            with session.tasks() as tasks:
                leaves = [tasks.submit(square, i) for i in range(n)]
                halves = [tasks.submit(add, *leaves[: n // 2]), tasks.submit(add, *leaves[n // 2:], extra=leaves[1])]
                return tasks.submit(add, *halves, extra=tasks.submit(add, *halves)).result().total

        def units(self, n):
            return n

    @dataclass(frozen=True)
    class Ball:
        hits: int

    class Player:
        def __init__(self):
            self.seen = []

        def hit(self, other, me, ball):
            self.seen.append(ball.hits)
            if ball.hits > 0:
                other.tell("hit", me, other, Ball(ball.hits - 1))

        def seen_(self):
            return list(self.seen)

    class Rally(Workload):
        name, model = "user-rally", "actors"
        sizes = dict.fromkeys(("tiny", "small", "medium", "large"), {"hits": 20})

        def generate(self, *, seed, hits):
            return hits

        def reference(self, hits):
            return list(range(hits, -1, -2)), list(range(hits - 1, -1, -2))

        def run(self, session, hits):
            with session.actors() as actors:
                a, b = actors.spawn(Player), actors.spawn(Player)
                a.tell("hit", b, a, Ball(hits))
                while True:
                    seen = a.call("seen_").result(), b.call("seen_").result()
                    if sum(map(len, seen)) == hits + 1:
                        return seen

        def units(self, hits):
            return hits
''')


@pytest.fixture
def user_workloads(tmp_path):
    """Load a workload file as ``--workload-file`` does; forget it afterwards (it is sent by value)."""
    import cloudpickle

    path = tmp_path / "new_user.py"
    path.write_text(USER_FILE)
    names = load_workload_file(path)
    module = sys.modules["archbench_user_new_user"]
    yield names
    for vendored in _vendored_cloudpickles():
        if module.__name__ in vendored.list_registry_pickle_by_value():
            vendored.unregister_pickle_by_value(module)
    cloudpickle.unregister_pickle_by_value(module)
    del sys.modules[module.__name__]
    for name in names:
        del _registry[name]


def _vendored_cloudpickles():
    for name in ("pyspark.cloudpickle", "ray.cloudpickle"):
        if name in sys.modules:
            yield sys.modules[name]


USER_WORKLOADS = ["user-rally", "user-sales", "user-tree"]


def test_the_users_file_defines_its_workloads(user_workloads):
    assert sorted(user_workloads) == USER_WORKLOADS


@pytest.mark.parametrize("name", USER_WORKLOADS)
def test_a_users_own_workload_file_runs(session, user_workloads, name):
    adapter(session)
    workload = get_workload(name)
    require_workload(session, workload)   # a variant runs none of them: they have no columnar form
    engine = get_engine(session.engine)
    inputs = workload.generate(seed=1, **workload.sizes["tiny"])
    workload.check(workload.runner(engine)(session, inputs), workload.reference(inputs))
