"""The idiomatic variants, spark-df and dask-df: named apart, on the same cluster, columnar forms only.

- every workload with a columnar form gives its reference's answer on each
  variant (`test_workloads.test_workload_matches_its_reference` runs
  ``workload.runner(engine)``: ``run_columnar`` there);
- a workload without one is ``unsupported`` with the reason, recorded by the
  harness without starting anything, and a generic Dataflow is refused;
- a frame's partitions are made on the workers; a failing partition is named;
- a variant drives its generic engine's cluster, with its settings in effect.

The variants' sessions wrap the suite's spark and dask sessions (conftest):
one JVM and one Dask cluster for the whole run.
"""

from __future__ import annotations

import os
from datetime import datetime

import pytest

from conftest import require_engine
from engines import engine_names, get_engine
from engines.adapters.columnar import check_frame
from engines.api import Dataflow, DataflowError, UnsupportedModel
from harness.results import read_rows
from test_runner import archbench
from workloads import get_workload, workload_names

VARIANTS = [n for n in engine_names() if get_engine(n).columnar]
VARIANT_OF = {"spark": "spark-df", "dask": "dask-df", "flink": "flink-sql"}


def variant(session):
    if not get_engine(session.engine).columnar:
        pytest.skip(f"{session.engine} is not a columnar variant")


# ------------------------------------------------------- without an engine running


def test_the_variants_are_named_beside_their_generic_engines():
    assert VARIANTS == ["spark-df", "dask-df", "flink-sql"]
    assert [get_engine(n).generic for n in VARIANTS] == ["spark", "dask", "flink"]
    assert [n for n in workload_names() if get_workload(n).has_columnar_form()] == ["groupby", "join", "wordcount"]


@pytest.mark.parametrize("name", VARIANTS)
def test_a_workload_without_a_columnar_form_is_unsupported_with_the_reason(name):
    engine, generic = get_engine(name), get_engine(name).generic
    groupby = get_workload("groupby")
    assert groupby.support_on(engine).startswith("native")
    assert groupby.runner(engine) == groupby.run_columnar and groupby.runner(get_engine(generic)) == groupby.run
    etl = get_workload("etl")
    assert etl.support_on(engine) == (f"unsupported: etl has no columnar form (run_columnar); {name} runs only "
                                      f"columnar forms -- the generic translation is engine {generic}")
    with pytest.raises(UnsupportedModel, match=r"etl has no columnar form"):
        etl.runner(engine)
    assert get_workload("fanout").support_on(engine) == engine.supports["tasks"]


def test_a_frame_no_engine_can_make_is_refused_saying_what_it_may_be():
    with pytest.raises(DataflowError, match=r"a frame needs a non-empty list of partitions"):
        check_frame([], {"n": int})
    with pytest.raises(DataflowError, match=r"a frame needs at least one column"):
        check_frame([[(1,)]], {})
    with pytest.raises(DataflowError, match=r"frame column 'when' has type datetime; choose from: str, int, float"):
        check_frame([[(1,)]], {"when": datetime})


@pytest.mark.parametrize("name", VARIANTS)
def test_the_harness_runs_the_columnar_form_and_records_the_rest_unsupported(tmp_path, name):
    require_engine(name)
    out = tmp_path / "run"
    archbench("run", "--engines", name, "--workloads", "groupby,etl,fanout", "--size", "tiny",
              "--workers", "2", "--repeat", "1", "--warmup", "0", "--out", str(out), "--no-plots", check=True,
              timeout=600)
    rows = {(r["engine"], r["workload"]): r for r in read_rows(out)}
    assert rows[name, "groupby"]["status"] == "ok", rows[name, "groupby"]["error"]
    assert rows[name, "etl"]["status"] == "unsupported"
    assert rows[name, "etl"]["error"].startswith("etl has no columnar form (run_columnar)")
    assert rows[name, "fanout"]["status"] == "unsupported"
    assert rows[name, "fanout"]["error"] == get_engine(name).supports["tasks"].split(": ", 1)[1]


# ------------------------------------------------------- on the suite's sessions


def test_a_generic_flow_is_refused_naming_the_engine_that_runs_it(session):
    variant(session)
    flow = Dataflow("wc")
    flow.read([["a b"]]).flat_map(str.split).count_by_key().collect("counts")
    with pytest.raises(UnsupportedModel, match=rf"does not run a generic Dataflow.*run flow 'wc' on engine "
                                               rf"'{session.generic.engine}'"):
        session.dataflow(flow)


def _pid_row():
    return [(os.getpid(),)]


def test_a_frames_partitions_are_made_on_the_workers(session):
    variant(session)
    [rows] = session.collect(session.frame([_pid_row] * 4, {"pid": int}))
    pids = {pid for (pid,) in rows}
    assert len(rows) == 4 and os.getpid() not in pids
    if session.worker_pids:
        assert pids <= set(session.worker_pids)


def _fails():
    return [("a", 1), ("b", 1 // 0)]


def _short_row():
    return [("a", 1), ("b",)]


def test_a_failing_partition_is_named(session):
    variant(session)
    with pytest.raises(DataflowError, match=r"partition 1 of a frame \(_fails at test_columnar.py:\d+\) raised "
                                            r"ZeroDivisionError"):
        session.collect(session.frame([[("x", 0)], _fails], {"key": str, "n": int}))
    with pytest.raises(DataflowError, match=r"partition 0 .*_short_row.* made the row \('b',\); each row must be "
                                            r"a tuple of 2 values: key, n"):
        session.collect(session.frame([_short_row], {"key": str, "n": int}))


def test_the_variant_drives_its_generic_engines_cluster_with_its_settings(session):
    variant(session)
    generic = session.generic
    assert session.engine == VARIANT_OF[generic.engine] and session.workers == generic.workers
    assert generic.settings.items() <= session.settings.items()
    if session.frames == "spark":
        assert session.spark.sparkContext is generic.sc
        for key in ("spark.sql.adaptive.enabled", "spark.sql.execution.arrow.pyspark.enabled",
                    "spark.sql.autoBroadcastJoinThreshold", "spark.sql.shuffle.partitions"):
            assert session.spark.conf.get(key) == session.settings[key]
    elif session.frames == "flink-sql":   # the queries run in the flink session's job process
        assert session.collect(session.frame([[(1,)]], {"n": int})) == [[(1,)]]
        assert generic.jobs[-1]["wall"] > 0
    else:
        assert session.client is generic.client
        assert session.settings["dataframe.shuffle.method"] == "p2p"


def test_dask_df_connects_to_a_running_cluster(session):
    """The existing-cluster option: a client of the suite's own cluster, which outlives it."""
    if session.engine != "dask-df":
        pytest.skip(f"{session.engine}: this tests an option of dask-df")
    address = session.generic.settings["scheduler"]
    groupby = get_workload("groupby")
    inputs = groupby.generate(seed=3, **groupby.sizes["tiny"])
    with get_engine("dask-df").start(workers=2, address=address) as other:
        assert other.settings["cluster"] == "existing scheduler" and other.client is not session.client
        groupby.check(groupby.run_columnar(other, inputs), groupby.reference(inputs))
    assert session.client.scheduler_info()["workers"]  # closing it left the cluster running
