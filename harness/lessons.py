"""What the classroom notebooks (``notebooks/``) share: sizes, traced runs drawn inline, checked exercises.

A lesson runs real engines and draws what they did; it never shows a
stored picture (the committed example run, `example_run`, is redrawn from
its rows). Three environment variables make the same notebook serve
a lecture and CI:

- ``ARCHBENCH_LESSON_SIZE`` -- ``tiny`` in CI, ``small`` by default: how much work the cells do;
- ``ARCHBENCH_LESSON_SOLUTIONS=1`` -- the solution cells fill in every exercise (CI runs them);
- ``ARCHBENCH_LESSON_STRICT=1`` -- a check that fails raises instead of printing (CI fails on it).

    >>> check("sums", {"a": 1}, {"a": 1})
    ✓ sums: right
    True
"""

from __future__ import annotations

import html
import io
import os
import tempfile
import time
from pathlib import Path

from harness.matrix import Progress


#: the run committed with the project (medium size, 1 and 2 workers, every engine, traced)
EXAMPLE_RUN = Path(__file__).resolve().parents[1] / "results" / "example"


def example_run() -> Path:
    """The committed example run's folder (`EXAMPLE_RUN`); a clear error if this checkout lacks it."""
    if not (EXAMPLE_RUN / "results.jsonl").exists():
        raise FileNotFoundError(f"no example run at {EXAMPLE_RUN}: it comes with a git checkout of archbench "
                                "(results/example/); make your own with `archbench run --size medium --workers 1,2`")
    return EXAMPLE_RUN


def size() -> str:
    """The size a lesson's cells run at (``ARCHBENCH_LESSON_SIZE``, default ``small``)."""
    return os.environ.get("ARCHBENCH_LESSON_SIZE", "small")


def scale(tiny: int, small: int) -> int:
    """``tiny`` items in CI, ``small`` otherwise: for a lesson's own loops."""
    return tiny if size() == "tiny" else small


def solutions() -> bool:
    """Whether the solution cells fill in the exercises (``ARCHBENCH_LESSON_SOLUTIONS=1``)."""
    return os.environ.get("ARCHBENCH_LESSON_SOLUTIONS") == "1"


def check(what: str, got, want) -> bool:
    """Say whether an exercise's answer is right; strict mode raises when it is not."""
    from workloads.check import WrongResult, same

    if got is None:
        message = f"… {what}: not answered yet -- write your answer in the cell above"
        ok = False
    else:
        try:
            same(got, want, unordered=True)
            ok, message = True, f"✓ {what}: right"
        except (WrongResult, AssertionError) as e:
            ok, message = False, f"✗ {what}: not yet -- {str(e).splitlines()[0][:300]}"
    print(message)
    if not ok and os.environ.get("ARCHBENCH_LESSON_STRICT") == "1":
        raise AssertionError(message)
    return ok


def traced(session, run, engine: str = "", workload: str = "lesson", workers: int | None = None):
    """Run ``run()`` with the session's trace recording; ``(result, trace)``, the trace as
    `harness.traces.read_trace` gives it (lanes, spans, flows, meta) -- ready for `show`."""
    from harness.traces import read_trace, write_trace

    t_wall, t0 = time.time(), time.perf_counter()
    session.trace_start()
    try:
        result = run()
    finally:
        trace = session.trace_stop()
    run_s = time.perf_counter() - t0
    from engines import get_engine

    name = engine or session.engine
    meta = {"engine": name, "architecture": get_engine(name).architecture, "workload": workload, "size": size(),
            "workers": workers or session.workers, "source": trace.source, "missing": trace.missing, "run_s": run_s}
    path = Path(tempfile.mkdtemp(prefix="archbench-lesson-")) / "trace.json"
    write_trace(path, trace.rows, meta, start=t_wall)
    return result, read_trace(path)


def show(*traces, titles: list[str] | None = None, shared_axis: bool = True) -> None:
    """Draw traces as stacked Gantt charts, inline (one panel each, one time axis unless told otherwise)."""
    import matplotlib.pyplot as plt

    from harness.timeline import _extent, _title, draw_lanes

    fig, axes = plt.subplots(len(traces), 1, figsize=(11, sum(0.35 * len(t["lanes"]) + 1.1 for t in traces)),
                             squeeze=False)
    longest = max(_extent(t) for t in traces)
    for i, (ax, trace) in enumerate(zip((a[0] for a in axes), traces)):
        draw_lanes(ax, trace, longest if shared_axis else _extent(trace))
        ax.set_title(titles[i] if titles else _title(trace["meta"], trace), fontsize=9, loc="left")
    axes[-1][0].set_xlabel("seconds since the run began", fontsize=8)
    fig.tight_layout()
    plt.show()


def moved(trace) -> dict[tuple[str, str], int]:
    """``{(from lane, to lane): bytes}`` of a drawn trace."""
    out: dict = {}
    for source, target, _, nbytes in trace["flows"]:
        out[(source, target)] = out.get((source, target), 0) + nbytes
    return out


class NotebookProgress(Progress):
    """A matrix's progress as a notebook progress bar: one bar redrawn in place -- cells done of the
    total, the cell now running and its phase -- above a line per finished cell (what `Progress`
    prints to a terminal)."""

    def __init__(self, total: int):
        from IPython.display import HTML, display

        self._finished = io.StringIO()
        super().__init__(total, stream=self._finished)
        self.live = False   # `Progress` writes one plain line per finished cell into `_finished`
        self._html = HTML
        self._bar = display(HTML(self._drawn("starting")), display_id=True)

    def _drawn(self, phase: str) -> str:
        now = f"{html.escape(self.cell)}: {html.escape(phase)}" if self.cell else html.escape(phase)
        return (f'<progress value="{self.done}" max="{self.total}" style="width: 30em"></progress> '
                f"{self.done}/{self.total} cells, {self._elapsed()} &nbsp; {now}"
                f'<pre style="margin: 0">{html.escape(self._finished.getvalue())}</pre>')

    def phase(self, name: str) -> None:
        self._bar.update(self._html(self._drawn(name)))

    def finish(self, rows: list[dict]) -> None:
        super().finish(rows)
        self._bar.update(self._html(self._drawn("done" if self.done == self.total else "next cell")))
