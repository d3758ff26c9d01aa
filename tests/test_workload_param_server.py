"""The parameter server's protocol: pulls wait for the round, pushes are summed in worker order, it learns."""

from __future__ import annotations

import pytest

from workloads import get_workload
from workloads.param_server import ParamServer, make_shard, squared_error


class Inbox:
    """Stands in for a worker's ref: records what the server tells it."""

    def __init__(self):
        self.told = []

    def tell(self, method, *args):
        self.told.append((method, *args))


def test_an_early_pull_is_parked_until_every_worker_has_pushed_the_round():
    server = ParamServer(0, keys=4, servers=2, workers=2, examples=1, rounds=2)   # owns keys 0 and 2
    inboxes = [Inbox(), Inbox()]
    server.connect(inboxes)
    server.push(0, 0, {0: 1.0})
    server.pull(1, 0, (0, 2))                      # worker 0 is ahead: round 0 is not applied yet
    assert inboxes[0].told == []
    server.push(0, 1, {0: 1.0, 2: -1.0})           # the last push of round 0 applies it ...
    assert inboxes[0].told == [("receive", 1, {0: -4.0, 2: 2.0})]  # ... and answers the parked pull
    assert server.params_if_done() is None         # one round of two


def test_a_push_for_the_wrong_round_is_reported_to_the_driver():
    server = ParamServer(0, keys=2, servers=1, workers=1, examples=1, rounds=3)
    server.connect([Inbox()])
    server.push(1, 0, {0: 1.0})
    with pytest.raises(RuntimeError, match="push of round 1 from worker 0 while collecting round 0"):
        server.params_if_done()


def test_training_lowers_the_error():
    workload = get_workload("param-server")
    inputs = workload.generate(seed=3, **workload.sizes["tiny"])
    shards = [make_shard(*recipe) for recipe in inputs["recipes"]]
    before = squared_error(shards, dict.fromkeys(range(inputs["keys"]), 0.0))
    assert squared_error(shards, workload.reference(inputs)) < 0.8 * before
