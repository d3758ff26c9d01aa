"""The figures a decision rests on, from a results folder only, one fixed colour per engine.

- ``scaling.png`` -- throughput against workers (a run with ``--workers
  1,2,…``), the ideal line from each engine's 1-worker figure dashed, and
  the parallel efficiency at the most workers printed beside each line;
- ``growth.png`` -- run time against input size (a run with several
  ``--size``), log-log, with each engine's fitted growth exponent (≈ 1:
  linear; a start-up-dominated engine is flat, then rises);
- ``latency-cdf.png`` -- the whole distribution of each engine's latency
  samples (``latencies/*.jsonl``), an empirical CDF on a log time axis;
- ``phases.png`` -- start-up, load, run and check per engine, stacked, so
  the cost of a JVM or a Ray cluster is seen beside the work.

A figure the run has no data for is not drawn; `draw_evidence` says why
instead (`skipped`), and the report repeats it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from harness.drawing import color, grid
from harness.results import cells, median_of

PHASES = (("startup_s", "start-up", "#bbbbbb"), ("load_s", "load", "#e0c070"), ("run_s", "run", "#4C72B0"),
          ("check_s", "check", "#55A868"))


def growth_exponent(sizes_units: list[float], times: list[float]) -> float:
    """The slope of log(time) against log(units): how run time grows with the input.

    >>> round(growth_exponent([1e3, 1e4, 1e5], [0.01, 0.1, 1.0]), 2)
    1.0
    """
    from scipy.stats import linregress

    return float(linregress([math.log(u) for u in sizes_units], [math.log(t) for t in times]).slope)


def _by(rows, *fields) -> dict:
    out: dict = {}
    for (engine, workload, size, workers), group in cells(rows).items():
        key = {"engine": engine, "workload": workload, "size": size, "workers": workers}
        out.setdefault(tuple(key[f] for f in fields), []).append((key, group))
    return out


def plot_scaling(rows: list[dict], path: Path) -> Path | None:
    panels = {k: v for k, v in _by(rows, "workload", "size").items() if len({key["workers"] for key, _ in v}) > 1}
    if not panels:
        return None
    plt, fig, axes = grid(len(panels))
    for ax, ((workload, size), entries) in zip(axes, panels.items()):
        engines: dict[str, dict[int, float]] = {}
        for key, group in entries:
            value = median_of(group, "throughput")
            if value is not None:
                engines.setdefault(key["engine"], {})[key["workers"]] = value
        for engine, points in engines.items():
            ws = sorted(points)
            ax.plot(ws, [points[w] for w in ws], "o-", color=color(engine), label=engine)
            if 1 in points and len(ws) > 1:
                ax.plot(ws, [points[1] * w for w in ws], "--", color=color(engine), alpha=0.35, linewidth=1)
                efficiency = points[ws[-1]] / (points[1] * ws[-1])
                ax.annotate(f"{efficiency:.0%}", (ws[-1], points[ws[-1]]), fontsize=7, xytext=(4, 0),
                            textcoords="offset points", color=color(engine))
        ax.set_xticks(sorted({key["workers"] for key, _ in entries}))
        ax.set_yscale("log")
        ax.set_xlabel("workers", fontsize=8)
        ax.set_ylabel("throughput (median)", fontsize=8)
        ax.set_title(f"{workload} ({size})", fontsize=10)
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle("Scaling: throughput against workers; dashed: ideal from 1 worker; % = parallel efficiency", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_growth(rows: list[dict], path: Path) -> Path | None:
    panels = {k: v for k, v in _by(rows, "workload", "workers").items() if len({key["size"] for key, _ in v}) > 1}
    if not panels:
        return None
    plt, fig, axes = grid(len(panels))
    for ax, ((workload, workers), entries) in zip(axes, panels.items()):
        engines: dict[str, list[tuple[float, float]]] = {}
        for key, group in entries:
            run, units = median_of(group, "run_s"), median_of(group, "units")
            if run and units:
                engines.setdefault(key["engine"], []).append((units, run))
        for engine, points in engines.items():
            points.sort()
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            label = engine
            if len(points) > 1:
                label += f" (exponent {growth_exponent(xs, ys):.2f})"
            ax.plot(xs, ys, "o-", color=color(engine), label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"input ({entries[0][1][0].get('unit') or 'units'})", fontsize=8)
        ax.set_ylabel("run time (s, median)", fontsize=8)
        ax.set_title(f"{workload} ({workers} workers)", fontsize=10)
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle("Growth: run time against input size (log-log); exponent ≈ 1 is linear", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency_samples(out: Path) -> dict[tuple, list[float]]:
    """``{(engine, workload, size, workers): every timed repeat's samples}`` from ``latencies/``."""
    found: dict[tuple, list[float]] = {}
    for path in sorted((Path(out) / "latencies").glob("*.jsonl")):
        workload_size_engine, _, workers = path.stem.rpartition("-w")
        samples = [x for line in path.read_text().splitlines() if line.strip() for x in json.loads(line)["samples"]]
        found[(workload_size_engine, int(workers))] = samples
    return found


def plot_latency_cdf(rows: list[dict], out: Path, path: Path) -> Path | None:
    import numpy as np

    stored = latency_samples(out)
    panels: dict[tuple, list] = {}
    for (engine, workload, size, workers), _ in cells(rows).items():
        samples = stored.get((f"{workload}-{size}-{engine}", workers))
        if samples and len(samples) > 1:
            panels.setdefault((workload, size), []).append((engine, workers, samples))
    if not panels:
        return None
    plt, fig, axes = grid(len(panels))
    for ax, ((workload, size), entries) in zip(axes, panels.items()):
        for engine, workers, samples in entries:
            xs = np.sort(np.asarray(samples))
            ax.step(xs, np.arange(1, len(xs) + 1) / len(xs), where="post", color=color(engine),
                    label=f"{engine} {workers}w (n={len(xs)})")
        ax.set_xscale("log")
        ax.set_xlabel("latency (s)", fontsize=8)
        ax.set_ylabel("fraction of samples ≤ x", fontsize=8)
        ax.set_title(f"{workload} ({size})", fontsize=10)
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle("Latency distribution: empirical CDF of every sample of the timed repeats", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_phases(rows: list[dict], path: Path) -> Path | None:
    panels = _by([r for r in rows if r["status"] == "ok"], "workload", "size")
    if not panels:
        return None
    plt, fig, axes = grid(len(panels))
    for ax, ((workload, size), entries) in zip(axes, panels.items()):
        labels = []
        for i, (key, group) in enumerate(entries):
            labels.append(f"{key['engine']} {key['workers']}w")
            bottom = 0.0
            for field, name, shade in PHASES:
                value = median_of(group, field) or 0.0
                ax.bar(i, value, bottom=bottom, color=shade, edgecolor=color(key["engine"]), linewidth=1.2,
                       label=name if i == 0 else None)
                bottom += value
        ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=40, ha="right")
        ax.set_ylabel("seconds (medians)", fontsize=8)
        ax.set_title(f"{workload} ({size})", fontsize=10)
        ax.legend(fontsize=6)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Phases: start-up, load, run and check per engine (stacked medians)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


SKIP_REASONS = {
    "scaling.png": "the run has one worker count; run with --workers 1,2 to see scaling",
    "growth.png": "the run has one size; run with --size small,medium to see how run time grows",
    "latency-cdf.png": "no cell kept more than one latency sample (latencies/)",
    "phases.png": "no cell has an ok repeat",
}


def draw_evidence(out: Path, rows: list[dict]) -> tuple[list[Path], dict[str, str]]:
    """Draw what the run has data for; ``(paths, {figure: why it was not drawn})``."""
    out = Path(out)
    drawn = {"scaling.png": plot_scaling(rows, out / "scaling.png"),
             "growth.png": plot_growth(rows, out / "growth.png"),
             "latency-cdf.png": plot_latency_cdf(rows, out, out / "latency-cdf.png"),
             "phases.png": plot_phases(rows, out / "phases.png")}
    skipped = {name: SKIP_REASONS[name] for name, path in drawn.items() if path is None}
    for name in skipped:
        (out / name).unlink(missing_ok=True)   # a figure from an earlier, larger run would mislead
    return [p for p in drawn.values() if p is not None], skipped

