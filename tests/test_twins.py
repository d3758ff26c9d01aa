"""Every hand-written twin (`harness.twins`) gives its workload's answer, at tiny size.

A twin runs on the adapter's own running session (`conftest.running`: one
Spark JVM, one Ray cluster and one Dask cluster for the whole suite), so the
parameters are sorted by engine, in the suite's engine order, and an engine
is started once for all its twins. An engine that cannot run here is skipped
with its reason.
"""

from __future__ import annotations

import pytest

from conftest import require_engine, running
from engines import engine_names
from engines.api import DataflowError
from harness.twins import TWINS, twins_for
from workloads import get_workload

CELLS = sorted(TWINS, key=lambda cell: (engine_names().index(cell[0]), cell[1]))


@pytest.mark.parametrize(("engine", "workload"), CELLS, ids=[f"{e}-{w}" for e, w in CELLS])
def test_the_twin_gives_the_workloads_answer(engine, workload):
    require_engine(engine)
    session = running(engine)
    program = get_workload(workload)
    inputs = program.generate(seed=42, **program.sizes["tiny"])
    program.check(TWINS[(engine, workload)](session, inputs), program.reference(inputs))


def test_a_hand_written_bytewax_flow_that_fails_is_reported():
    require_engine("bytewax")
    with pytest.raises(DataflowError, match="ZeroDivisionError"):
        running("bytewax").run_native(_fails_to_build)


def test_each_engine_has_its_twins():
    assert set(twins_for("ray")) == {"wordcount", "groupby", "task-overhead", "task-chain", "ping-pong"}
    assert set(twins_for("dask")) == {"wordcount", "groupby", "task-overhead", "task-chain", "ping-pong"}
    assert twins_for("spark") == ["groupby", "wordcount"]
    assert twins_for("bytewax") == ["groupby", "wordcount"]
    for engine, workload in TWINS:
        assert workload in twins_for(engine)
        get_workload(workload)   # every twin names a real workload


def _fails_to_build(sinks):
    return 1 / 0
