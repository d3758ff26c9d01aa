"""The choice verdicts, from rows made for the purpose: they follow the medians, never the noise."""

from __future__ import annotations

import json
import random
import subprocess
import sys

from harness.choice import choices

ARCH = {"mini-data": "data parallel", "dask": "task parallel", "ray": "task parallel", "serial": "baseline"}


def rows(workload, timings: dict[str, tuple[float, float]], n=6, seed=0):
    rng = random.Random(seed)
    return [{"engine": e, "architecture": ARCH[e], "workload": workload, "size": "medium", "workers": 2,
             "repeat": r, "status": "ok", "purpose": "timed", "run_s": center * (1 + rng.uniform(-spread, spread))}
            for e, (center, spread) in timings.items() for r in range(n)]


def manifest(expect, traits=("shuffle-heavy",)):
    return {"workloads": {"w": {"expect": expect, "traits": list(traits), "judge_by": "run_s"}},
            "engines": {e: {"architecture": a} for e, a in ARCH.items()}}


def test_a_clear_winner_of_the_expected_architecture_confirms_the_hypothesis():
    got = choices(rows("w", {"mini-data": (1.0, 0.02), "dask": (1.6, 0.02)}), manifest("data parallel"))
    v = got["workloads"]["w"]
    assert (v["winner"], v["architecture"], v["significant"], v["hypothesis"]) == \
        ("mini-data", "data parallel", True, "confirmed")
    assert 1.5 < v["ratio_to_next"] < 1.7
    assert got["traits"]["shuffle-heavy"]["architecture"] == "data parallel"


def test_a_clear_loss_refutes_it():
    v = choices(rows("w", {"mini-data": (2.0, 0.02), "dask": (1.0, 0.02)}), manifest("data parallel"))["workloads"]["w"]
    assert v["winner"] == "dask" and v["hypothesis"] == "refuted" and v["significant"]


def test_within_noise_there_is_no_significant_winner_and_the_hypothesis_is_undecided():
    v = choices(rows("w", {"mini-data": (1.0, 0.3), "dask": (1.02, 0.3)}, n=5, seed=3),
                manifest("data parallel"))["workloads"]["w"]
    assert not v["significant"] and v["hypothesis"] == "undecided" and "repeats each would decide" in v["deciding"]


def test_a_faster_baseline_wins_the_workload_but_does_not_judge_the_architectures():
    v = choices(rows("w", {"serial": (0.5, 0.01), "mini-data": (1.0, 0.01), "dask": (2.0, 0.01)}),
                manifest("data parallel"))["workloads"]["w"]
    assert v["winner"] == "serial" and v["hypothesis"] == "confirmed" and "mini-data" in v["deciding"]


def test_report_on_an_empty_folder_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "harness", "report", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "no results.jsonl rows" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert not (tmp_path / "report.md").exists()


def test_the_report_writes_choice_json(tmp_path):
    from harness.report import write_report
    from harness.results import append_row, write_manifest

    write_manifest(tmp_path, {"run_id": "r", **manifest("data parallel")})
    for row in rows("w", {"mini-data": (1.0, 0.02), "dask": (1.6, 0.02)}):
        append_row(tmp_path / "results.jsonl", {**row, "unit": "items", "throughput": 1.0})
    text = write_report(tmp_path).read_text()
    assert "## Architecture choice" in text and "**confirmed**" in text
    assert json.loads((tmp_path / "choice.json").read_text())["workloads"]["w"]["winner"] == "mini-data"


def test_crossovers_say_where_a_start_up_is_paid_back_and_where_a_worker_stops_helping():
    from harness.choice import crossovers

    made = [{"engine": e, "workload": "w", "size": size, "workers": w, "repeat": 0, "status": "ok",
             "purpose": "timed", "units": u, "run_s": fixed + per_unit * u, "throughput": u / (fixed + per_unit * u) * k}
            for e, fixed, per_unit, k in (("serial", 0.0, 1e-5, 1), ("spark", 1.0, 1e-6, 1))
            for size, u in (("small", 1e4), ("medium", 1e6)) for w in (1, 2)]
    said = crossovers(made)
    assert any(line.startswith("w (1 workers): spark overtakes serial above about 111,111 units") for line in said)
    assert "w (small): on spark, going to 2 workers did not raise throughput" in said


OWN_WORKLOAD = '''
import operator
from engines.api import Dataflow
from workloads import Workload


class Tally(Workload):
    """Tally: pairs read straight into a keyed reduction."""
    name = "tally-for-choose"
    model = "dataflow"
    unit = "pairs"
    sizes = {s: {"n": n} for s, n in {"tiny": 200, "small": 2_000, "medium": 20_000, "large": 200_000}.items()}

    def generate(self, *, seed, n):
        return [[(i % 7, i) for i in range(p, n, 4)] for p in range(4)]

    def reference(self, inputs):
        out = {}
        for part in inputs:
            for k, v in part:
                out[k] = out.get(k, 0) + v
        return {"sums": list(out.items())}

    def run(self, session, inputs):
        flow = Dataflow("tally")
        flow.read(inputs).reduce_by_key(operator.add).collect("sums")
        return session.dataflow(flow)

    def units(self, inputs):
        return sum(map(len, inputs))
'''


def test_choose_runs_a_short_matrix_for_a_users_workload_and_ends_with_a_verdict(tmp_path):
    path = tmp_path / "tally.py"
    path.write_text(OWN_WORKLOAD)
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "harness", "choose", "--workload-file", str(path), "--engines",
                           "serial,mini-data,mini-tasks", "--out", str(out)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "tally-for-choose, at small with 2 workers:" in proc.stdout and "choose: " in proc.stdout
    verdict = json.loads((out / "choice.json").read_text())["workloads"]["tally-for-choose"]
    assert (verdict["size"], verdict["workers"]) == ("small", 2)
    assert {r["engine"] for r in verdict["ranking"]} == {"serial", "mini-data", "mini-tasks"}
    assert "## Architecture choice" in (out / "report.md").read_text()


def test_choose_with_no_such_file_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "harness", "choose", "--workload-file", str(tmp_path / "no.py")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "no such file" in proc.stderr and len(proc.stderr.splitlines()) == 1
