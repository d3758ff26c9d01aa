"""Keyed steps straight on a read of pairs, on every engine that runs dataflows.

A ``read`` cannot know whether its items are ``(key, value)`` pairs -- a
table read from storage usually is one -- so nothing refuses a keyed step
on it before the flow runs. An item that turns out not to be a pair fails
at run time with one error, `NotAPair`, in the same words on every engine.
"""

from __future__ import annotations

import functools
import math
import operator

import pytest

from conftest import require
from engines.api import Dataflow, DataflowError, NotAPair


def test_reduce_by_key_on_a_read_of_pairs(session):
    require(session, "dataflow")
    flow = Dataflow("sums")
    flow.read([[("a", 1), ("b", 2)], [("a", 3)], []]).reduce_by_key(operator.add).collect("sums")
    assert sorted(session.dataflow(flow)["sums"]) == [("a", 4), ("b", 2)]


def test_join_of_a_reduced_stream_with_a_read_table(session):
    require(session, "dataflow")
    flow = Dataflow("owners")
    owners = flow.read([[("a1", "o1"), ("a2", "o2")], [("a3", "o3")]])
    balances = flow.read([[("a1", 5), ("a2", 1)], [("a1", 2), ("a9", 4)]]).reduce_by_key(operator.add)
    balances.join(owners).collect("joined")
    assert sorted(session.dataflow(flow)["joined"]) == [("a1", (7, "o1")), ("a2", (1, "o2"))]


def test_join_of_two_reads(session):
    require(session, "dataflow")
    flow = Dataflow("two-tables")
    left = flow.read([[(1, "a"), (1, "b")], [(2, "c")]])
    left.join(flow.read([[(1, "x")], [(3, "z")]])).collect("pairs")
    assert sorted(session.dataflow(flow)["pairs"]) == [(1, ("a", "x")), (1, ("b", "x"))]


def test_count_by_key_on_a_read(session):
    require(session, "dataflow")
    flow = Dataflow("counts")
    rows = flow.read([[("a", 1), ("b", 2)], [("a", 3)]])
    rows.count_by_key(key=operator.itemgetter(0)).collect("by_key")
    flow.read([["x", "y"], ["x"]]).count_by_key().collect("words")
    out = session.dataflow(flow)
    assert sorted(out["by_key"]) == [("a", 2), ("b", 1)]
    assert sorted(out["words"]) == [("x", 2), ("y", 1)]


def pairs_at(key: str, start: float, end: float) -> list:
    """One ``(key, event time)`` pair per stream second in ``[start, end)``."""
    return [(key, float(t)) for t in range(math.ceil(start), math.ceil(end))]


def test_window_straight_on_a_stream_of_pairs(session):
    require(session, "dataflow")
    flow = Dataflow("pair-ticks")
    events = flow.stream([functools.partial(pairs_at, "k")], timestamp=operator.itemgetter(1),
                         duration=20.0, speedup=200.0)
    events.window(10.0, max).collect("latest")
    assert sorted(session.dataflow(flow)["latest"]) == [("k", (0.0, 9.0)), ("k", (10.0, 19.0))]


# ---------------------------------------------------------------- not pairs


def _raised(session, flow) -> DataflowError:
    with pytest.raises(DataflowError) as caught:
        session.dataflow(flow)
    return caught.value


@pytest.mark.parametrize("keyed", ["reduce_by_key", "count_by_key", "join_left", "join_right"])
def test_an_item_that_is_not_a_pair_is_named_in_the_same_words_everywhere(session, keyed):
    require(session, "dataflow")
    flow = Dataflow("not-pairs")
    bad = flow.read([["not a pair"]]).map(str.upper)
    good = flow.read([[("k", 1)]])
    if keyed == "reduce_by_key":
        bad.reduce_by_key(operator.add, name="keyed").collect("out")
    elif keyed == "count_by_key":   # each item its own key, then a keyed step whose items are not pairs
        bad.map(str.lower).count_by_key().map(operator.itemgetter(0)).reduce_by_key(operator.add, name="keyed") \
            .collect("out")
    elif keyed == "join_left":
        bad.join(good, name="keyed").collect("out")
    else:
        good.join(bad, name="keyed").collect("out")
    item = "not a pair" if keyed == "count_by_key" else "NOT A PAIR"
    error = _raised(session, flow)
    assert str(error).splitlines()[0] == str(NotAPair("keyed", item))


def test_an_event_that_is_not_a_pair_is_named_by_its_window(session):
    require(session, "dataflow")
    flow = Dataflow("not-pair-ticks")
    flow.stream([lambda start, end: [float(t) for t in range(math.ceil(start), math.ceil(end))]], timestamp=float,
                duration=5.0, speedup=200.0).window(10.0, max, name="w").collect("out")
    error = _raised(session, flow)
    assert str(error).splitlines()[0].startswith("step 'w' needs (key, value) items, got ")
