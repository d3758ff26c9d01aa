"""The neutral definitions: frozen, composed from core steps, and wrong ones fail while being built."""

from __future__ import annotations

import dataclasses
import json
import operator
import pickle
import subprocess
import sys
import threading

import pytest

from engines import UnknownName, engine_names, get_engine
from engines.api import MODELS, Dataflow, DataflowError, NotAPair, TaskError
from engines.support import KINDS, Support


def test_composites_are_built_from_the_core_steps():
    flow = Dataflow("f")
    s = flow.read([[1, 2]])
    s.map(str).filter(len).key_by(len).count_by_key().collect("out")
    assert {step.op for step in flow.steps} <= {"read", "flat_map", "reduce_by_key", "join", "collect"}


def test_steps_are_frozen():
    flow = Dataflow("f")
    flow.read([[1]]).collect("out")
    with pytest.raises(dataclasses.FrozenInstanceError):
        flow.steps[0].name = "other"


@pytest.mark.parametrize("build, message", [
    (lambda f: f.read([[1]]).map("upper", name="shout"), r"step 'shout'.*map needs a callable, got str"),
    (lambda f: f.read([[1]]).reduce_by_key(None, name="sum"), r"step 'sum'.*reduce_by_key needs a callable"),
    (lambda f: f.read([[1], 7], name="raw"), r"step 'raw'.*partition 1 is a int, not a list of items"),
    (lambda f: [f.read([[1]]).collect("out"), f.read([[2]]).collect("out")], r"two sinks are named 'out'"),
    (lambda f: f.read("not a list"), r"read needs a list of partitions"),
    (lambda f: f.read([[1]]).join(Dataflow("other").read([[(1, 2)]]).map(tuple)), r"streams of this flow"),
])
def test_a_bad_definition_fails_at_build_time_naming_the_step(build, message):
    with pytest.raises(DataflowError, match=message):
        build(Dataflow("f"))


def test_an_unknown_engine_lists_the_valid_ones():
    with pytest.raises(UnknownName, match=r"unknown engine 'sprak'; choose from: serial, pool, .*spark"):
        get_engine("sprak")


def test_listing_engines_imports_no_heavy_framework():
    code = ("import sys, engines; [engines.get_engine(n).available() for n in engines.engine_names()]; "
            "print(sorted(m for m in ('pyspark', 'ray', 'dask', 'distributed', 'bytewax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_keyed_steps_check_their_items_at_run_time():
    flow = Dataflow("f")
    flow.read([["not a pair"]]).map(str.upper, name="up").reduce_by_key(operator.add, name="sum").collect("o")
    with pytest.raises(NotAPair, match=r"step 'sum' needs \(key, value\) items, got 'NOT A PAIR' \(str\)") as e:
        get_engine("serial").start().dataflow(flow)
    assert (e.value.step, e.value.item, e.value.kind) == ("sum", "'NOT A PAIR'", "str")


def test_a_read_may_be_of_pairs_and_go_straight_into_keyed_steps():
    """A read cannot know whether its items are pairs, so nothing refuses it before it runs."""
    flow = Dataflow("f")
    owners = flow.read([[("a1", "o1"), ("a2", "o2")]])
    balances = flow.read([[("a1", 5), ("a1", 2), ("a2", 1)]]).reduce_by_key(operator.add)
    balances.join(owners).collect("joined")
    assert [s.op for s in flow.steps] == ["read", "read", "reduce_by_key", "join", "collect"]


def test_partitions_may_come_from_any_iterable_and_none_is_an_empty_stream():
    flow = Dataflow("f")
    flow.read(iter([[1], (2, 3)])).collect("some")
    flow.read([]).count_by_key().collect("none")
    assert get_engine("serial").start().dataflow(flow) == {"some": [1, 2, 3], "none": []}


@pytest.mark.parametrize("build, message", [
    (lambda f: f.read([[("a", 1)]]).window(10, operator.add, name="w"), r"'w'.*window needs a timed stream"),
    (lambda f: f.stream([lambda s, e: []], timestamp=len, duration=1).map(tuple).reduce_by_key(max, name="r"),
     r"'r'.*reduce_by_key on a timed stream never ends.*window"),
    (lambda f: f.stream([42], timestamp=len, duration=1, name="s"), r"'s'.*callables source\(start, end\)"),
    (lambda f: f.stream([lambda s, e: []], timestamp=len, duration=0, name="s"), r"'s'.*duration > 0"),
])
def test_bad_streaming_definitions_fail_at_build_time(build, message):
    with pytest.raises(DataflowError, match=message):
        build(Dataflow("f"))



class HoldsALock(Exception):
    """An exception that cannot be pickled: it holds a lock."""

    def __init__(self):
        super().__init__("holds a lock")
        self.lock = threading.Lock()


def test_a_task_error_keeps_its_fields_through_pickling_and_drops_an_original_that_cannot_travel():
    error = TaskError("task f-1 raised HoldsALock: holds a lock", task="f-1", worker=3, original=HoldsALock())
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.task, copy.dependency, copy.worker, copy.original) == \
        (str(error), "f-1", None, 3, None)
    assert isinstance(error.original, HoldsALock)      # the error itself keeps it, where it was made


def test_every_engine_says_how_it_runs_each_model_with_a_support_value():
    for name in engine_names():
        supports = get_engine(name).supports
        assert set(supports) == set(MODELS), name
        assert all(isinstance(s, Support) and s.kind in KINDS for s in supports.values()), name


def test_a_support_is_read_by_its_fields_and_shown_as_its_line():
    flow, actors = get_engine("pool").supports["dataflow"], get_engine("pool").supports["actors"]
    assert (flow.kind, flow.how, flow.streams) == \
        ("emulated", "per-partition work items; shuffles regrouped on the driver", "streams as micro-batches")
    assert flow == "emulated: per-partition work items; shuffles regrouped on the driver; streams as micro-batches"
    assert (flow.label, flow.runs, flow.why) == ("emulated", True, "")
    assert (actors.runs, actors.why) == (False, "pool work items are anonymous and stateless; no actor can live there")
    assert json.loads(json.dumps(actors)) == str(actors)      # the results' manifest holds the line
    copy = pickle.loads(pickle.dumps(flow))
    assert (type(copy), copy, copy.streams) == (Support, flow, flow.streams)
    with pytest.raises(ValueError, match="one of native, emulated, unsupported"):
        Support("partial")
