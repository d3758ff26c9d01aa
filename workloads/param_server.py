"""Parameter server: worker actors push gradients to sharded server actors and pull parameters back.

A sparse linear regression trained by synchronous gradient descent, the way
a parameter server does it (Li et al., OSDI 2014), with every step a
message between actors and the driver out of the loop:

- ``servers`` **server actors** own the parameters, sharded by key (key
  ``k`` lives on server ``k % servers``);
- ``workers`` **worker actors** each make their own shard of examples when
  they start (on their host, not on the driver); an example touches
  ``nnz`` of the ``keys`` parameters, popular keys more often (Zipf);
- each round, a worker **pulls** the parameters its examples use from each
  server, computes its shard's gradient, **pushes** each server its slice,
  and pulls again. A server answers a pull only once it has applied every
  worker's push of the round before: that wait is the synchronisation, and
  a pull that comes early is parked until then;
- after ``rounds`` rounds the driver asks the servers for the parameters.

A server adds the workers' gradients in worker order, so the final
parameters are the same bits on every engine, and the reference -- the same
gradient descent in one process -- gives them too.

    round r:  worker --pull(r, keys)--> server      (parked until round r-1 is applied)
              worker <--values--------- server
              worker --push(r, grads)-> server      (the last push of round r applies it)

Stresses: actor-to-actor messaging at volume (3 x workers x servers messages
a round), state that stays in place across rounds (the shards, the
parameters), a barrier made of messages, and sparse access: a worker
pulls only the keys its examples touch, and the popular keys are pulled by
every worker every round.

Hypothesis: actors win -- this is the textbook actor use case (and Ray's own
parameter-server example): only gradients and the parameters a worker needs
move, and nothing waits for a driver. Task parallel would ship each shard
or the parameters with every task, or keep them in actors anyway; data
parallel runs it as one job a round (broadcast the parameters, tree-sum the
gradients, as Spark MLlib does), close behind when rounds are long and
behind by a job's start-up per round when they are short. Each round waits
for the slowest worker whichever engine runs it.
"""

from __future__ import annotations

import functools
import random
from itertools import accumulate

from workloads import Workload
from workloads.ping_pong import poll

LEARNING_RATE = 2.0


@functools.lru_cache(maxsize=8)
def zipf_weights(keys: int) -> list[float]:
    """Cumulative weights of keys 0..keys-1: key ``k`` is drawn with weight 1/(k+1)."""
    return list(accumulate(1.0 / (k + 1) for k in range(keys)))


def true_weights(seed: int, keys: int) -> list[float]:
    """The hidden model the labels come from. Deterministic."""
    rng = random.Random(seed * 7919 + 17)
    return [rng.gauss(0.0, 1.0) for _ in range(keys)]


def make_shard(seed: int, worker: int, examples: int, keys: int, nnz: int) -> list[tuple[tuple, float]]:
    """Worker ``worker``'s examples: ``(((key, value), ...), label)``. Deterministic.

    >>> shard = make_shard(1, 0, 3, 10, 2)
    >>> shard == make_shard(1, 0, 3, 10, 2), shard == make_shard(1, 1, 3, 10, 2), len(shard[0][0])
    (True, False, 2)
    """
    truth = true_weights(seed, keys)
    rng = random.Random(seed * 1_000_003 + worker)
    shard = []
    for _ in range(examples):
        chosen = rng.choices(range(keys), cum_weights=zipf_weights(keys), k=nnz)
        features = tuple((k, rng.uniform(-1.0, 1.0)) for k in chosen)
        label = sum(truth[k] * v for k, v in features) + rng.gauss(0.0, 0.1)
        shard.append((features, label))
    return shard


def gradient(shard, params: dict) -> dict[int, float]:
    """The gradient of the squared error, summed over the shard: ``{key: g}`` for the keys it touches.

    >>> gradient([(((0, 1.0), (1, 2.0)), 1.0)], {0: 0.0, 1: 1.0})
    {0: 1.0, 1: 2.0}
    """
    g: dict[int, float] = {}
    for features, label in shard:
        err = sum(params[k] * v for k, v in features) - label
        for k, v in features:
            g[k] = g.get(k, 0.0) + err * v
    return g


def apply_gradients(params: dict, grads: list[dict], n: int, lr: float = LEARNING_RATE) -> None:
    """One descent step: subtract ``lr`` x the mean gradient. Mutates ``params``.

    ``grads`` are the workers' gradients in worker order; each key's sum is
    taken in that order, so the result does not depend on arrival order.

    >>> p = {0: 1.0, 1: 1.0}
    >>> apply_gradients(p, [{0: 2.0}, {0: 2.0, 1: 4.0}], n=4, lr=0.5)
    >>> p
    {0: 0.5, 1: 0.5}
    """
    totals: dict[int, float] = {}
    for g in grads:
        for k, v in g.items():
            totals[k] = totals.get(k, 0.0) + v
    for k, total in totals.items():
        params[k] -= lr * total / n


def squared_error(shards, params: dict) -> float:
    """Mean squared error over all shards (for tests and curiosity; not part of the run)."""
    errors = [(sum(params[k] * v for k, v in f) - y) ** 2 for shard in shards for f, y in shard]
    return sum(errors) / len(errors)


def owner(key: int, servers: int) -> int:
    """The server that holds ``key``.

    >>> [owner(k, 3) for k in range(5)]
    [0, 1, 2, 0, 1]
    """
    return key % servers


class ParamServer:
    """Holds the parameters of the keys it owns; applies a round once every worker has pushed it."""

    def __init__(self, index: int, keys: int, servers: int, workers: int, examples: int, rounds: int):
        self.index, self.n_workers, self.examples, self.rounds = index, workers, examples, rounds
        self.params = {k: 0.0 for k in range(index, keys, servers)}
        self.version = 0                  # rounds applied so far
        self.pushes: dict[int, dict] = {}  # worker -> its gradient slice for round ``version``
        self.parked: list[tuple] = []     # pulls of a version not reached yet: (version, worker, keys)
        self.workers = []
        self.broken = ""                  # a protocol violation, reported to the driver's next ask

    def connect(self, workers) -> None:
        """The workers' refs, to answer their pulls. Called (and waited for) before any pull."""
        self.workers = workers

    def pull(self, version: int, worker: int, keys: tuple) -> None:
        if version > self.version:
            self.parked.append((version, worker, keys))
        else:
            self._answer(version, worker, keys)

    def push(self, round_: int, worker: int, grads: dict) -> None:
        if round_ != self.version or worker in self.pushes:
            # a tell has no caller to raise to: keep the error for the driver's next ask
            self.broken = self.broken or (f"server {self.index}: push of round {round_} from worker {worker} "
                                          f"while collecting round {self.version} (messages lost, doubled "
                                          "or reordered)")
            return
        self.pushes[worker] = grads
        if len(self.pushes) == self.n_workers:
            apply_gradients(self.params, [self.pushes[w] for w in range(self.n_workers)], self.examples)
            self.pushes = {}
            self.version += 1
            ready = [p for p in self.parked if p[0] <= self.version]
            self.parked = [p for p in self.parked if p[0] > self.version]
            for version, worker, keys in ready:
                self._answer(version, worker, keys)

    def _answer(self, version: int, worker: int, keys: tuple) -> None:
        self.workers[worker].tell("receive", version, {k: self.params[k] for k in keys})

    def params_if_done(self):
        """The parameters once every round is applied, else None (ask again)."""
        if self.broken:
            raise RuntimeError(self.broken)
        return dict(self.params) if self.version == self.rounds else None


class GradientWorker:
    """Makes its shard, then loops: pull parameters, compute the gradient, push it."""

    def __init__(self, index: int, servers, recipe: tuple, rounds: int):
        self.index, self.servers, self.rounds = index, servers, rounds
        self.shard = make_shard(*recipe)    # made here, on the actor's host
        used = sorted({k for features, _ in self.shard for k, _ in features})
        self.keys = [tuple(k for k in used if owner(k, len(servers)) == s) for s in range(len(servers))]
        self.values: dict[int, float] = {}
        self.replies = 0

    def start(self) -> None:
        self._pull(0)

    def _pull(self, version: int) -> None:
        for s, server in enumerate(self.servers):
            server.tell("pull", version, self.index, self.keys[s])

    def receive(self, version: int, values: dict) -> None:
        """A server's answer to a pull; with all servers' answers in, compute and push round ``version``."""
        self.values.update(values)
        self.replies += 1
        if self.replies < len(self.servers):
            return
        self.replies = 0
        g = gradient(self.shard, self.values)
        slices = [{} for _ in self.servers]
        for k, v in g.items():
            slices[owner(k, len(self.servers))][k] = v
        for server, grads in zip(self.servers, slices):
            server.tell("push", version, self.index, grads)
        if version + 1 < self.rounds:
            self._pull(version + 1)


class ParameterServer(Workload):
    name = "param-server"
    model = "actors"
    unit = "messages"
    traits = ("stateful actors", "iterative")
    expect = "actors"
    sizes = {
        "tiny": {"workers": 2, "servers": 2, "examples": 100, "keys": 50, "nnz": 4, "rounds": 4},
        "small": {"workers": 4, "servers": 2, "examples": 2_500, "keys": 2_000, "nnz": 8, "rounds": 20},
        "medium": {"workers": 8, "servers": 4, "examples": 3_000, "keys": 20_000, "nnz": 8, "rounds": 25},
        "large": {"workers": 8, "servers": 4, "examples": 10_000, "keys": 100_000, "nnz": 8, "rounds": 20},
    }

    def generate(self, *, seed, workers, servers, examples, keys, nnz, rounds):
        # recipes: each worker actor makes its own shard
        return {"recipes": [(seed, w, examples, keys, nnz) for w in range(workers)],
                "servers": servers, "keys": keys, "rounds": rounds}

    def reference(self, inputs):
        shards = [make_shard(*recipe) for recipe in inputs["recipes"]]
        params = {k: 0.0 for k in range(inputs["keys"])}
        n = sum(len(shard) for shard in shards)
        for _ in range(inputs["rounds"]):
            apply_gradients(params, [gradient(shard, params) for shard in shards], n)
        return params

    def run(self, session, inputs):
        recipes, n_servers, keys, rounds = inputs["recipes"], inputs["servers"], inputs["keys"], inputs["rounds"]
        examples = sum(recipe[2] for recipe in recipes)
        with session.actors() as actors:
            servers = [actors.spawn(ParamServer, s, keys, n_servers, len(recipes), examples, rounds)
                       for s in range(n_servers)]
            workers = [actors.spawn(GradientWorker, w, servers, recipe, rounds) for w, recipe in enumerate(recipes)]
            actors.gather([server.call("connect", workers) for server in servers])
            for worker in workers:
                worker.tell("start")
            slices = poll({s: (lambda ref=server: ref.call("params_if_done")) for s, server in enumerate(servers)})
            params: dict[int, float] = {}
            for s in range(n_servers):
                params.update(slices[s])
            return dict(sorted(params.items()))

    def units(self, inputs):
        return 3 * inputs["rounds"] * len(inputs["recipes"]) * inputs["servers"]
