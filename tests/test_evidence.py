"""The decision figures: drawn where the run has the data, and where it has not, the reason why."""

from __future__ import annotations

from harness.evidence import draw_evidence, growth_exponent
from harness.results import append_row


def row(engine, size, workers, run_s, units, repeat=0):
    return {"engine": engine, "workload": "w", "size": size, "workers": workers, "repeat": repeat, "status": "ok",
            "purpose": "timed", "run_s": run_s, "units": units, "throughput": units / run_s, "unit": "items",
            "startup_s": 0.5, "load_s": 0.1, "check_s": 0.01}


def test_a_run_of_one_size_and_one_worker_count_draws_what_it_can_and_says_why_not_the_rest(tmp_path):
    rows = [row("serial", "small", 2, 1.0, 1000, r) for r in range(3)]
    paths, skipped = draw_evidence(tmp_path, rows)
    assert [p.name for p in paths] == ["phases.png"]
    assert "--workers 1,2" in skipped["scaling.png"] and "--size" in skipped["growth.png"]
    assert "latency-cdf.png" in skipped


def test_sizes_workers_and_samples_give_every_figure(tmp_path):
    rows = [row(e, s, w, t * (2 if w == 1 else 1.1), u) for e in ("serial", "mini-data")
            for s, u, t in (("tiny", 1e3, 0.01), ("small", 1e5, 1.0)) for w in (1, 2)]
    (tmp_path / "latencies").mkdir()
    for r in rows:
        append_row(tmp_path / "latencies" / f"w-{r['size']}-{r['engine']}-w{r['workers']}.jsonl",
                   {"repeat": 0, "samples": [0.001, 0.002, 0.004]})
    paths, skipped = draw_evidence(tmp_path, rows)
    assert sorted(p.name for p in paths) == ["growth.png", "latency-cdf.png", "phases.png", "scaling.png"]
    assert skipped == {}
    assert all(p.stat().st_size > 10_000 for p in paths)


def test_the_growth_exponent_is_the_log_log_slope():
    assert round(growth_exponent([1e3, 1e4, 1e5], [0.5, 0.5, 0.5]), 2) == 0.0      # start-up bound: flat
    assert round(growth_exponent([1e3, 1e4], [0.01, 1.0]), 2) == 2.0


def test_the_throughput_figure_marks_serial_times_workers_for_each_worker_count_above_one(tmp_path):
    from harness.plot import _panels, plot_throughput, serial_ceilings

    rows = [row("serial", "small", w, 2.0, 1000, r) for w in (1, 2, 4) for r in range(3)]
    rows += [row("mini-data", "small", w, 2.0 / w * 1.2, 1000) for w in (1, 2, 4)]
    rows += [{**row("serial", "small", 4, 1.0, 1000, 9), "status": "failed", "throughput": None}]
    [entries] = _panels(rows).values()
    assert serial_ceilings(entries) == {2: 1000.0, 4: 2000.0}    # 500 items/s × N
    without = [e for e in entries if e[0] != "serial"]
    assert serial_ceilings(without) == {}
    assert plot_throughput(rows, tmp_path / "throughput.png").stat().st_size > 0


def test_serial_at_one_worker_count_sets_the_line_for_the_others():
    from harness.plot import _panels, serial_ceilings

    rows = [row("serial", "small", 1, 4.0, 1000), row("mini-data", "small", 2, 1.0, 1000)]
    [entries] = _panels(rows).values()
    assert serial_ceilings(entries) == {2: 500.0}


def test_no_line_where_serial_mostly_waited_as_a_paced_stream_does():
    from harness.plot import _panels, serial_ceilings

    paced = [{**row("serial", "small", 2, 0.5, 1000, r), "cpu_s": 0.23} for r in range(3)]
    busy = [{**row("serial", "small", 2, 0.5, 1000, r), "cpu_s": 0.5} for r in range(3)]
    others = [row("mini-data", "small", 2, 0.5, 1000)]
    assert serial_ceilings(next(iter(_panels(paced + others).values()))) == {}
    assert serial_ceilings(next(iter(_panels(busy + others).values()))) == {2: 4000.0}
