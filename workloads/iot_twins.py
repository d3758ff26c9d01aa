"""IoT digital twins: one actor per device keeps its state from its readings and raises alerts.

A fleet of ``devices`` temperature sensors. Each device has a **twin**
actor that folds every reading into its state -- count, last value, an
exponential moving average, min and max, alarm on or off -- and raises
alerts: ``high`` when the average crosses the device's upper threshold,
``clear`` when it falls back under the lower one (hysteresis, so noise near
a threshold does not flap), and ``spike`` when one reading jumps far from
the last. Alerts go actor to actor (``tell``) to one **collector** actor.

Readings do not pass through the driver: ``gateways`` gateway actors each
make the readings of their devices from the seed (on their hosts) and
``tell`` them to the twins, interleaved in time, one message per reading.
The driver then waits, the way `actor_pipeline` does, until each twin has
seen every reading its gateway sent, and the collector every alert the
twins raised (each twin counts the alerts it sent).

The answer is each twin's final state and the alerts, sorted (alerts from
different twins reach the collector in no particular order). The reference
folds the same readings with the same `observe` function in one process.

Stresses: many small stateful actors, a message per reading (throughput in
readings per second), per-key ordering (one gateway per device), and
fan-in of fire-and-forget messages from many actors to one.

Hypothesis: actors win -- a twin is a small piece of state with its own
rules, addressed by device, which is what actors are (Orleans' virtual
actors were built for this). Engines whose actors are light objects, many
to a process (mini-actors, Akka-style), scale to many devices; an engine
with a process per actor (Ray) pays a process per twin and runs out of
memory long before a real fleet's size. A data-parallel engine can compute
the same as a stateful keyed stream and, batching readings, would beat
actors on throughput, but not on the time from a reading to its alert.
Task parallel has nowhere to keep a twin between readings.
"""

from __future__ import annotations

import random

from workloads import Workload
from workloads.ping_pong import poll

ALPHA = 0.2     # weight of a new reading in the moving average


def device_config(seed: int, device: int) -> tuple[float, float, float]:
    """``(high, low, jump)`` thresholds of one device, around its base temperature. Deterministic.

    >>> high, low, jump = device_config(1, 0)
    >>> high > low, device_config(1, 0) == (high, low, jump)
    (True, True)
    """
    base = round(random.Random(seed * 31 + device).uniform(18.0, 26.0), 1)
    return base + 5.0, base + 2.5, 6.0


def device_readings(seed: int, device: int, n: int):
    """The ``n`` readings of one device, as a generator. Deterministic.

    A slow random drift around the base temperature, now and then a heat
    episode that decays (trips ``high``, later ``clear``), and rare one-off
    glitches (trip ``spike``). Values are rounded to hundredths, as a sensor
    would report them.

    >>> list(device_readings(1, 0, 3)) == list(device_readings(1, 0, 3)) != list(device_readings(2, 0, 3))
    True
    """
    high, _, _ = device_config(seed, device)
    base = high - 5.0
    rng = random.Random(seed * 1_000_003 + device)
    drift = heat = 0.0
    for _ in range(n):
        drift = 0.95 * drift + rng.gauss(0.0, 0.3)
        heat = rng.uniform(7.0, 12.0) if rng.random() < 0.002 else 0.995 * heat
        glitch = rng.uniform(8.0, 15.0) if rng.random() < 0.001 else 0.0
        yield round(base + drift + heat + glitch, 2)


def new_state() -> dict:
    """A twin's state before its first reading."""
    return {"count": 0, "last": None, "avg": None, "min": None, "max": None, "alarm": False, "alerts": 0}


def observe(state: dict, config: tuple, t: int, value: float) -> list[tuple]:
    """Fold reading number ``t`` into a twin's ``state``; the alerts it raises. Mutates ``state``.

    Alerts are ``(kind, t, value)``: ``spike`` with the reading, ``high``
    and ``clear`` with the moving average.

    >>> s = new_state()
    >>> [observe(s, (25.0, 22.0, 6.0), t, v) for t, v in enumerate([20.0, 40.0, 40.0, 10.0, 10.0])]
    [[], [('spike', 1, 40.0)], [('high', 2, 27.2)], [('spike', 3, 10.0)], [('clear', 4, 21.008)]]
    >>> s["count"], s["alarm"], s["alerts"], s["min"], s["max"]
    (5, False, 4, 10.0, 40.0)
    """
    high, low, jump = config
    alerts = []
    if state["last"] is not None and abs(value - state["last"]) > jump:
        alerts.append(("spike", t, value))
    avg = value if state["avg"] is None else state["avg"] + ALPHA * (value - state["avg"])
    if not state["alarm"] and avg > high:
        state["alarm"] = True
        alerts.append(("high", t, round(avg, 6)))
    elif state["alarm"] and avg < low:
        state["alarm"] = False
        alerts.append(("clear", t, round(avg, 6)))
    state.update(count=state["count"] + 1, last=value, avg=avg, alerts=state["alerts"] + len(alerts),
                 min=value if state["min"] is None else min(state["min"], value),
                 max=value if state["max"] is None else max(state["max"], value))
    return alerts


class Twin:
    """The twin of one device: its state, and a ref to the alert collector."""

    def __init__(self, device: int, config: tuple, collector):
        self.device, self.config, self.collector = device, config, collector
        self.state = new_state()

    def reading(self, t: int, value: float) -> None:
        for kind, at, v in observe(self.state, self.config, t, value):
            self.collector.tell("alert", self.device, kind, at, v)

    def state_if_complete(self, expected: int):
        """The state once ``expected`` readings have arrived, else None (ask again)."""
        return dict(self.state) if self.state["count"] >= expected else None


class AlertCollector:
    """Receives every twin's alerts, in whatever order they arrive."""

    def __init__(self):
        self.alerts: list[tuple] = []

    def alert(self, device: int, kind: str, t: int, value: float) -> None:
        self.alerts.append((device, t, kind, value))

    def alerts_if_complete(self, expected: int):
        """The alerts, sorted, once ``expected`` have arrived, else None (ask again)."""
        return sorted(self.alerts) if len(self.alerts) >= expected else None


class Gateway:
    """Makes its devices' readings and tells each twin its own, interleaved in time."""

    def __init__(self, seed: int, devices: list[int], twins: list, readings: int):
        self.seed, self.devices, self.twins, self.readings = seed, devices, twins, readings

    def stream(self) -> dict[int, int]:
        """Send every reading; ``{device: readings sent}``."""
        sources = [device_readings(self.seed, d, self.readings) for d in self.devices]
        for t, values in enumerate(zip(*sources)):
            for twin, value in zip(self.twins, values):
                twin.tell("reading", t, value)
        return {d: self.readings for d in self.devices}


class IotTwins(Workload):
    name = "iot-twins"
    model = "actors"
    unit = "readings"
    traits = ("stateful actors",)
    expect = "actors"
    sizes = {
        "tiny": {"devices": 4, "readings": 200, "gateways": 2},
        "small": {"devices": 20, "readings": 10_000, "gateways": 2},
        "medium": {"devices": 50, "readings": 16_000, "gateways": 4},
        "large": {"devices": 100, "readings": 30_000, "gateways": 4},
    }

    def generate(self, *, seed, devices, readings, gateways):
        # configs are small and made here; readings are made by the gateways
        return {"seed": seed, "configs": [device_config(seed, d) for d in range(devices)],
                "readings": readings, "gateways": gateways}

    def reference(self, inputs):
        seed, n = inputs["seed"], inputs["readings"]
        states, alerts = {}, []
        for d, config in enumerate(inputs["configs"]):
            state = new_state()
            for t, value in enumerate(device_readings(seed, d, n)):
                alerts.extend((d, at, kind, v) for kind, at, v in observe(state, config, t, value))
            states[d] = state
        return {"devices": states, "alerts": sorted(alerts)}

    def run(self, session, inputs):
        seed, configs, g = inputs["seed"], inputs["configs"], inputs["gateways"]
        with session.actors() as actors:
            collector = actors.spawn(AlertCollector)
            twins = [actors.spawn(Twin, d, config, collector) for d, config in enumerate(configs)]
            gateways = [actors.spawn(Gateway, seed, list(range(i, len(twins), g)), twins[i::g], inputs["readings"])
                        for i in range(g)]
            sent: dict[int, int] = {}
            for counts in actors.gather([gw.call("stream") for gw in gateways]):
                sent.update(counts)
            states = poll({d: (lambda d=d: twins[d].call("state_if_complete", sent[d])) for d in sent})
            raised = sum(state["alerts"] for state in states.values())
            alerts = poll({"all": lambda: collector.call("alerts_if_complete", raised)})["all"]
            return {"devices": dict(sorted(states.items())), "alerts": alerts}

    def units(self, inputs):
        return len(inputs["configs"]) * inputs["readings"]
