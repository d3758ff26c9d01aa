"""ETL: parse, validate and enrich raw records; bad records are counted, not crashed on.

Raw records are CSV lines ``time,user,event,value`` made on the workers;
about 3% are broken in one of four ways (too few fields, a value that is not
a number, an unknown event, a negative value). Each line is parsed once into
either a clean record or the reason it was rejected. Clean records are
enriched with the user's country from a small dimension table (shipped with
the step's function: a broadcast), then summed per country and event;
rejects are counted per reason.

Stresses: per-record CPU work in narrow steps (parsing dominates), a
broadcast lookup, one stream split into two branches, and a small keyed
aggregation at the end -- the everyday shape of a data pipeline.

Hypothesis: data parallel and task parallel are close, and both scale with
workers: almost all the work is narrow and stays where the partition is;
the shuffle is tiny. The pool does as well here as anything, since nothing
large passes through the driver.
"""

from __future__ import annotations

import functools
import operator
import random

from engines.api import Dataflow
from workloads import Workload
from workloads.wordcount import partition_sizes

EVENTS = ("view", "click", "cart", "buy")
COUNTRIES = ("no", "pe", "in", "de", "jp", "br", "ke")


def make_lines(seed: int, part: int, lines: int, users: int) -> list[str]:
    """CSV lines ``time,user,event,value``, about 3% of them broken. Deterministic.

    >>> make_lines(2, 0, 3, 50) == make_lines(2, 0, 3, 50)
    True
    """
    rng = random.Random(seed * 1_000_003 + part)
    out = []
    for i in range(lines):
        t, user, event, value = part * 10_000_000 + i, rng.randrange(users), rng.choice(EVENTS), rng.randrange(500)
        broken = rng.random()
        if broken < 0.0075:
            out.append(f"{t},{user},{event}")
        elif broken < 0.015:
            out.append(f"{t},{user},{event},n/a")
        elif broken < 0.0225:
            out.append(f"{t},{user},refund,{value}")
        elif broken < 0.03:
            out.append(f"{t},{user},{event},-{value + 1}")
        else:
            out.append(f"{t},{user},{event},{value}")
    return out


def parse(line: str):
    """``("ok", (user, event, value))`` or ``("bad", reason)``.

    >>> parse("1,7,buy,12"), parse("1,7,buy"), parse("1,7,buy,x")
    (('ok', (7, 'buy', 12)), ('bad', 'fields'), ('bad', 'number'))
    """
    fields = line.split(",")
    if len(fields) != 4:
        return "bad", "fields"
    _, user, event, value = fields
    if event not in EVENTS:
        return "bad", "event"
    try:
        number = int(value)
    except ValueError:
        return "bad", "number"
    if number < 0:
        return "bad", "negative"
    return "ok", (int(user), event, number)


def country_table(users: int) -> dict[int, str]:
    """The dimension table: each user's country."""
    return {u: COUNTRIES[(u * 2_654_435_761) % len(COUNTRIES)] for u in range(users)}


def is_ok(parsed) -> bool:
    return parsed[0] == "ok"


def is_bad(parsed) -> bool:
    return parsed[0] == "bad"


def reason(parsed) -> str:
    return parsed[1]


class Enrich:
    """``(user, event, value)`` -> ``((country, event), value)``; the table travels with the step."""

    def __init__(self, table: dict[int, str]):
        self.table = table

    def __call__(self, parsed):
        user, event, value = parsed[1]
        return (self.table[user], event), value


class ETL(Workload):
    name = "etl"
    model = "dataflow"
    unit = "records"
    traits = ("narrow work",)
    expect = None   # the hypothesis names no architecture
    sizes = {
        "tiny": {"lines": 5_000, "users": 1_000, "partitions": 4},
        "small": {"lines": 200_000, "users": 10_000, "partitions": 8},
        "medium": {"lines": 2_000_000, "users": 50_000, "partitions": 16},
        "large": {"lines": 15_000_000, "users": 100_000, "partitions": 32},
    }

    def generate(self, *, seed, lines, users, partitions):
        return [(seed, i, n, users) for i, n in enumerate(partition_sizes(lines, partitions))]

    def reference(self, inputs):
        table = country_table(inputs[0][3])
        totals: dict = {}
        rejects: dict = {}
        for recipe in inputs:
            for line in make_lines(*recipe):
                tag, what = parse(line)
                if tag == "ok":
                    key = (table[what[0]], what[1])
                    totals[key] = totals.get(key, 0) + what[2]
                else:
                    rejects[what] = rejects.get(what, 0) + 1
        return {"totals": list(totals.items()), "rejects": list(rejects.items())}

    def run(self, session, inputs):
        flow = Dataflow("etl")
        parsed = flow.read([functools.partial(make_lines, *r) for r in inputs]).map(parse, name="parse")
        parsed.filter(is_ok).map(Enrich(country_table(inputs[0][3])), name="enrich") \
            .reduce_by_key(operator.add).collect("totals")
        parsed.filter(is_bad).count_by_key(reason).collect("rejects")
        return session.dataflow(flow)

    def units(self, inputs):
        return sum(r[2] for r in inputs)
