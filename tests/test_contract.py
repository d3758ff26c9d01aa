"""The engine contract: every engine, every model, the same expectations.

Each test runs once per available engine (the ``session`` fixture). A model
an engine does not run must be refused with its reason, never half-run.
"""

from __future__ import annotations

import math
import operator
import os

import pytest

from conftest import require, supports, wait_until
from engines.api import ActorError, Dataflow, DataflowError, MODELS, TaskError, UnsupportedModel


def test_unsupported_models_say_why(session):
    refused = [model for model in MODELS if not supports(session, model)]
    if not refused:
        pytest.skip(f"{session.engine} runs all three models: it refuses none")
    for model in refused:
        with pytest.raises(UnsupportedModel, match=session.supports[model].split(": ", 1)[-1][:40]):
            getattr(session, model)(Dataflow("x")) if model == "dataflow" else getattr(session, model)()


# ----------------------------------------------------------------- dataflow


def _pid_partition():
    return [os.getpid()]


def test_wordcount(session):
    require(session, "dataflow")
    flow = Dataflow("wc")
    flow.read([["a b a", "c"], ["b a"], []]).flat_map(str.split).count_by_key().collect("counts")
    assert sorted(session.dataflow(flow)["counts"]) == [("a", 3), ("b", 2), ("c", 1)]


def test_count_by_key_with_a_key_function(session):
    require(session, "dataflow")
    flow = Dataflow("lengths")
    flow.read([["a bb a", "ccc"], ["bb"], []]).flat_map(str.split).count_by_key(len, name="counted") \
        .collect("by_length")
    assert sorted(session.dataflow(flow)["by_length"]) == [(1, 2), (2, 2), (3, 1)]
    bad = Dataflow("bad")
    bad.read([["a", None]]).count_by_key(lambda w: w.upper()).collect("n")
    with pytest.raises(DataflowError, match=r"count_by_key_2.*AttributeError"):   # the step of the key function
        session.dataflow(bad)


def test_a_stream_collected_twice(session):
    require(session, "dataflow")
    flow = Dataflow("twice")
    doubled = flow.read([[1, 2], [3]]).map(double)
    doubled.collect("a")
    doubled.collect("b")
    out = session.dataflow(flow)
    assert sorted(out["a"]) == sorted(out["b"]) == [2, 4, 6]


def test_filter_map_join_and_two_sinks(session):
    require(session, "dataflow")
    flow = Dataflow("orders")
    orders = flow.read([[("ann", 5), ("bob", 7)], [("ann", 1), ("cat", 9), ("bob", -2)]])
    valid = orders.filter(lambda o: o[1] > 0)
    totals = valid.reduce_by_key(operator.add, name="totals")
    cities = flow.read([[("ann", "Oslo"), ("bob", "Lima")], [("dan", "Pune")]]).key_by(lambda p: p[0]) \
        .map(lambda kv: (kv[0], kv[1][1]))
    totals.join(cities).map(lambda kv: (kv[1][1], kv[1][0])).collect("by_city")
    valid.map(lambda o: o[0]).collect("buyers")
    out = session.dataflow(flow)
    assert sorted(out["by_city"]) == [("Lima", 7), ("Oslo", 6)]
    assert sorted(out["buyers"]) == ["ann", "ann", "bob", "cat"]


def test_join_pairs_every_match(session):
    require(session, "dataflow")
    flow = Dataflow("join")
    left = flow.read([[(1, "a"), (1, "b")], [(2, "c")]]).map(tuple)
    right = flow.read([[(1, "x")], [(1, "y"), (3, "z")]]).map(tuple)
    left.join(right).collect("pairs")
    got = session.dataflow(flow)["pairs"]
    assert sorted(got) == [(1, ("a", "x")), (1, ("a", "y")), (1, ("b", "x")), (1, ("b", "y"))]
    assert all(type(item) is tuple and type(item[1]) is tuple for item in got)  # tuples stay tuples


def test_keys_are_one_key_when_python_says_they_are_equal(session):
    # 1 and 1.0 are one key to a dict, so to every engine (Flink compares keys by their bytes: it must not)
    require(session, "dataflow")
    flow = Dataflow("equal keys")
    counts = flow.read([[(1, 1), (2, 1)], [(1.0, 1), (2.0, 1), (2, 1)]]).map(tuple).reduce_by_key(operator.add)
    counts.collect("counts")
    counts.join(flow.read([[(1.0, "one")], [(2, "two")]]).map(tuple)).collect("named")
    out = session.dataflow(flow)
    assert sorted(out["counts"]) == [(1, 2), (2, 3)]
    assert sorted(out["named"]) == [(1, (2, "one")), (2, (3, "two"))]


def test_callable_partitions_are_read_on_the_workers(session):
    require(session, "dataflow")
    flow = Dataflow("where")
    flow.read([_pid_partition] * 4).collect("pids")
    pids = session.dataflow(flow)["pids"]
    assert len(pids) == 4                           # each partition was evaluated, once
    if session.engine == "serial":                  # one process, no framework: the driver is its only worker
        assert set(pids) == {os.getpid()}
    else:                                           # other processes (Spark and Ray do not tell us their pids)
        assert os.getpid() not in pids
        if session.worker_pids:
            assert set(pids) <= set(session.worker_pids)


def test_a_failing_step_is_named(session):
    require(session, "dataflow")
    flow = Dataflow("bad")
    flow.read([[1, 0, 2]]).map(lambda x: 1 / x, name="invert").collect("out")
    with pytest.raises(DataflowError, match=r"invert.*ZeroDivisionError"):
        session.dataflow(flow)


# ----------------------------------------------------------------- tasks


def double(x):
    return 2 * x


def grow(block: bytes) -> bytes:
    return block + bytes(20_000)


def add(*xs, extra=0):
    return sum(xs) + extra


def fail(x):
    raise ValueError(f"bad input {x}")


def flaky(marker):
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first attempt fails")
    return "second attempt"


def test_futures_are_dependencies(session):
    require(session, "tasks")
    with session.tasks() as tasks:
        a = tasks.submit(double, 3)
        b = tasks.submit(double, a)                 # a chain
        c = tasks.submit(add, a, b, extra=a)        # a diamond, a Future as a keyword too
        assert tasks.gather([c, b, a]) == [24, 12, 6]


def test_a_wide_fan_in(session):
    require(session, "tasks")
    with session.tasks() as tasks:
        leaves = [tasks.submit(double, i) for i in range(50)]
        assert tasks.submit(add, *leaves).result() == 2 * sum(range(50))


def test_a_task_error_names_the_task_and_carries_its_traceback(session):
    require(session, "tasks")
    with session.tasks() as tasks:
        with pytest.raises(TaskError, match=r"fail.*ValueError: bad input 7(.|\n)*Traceback"):
            tasks.submit(fail, 7).result()
        downstream = tasks.submit(double, tasks.submit(fail, 1))
        with pytest.raises(TaskError, match="fail"):
            downstream.result()


#: the type of a TaskError's ``worker`` on the engines that say where a task ran (None on the others)
WORKER_OF_A_TASK = {"mini-tasks": int, "dask": str, "ray": str}


def test_a_task_error_says_in_its_fields_which_task_failed_and_why(session):
    require(session, "tasks")
    with session.tasks() as tasks:
        bad = tasks.submit(fail, 7)
        downstream = tasks.submit(double, bad)
        with pytest.raises(TaskError) as raised:
            bad.result()
        assert (raised.value.task, raised.value.dependency) == (bad.name, None)
        assert isinstance(raised.value.original, ValueError)   # what fail() raised, come back from the worker
        assert isinstance(raised.value.worker, WORKER_OF_A_TASK.get(session.engine, type(None)))
        with pytest.raises(TaskError) as did_not_run:
            downstream.result()
        assert (did_not_run.value.task, did_not_run.value.dependency) == (downstream.name, bad.name)
        assert str(did_not_run.value.original) == "bad input 7"


def test_retries_rerun_a_failed_task(session, tmp_path):
    require(session, "tasks")
    with session.tasks() as tasks:
        assert tasks.submit(flaky, str(tmp_path / "m1"), retries=1).result() == "second attempt"
        with pytest.raises(TaskError, match="first attempt fails"):
            tasks.submit(flaky, str(tmp_path / "m2")).result()


def test_task_latency_is_recorded_per_future(session):
    require(session, "tasks")
    session.latencies.clear()
    with session.tasks() as tasks:
        tasks.gather([tasks.submit(double, i) for i in range(10)])
    assert len(session.latencies.samples) == 10
    assert all(s >= 0 for s in session.latencies.samples)


def test_every_task_is_timed_once_when_it_ends_asked_for_or_not(session):
    """Latency is submit -> the driver hears that the task ended: one sample per task, whether its
    value is asked for or stays on a worker, and no second one when the value is fetched later."""
    require(session, "tasks")
    session.latencies.clear()
    with session.tasks() as tasks:
        first = last = tasks.submit(grow, b"")      # values too big to ride back with the news that they exist
        for _ in range(5):
            last = tasks.submit(grow, last)         # the links between are dropped, as a chain is written
        others = [tasks.submit(double, i) for i in range(3)]
        assert len(last.result()) == 6 * 20_000
        wait_until(lambda: len(session.latencies.samples) >= 9, what="a latency sample for each of the 9 tasks")
        assert tasks.gather(others) == [0, 2, 4] and len(first.result()) == 20_000
    assert len(session.latencies.samples) == 9


# ----------------------------------------------------------------- actors


class Log:
    def __init__(self, prefix=""):
        self.prefix, self.items = prefix, []

    def add(self, x):
        self.items.append(self.prefix + str(x))
        return len(self.items)

    def items_(self):
        return list(self.items)

    def forward(self, other, x):
        other.tell("add", x)            # actor -> actor, from inside a method
        return "sent"

    def explode(self):
        raise KeyError("no such thing")


def test_tells_from_one_sender_arrive_in_order(session):
    require(session, "actors")
    with session.actors() as actors:
        log = actors.spawn(Log, "n")
        for i in range(200):
            log.tell("add", i)
        assert log.call("items_").result() == [f"n{i}" for i in range(200)]


def test_named_actor_and_call_replies(session):
    require(session, "actors")
    with session.actors() as actors:
        actors.spawn(Log, name="the-log")
        ref = actors.get("the-log")
        assert actors.gather([ref.call("add", "x"), ref.call("add", "y")]) == [1, 2]


def test_a_name_is_taken_once_and_a_second_spawn_with_it_is_refused(session):
    require(session, "actors")
    with session.actors() as actors:
        first = actors.spawn(Log, name="the-log")
        with pytest.raises(ActorError, match=r"an actor named 'the-log' exists already \(<ActorRef Log .*>\); "
                                             r"names are unique"):
            actors.spawn(Log, name="the-log")
        assert actors.get("the-log").actor_id == first.actor_id
        with pytest.raises(ActorError, match=r"no actor named 'a-log'; named actors: \['the-log'\]"):
            actors.get("a-log")


def test_refs_travel_and_actors_message_each_other(session):
    require(session, "actors")
    with session.actors() as actors:
        a, b = actors.spawn(Log), actors.spawn(Log)
        assert actors.gather([a.call("forward", b, i) for i in range(20)]) == ["sent"] * 20
        # b's mailbox may still hold a's tells: ask until it has them
        wait_until(lambda: len(b.call("items_").result()) == 20, what="b to hold a's 20 tells")
        assert b.call("items_").result() == [str(i) for i in range(20)]   # one sender (a): its order is kept


def test_a_raising_method_fails_its_call_and_the_actor_goes_on(session):
    require(session, "actors")
    with session.actors() as actors:
        log = actors.spawn(Log)
        with pytest.raises(ActorError, match=r"Log.*explode.*KeyError"):
            log.call("explode").result()
        assert log.call("add", 1).result() == 1


def test_errors_teach_the_fix(session):
    require(session, "actors")
    with session.actors() as actors:
        log = actors.spawn(Log)
        with pytest.raises(ActorError, match=r"no method 'ad'.*add"):
            log.call("ad", 1).result()
        with pytest.raises(AttributeError, match=r"ref.call\('add'"):
            log.add(1)


# ----------------------------------------------------------------- streams


def ticks(source, start, end):
    """Source ``source`` delivers one event per stream second: ``(time, key)``; the 5th arrives 4 s late.

    Event ``t`` arrives at ``t``: those in ``[start, end)`` (bounds need not be whole seconds).
    """
    return [(float(t) - (4.0 if t == 5 else 0.0), f"k{(t + source) % 2}")
            for t in range(math.ceil(start), math.ceil(end))]


def test_a_stream_counts_per_window_and_drops_late_events(session):
    require(session, "dataflow")
    import functools

    flow = Dataflow("ticks")
    events = flow.stream([functools.partial(ticks, 0), functools.partial(ticks, 1)], timestamp=lambda e: e[0],
                         duration=20.0, speedup=200.0)
    events.map(lambda e: (e[1], 1)).window(10.0, operator.add, lateness=2.0).collect("counts")
    session.window_latencies.clear()
    got = sorted(session.dataflow(flow)["counts"])
    # each source: times 0..19, except the event at 5 (time 1.0 arrives after 4.0: 1 < 4 - 2, late)
    assert got == [("k0", (0.0, 9)), ("k0", (10.0, 10)), ("k1", (0.0, 9)), ("k1", (10.0, 10))]
    assert len(session.window_latencies.samples) == 4
    assert all(latency > 0 for latency in session.window_latencies.samples)   # seen after its window closed


def test_a_failing_step_in_a_stream_is_named_and_the_session_goes_on(session):
    require(session, "dataflow")
    import functools

    flow = Dataflow("bad-ticks")
    flow.stream([functools.partial(ticks, 0)], timestamp=lambda e: e[0], duration=20.0, speedup=200.0) \
        .map(lambda e: (e[1], 1 // (int(e[0]) - 7)), name="divide").window(10.0, operator.add).collect("counts")
    with pytest.raises(DataflowError, match=r"divide.*ZeroDivisionError|ZeroDivisionError.*divide"):
        session.dataflow(flow)
    good = Dataflow("good-ticks")
    good.stream([functools.partial(ticks, 1)], timestamp=lambda e: e[0], duration=10.0, speedup=200.0) \
        .map(lambda e: (e[1], 1)).window(10.0, operator.add).collect("counts")
    # times 0..9; the event at 5 (time 1.0) arrives after 4.0 and is late (lateness 0)
    assert sorted(session.dataflow(good)["counts"]) == [("k0", (0.0, 4)), ("k1", (0.0, 5))]
