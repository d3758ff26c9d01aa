"""mini-actors against Ray and Dask actors: call round trip, async calls/s, actor-to-actor ping-pong.

Three measures, each on every engine in the same run:

- **round trip**: one call at a time from the driver (``counter.call("add", 1).result()``);
  p50 and p99 of the per-call latency;
- **async calls/s**: a burst of calls, then ``gather`` -- how many the
  engine completes per second when the caller does not wait in between;
- **loopback TCP** and **loopback Unix socket**: a byte echoed by another
  process, as many times -- the floors under any call round trip, measured
  in the same run (a local mini cluster talks over Unix sockets); and
  **loopback Unix socket, polling**, where neither process sleeps while
  it waits: what is left of the floor without the wake-ups;
- **ping-pong**: an actor calls another one and waits for each reply; p50
  of that actor-to-actor round trip, timed inside the actor. The two are
  in different processes: mini-actors places them round robin, Ray gives
  every actor a process, ``dask (raw)`` pins them to two workers (the
  ``dask`` adapter lets Dask place them).

Engines: ``mini-actors`` (and ``mini-actors/queue``: the same with every
message through the cluster's queues, i.e. ``direct_receive=False``, and
``mini-actors/sleep``: the same with ``spin_us=0``, i.e. a caller and workers
that sleep at once instead of polling for an answer first), the
registry's ``ray`` and ``dask`` adapters (the same neutral API, so the same
wrapper costs), and ``ray (raw)`` / ``dask (raw)``: the frameworks' own
actor calls with no archbench layer (``ray.get(a.add.remote(1))``,
``proxy.add(1).result()``), on the adapters' clusters. A table of medians
and ratios is printed at the end. No time is asserted::

    ARCHBENCH_BENCH_SIZE=small python -m pytest tests/benchmarks/test_bench_mini_actors.py --benchmark-enable
"""

from __future__ import annotations

import os
import statistics
import time

import pytest

from conftest import require_engine
from engines import get_engine
from loopback import FLOORS, round_trips

pytestmark = pytest.mark.timeout(1800)   # Dask's 30,000 async calls at medium take 100 s a round on a loaded 2-core machine

CALLS = {"tiny": 200, "small": 2_000, "medium": 5_000, "large": 20_000}        # sequential, per round
BURST = {"tiny": 1_000, "small": 10_000, "medium": 30_000, "large": 100_000}    # async, per round
PINGS = {"tiny": 100, "small": 1_000, "medium": 3_000, "large": 10_000}        # actor to actor, per round
ROUNDS = {"tiny": 1, "small": 3, "medium": 3, "large": 1}
ENGINES = ["mini-actors", "mini-actors/queue", "mini-actors/sleep", "ray", "ray (raw)", "dask", "dask (raw)"]
VARIANTS = {"mini-actors/queue": {"direct_receive": False}, "mini-actors/sleep": {"spin_us": 0}}   # start options
RESULTS: dict[tuple[str, str], list[float]] = {}     # (measure, engine) -> samples


class Counter:
    def __init__(self):
        self.n = 0

    def add(self, k):
        self.n += k
        return self.n


class Pinger:
    """Calls another actor ``n`` times, one at a time; the round trips in seconds, timed here."""

    def volley(self, other, n):
        times = []
        for _ in range(n):
            start = time.perf_counter()
            other.call("add", 1).result()
            times.append(time.perf_counter() - start)
        return times


class RawPinger:
    """The same with the framework's own handles (a Ray actor handle or a Dask actor proxy)."""

    def volley(self, other, n, ray_handle: bool):
        if ray_handle:      # only then: a Dask install need not have Ray
            import ray

        times = []
        for _ in range(n):
            start = time.perf_counter()
            ray.get(other.add.remote(1)) if ray_handle else other.add(1).result()
            times.append(time.perf_counter() - start)
        return times


# ---------------------------------------------------------------- the engines, as the measures see them


class Neutral:
    """An engine through archbench's session API."""

    def __init__(self, session):
        self.session, self.context = session, session.actors()

    def counter(self):
        ref = self.context.spawn(Counter)
        return lambda: ref.call("add", 1), lambda f: f.result(), self.context.gather

    def volley(self, n):
        pinger, counter = self.context.spawn(Pinger), self.context.spawn(Counter)
        return pinger.call("volley", counter, n).result(timeout=600)

    def close(self):
        self.context.close()


class RawRay:
    def __init__(self, session):
        import ray

        self.ray, self.actor = ray, ray.remote(Counter)
        self.handles = []

    def counter(self):
        handle = self.actor.remote()
        self.handles.append(handle)
        return lambda: handle.add.remote(1), self.ray.get, self.ray.get

    def volley(self, n):
        pinger, counter = self.ray.remote(RawPinger).remote(), self.actor.remote()
        self.handles += [pinger, counter]
        return self.ray.get(pinger.volley.remote(counter, n, True), timeout=600)

    def close(self):
        for handle in self.handles:
            self.ray.kill(handle)


class RawDask:
    def __init__(self, session):
        self.client, self.futures = session.client, []
        self.workers = sorted(self.client.scheduler_info()["workers"])

    def _actor(self, cls, worker: int):
        future = self.client.submit(cls, actor=True, pure=False, workers=[self.workers[worker]])
        self.futures.append(future)
        return future.result()

    def counter(self):
        proxy = self._actor(Counter, 0)
        return lambda: proxy.add(1), lambda f: f.result(), lambda fs: [f.result() for f in fs]

    def volley(self, n):
        # on two workers: a Dask actor called from its own worker is a local call, not a message
        pinger, counter = self._actor(RawPinger, 0), self._actor(Counter, 1)
        return pinger.volley(counter, n, False).result(timeout=600)

    def close(self):
        del self.futures[:]


@pytest.fixture(scope="module")
def engines():
    """Engines started on first use (one session per framework, shared by its variants), closed at the end."""
    sessions, views = {}, {}

    def get(name: str):
        if name not in views:
            base, _, variant = name.partition(" ")
            engine_name = "mini-actors" if base.startswith("mini-actors") else base
            require_engine(engine_name)
            options = VARIANTS.get(base, {})
            if base not in sessions:
                sessions[base] = get_engine(engine_name).start(workers=2, **options)
            view = {"": Neutral, "(raw)": RawRay if base == "ray" else RawDask}[variant]
            views[name] = view(sessions[base])
        return views[name]

    yield get
    for view in views.values():
        view.close()
    for session in sessions.values():
        session.close()


@pytest.fixture(scope="module", autouse=True)
def summary(request, bench_size):
    """Print medians and ratios once every benchmark of the module has run."""
    yield
    if not RESULTS:
        return
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        _write_summary(request.config.pluginmanager.get_plugin("terminalreporter").write_line, bench_size)


def _write_summary(write, bench_size: str) -> None:
    rows = {name: _figures(name) for name in [*ENGINES, *FLOORS]}
    write(f"\nmini-actors benchmarks ({bench_size}, pid {os.getpid()}): medians over rounds")
    write(f"{'engine':<31}{'RTT p50 us':>12}{'RTT p99 us':>12}{'calls/s':>10}{'ping p50 us':>13}")
    for name, (p50, p99, rate, ping) in rows.items():
        write(f"{name:<31}{_fmt(p50):>12}{_fmt(p99):>12}{_fmt(rate):>10}{_fmt(ping):>13}")
    mine = rows["mini-actors"]
    for peer in ("mini-actors/sleep", "ray", "ray (raw)", "dask", "dask (raw)", *FLOORS):
        theirs = rows[peer]
        ratios = [a / b if a and b else None for a, b in zip(mine, theirs)]
        write(f"mini-actors / {peer:<29}  RTT p50 x{_fmt(ratios[0], 2)}  p99 x{_fmt(ratios[1], 2)}  "
              f"calls/s x{_fmt(ratios[2], 2)}  ping p50 x{_fmt(ratios[3], 2)}")


def _figures(name: str):
    rtt = sorted(RESULTS.get(("rtt", name), []))
    pct = (lambda q: rtt[min(len(rtt) - 1, int(q * len(rtt)))] * 1e6) if rtt else (lambda q: None)
    rates = RESULTS.get(("rate", name))
    pings = RESULTS.get(("ping", name))
    return (pct(0.5), pct(0.99), statistics.median(rates) if rates else None,
            statistics.median(pings) * 1e6 if pings else None)


def _fmt(x, digits=0):
    return "-" if x is None else f"{x:,.{digits}f}"


# ---------------------------------------------------------------- the measures


@pytest.mark.parametrize("name", ENGINES)
def test_sequential_call_round_trip(benchmark, engines, bench_size, name):
    send, wait, _ = engines(name).counter()
    for _ in range(50):
        wait(send())                           # warm: connections, imports, the actor's first message
    samples = RESULTS.setdefault(("rtt", name), [])

    def run():
        for _ in range(CALLS[bench_size]):
            start = time.perf_counter()
            wait(send())
            samples.append(time.perf_counter() - start)

    benchmark.pedantic(run, rounds=ROUNDS[bench_size], iterations=1)


@pytest.mark.parametrize("floor", FLOORS)
def test_loopback_round_trip(benchmark, bench_size, floor):
    """The same number of round trips, one byte each, to an echo process: what a call cannot beat."""
    samples = RESULTS.setdefault(("rtt", floor), [])

    def run():
        times = round_trips(CALLS[bench_size], **FLOORS[floor])
        assert len(times) == CALLS[bench_size]
        samples.extend(times)

    benchmark.pedantic(run, rounds=ROUNDS[bench_size], iterations=1)


@pytest.mark.parametrize("name", ENGINES)
def test_async_calls_per_second(benchmark, engines, bench_size, name):
    send, wait, gather = engines(name).counter()
    wait(send())
    n = BURST[bench_size]

    def run():
        start = time.perf_counter()
        gather([send() for _ in range(n)])
        RESULTS.setdefault(("rate", name), []).append(n / (time.perf_counter() - start))

    benchmark.pedantic(run, rounds=ROUNDS[bench_size], iterations=1)


@pytest.mark.parametrize("name", ENGINES)
def test_actor_to_actor_ping_pong(benchmark, engines, bench_size, name):
    view = engines(name)
    view.volley(10)

    def run():
        times = view.volley(PINGS[bench_size])
        assert len(times) == PINGS[bench_size]
        RESULTS.setdefault(("ping", name), []).append(statistics.median(times))

    benchmark.pedantic(run, rounds=ROUNDS[bench_size], iterations=1)
