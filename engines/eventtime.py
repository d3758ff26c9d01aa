"""Event time: the rules of a windowed stream, the same on every engine.

A streaming flow (`engines.api.Dataflow.stream`) has timed sources, narrow
steps, and one ``window`` step grouping ``(key, value)`` items into tumbling
event-time windows. Every engine applies these rules, whether it runs the
stream natively (workers keep windows open as events flow: `mini-data`,
Bytewax) or as micro-batches (`engines.streaming`):

- a source's **watermark** is the largest event time it has delivered,
  minus the window's ``lateness``; the stream's is the smallest over its
  sources (before a source delivers anything: minus infinity; at the end
  of the stream: infinity);
- an event older than its own source's watermark when it arrives is
  **late** and dropped -- per source, by the worker that reads the source
  (`Tap`), so the same events are dropped on every engine however the
  sources interleave;
- window ``[s, s + size)`` of a key is **emitted** once the stream's
  watermark reaches ``s + size`` (`Windows`); its latency is the wall time
  the driver sees it minus the wall time at which stream time reached
  ``s + size`` (`window_closes`).

Two pieces do the work, wherever the engine runs them:

`Tap` -- one source, on the worker that reads it. Each call of
``take(now)`` reads the events that arrived since the last call, drops
the late ones and advances the source's ``mark`` (what it tells every
window owner: the largest event time delivered, or infinity at the end).

`Windows` -- the open windows of the keys one worker owns. It merges the
partial results it is sent (``add``), hears each source's mark
(``mark``), and hands back the windows the watermark has passed (``due``).
A mark must not overtake the partial results sent before it (a window
could close without them): on a channel that keeps order, a mark comes
after them anyway (``sent=None``); where items may be reordered, the mark
says how many items its source sent to this owner before it, and waits
until that many have been added.

    >>> win = Windows(sources=2, size=10.0, lateness=1.0, fn=lambda a, b: a + b)
    >>> win.add(("x", 0.0), 1, source=0); win.add(("x", 0.0), 2, source=1)
    >>> win.mark(0, 12.0); win.due()                       # source 1 has said nothing yet
    []
    >>> win.mark(1, 11.5, sent=2); win.due()               # it sent 2 items; only 1 has come
    []
    >>> win.add(("x", 10.0), 5, source=1); win.due()       # watermark min(12, 11.5) - 1 = 10.5
    [('x', 0.0, 3)]
"""

from __future__ import annotations

import math
import time
from typing import Callable


def window_start(t: float, size: float) -> float:
    """The start of the tumbling window of ``size`` that holds event time ``t``.

    >>> window_start(12.5, 10.0)
    10.0
    """
    return math.floor(t / size) * size


def admit(pairs: list[tuple[float, object]], seen: float, lateness: float) -> tuple[list, float, int]:
    """Apply the lateness rule to one source's ``(event time, event)`` pairs, in arrival order.

    Returns the admitted pairs, the new largest time seen and how many were late.

    >>> admit([(3.0, "a"), (2.5, "b"), (9.0, "c"), (2.5, "d")], float("-inf"), 1.0)
    ([(3.0, 'a'), (2.5, 'b'), (9.0, 'c')], 9.0, 1)
    """
    kept, late = [], 0
    for pair in pairs:
        t = pair[0]
        if t < seen - lateness:
            late += 1
            continue
        kept.append(pair)
        if t > seen:
            seen = t
    return kept, seen, late


def window_closes(start: float, size: float, duration: float) -> float:
    """The stream time a window closes: its end, or the stream's end if that comes first."""
    return min(start + size, duration)


def next_tick(t0: float, tick: float) -> float:
    """The wall time of the next tick on the grid ``t0 + k * tick`` after now: a late tick skips, not piles up."""
    return t0 + (math.floor((time.time() - t0) / tick) + 1) * tick


class Tap:
    """One timed source, read by one worker: paced reads, the lateness rule, the source's mark.

    ``source(start, end)`` gives the events arriving in ``[start, end)``
    stream seconds; ``timestamp(event)`` an event's time.

        >>> arrivals = [(0.5, 0.5), (2.5, 3.0), (3.0, 1.0), (3.5, 2.5)]   # (arrival, event time)
        >>> tap = Tap(lambda a, b: [e for e in arrivals if a <= e[0] < b], lambda e: e[1], 1.0, 4.0)
        >>> [t for t, _ in tap.take(2.0)], tap.mark
        ([0.5], 0.5)
        >>> [t for t, _ in tap.take(4.0)], tap.late, tap.mark    # 1.0 comes after 3.0: more than 1 s late
        ([3.0, 2.5], 1, inf)
    """

    def __init__(self, source: Callable, timestamp: Callable, lateness: float, duration: float):
        self.source, self.timestamp, self.lateness, self.duration = source, timestamp, lateness, duration
        self.read_to = 0.0           # stream time read so far
        self.seen = -math.inf        # largest event time delivered
        self.late = 0                # events dropped as late

    def take(self, now: float) -> list[tuple[float, object]]:
        """The ``(time, event)`` pairs that arrived since the last call, late ones dropped."""
        end = min(now, self.duration)
        if end <= self.read_to:
            return []
        ts = self.timestamp
        kept, self.seen, late = admit([(ts(e), e) for e in self.source(self.read_to, end)], self.seen,
                                      self.lateness)
        self.read_to, self.late = end, self.late + late
        return kept

    @property
    def done(self) -> bool:
        return self.read_to >= self.duration

    @property
    def mark(self) -> float:
        """What the window owners hear from this source: the largest time delivered; infinity at the end."""
        return math.inf if self.done else self.seen


class Windows:
    """The open windows of the keys one worker owns, and the watermark it has heard of.

    State: ``open[(key, start)]`` -- the combined value of a window not
    emitted yet; ``seen[i]`` -- source ``i``'s latest mark that holds;
    ``got[i]`` -- items added from source ``i``; ``waiting[i]`` -- marks
    ``(sent, seen)`` still waiting for items sent before them.
    """

    def __init__(self, sources: int, size: float, lateness: float, fn: Callable):
        self.size, self.lateness, self.fn = size, lateness, fn
        self.open: dict = {}
        self.seen = [-math.inf] * sources
        self.got = [0] * sources
        self.waiting: list[list] = [[] for _ in range(sources)]

    def add(self, window: tuple, value, source: int | None = None) -> None:
        """Merge a partial ``value`` of ``window = (key, start)``. Mutates ``open``."""
        open_ = self.open
        open_[window] = self.fn(open_[window], value) if window in open_ else value
        if source is not None:
            self.got[source] += 1
            if self.waiting[source]:
                self._settle(source)

    def mark(self, source: int, seen: float, sent: int | None = None) -> None:
        """Source ``source`` has delivered up to ``seen``, having sent ``sent`` items here before (if counted)."""
        if sent is None:
            self.seen[source] = max(self.seen[source], seen)
        else:
            self.waiting[source].append((sent, seen))
            self._settle(source)

    def _settle(self, source: int) -> None:
        waiting = self.waiting[source]
        while waiting and waiting[0][0] <= self.got[source]:
            self.seen[source] = max(self.seen[source], waiting.pop(0)[1])

    @property
    def watermark(self) -> float:
        return min(self.seen) - self.lateness

    @property
    def finished(self) -> bool:
        """Every source has ended: every window has been (or can now be) emitted."""
        return min(self.seen) == math.inf

    def due(self) -> list[tuple]:
        """Pop the windows the watermark has passed, oldest first: ``(key, start, value)`` each."""
        edge = self.watermark - self.size
        ready = sorted((w for w in self.open if w[1] <= edge), key=lambda w: w[1])
        return [(key, start, self.open.pop((key, start))) for key, start in ready]
