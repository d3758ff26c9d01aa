"""Ping-pong: message round trips, driver to actor and actor to actor.

Two phases, one after the other:

1. **calls** -- the driver calls ``echo`` on the player actors, one call at
   a time, waiting for each reply before the next: ``calls`` unloaded round
   trips driver -> actor -> driver. Each is a recorded latency.
2. **rallies** -- ``pairs`` pairs of players, each holding the other's ref,
   hit a ball back and forth with ``tell`` until each pair has made
   ``rallies`` round trips; every hit changes the ball, so a lost, doubled or
   reordered message changes the answer. The driver is not in the loop: it
   serves, then asks the server until the last hit has landed.

The answer is a digest of the call replies and every pair's final ball.

The recorded latencies are driver round trips (the calls, plus the few
asks that wait for the rallies). The actor-to-actor round trip is not
recorded on its own -- no Future spans it -- so read it as the rally
phase's share of the run divided by ``rallies``.

Stresses: per-message cost with nothing to compute: serialisation, the hop
to the actor's host, the mailbox, the reply path.

Hypothesis: actors win -- a round trip is two messages to a warm actor,
with no scheduler deciding anything; tasks cannot express this at all (no
state survives between tasks), nor can a dataflow. Among actor engines,
actor-to-actor rallies should be faster than driver calls where refs route
messages straight to the host of the other actor (mini-actors, Ray's
direct calls), and no faster where every message passes one router.
Serial is a function call and wins outright.
"""

from __future__ import annotations

import time
from typing import Callable

from engines.api import Future
from workloads import Workload

MASK = (1 << 64) - 1


def bounce(ball: int, hit: int) -> int:
    """The ball after hit number ``hit``: each hit changes it, in an order-sensitive way.

    >>> bounce(bounce(1, 1), 2) == bounce(bounce(1, 2), 1)
    False
    """
    return ((ball ^ hit) * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & MASK


def rally(ball: int, rallies: int) -> int:
    """The final ball of a pair after ``rallies`` round trips (2 x rallies hits, numbered from 1).

    >>> rally(5, 1) == bounce(bounce(5, 1), 2)
    True
    """
    for hit in range(1, 2 * rallies + 1):
        ball = bounce(ball, hit)
    return ball


def poll(asks: dict[object, Callable[[], Future]], pause: float = 0.001) -> dict:
    """Ask until every reply is not None; ``{key: reply}``.

    ``asks`` maps a key to a function that sends the question (e.g.
    ``lambda: ref.call("final")``). All unanswered questions are sent at
    once; those answered None are sent again after ``pause`` seconds. Each
    question queues behind the messages already in the actor's mailbox, so
    this is how a driver learns that fire-and-forget messages have landed
    without blocking any actor.

    >>> from engines.serial import SerialEngine
    >>> with SerialEngine().start() as s, s.actors() as actors:
    ...     p = actors.spawn(Player)
    ...     poll({"p": lambda: p.call("echo", 1)})
    {'p': 100028436902272046}
    """
    replies: dict = {}
    waiting = dict(asks)
    while True:
        sent = {key: ask() for key, ask in waiting.items()}
        for key, future in sent.items():
            reply = future.result()
            if reply is not None:
                replies[key] = reply
                del waiting[key]
        if not waiting:
            return replies
        time.sleep(pause)


class Player:
    """One side of a pair: answers the driver's calls and returns its partner's hits."""

    def __init__(self):
        self.partner = None
        self.last = None      # the final ball, once the rally ends here

    def meet(self, partner) -> None:
        self.partner = partner

    def echo(self, x: int) -> int:
        """A driver round trip."""
        return bounce(x, 0)

    def serve(self, ball: int, rallies: int) -> None:
        self.last = None
        self.partner.tell("hit", ball, 1, 2 * rallies)

    def hit(self, ball: int, n: int, last_hit: int) -> None:
        ball = bounce(ball, n)
        if n == last_hit:
            self.last = ball
        else:
            self.partner.tell("hit", ball, n + 1, last_hit)

    def final(self):
        """The final ball once the last hit has landed here, else None (ask again)."""
        return self.last


def calls_digest(replies) -> int:
    """An order-sensitive digest of the call replies.

    >>> calls_digest([1, 2]) == calls_digest([2, 1])
    False
    """
    d = 0
    for r in replies:
        d = bounce(d ^ r, 1)
    return d


class PingPong(Workload):
    name = "ping-pong"
    model = "actors"
    unit = "round-trips"
    traits = ("stateful actors",)
    expect = "actors"
    sizes = {
        "tiny": {"calls": 200, "pairs": 2, "rallies": 200},
        "small": {"calls": 500, "pairs": 2, "rallies": 1_000},   # Dask, Ray ≈ 5 s (≈ 450 round-trips/s)
        "medium": {"calls": 1_000, "pairs": 4, "rallies": 3_000},
        "large": {"calls": 10_000, "pairs": 4, "rallies": 50_000},
    }

    def generate(self, *, seed, calls, pairs, rallies):
        return {"seed": seed, "calls": calls, "pairs": pairs, "rallies": rallies}

    def reference(self, inputs):
        seed = inputs["seed"]
        replies = (bounce(bounce(seed, i), 0) for i in range(inputs["calls"]))
        balls = [rally(bounce(seed, -1 - p), inputs["rallies"]) for p in range(inputs["pairs"])]
        return {"calls": calls_digest(replies), "balls": balls}

    def run(self, session, inputs):
        seed, pairs = inputs["seed"], inputs["pairs"]
        with session.actors() as actors:
            servers = [actors.spawn(Player) for _ in range(pairs)]
            receivers = [actors.spawn(Player) for _ in range(pairs)]
            # call, not tell: both must have met before the first hit (the hit comes from another sender)
            actors.gather([a.call("meet", b) for a, b in zip(servers, receivers)]
                          + [b.call("meet", a) for a, b in zip(servers, receivers)])
            players = servers + receivers
            replies = [players[i % len(players)].call("echo", bounce(seed, i)).result()
                       for i in range(inputs["calls"])]
            for p, server in enumerate(servers):
                server.tell("serve", bounce(seed, -1 - p), inputs["rallies"])
            balls = poll({p: (lambda s=server: s.call("final")) for p, server in enumerate(servers)})
            return {"calls": calls_digest(replies), "balls": [balls[p] for p in range(pairs)]}

    def units(self, inputs):
        return inputs["calls"] + inputs["pairs"] * inputs["rallies"]
