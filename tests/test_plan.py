"""The compiled plan: what `engines.plan.compile` makes of a flow, and that every engine runs that plan."""

from __future__ import annotations

import operator
import pickle

import pytest

from engines import get_engine
from engines.api import Dataflow, DataflowError, Session
from engines.plan import InProcess, Pipe, Plan, compile, evaluate


def branchy() -> Dataflow:
    flow = Dataflow("branchy")
    words = flow.read([["a b a"], ["b c"]], name="lines").flat_map(str.split, name="words")
    counts = words.count_by_key(name="counts")
    counts.collect("n")
    counts.filter(lambda kv: kv[1] > 1, name="several").collect("many")
    words.map(str.upper, name="up").collect("upper")
    return flow


def test_narrow_chains_fuse_into_the_pipe_of_the_next_stage_and_a_branch_is_a_shared_stage():
    plan = compile(branchy())
    assert [(s.op, s.name, s.shared) for s in plan.stages] == [
        ("read", "lines", False), ("narrow", "words", True), ("reduce_by_key", "counts", True),
        ("collect", "n", False), ("collect", "many", False), ("collect", "upper", False)]
    assert plan.stage("words").inputs == (Pipe("lines", (branchy().step("words"),)),)
    assert [step.name for step in plan.stage("counts").inputs[0].ops] == ["count_by_key_1"]
    assert plan.stage("counts").inputs[0].stage == "words"
    assert [step.name for step in plan.stage("many").inputs[0].ops] == ["several"]
    assert plan.sinks == ["n", "many", "upper"] and not plan.streaming


def test_a_plan_is_frozen_plain_data_that_pickles():
    plan = compile(branchy())
    with pytest.raises(AttributeError):
        plan.stages = ()
    again = pickle.loads(pickle.dumps(compile(Dataflow("empty"))))
    assert isinstance(again, Plan) and again.stages == ()


def test_in_a_stream_branches_are_not_held_and_a_read_is_refused_naming_the_step():
    flow = Dataflow("s")
    events = flow.stream([lambda a, b: []], timestamp=lambda e: e, duration=1.0).map(lambda e: (e, 1), name="ones")
    events.collect("raw")
    events.window(1.0, operator.add, name="win").collect("win_out")
    plan = compile(flow)
    assert plan.streaming and plan.source.name == "stream_1" and plan.window.name == "win"
    assert [s.op for s in plan.stages] == ["stream", "collect", "window", "collect"]
    assert [step.name for step in plan.stage("raw").inputs[0].ops] == ["ones"]
    assert [step.name for step in plan.window.inputs[0].ops] == ["ones"]

    flow.read([[1]], name="table")
    with pytest.raises(DataflowError, match="step 'table': a streaming flow takes no batch read"):
        compile(flow)


def test_dataflow_takes_only_a_dataflow_on_every_engine():
    with get_engine("serial").start(workers=1) as session:
        with pytest.raises(DataflowError, match="session.dataflow takes an engines.api.Dataflow, got list"):
            session.dataflow([("read", [[1]])])


def test_session_dataflow_hands_the_engine_the_compiled_plan_and_routes_a_stream_to_micro_batches():
    plans: list[Plan] = []

    class Recording(Session):
        engine = "recording"

        def run_plan(self, plan):
            plans.append(plan)
            return evaluate(plan, InProcess(), buckets=1)

    session = Recording(1, {"dataflow": "native"})
    assert sorted(session.dataflow(branchy())["n"]) == [("a", 2), ("b", 2), ("c", 1)]
    assert len(plans) == 1 and [str(s) for s in plans[0].stages] == [str(s) for s in compile(branchy()).stages]

    flow = Dataflow("s")
    flow.stream([lambda a, b: [t for t in range(4) if a <= t < b]], timestamp=float, duration=4.0, speedup=400.0) \
        .map(lambda t: ("k", 1)).window(2.0, operator.add).collect("w")
    plans.clear()
    assert sorted(session.dataflow(flow)["w"]) == [("k", (0.0, 2)), ("k", (2.0, 2))]
    assert plans and all(not plan.streaming for plan in plans)   # only the batches reached the engine
