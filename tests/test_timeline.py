"""Traces as files and pictures: `archbench run --trace`, the Chrome trace format, `archbench timeline`."""

from __future__ import annotations

import json
import operator
import subprocess
import sys
from pathlib import Path

import pytest

from engines import get_engine
from engines.api import Dataflow
from engines.tracing import moved, send, span
from harness.traces import chrome_trace, read_trace, utilisation, write_trace


def archbench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=600)


def assert_valid_chrome_trace(path: Path) -> dict:
    """The format Perfetto opens: X events on named lanes, flow starts matched by finishes, bytes in args."""
    data = json.loads(path.read_text())
    events = data["traceEvents"]
    named = {(e["pid"], e["tid"]) for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    processes = {e["pid"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    for e in events:
        assert e["ph"] in ("M", "X", "s", "f"), e
        if e["ph"] in ("X", "s", "f"):
            assert (e["pid"], e["tid"]) in named and e["pid"] in processes, e
        if e["ph"] == "X":
            assert e["dur"] >= 0 and e["cat"] and e["name"], e
    starts = {e["id"]: e for e in events if e["ph"] == "s"}
    finishes = {e["id"]: e for e in events if e["ph"] == "f"}
    assert starts.keys() == finishes.keys()
    assert all(starts[i]["args"]["bytes"] == finishes[i]["args"]["bytes"] >= 0 for i in starts)
    return data


def test_a_trace_file_keeps_every_byte_the_mini_data_exchange_sent(tmp_path):
    flow = Dataflow("shuffle")
    flow.read([[(i % 50, 1) for i in range(5_000)] for _ in range(4)]).reduce_by_key(operator.add).collect("out")
    with get_engine("mini-data").start(workers=2) as session:
        session.trace_start()
        session.dataflow(flow)
        trace = session.trace_stop()
    between = {pair: n for pair, n in moved(trace.rows).items() if pair[0] != pair[1] and "driver" not in pair}
    assert set(between) == {("worker 0", "worker 1"), ("worker 1", "worker 0")}  # the shuffle crossed the mesh
    start = min(r.get("start", r.get("time")) for r in trace.rows)
    path = write_trace(tmp_path / "t.json", trace.rows, {"engine": "mini-data"}, start)
    assert_valid_chrome_trace(path)
    flows: dict = {}
    for source, target, _, nbytes in read_trace(path)["flows"]:
        flows[(source, target)] = flows.get((source, target), 0) + nbytes
    assert {pair: flows[pair] for pair in between} == between


def test_lanes_of_one_process_share_its_pid_and_the_driver_has_its_own():
    rows = [span("worker 0", "a", "compute", 1.0, 2.0, pid=11), span("worker 1", "b", "compute", 1.0, 2.0, pid=11),
            span("worker 2", "c", "compute", 1.0, 2.0, pid=12), send("worker 2", "driver", 10, 2.0)]
    events = chrome_trace(rows, {}, start=1.0)["traceEvents"]
    pid = {e["args"]["name"]: e["pid"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert pid["worker 0"] == pid["worker 1"] != pid["worker 2"] and pid["driver"] == 0


def test_utilisation_shares_add_up_and_idle_is_what_no_span_covers():
    rows = [span("worker 0", "a", "compute", 0.0, 1.0), span("worker 0", "b", "exchange", 0.5, 1.5),
            span("worker 1", "c", "schedule", 0.0, 0.5)]
    use = utilisation(rows, 0.0, 2.0)
    assert use["busy"] == {"worker 0": 0.75, "worker 1": 0.25}
    assert sum(use["shares"].values()) == pytest.approx(1.0)
    assert use["shares"]["idle"] == pytest.approx(0.5) and use["shares"]["exchange"] == pytest.approx(0.125)


def test_run_trace_then_timeline_draws_every_figure(tmp_path):
    out = tmp_path / "run"
    run = archbench("run", "--engines", "serial,pool,mini-data,mini-tasks,mini-actors", "--workloads",
                    "wordcount,fanout,actor-pipeline", "--size", "tiny", "--repeat", "1", "--warmup", "0",
                    "--trace", "--out", str(out), "--no-plots")
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    traced = [r for r in rows if r["purpose"] == "traced"]
    ok_cells = {(r["engine"], r["workload"]) for r in rows if r["purpose"] == "timed" and r["status"] == "ok"}
    assert {(r["engine"], r["workload"]) for r in traced} == ok_cells
    for row in traced:
        assert row["status"] == "ok" and row["trace_overhead"] > 0
        data = assert_valid_chrome_trace(out / row["trace_file"])
        assert data["otherData"]["engine"] == row["engine"] and data["otherData"]["source"]
        assert sum(row["time_shares"].values()) == pytest.approx(1.0, abs=1e-3)
        if row["engine"] != "serial":
            assert len(row["busy_fraction"]) >= 2, row     # a lane per worker
    drawn = archbench("timeline", str(out))
    assert drawn.returncode == 0, drawn.stderr
    names = {Path(line.split()[-1]).name for line in drawn.stdout.splitlines()}
    for workload in ("wordcount", "fanout", "actor-pipeline"):
        assert f"timeline-{workload}-tiny.png" in names and f"exchange-{workload}-tiny.png" in names
    assert {f"timeline-{Path(r['trace_file']).stem}.png" for r in traced} <= names
    assert all((out / name).stat().st_size > 10_000 for name in names)


def test_timeline_of_a_run_without_traces_says_how_to_make_them(tmp_path):
    drawn = archbench("timeline", str(tmp_path))
    assert drawn.returncode == 2 and "run with --trace" in drawn.stderr
