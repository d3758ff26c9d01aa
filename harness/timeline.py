"""Timelines: each architecture at work, drawn from trace files only.

``archbench timeline DIR`` reads ``DIR/traces/*.json`` (written by
``archbench run --trace``; `harness.traces`) and draws:

- ``timeline-<workload>-<size>-<engine>-w<N>.png`` -- one cell as a Gantt
  chart: a lane per worker (and the driver, the scheduler), bars coloured
  by what the lane was doing (compute, exchange, schedule, message, io),
  idle time left blank, and a vertical tick from lane to lane for every
  transfer of data (thicker for more bytes);
- ``timeline-<workload>-<size>.png`` -- the same workload on every traced
  engine, one panel each, stacked on a shared time axis (``--per-panel-axis``
  gives each its own), each titled with its run time and how its workers'
  time divides between the kinds: "Spark spends most of it scheduling" is
  seen, not read;
- ``exchange-<workload>-<size>.png`` -- the bytes each lane sent each other
  lane, a heatmap per engine whose trace has bytes (the others are named,
  with what their trace cannot show).

A trace with many thousands of spans is drawn by merging, per lane and
kind, spans closer together than a pixel: what cannot be seen is not drawn.
"""

from __future__ import annotations

import textwrap
from collections import defaultdict
from pathlib import Path

from engines import engine_names
from engines.api import ArchbenchError
from engines.tracing import KINDS
from harness.drawing import color
from harness.traces import read_trace, utilisation

KIND_COLORS = {"compute": "#4C72B0", "exchange": "#DD8452", "schedule": "#8172B3", "message": "#55A868",
               "io": "#937860"}
PIXELS = 1600          # the resolution spans are merged at


def traced_cells(out: Path, workload: str | None = None, size: str | None = None) -> list[tuple[Path, dict]]:
    """Every trace of the run (path, `harness.traces.read_trace`), filtered by workload and size, in engine order."""
    cells = []
    for path in sorted((Path(out) / "traces").glob("*.json")):
        trace = read_trace(path)
        meta = trace["meta"]
        if (workload is None or meta.get("workload") == workload) and (size is None or meta.get("size") == size):
            cells.append((path, trace))
    order = {name: i for i, name in enumerate(engine_names())}
    return sorted(cells, key=lambda c: (c[1]["meta"]["workload"], c[1]["meta"]["size"],
                                        order.get(c[1]["meta"]["engine"], 99), c[1]["meta"]["workers"]))


def _merged(intervals: list[tuple[float, float]], gap: float) -> list[tuple[float, float]]:
    """Intervals as ``(start, width)`` with those nearer than ``gap`` joined (the pixel merge)."""
    out: list[list[float]] = []
    for a, b in sorted(intervals):
        if out and a - out[-1][1] <= gap:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, max(b - a, gap)) for a, b in out]


def _shares(trace: dict) -> dict:
    rows = [{"event": "span", "lane": lane, "kind": kind, "start": a, "end": b}
            for lane, a, b, kind, _ in trace["spans"] if kind in KINDS]
    return utilisation(rows, 0.0, max(trace["meta"].get("run_s") or 0.0, 1e-9))


def draw_lanes(ax, trace: dict, span_s: float) -> None:
    """A Gantt of one trace on ``ax``: lanes top to bottom, bars per kind, ticks for transfers."""
    from matplotlib.collections import LineCollection

    lanes = trace["lanes"]
    y = {lane: len(lanes) - 1 - i for i, lane in enumerate(lanes)}
    gap = span_s / PIXELS
    by_lane_kind: dict[tuple, list] = defaultdict(list)
    for lane, a, b, kind, _ in trace["spans"]:
        by_lane_kind[(lane, kind)].append((a, b))
    for i, lane in enumerate(lanes):
        ax.axhspan(y[lane] - 0.42, y[lane] + 0.42, color="#f2f2f2" if i % 2 else "#fafafa", zorder=0)
    for (lane, kind), intervals in by_lane_kind.items():
        ax.broken_barh(_merged(intervals, gap), (y[lane] - 0.35, 0.7), color=KIND_COLORS.get(kind, "#999999"),
                       zorder=2)
    binned: dict[tuple, int] = defaultdict(int)   # transfers too close to tell apart become one tick
    for source, target, t, nbytes in trace["flows"]:
        if source in y and target in y and source != target:
            binned[(source, target, round(t / gap))] += nbytes
    if binned:
        biggest = max(binned.values()) or 1
        segments = [[(k * gap, y[s]), (k * gap, y[d])] for s, d, k in binned]
        widths = [0.4 + 2.2 * (v / biggest) ** 0.5 for v in binned.values()]
        alpha = max(0.08, min(0.45, 80 / len(segments)))   # thousands of ticks must not hide the bars
        ax.add_collection(LineCollection(segments, colors="#222222", linewidths=widths, alpha=alpha, zorder=3))
    ax.set_yticks([y[lane] for lane in lanes], lanes, fontsize=8)
    ax.set_ylim(-0.6, len(lanes) - 0.4)
    ax.set_xlim(0, span_s)
    ax.grid(axis="x", color="#dddddd", linewidth=0.6, zorder=1)


def _title(meta: dict, trace: dict) -> str:
    shares = _shares(trace)["shares"]
    split = ", ".join(f"{kind} {shares[kind]:.0%}" for kind in (*KINDS, "idle") if shares.get(kind, 0) >= 0.005)
    return (f"{meta['engine']} ({meta.get('architecture', '?')}) · {meta['workers']} workers · "
            f"run {meta.get('run_s', 0):.3g} s · workers' time: {split}")


TITLE_CHARS, LABEL_CHARS = 150, 170   # characters a line of a 12-inch figure holds at 9 and 8 points


def _wrapped(text: str, width: int) -> str:
    """``text`` in lines of at most ``width`` characters: an engine's note can be long, and an unwrapped
    line would push the chart off the figure."""
    return textwrap.fill(text, width, break_long_words=False, break_on_hyphens=False)


def _legend(fig, trace_has_flows: bool) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(color=c, label=k) for k, c in KIND_COLORS.items()] + [Patch(color="#fafafa", label="idle")]
    if trace_has_flows:
        handles.append(Line2D([], [], color="#222222", alpha=0.6, label="data moved (tick: from → to)"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)


def _extent(trace: dict) -> float:
    ends = [b for _, _, b, _, _ in trace["spans"]]
    return max([trace["meta"].get("run_s") or 0.0, *ends]) or 1e-3


def _figure(n_lanes: list[int], width: float = 12.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heights = [max(1.2, 0.32 * n + 0.8) for n in n_lanes]
    fig, axes = plt.subplots(len(n_lanes), 1, figsize=(width, sum(heights) + 0.9), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    return plt, fig, [a[0] for a in axes]


def draw_cell(meta: dict, trace: dict, path: Path) -> Path:
    """``timeline-<workload>-<size>-<engine>-w<N>.png``: one cell's Gantt chart."""
    plt, fig, (ax,) = _figure([len(trace["lanes"])])
    draw_lanes(ax, trace, _extent(trace))
    ax.set_title(_wrapped(_title(meta, trace), TITLE_CHARS), fontsize=9, loc="left")
    notes = [f"seconds since the run began ({meta['workload']}, {meta['size']}; trace: {meta.get('source', '?')})"]
    if meta.get("missing"):
        notes.append("not shown: " + "; ".join(meta["missing"]))
    ax.set_xlabel("\n".join(_wrapped(note, LABEL_CHARS) for note in notes), fontsize=8)
    _legend(fig, bool(trace["flows"]))
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_stack(cells: list[tuple[dict, dict]], path: Path, shared_axis: bool = True) -> Path:
    """``timeline-<workload>-<size>.png``: the traced engines of one workload and size, stacked."""
    plt, fig, axes = _figure([len(trace["lanes"]) for _, trace in cells])
    longest = max(_extent(trace) for _, trace in cells)
    for ax, (meta, trace) in zip(axes, cells):
        draw_lanes(ax, trace, longest if shared_axis else _extent(trace))
        ax.set_title(_wrapped(_title(meta, trace), TITLE_CHARS), fontsize=9, loc="left", color=color(meta["engine"]))
    meta = cells[0][0]
    axis = "one time axis for all" if shared_axis else "each panel its own time axis"
    axes[-1].set_xlabel(f"seconds since the run began -- {meta['workload']} at {meta['size']} ({axis})", fontsize=8)
    _legend(fig, any(trace["flows"] for _, trace in cells))
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _bytes(n: float) -> str:
    for scale, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def draw_exchange(cells: list[tuple[dict, dict]], path: Path) -> Path:
    """``exchange-<workload>-<size>.png``: bytes sent lane → lane, a heatmap per engine that reports bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_bytes = [(m, t) for m, t in cells if t["flows"]]
    without = [m for m, t in cells if not t["flows"]]
    n = max(len(with_bytes), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.4 * n, 4.6), squeeze=False)
    for ax, (meta, trace) in zip(axes[0], with_bytes):
        lanes = [lane for lane in trace["lanes"] if any(lane in (s, d) for s, d, _, _ in trace["flows"])]
        index = {lane: i for i, lane in enumerate(lanes)}
        grid = [[0.0] * len(lanes) for _ in lanes]
        for source, target, _, nbytes in trace["flows"]:
            grid[index[source]][index[target]] += nbytes
        ax.imshow(grid, cmap="Oranges")
        top = max(max(row) for row in grid) or 1
        for i, row in enumerate(grid):
            for j, value in enumerate(row):
                if value:
                    ax.text(j, i, _bytes(value), ha="center", va="center", fontsize=7,
                            color="white" if value > 0.55 * top else "black")
        ax.set_xticks(range(len(lanes)), lanes, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(lanes)), lanes, fontsize=7)
        ax.set_xlabel("to", fontsize=8)
        ax.set_ylabel("from", fontsize=8)
        ax.set_title(f"{meta['engine']} · {meta['workers']} workers", fontsize=9, color=color(meta["engine"]))
    if not with_bytes:
        axes[0][0].set_axis_off()
    if without:
        note = "no bytes in the trace: " + "; ".join(
            f"{m['engine']} ({'; '.join(m.get('missing') or ['none reported'])})" for m in without)
        fig.text(0.01, 0.01, note[:400], fontsize=7, color="dimgray", wrap=True)
    meta = cells[0][0]
    fig.suptitle(f"bytes moved between lanes -- {meta['workload']} at {meta['size']}", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def draw_run(out: Path, workload: str | None = None, size: str | None = None,
             shared_axis: bool = True) -> list[Path]:
    """Every timeline figure of a run folder; their paths. Raises when it holds no trace."""
    out = Path(out)
    cells = traced_cells(out, workload, size)
    if not cells:
        which = " ".join(f"{k} {v}" for k, v in (("workload", workload), ("size", size)) if v)
        raise ArchbenchError(f"{out} has no trace files{' for ' + which if which else ''} (traces/*.json); "
                             "run with --trace first, e.g. archbench run --trace --out " + str(out))
    paths: list[Path] = []
    groups: dict[tuple, list] = defaultdict(list)
    for path, trace in cells:
        meta = trace["meta"]
        paths.append(draw_cell(meta, trace, out / f"timeline-{path.stem}.png"))
        groups[(meta["workload"], meta["size"])].append((meta, trace))
    for (w, s), group in groups.items():
        paths.append(draw_stack(group, out / f"timeline-{w}-{s}.png", shared_axis))
        paths.append(draw_exchange(group, out / f"exchange-{w}-{s}.png"))
    return paths
