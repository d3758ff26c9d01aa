"""`archbench run --fault`: the faulted repeat of each cell, its row, the fault table and figure.

Workloads written here from the README alone (a user's own workload file).
The engines' own behaviour under a killed worker is tested beside each
engine; here, what the harness makes of it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from harness.results import read_rows

SLOW_WORDS = '''
import os, threading, time
from functools import partial
from engines.api import Dataflow
from workloads import Workload

SIZES = {s: {"parts": 8} for s in ("tiny", "small", "medium", "large")}


def words(part):
    time.sleep(0.15)                      # the work of reading a partition
    return [f"w{(part * 3 + j) % 7}" for j in range(500)]


class SlowWords(Workload):
    """Eight partitions that each take a while to read; a word count over them."""
    name = "slow-words"
    model = "dataflow"
    unit = "words"
    sizes = SIZES

    def generate(self, *, seed, parts):
        return parts

    def reference(self, parts):
        counts = {}
        for p in range(parts):
            for w in words(p):
                counts[w] = counts.get(w, 0) + 1
        return {"counts": sorted(counts.items())}

    def units(self, parts):
        return 500 * parts

    def run(self, session, parts):
        flow = Dataflow("slow-words")
        flow.read([partial(words, p) for p in range(parts)]).count_by_key().collect("counts")
        return {"counts": sorted(session.dataflow(flow)["counts"])}


CALLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "calls")


class HangsThirdTime(Workload):
    """A task workload whose third run never ends (the faulted one, after two timed repeats)."""
    name = "hangs-third-time"
    model = "tasks"
    unit = "items"
    sizes = {s: {"n": 3} for s in ("tiny", "small", "medium", "large")}

    def generate(self, *, seed, n):
        return list(range(n))

    def reference(self, inputs):
        return [x + 1 for x in inputs]

    def units(self, inputs):
        return len(inputs)

    def run(self, session, inputs):
        with open(CALLS, "a") as f:
            f.write("x")
        if len(open(CALLS).read()) >= 3:
            threading.Event().wait()
        with session.tasks() as tasks:
            return tasks.gather([tasks.submit(lambda x: x + 1, x) for x in inputs])
'''


def archbench(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def workload_file(tmp_path) -> str:
    path = tmp_path / "fault_workloads.py"
    path.write_text(textwrap.dedent(SLOW_WORDS))
    return str(path)


def faulted(out: Path) -> dict[str, dict]:
    return {r["engine"]: r for r in read_rows(out) if r["purpose"] == "faulted"}


def test_a_killed_worker_is_recovered_by_mini_data_and_mini_tasks_and_tabled(tmp_path, workload_file):
    out = tmp_path / "run"
    proc = archbench("run", "--engines", "serial,mini-data,mini-tasks", "--workloads", "slow-words",
                     "--workload-file", workload_file, "--size", "tiny", "--repeat", "2", "--warmup", "0",
                     "--fault", "kill-worker", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = read_rows(out)
    assert sorted((r["engine"], r["purpose"]) for r in rows if r["purpose"] != "faulted" and r["status"] == "ok") \
        == sorted([(e, "timed") for e in ("serial", "mini-data", "mini-tasks") for _ in range(2)])
    faults = faulted(out)
    assert set(faults) == {"serial", "mini-data", "mini-tasks"}
    for engine in ("mini-data", "mini-tasks"):
        row = faults[engine]
        assert row["fault"] == "kill-worker@0.5" and row["repeat"] == 3
        assert row["fault_outcome"] == "recovered" and row["status"] == "ok", row
        assert row["fault_target"] == f"{engine} worker 1" and isinstance(row["fault_pid"], int)
        assert row["fault_at_s"] > 0 and row["recovery_s"] is not None
        assert not psutil.pid_exists(row["fault_pid"])      # it was killed, and nothing kept it
    assert faults["serial"]["fault_outcome"] == "unsupported" and "driver" in faults["serial"]["error"]
    assert not (out / "orphans.jsonl").exists()          # nothing outlived its cell
    report = (out / "report.md").read_text()
    assert "## Faults" in report and "| slow-words | tiny | mini-data | 2 | mini-data worker 1 (pid" in report
    assert "**recovered**" in report and (out / "recovery.png").exists()
    assert "with a worker killed mid-run" in report      # the choice report counts it
    choice = json.loads((out / "choice.json").read_text())
    assert choice["workloads"]["slow-words"]["faults"]["mini-data"]["outcome"] == "recovered"


def test_a_faulted_run_that_never_ends_is_recorded_as_hung(tmp_path, workload_file):
    out = tmp_path / "run"
    proc = archbench("run", "--engines", "mini-tasks", "--workloads", "hangs-third-time", "--workload-file",
                     workload_file, "--size", "tiny", "--repeat", "2", "--warmup", "0", "--timeout", "5",
                     "--fault", "kill-worker@0.3", "--out", str(out), "--no-plots")
    assert proc.returncode == 0, proc.stderr
    row = faulted(out)["mini-tasks"]
    assert (row["status"], row["fault_outcome"], row["fault"]) == ("timeout", "hung", "kill-worker@0.3")
    assert "fault still running after 5 s" in row["error"]
    assert [r["status"] for r in read_rows(out) if r["purpose"] == "timed"] == ["ok", "ok"]


@pytest.mark.parametrize("value, message", [
    ("kill-everything", "the fault is one of kill-worker"),
    ("kill-worker@2", "between 0 and 1"),
    ("kill-worker@soon", "between 0 and 1"),
])
def test_a_bad_fault_gives_one_clear_line(value, message):
    proc = archbench("run", "--fault", value, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_bytewax_under_a_fault_runs_with_its_recovery_store_resumes_and_leaves_nothing_running(tmp_path, workload_file):
    from conftest import require_engine

    require_engine("bytewax")
    out = tmp_path / "run"
    proc = archbench("run", "--engines", "bytewax", "--workloads", "slow-words", "--workload-file", workload_file,
                     "--size", "tiny", "--repeat", "2", "--warmup", "0", "--fault", "kill-worker", "--out", str(out),
                     "--no-plots")
    assert proc.returncode == 0, proc.stderr
    row = faulted(out)["bytewax"]
    assert row["fault_outcome"] == "recovered" and row["status"] == "ok", row
    assert row["fault_target"] == "bytewax worker 1" and not psutil.pid_exists(row["fault_pid"])
    settings = json.loads((out / "manifest.json").read_text())["engines"]["bytewax"]["settings"]["2"]
    assert settings["recovery"].startswith("on:") and settings["epoch_interval_s"] == 0.1   # --fault turned it on
    assert not (out / "orphans.jsonl").exists()          # nothing outlived its cell
    assert not list((out / "logs").glob("bytewax-recovery-*"))   # each run's store removed
