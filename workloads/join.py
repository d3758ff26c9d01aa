"""Join: orders joined with customers, revenue per region and the large orders.

Two keyed tables made on the workers: ``orders`` ``(order id, customer,
amount)`` and ``customers`` ``(customer, region)``. The flow joins them on
the customer, then (1) sums the amount per region and (2) collects every
order over a threshold with its region. Some orders name customers that do
not exist (an inner join drops them).

Stresses: a two-sided shuffle (both tables exchanged by key), a join's
output fanning out into two branches, and two sinks.

Hypothesis: data parallel wins: both sides are partitioned once by key and
joined where they meet. A task engine runs the same plan with more, smaller
scheduled tasks; a driver-regrouping pool moves every record through the
driver twice. The columnar form (`Join.run_columnar`) lets the engine's
planner choose: Spark broadcasts the small customers table rather than
shuffling both sides.
"""

from __future__ import annotations

import functools
import operator
import random

from engines.api import Dataflow
from workloads import Workload
from workloads.wordcount import partition_sizes

REGIONS = ("north", "south", "east", "west", "centre")
LARGE = 900


def make_orders(seed: int, part: int, orders: int, customers: int) -> list[tuple[int, int, int]]:
    """``(order id, customer, amount)``; about 2% name a customer that does not exist.

    >>> make_orders(3, 1, 4, 100) == make_orders(3, 1, 4, 100)
    True
    """
    rng = random.Random(seed * 1_000_003 + part)
    first = part * 10_000_000
    return [(first + i, rng.randrange(int(customers * 1.02)), rng.randrange(1, 1000)) for i in range(orders)]


def make_customers(seed: int, part: int, parts: int, customers: int) -> list[tuple[int, str]]:
    """Every ``parts``-th customer starting at ``part``, each with a region."""
    rng = random.Random(seed * 7_919 + part)
    return [(c, REGIONS[rng.randrange(len(REGIONS))]) for c in range(part, customers, parts)]


#: the two tables and the large orders as a frame's columns (the columnar form)
ORDER_COLUMNS = {"order_id": int, "customer": int, "amount": int}
CUSTOMER_COLUMNS = {"customer": int, "region": str}
LARGE_ORDER_COLUMNS = ["order_id", "customer", "amount", "region"]


def order_by_customer(order):
    order_id, customer, amount = order
    return customer, (order_id, amount)


def region_amount(joined):
    _, ((_, amount), region) = joined
    return region, amount


def is_large(joined):
    return joined[1][0][1] >= LARGE


def large_order(joined):
    customer, ((order_id, amount), region) = joined
    return order_id, customer, amount, region


def partitions(make, recipes) -> list:
    """One input partition per recipe, each made by ``make`` on the worker that reads it."""
    return [functools.partial(make, *recipe) for recipe in recipes]


class Join(Workload):
    name = "join"
    model = "dataflow"
    unit = "rows"
    traits = ("shuffle-heavy",)
    expect = "data parallel"
    sizes = {
        "tiny": {"orders": 5_000, "customers": 500, "partitions": 4},
        "small": {"orders": 200_000, "customers": 20_000, "partitions": 8},
        "medium": {"orders": 2_000_000, "customers": 200_000, "partitions": 16},
        "large": {"orders": 20_000_000, "customers": 1_000_000, "partitions": 32},
    }

    def generate(self, *, seed, orders, customers, partitions):
        return {"orders": [(seed, i, n, customers) for i, n in enumerate(partition_sizes(orders, partitions))],
                "customers": [(seed, i, partitions, customers) for i in range(partitions)]}

    def reference(self, inputs):
        region = {c: r for recipe in inputs["customers"] for c, r in make_customers(*recipe)}
        revenue: dict = {}
        large = []
        for recipe in inputs["orders"]:
            for order_id, customer, amount in make_orders(*recipe):
                if customer in region:
                    revenue[region[customer]] = revenue.get(region[customer], 0) + amount
                    if amount >= LARGE:
                        large.append((order_id, customer, amount, region[customer]))
        return {"revenue": list(revenue.items()), "large_orders": large}

    def run(self, session, inputs):
        flow = Dataflow("join")
        orders = flow.read(partitions(make_orders, inputs["orders"]), name="orders")
        customers = flow.read(partitions(make_customers, inputs["customers"]), name="customers")   # (customer, region) pairs
        joined = orders.map(order_by_customer).join(customers)
        joined.map(region_amount).reduce_by_key(operator.add).collect("revenue")
        joined.filter(is_large).map(large_order).collect("large_orders")
        return session.dataflow(flow)

    def run_columnar(self, session, inputs):
        """A join, then a group-by and a filter of its result, planned by the engine (spark-df, dask-df, flink-sql)."""
        orders = session.frame(partitions(make_orders, inputs["orders"]), ORDER_COLUMNS)
        customers = session.frame(partitions(make_customers, inputs["customers"]), CUSTOMER_COLUMNS)
        if session.frames == "spark":
            joined = orders.join(customers, "customer").cache()  # read by both results: computed once
            try:
                revenue, large = session.collect(joined.groupBy("region").sum("amount"),
                                                 joined.where(joined.amount >= LARGE).select(LARGE_ORDER_COLUMNS))
            finally:
                joined.unpersist()
        elif session.frames == "flink-sql":   # both queries in one Flink job
            joined = ("SELECT o.order_id, o.customer, o.amount, c.region FROM {orders} AS o "
                      "JOIN {customers} AS c ON o.customer = c.customer")
            revenue, large = session.collect(
                session.sql(f"SELECT region, SUM(amount) FROM ({joined}) GROUP BY region", orders=orders,
                            customers=customers),
                session.sql(f"SELECT {', '.join(LARGE_ORDER_COLUMNS)} FROM ({joined}) WHERE amount >= {LARGE}",
                            orders=orders, customers=customers))
        else:  # one graph for both results: the join is computed once
            joined = orders.merge(customers, on="customer")
            revenue, large = session.collect(joined.groupby("region").amount.sum(),
                                             joined[joined.amount >= LARGE][LARGE_ORDER_COLUMNS])
        return {"revenue": revenue, "large_orders": large}

    def units(self, inputs):
        return sum(r[2] for r in inputs["orders"]) + inputs["customers"][0][3]
