"""The fleet's data trips every kind of alert, and the alarm has hysteresis."""

from __future__ import annotations

from collections import Counter

from workloads import get_workload
from workloads.iot_twins import new_state, observe


def test_the_readings_raise_every_kind_of_alert():
    workload = get_workload("iot-twins")
    want = workload.reference(workload.generate(seed=5, devices=8, readings=3_000, gateways=2))
    kinds = Counter(kind for _, _, kind, _ in want["alerts"])
    assert kinds["high"] > 5 and kinds["clear"] > 5 and kinds["spike"] > 5
    assert sum(s["alerts"] for s in want["devices"].values()) == len(want["alerts"])


def test_an_average_between_the_thresholds_neither_raises_nor_clears():
    state, config = new_state(), (25.0, 22.0, 100.0)
    raised = [a for t, v in enumerate([30.0] + [23.0] * 30) for a in observe(state, config, t, v)]
    assert [kind for kind, _, _ in raised] == ["high"]
    assert 22.0 < state["avg"] < 25.0 and state["alarm"]      # below high, not yet below low: still on
