"""What every figure shares: one colour per engine, and a grid of panels.

The colour of an engine is the same in every figure of every run, so a
reader who has learnt that mini-data is blue finds it at once in the next
picture.
"""

from __future__ import annotations

import math
import zlib


# one colour per engine, the same in every figure of every run
ENGINE_COLORS = {
    "serial": "#7f7f7f", "pool": "#bcbd22",
    "mini-data": "#1f77b4", "mini-tasks": "#2ca02c", "mini-actors": "#d62728",
    "spark": "#ff7f0e", "spark-df": "#ffbb78",
    "dask": "#9467bd", "dask-df": "#c5b0d5",
    "ray": "#17becf", "bytewax": "#e377c2",
}
_SPARE = ["#8c564b", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173"]


def color(engine: str) -> str:
    """The engine's colour; an engine not listed gets a spare one chosen by its name (stable)."""
    return ENGINE_COLORS.get(engine) or _SPARE[zlib.crc32(engine.encode()) % len(_SPARE)]


def grid(n: int):
    """A figure of ``n`` panels, three to a row: ``(pyplot, figure, axes)``; unused axes are hidden."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.8 * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return plt, fig, list(axes.flat)
