"""`archbench fairness`: adapter ÷ hand-written, and a verdict that names its reason."""

from __future__ import annotations

import json

import pytest

from harness import fairness
from harness.results import read_rows


def rows(engine, workload, pairs):
    return [{"engine": engine, "workload": workload, "size": "small", "workers": 2, "repeat": r, "form": form,
             "status": "ok", "run_s": t} for r, (a, b) in enumerate(pairs) for form, t in (("adapter", a), ("twin", b))]


def test_a_ratio_within_the_limit_is_fair_and_above_it_unfair_unless_explained(monkeypatch):
    monkeypatch.setitem(fairness.REASONS, ("spark", "groupby"), "Python rows through the JVM")
    summary = {(e["engine"], e["workload"]): e for e in fairness.summarise(
        rows("ray", "wordcount", [(1.0, 0.95), (1.1, 1.0), (1.0, 1.0)])
        + rows("dask", "wordcount", [(2.0, 1.0), (2.2, 1.0), (2.1, 1.0)])
        + rows("spark", "groupby", [(3.0, 1.0), (3.0, 1.0), (3.0, 1.0)]))}
    assert summary[("ray", "wordcount")]["verdict"] == "fair" and summary[("ray", "wordcount")]["ratio"] == 1.05
    assert summary[("dask", "wordcount")]["verdict"] == "unfair" and summary[("dask", "wordcount")]["ratio"] == 2.1
    assert summary[("spark", "groupby")]["verdict"] == "explained"
    assert "Python rows through the JVM" in fairness.table(list(summary.values()))


def test_a_failed_form_gives_no_ratio_and_says_why():
    bad = rows("ray", "groupby", [(1.0, 1.0)])
    bad[1].update(status="wrong", error="differs")
    [entry] = fairness.summarise(bad)
    assert entry["ratio"] is None and entry["verdict"] == "failed" and "twin: wrong differs" in entry["why"]


def test_a_cell_runs_both_forms_alternately_and_checks_both(tmp_path, monkeypatch):
    from workloads import get_workload

    wordcount = get_workload("wordcount")
    monkeypatch.setitem(__import__("harness.twins", fromlist=["TWINS"]).TWINS, ("serial", "wordcount"),
                        lambda session, inputs: wordcount.run(session, inputs))
    spec = dict(engine="serial", workload="wordcount", size="tiny", workers=1, repeat=2, seed=42, out=str(tmp_path))
    assert fairness.run_cell(spec) == 0
    written = read_rows(tmp_path / "fairness.jsonl")
    assert [(r["repeat"], r["form"], r["status"]) for r in written] == \
        [(0, "adapter", "ok"), (0, "twin", "ok"), (1, "adapter", "ok"), (1, "twin", "ok")]
    fairness.write_summary(tmp_path)
    assert json.loads((tmp_path / "fairness.json").read_text())["cells"][0]["repeats"] == 2
    from harness.report import fairness_section

    assert fairness_section(tmp_path)[0] == "## Fairness"


def test_a_stamped_twin_gives_the_stamps_own_cost():
    cell = rows("ray", "task-overhead", [(1.3, 1.0), (1.2, 1.0), (1.4, 1.0)])
    cell += [{**row, "form": "stamped", "run_s": t} for row, t in zip(cell[1::2], (1.2, 1.25, 1.1))]
    [entry] = fairness.summarise(cell)
    assert entry["ratio"] == 1.3 and entry["stamp_ratio"] == 1.2
    assert "| 1.20 |" in fairness.table([entry])
    [plain] = fairness.summarise(rows("ray", "wordcount", [(1.0, 1.0)]))
    assert plain["stamp_ratio"] is None and "| - |" in fairness.table([plain])
