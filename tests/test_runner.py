"""The matrix runner as a user meets it: the CLI in a subprocess, real cells.

Workloads that crash, hang, answer wrongly or interrupt the run are written
as workload files, the way a user plugs in their own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from engines import get_engine
from harness.results import FIELDS, read_rows

HEADER = '''
import os, signal, threading
from workloads import Workload
from workloads.wordcount import WordCount

SIZES = {s: {"n": 3} for s in ("tiny", "small", "medium", "large")}

class Base(Workload):
    model = "tasks"
    unit = "items"
    sizes = SIZES
    def generate(self, *, seed, n):
        return list(range(n))
    def reference(self, inputs):
        return [2 * x for x in inputs]
    def units(self, inputs):
        return len(inputs)
    def run(self, session, inputs):
        with session.tasks() as tasks:
            return tasks.gather([tasks.submit(lambda x: 2 * x, x) for x in inputs])
'''


def archbench(*args, check=False, timeout=180) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"archbench {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def workload_file(tmp_path: Path, body: str) -> str:
    path = tmp_path / "my_workloads.py"
    path.write_text(HEADER + textwrap.dedent(body))
    return str(path)


def statuses(out: Path) -> dict[tuple, str]:
    return {(r["engine"], r["workload"], r["repeat"]): r["status"] for r in read_rows(out)}


def test_a_quick_matrix_records_every_field_and_draws_plots(tmp_path):
    out = tmp_path / "run"
    archbench("run", "--engines", "serial,pool", "--workloads", "wordcount,fanout", "--size", "tiny",
              "--workers", "2", "--repeat", "2", "--warmup", "0", "--out", str(out), check=True)
    rows = read_rows(out)
    assert len(rows) == 2 * 2 * 2
    assert all(set(r) == set(FIELDS) and r["status"] == "ok" for r in rows)
    assert all(r["run_s"] > 0 and r["throughput"] > 0 and r["peak_rss_bytes"] > 0 for r in rows)
    fanout = [r for r in rows if r["workload"] == "fanout"]
    assert all(r["latency_count"] == 16 + 4 + 1 for r in fanout)     # one sample per task Future
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["machine"]["cores_logical"] >= 1 and manifest["packages"]["cloudpickle"]
    assert manifest["engines"]["pool"]["settings"]["2"]["workers"] == 2
    started = [json.loads(line) for line in (out / "sessions.jsonl").read_text().splitlines()]
    assert sorted((s["engine"], s["workload"]) for s in started) == \
        [("pool", "fanout"), ("pool", "wordcount"), ("serial", "fanout"), ("serial", "wordcount")]
    assert {s["engine"]: s["settings"]["workers"] for s in started} == {"pool": 2, "serial": 1}   # serial is one process
    assert all(s["startup_s"] >= 0 for s in started)
    for name in ("throughput.png", "latency.png", "report.md"):
        assert (out / name).stat().st_size > 0


def test_crash_hang_and_wrong_are_recorded_and_the_matrix_goes_on(tmp_path):
    path = workload_file(tmp_path, '''
        class Crash(Base):
            name = "t-crash"
            def run(self, session, inputs):
                os._exit(3)

        class Hang(Base):
            name = "t-hang"
            def run(self, session, inputs):
                threading.Event().wait()

        class Wrong(Base):
            name = "t-wrong"
            def run(self, session, inputs):
                return [2 * x + (x == 1) for x in inputs]
    ''')
    out = tmp_path / "run"
    proc = archbench("run", "--engines", "serial", "--workloads", "t-crash,t-hang,t-wrong,fanout",
                     "--workload-file", path, "--size", "tiny", "--repeat", "2", "--warmup", "0",
                     "--timeout", "5", "--out", str(out), "--no-plots")
    assert proc.returncode == 1            # a wrong result makes the run fail loudly
    rows = {r["workload"]: r for r in read_rows(out)}
    assert rows["t-crash"]["status"] == "failed" and "code 3" in rows["t-crash"]["error"]
    assert rows["t-hang"]["status"] == "timeout" and "repeat 0 still running after 5 s" in rows["t-hang"]["error"]
    assert rows["t-wrong"]["status"] == "wrong" and "at [1]: got 3, want 2" in rows["t-wrong"]["error"]
    assert rows["fanout"]["status"] == "ok"            # cells after the bad ones still ran
    assert Counter(r["workload"] for r in read_rows(out)) == {"t-crash": 2, "t-hang": 2, "t-wrong": 2, "fanout": 2}
    assert "WRONG" in proc.stderr or "wrong" in proc.stdout


def test_an_interrupted_run_resumes_without_losing_or_repeating_rows(tmp_path):
    marker = tmp_path / "interrupted-once"
    path = workload_file(tmp_path, f'''
        class Interrupt(Base):
            name = "t-interrupt"
            runs = 0
            def run(self, session, inputs):
                Interrupt.runs += 1
                if Interrupt.runs == 3 and not os.path.exists({str(marker)!r}):
                    open({str(marker)!r}, "w").close()
                    os.kill(os.getppid(), signal.SIGINT)      # Ctrl-C in the runner, mid-cell
                    threading.Event().wait()
                return super().run(session, inputs)
    ''')
    out = tmp_path / "run"
    first = archbench("run", "--engines", "serial,pool", "--workloads", "t-interrupt", "--workload-file", path,
                      "--size", "tiny", "--repeat", "4", "--warmup", "0", "--out", str(out), "--no-plots")
    assert first.returncode == 130 and "--resume" in first.stderr
    before = read_rows(out)
    assert [(r["engine"], r["repeat"]) for r in before] == [("serial", 0), ("serial", 1)]
    again = archbench("run", "--out", str(out), "--resume", "--no-plots")
    assert again.returncode == 0, again.stderr
    after = read_rows(out)
    assert after[:2] == before                                    # nothing lost or rewritten
    keys = [(r["engine"], r["repeat"]) for r in after]
    assert sorted(keys) == sorted({(e, r) for e in ("serial", "pool") for r in range(4)})  # each once
    assert all(r["status"] == "ok" for r in after)


def test_unsupported_and_unavailable_cells_say_why(tmp_path, monkeypatch):
    """spark is made unavailable for certain: without pyspark, or (with it) pointed at a Java that is not there."""
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-java"))     # the runner inherits it
    available, why = get_engine("spark").available()
    assert not available and why
    out = tmp_path / "run"
    archbench("run", "--engines", "pool,mini-actors,spark", "--workloads", "actor-pipeline", "--size", "tiny",
              "--repeat", "1", "--out", str(out), "--no-plots", check=True)
    rows = {r["engine"]: r for r in read_rows(out)}
    assert rows["pool"]["status"] == "unsupported" and "stateless" in rows["pool"]["error"]
    assert rows["mini-actors"]["status"] == "ok", rows["mini-actors"]["error"]     # a core engine: always here
    assert rows["spark"]["status"] == "unavailable" and rows["spark"]["error"] == why


@pytest.mark.parametrize("args, message", [
    (["run", "--engines", "sparky"], "unknown engine 'sparky'; choose from: serial, pool"),
    (["run", "--workloads", "wordcont"], "unknown workload 'wordcont'; choose from:"),
    (["run", "--size", "huge"], "--size 'huge': choose from tiny, small, medium, large"),
    (["run", "--workers", "0"], "--workers '0': give positive whole numbers"),
    (["run", "--repeat", "x"], "argument --repeat: invalid int value: 'x'"),
    (["run", "--resume"], "--resume needs --out DIR"),
    (["run", "--engine-option", "dask"], "write ENGINE.KEY=VALUE"),
    (["run", "--workload-file", "/nonexistent/w.py"], "no such file"),
    (["plot", "/nonexistent/run"], "has no results.jsonl rows to plot"),
])
def test_bad_input_gives_one_clear_line(args, message):
    proc = archbench(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_a_finished_run_folder_is_not_overwritten(tmp_path):
    out = tmp_path / "run"
    args = ["run", "--engines", "serial", "--workloads", "fanout", "--size", "tiny", "--repeat", "1",
            "--out", str(out), "--no-plots"]
    archbench(*args, check=True)
    proc = archbench(*args)
    assert proc.returncode == 2 and "already has results; add --resume" in proc.stderr


def test_a_users_own_classes_in_results_check_ok_in_every_cell(tmp_path):
    path = workload_file(tmp_path, '''
        class Point:
            def __init__(self, x):
                self.x = x
            def __eq__(self, other):
                return type(other) is Point and other.x == self.x
            def __hash__(self):
                return hash(self.x)
            def __repr__(self):
                return f"Point({self.x})"

        def point(x):
            return Point(x)

        class Points(Base):
            name = "t-points"
            def reference(self, inputs):
                return [Point(x) for x in inputs]
            def run(self, session, inputs):
                with session.tasks() as tasks:
                    return tasks.gather([tasks.submit(point, x) for x in inputs])
    ''')
    out = tmp_path / "run"
    archbench("run", "--engines", "serial,pool", "--workloads", "t-points", "--workload-file", path,
              "--size", "tiny", "--repeat", "1", "--out", str(out), "--no-plots", check=True)
    assert {(r["engine"], r["status"]) for r in read_rows(out)} == {("serial", "ok"), ("pool", "ok")}


def test_the_report_names_the_fastest_engine_among_cells_of_one_size(tmp_path):
    """A tiny cell is not 'fastest' over a small one: engines are compared at the same size and workers."""
    from harness.report import write_report
    from harness.results import append_row, new_row

    for engine, size, run_s in (("serial", "tiny", 0.1), ("pool", "tiny", 0.2), ("serial", "small", 2.0),
                                ("pool", "small", 1.0)):
        append_row(tmp_path / "results.jsonl", new_row(engine=engine, workload="wc", size=size, workers=2, repeat=0,
                                                       status="ok", run_s=run_s, unit="words"))
    lines = write_report(tmp_path).read_text().splitlines()
    fastest = sorted(line.split("|")[1:3] for line in lines if "(fastest)" in line)
    assert [[e.strip(), s.strip()] for e, s in fastest] == [["pool", "small"], ["serial", "tiny"]]


def test_archbench_engines_shows_each_models_support_and_the_notes_of_those_not_plain_native():
    out = archbench("engines", check=True).stdout
    pool = next(line for line in out.splitlines() if line.startswith("pool "))
    assert pool.split()[3:6] == ["emulated", "native", "unsupported"]
    mini_data = next(line for line in out.splitlines() if line.startswith("mini-data "))
    assert "native; streams natively (windows kept open on the workers as events flow)" in mini_data
    notes = out.split("\npool: ", 1)[1].split("\nmini-data: ", 1)[0].splitlines()[1:]
    assert notes == ["    dataflow emulated: per-partition work items; shuffles regrouped on the driver; "
                     "streams as micro-batches",
                     "    actors unsupported: pool work items are anonymous and stateless; no actor can live there"]
