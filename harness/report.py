"""Reports from a results folder: a terminal summary and ``report.md``.

Only rows are read -- never an engine -- so a report can be rebuilt from a
committed run anywhere. A cell's figure is the median of its ``ok``
repeats; a ``wrong`` cell is never averaged in, it is listed loudly.

    >>> rows = [{"engine": "serial", "workload": "wc", "size": "tiny", "workers": 1, "repeat": 0,
    ...          "status": "ok", "run_s": 0.5, "throughput": 10.0, "unit": "words",
    ...          "latency_p50_s": None, "latency_p99_s": None, "startup_s": 0.0,
    ...          "peak_rss_bytes": 1e8, "cpu_s": 0.5, "error": None}]
    >>> print(summary_table(rows))  # doctest: +NORMALIZE_WHITESPACE
    workload  size  engine  workers  status  run_s (median)  throughput     latency p50
    wc        tiny  serial  1        1 ok    0.5             10 words/s     -
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from harness.faults import fault_section
from harness.matrix import FULL_MATRIX
from harness.results import cells, fmt, fmt_seconds, median_of, read_manifest, read_rows, status_of, timed


def _table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *body])


def summary_table(rows: list[dict]) -> str:
    """One line per cell: status, median run time, throughput, median latency."""
    body = []
    for (engine, workload, size, workers), group in cells(timed(rows)).items():
        unit = group[0].get("unit") or "units"
        body.append([workload, size, engine, str(workers), status_of(group), fmt(median_of(group, "run_s")),
                     fmt(median_of(group, "throughput"), f" {unit}/s"), fmt_seconds(median_of(group, "latency_p50_s"))])
    return _table(["workload", "size", "engine", "workers", "status", "run_s (median)", "throughput", "latency p50"], body)


def paragraph(workload: str, label: str) -> str:
    """The paragraph of a built-in workload's docstring that starts with ``label`` (e.g. 'Hypothesis:'), if any."""
    try:
        from workloads import get_workload

        doc = sys.modules[type(get_workload(workload)).__module__].__doc__ or ""
    except Exception:
        return ""
    for para in doc.split("\n\n"):
        if para.strip().startswith(label):
            return " ".join(para.split())
    return ""


def write_report(out: Path) -> Path:
    """Write ``out/report.md`` from the rows and manifest; its path."""
    out = Path(out)
    every = read_rows(out)
    rows = timed(every)
    if not rows:
        from engines.api import ArchbenchError

        raise ArchbenchError(f"{out} has no results.jsonl rows to report on; run `archbench run --out {out}` first")
    manifest = read_manifest(out)
    machine = manifest.get("machine", {})
    git = manifest.get("git", {})
    lines = [f"# archbench run {manifest.get('run_id', out.name)}", ""]
    lines += [f"- command: `{manifest.get('command', '?')}`",
              f"- machine: {machine.get('cpu_model', '?')}, {machine.get('cores_logical', '?')} cores, "
              f"{fmt(machine.get('memory_bytes'), 'B')} memory, Python {machine.get('python', '?')}",
              f"- code: commit {str(git.get('commit'))[:12]}{' (with uncommitted changes)' if git.get('dirty') else ''}",
              f"- {len(rows)} rows; figures are medians of the `ok` repeats; start-up is timed apart from the run",
              ""]
    matrix = manifest.get("matrix", {})
    if matrix.get("quick"):
        lines += [f"This is the **quick matrix**: {len(matrix.get('workloads', []))} workloads (one per model, "
                  f"and the stream: {', '.join(matrix.get('workloads', []))}) at {', '.join(matrix.get('sizes', []))} "
                  f"size, {matrix.get('repeat')} repeats after a warm-up -- a first look at every engine, not a "
                  "verdict. The other workloads and sizes are left out; the full matrix is "
                  f"`{FULL_MATRIX}`.", ""]
    wrong = [r for r in every if r["status"] == "wrong"]
    if wrong:
        lines += ["## WRONG RESULTS", "", "These cells returned an answer that differs from the reference. "
                  "They are left out of every figure.", ""]
        lines += [f"- **{r['engine']} × {r['workload']}** ({r['size']}, {r['workers']} workers, repeat {r['repeat']}): "
                  f"{r['error']}" for r in wrong]
        lines.append("")
    from harness.choice import choice_section, choices

    decided = choices(every, manifest)
    (out / "choice.json").write_text(json.dumps(decided, indent=2) + "\n", encoding="utf-8")
    lines += choice_section(decided)
    from harness.evidence import SKIP_REASONS

    for figure in ("throughput.png", "latency.png", "phases.png", "scaling.png", "growth.png", "latency-cdf.png"):
        if (out / figure).exists():
            lines += [f"![{figure}]({figure})", ""]
    missing = [f"- `{figure}` is not drawn: {why}" for figure, why in SKIP_REASONS.items() if not (out / figure).exists()]
    if missing and (out / "throughput.png").exists():
        lines += missing + [""]
    by_workload: dict[str, list[tuple]] = {}
    for key, group in cells(rows).items():
        by_workload.setdefault(key[1], []).append((key, group))
    for workload, groups in by_workload.items():
        unit = groups[0][1][0].get("unit") or "units"
        lines += [f"## {workload}", ""]
        for label in ("Measured:", "Hypothesis:"):
            text = paragraph(workload, label)
            if text:
                lines += [f"> {text}", ""]
        header = ["engine", "size", "workers", "status", "run (median)", f"throughput ({unit}/s)",
                  "latency p50", "latency p99", "start-up", "peak memory", "CPU s"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        best: dict = {}         # the fastest engine is named among cells of the same size and worker count
        for (_, _, size, workers), group in groups:
            run = median_of(group, "run_s")
            if run is not None:
                best.setdefault((size, workers), []).append(run)
        for (engine, _, size, workers), group in groups:
            run = median_of(group, "run_s")
            rivals = best.get((size, workers), [])
            mark = " (fastest)" if run is not None and run == min(rivals) and len(rivals) > 1 else ""
            lines.append("| " + " | ".join([
                engine, size, str(workers), status_of(group), fmt_seconds(run) + mark,
                fmt(median_of(group, "throughput")), fmt_seconds(median_of(group, "latency_p50_s")),
                fmt_seconds(median_of(group, "latency_p99_s")), fmt_seconds(median_of(group, "startup_s")),
                fmt(median_of(group, "peak_rss_bytes"), "B"), fmt(median_of(group, "cpu_s"))]) + " |")
        reasons = {(g[0]["engine"], g[0]["workers"]): next((r["error"] for r in g if r["status"] != "ok"), None)
                   for _, g in groups}
        notes = [f"- {engine} ({workers} workers): {why}" for (engine, workers), why in reasons.items() if why]
        lines += [""] + (["Cells that did not run or did not pass:", ""] + notes + [""] if notes else [])
    lines += fault_section(every, out)
    lines += timelines_section(out, every)
    lines += fairness_section(out)
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def timelines_section(out: Path, rows: list[dict]) -> list[str]:
    """The report's *Timelines*: per workload and size the stacked figure, the exchange heatmap, and a
    table of how each traced cell's workers spent their time (from the traced rows). Empty without traces."""
    traced = [r for r in rows if r.get("purpose") == "traced" and r.get("trace_file")]
    if not traced:
        return []
    lines = ["## Timelines", "",
             "One untimed, traced repeat per cell (`--trace`), recorded by each engine's own instruments; "
             "the files in `traces/` open in Perfetto (ui.perfetto.dev). *Busy* is each worker lane's share "
             "of the run; the kinds divide all worker-lane time; *overhead* is the traced run's time over "
             "the timed median.", ""]
    groups: dict[tuple, list[dict]] = {}
    for row in traced:
        groups.setdefault((row["workload"], row["size"]), []).append(row)
    kinds = ("compute", "exchange", "schedule", "message", "idle")
    for (workload, size), group in groups.items():
        lines += [f"### {workload} ({size})", ""]
        for figure in (f"timeline-{workload}-{size}.png", f"exchange-{workload}-{size}.png"):
            if (out / figure).exists():
                lines += [f"![{figure}]({figure})", ""]
        lines += ["| engine | workers | status | busy (per worker) | " + " | ".join(kinds) + " | overhead |",
                  "|" + "---|" * (len(kinds) + 5)]
        for row in group:
            shares = row.get("time_shares") or {}
            busy = ", ".join(f"{v:.0%}" for v in (row.get("busy_fraction") or {}).values())
            overhead = f"{row['trace_overhead']:.2f}×" if row.get("trace_overhead") else "-"
            lines.append(f"| {row['engine']} | {row['workers']} | {row['status']} | {busy or '-'} | "
                         + " | ".join(f"{shares.get(k, 0):.0%}" for k in kinds) + f" | {overhead} |")
        lines.append("")
    return lines


def fairness_section(out: Path) -> list[str]:
    """The report's *Fairness*: adapter ÷ hand-written per engine and workload, when ``archbench fairness``
    wrote ``fairness.json`` into this folder. Empty otherwise."""
    import json

    path = Path(out) / "fairness.json"
    if not path.exists():
        return []
    from harness.fairness import table

    data = json.loads(path.read_text(encoding="utf-8"))
    return ["## Fairness", "",
            "Each adapter beside the program an experienced user of its engine writes by hand "
            "(`harness/twins.py`), alternately on one cluster (`archbench fairness`). A ratio above "
            f"{data['limit']} is either explained (the generic translation must cost more) or unfair.", "",
            table(data["cells"]), ""]

