"""Order book: orders routed to one matching-engine actor per symbol; latency per order.

An exchange in miniature. The driver is the exchange's gateway: it sends
each order to the book actor of its symbol (``call``) and keeps ``window``
orders outstanding, as ``window`` clients with one order in flight each
would. Each book matches by **price-time priority**: an incoming buy trades
with the cheapest resting sell, oldest first among equal prices, while the
prices cross; the trade is at the resting order's price; what is left
rests in the book. A cancel removes a resting order if it is still there.
The reply lists what the order did -- its trades, or what its cancel
removed -- and the latency of an order is its call to its reply.

Symbols are drawn from a Zipf law, so one book is hot (over a third of
the orders at ``small``) and most are quiet; prices follow a mean-reverting
walk per symbol, and a bit under half the orders trade on arrival.

The answer is every event in order, and each book's resting orders at the
end. The reference is a second, independent matching engine (sorted lists
instead of heaps) run over the orders in one process; the actors are
correct only if each book saw exactly its orders, in the order sent.

Stresses: per-message latency to stateful actors, strict per-key ordering
(one sender, one book), and a hot key: the busiest book handles its
orders one at a time whatever the worker count.

Hypothesis: actors win. A book is state that must change one order at a
time in arrival order -- an actor's mailbox gives that for free, without
locks -- and an order costs one message to a warm actor. Task parallel
would pass the book from task to task (a chain per symbol, moving the
whole book every order) or keep it outside the engine; a dataflow needs a
keyed stateful operator and, batched, pays the batch interval in latency.
Throughput stops growing once there are more workers than busy books: the
hottest symbol is the ceiling.
"""

from __future__ import annotations

import bisect
import heapq
import random
from itertools import accumulate

from workloads import Workload
from workloads.task_overhead import windowed

BUY, SELL, CANCEL = "buy", "sell", "cancel"


def symbol_names(n: int) -> list[str]:
    """``n`` ticker symbols.

    >>> symbol_names(3)
    ['SYM00', 'SYM01', 'SYM02']
    """
    return [f"SYM{i:02d}" for i in range(n)]


def make_orders(seed: int, orders: int, symbols: int, cancel_share: float = 0.2) -> list[tuple]:
    """``(order id, symbol, kind, price, qty)`` per order; a cancel's price is the id it cancels. Deterministic.

    Prices are integer ticks around a mid that walks back towards 10 000;
    a cancel names one of the last 20 orders of its symbol (it may have
    traded away already, then it removes nothing).

    >>> a = make_orders(1, 50, 3)
    >>> a == make_orders(1, 50, 3), a == make_orders(2, 50, 3), a[0][0], sorted({o[2] for o in a})
    (True, False, 0, ['buy', 'cancel', 'sell'])
    """
    rng = random.Random(seed)
    names = symbol_names(symbols)
    weights = list(accumulate(1.0 / (i + 1) for i in range(symbols)))
    mid = {s: 10_000 for s in names}
    recent: dict[str, list[int]] = {s: [] for s in names}
    out = []
    for oid in range(orders):
        s = rng.choices(names, cum_weights=weights)[0]
        mid[s] += rng.randint(-3, 3) + (10_000 - mid[s]) // 50
        if recent[s] and rng.random() < cancel_share:
            out.append((oid, s, CANCEL, rng.choice(recent[s][-20:]), 0))
            continue
        side = rng.choice((BUY, SELL))
        price = mid[s] + rng.randint(-8, 8)
        out.append((oid, s, side, price, 10 * rng.randint(1, 10)))
        recent[s].append(oid)
    return out


class Book:
    """One symbol's order book: two heaps of resting orders, best first; cancels are removed lazily.

    >>> b = Book("X")
    >>> b.order(1, "sell", 101, 5), b.order(2, "sell", 100, 5), b.order(3, "buy", 101, 8)
    ((), (), (('T', 3, 2, 100, 5), ('T', 3, 1, 101, 3)))
    >>> b.order(4, "cancel", 1, 0), b.snapshot()
    ((('X', 1, 2),), ((), ()))
    """

    def __init__(self, symbol: str):
        self.symbol = symbol
        self.heaps = {BUY: [], SELL: []}   # buy: (-price, id); sell: (price, id) -- the best on top
        self.live: dict[int, list] = {}    # resting order id -> [side, price, qty left]

    def order(self, oid: int, kind: str, price: int, qty: int) -> tuple:
        """Handle one order; the events it caused: ``('T', taker, maker, price, qty)`` or ``('X', id, qty)``."""
        if kind == CANCEL:
            entry = self.live.pop(price, None)   # its heap entry is skipped when it reaches the top
            return (("X", price, entry[2]),) if entry else ()
        other = SELL if kind == BUY else BUY
        heap, trades = self.heaps[other], []
        while qty and heap:
            key, maker = heap[0]
            if maker not in self.live:           # cancelled earlier
                heapq.heappop(heap)
                continue
            resting = self.live[maker]
            if (resting[1] > price) if kind == BUY else (resting[1] < price):
                break
            fill = min(qty, resting[2])
            trades.append(("T", oid, maker, resting[1], fill))
            qty -= fill
            resting[2] -= fill
            if not resting[2]:
                heapq.heappop(heap)
                del self.live[maker]
        if qty:
            self.live[oid] = [kind, price, qty]
            heapq.heappush(self.heaps[kind], (-price if kind == BUY else price, oid))
        return tuple(trades)

    def snapshot(self) -> tuple:
        """``(bids, asks)``: resting ``(id, price, qty)`` in priority order."""
        return tuple(tuple((oid, self.live[oid][1], self.live[oid][2]) for _, oid in sorted(self.heaps[side])
                           if oid in self.live)
                     for side in (BUY, SELL))


def reference_book(orders) -> tuple[list, dict]:
    """The oracle: every symbol's matching in one process, with sorted lists instead of heaps.

    Each side is a list of ``(priority, id)`` kept sorted with bisect; the
    best is at the front; a cancel finds its entry by bisecting on its
    priority. Same rules as `Book`, different code.

    >>> events, books = reference_book([(0, "X", "buy", 100, 5), (1, "X", "sell", 99, 7)])
    >>> events, books["X"]
    ([('T', 1, 0, 100, 5)], ((), ((1, 99, 2),)))
    """
    sides: dict[str, dict[str, list]] = {}
    left: dict[int, tuple] = {}           # resting id -> (symbol, side, price, qty left)
    events = []
    for oid, s, kind, price, qty in orders:
        book = sides.setdefault(s, {BUY: [], SELL: []})
        if kind == CANCEL:
            if price in left:
                _, side, p, q = left.pop(price)
                entries = book[side]
                entries.pop(bisect.bisect_left(entries, ((-p if side == BUY else p), price)))
                events.append(("X", price, q))
            continue
        other = book[SELL if kind == BUY else BUY]
        while qty and other:
            (key, maker) = other[0]
            maker_price, maker_qty = left[maker][2], left[maker][3]
            if (maker_price > price) if kind == BUY else (maker_price < price):
                break
            fill = min(qty, maker_qty)
            events.append(("T", oid, maker, maker_price, fill))
            qty -= fill
            if fill == maker_qty:
                other.pop(0)
                del left[maker]
            else:
                left[maker] = (s, left[maker][1], maker_price, maker_qty - fill)
        if qty:
            left[oid] = (s, kind, price, qty)
            bisect.insort(book[kind], ((-price if kind == BUY else price), oid))
    books = {s: tuple(tuple((oid, left[oid][2], left[oid][3]) for _, oid in book[side]) for side in (BUY, SELL))
             for s, book in sides.items()}
    return events, books


class OrderBook(Workload):
    name = "order-book"
    model = "actors"
    unit = "orders"
    traits = ("stateful actors", "skew")
    expect = "actors"
    sizes = {
        "tiny": {"orders": 400, "symbols": 4, "window": 8},
        "small": {"orders": 50_000, "symbols": 8, "window": 16},
        "medium": {"orders": 200_000, "symbols": 16, "window": 16},
        "large": {"orders": 800_000, "symbols": 32, "window": 16},
    }

    def generate(self, *, seed, orders, symbols, window):
        return {"orders": make_orders(seed, orders, symbols), "symbols": symbol_names(symbols), "window": window}

    def reference(self, inputs):
        events, books = reference_book(inputs["orders"])
        empty = ((), ())
        return {"events": events, "books": {s: books.get(s, empty) for s in inputs["symbols"]}}

    def run(self, session, inputs):
        symbols = inputs["symbols"]
        with session.actors() as actors:
            books = {s: actors.spawn(Book, s) for s in symbols}
            replies = windowed(lambda o: books[o[1]].call("order", o[0], o[2], o[3], o[4]),
                               inputs["orders"], inputs["window"])
            events = [event for reply in replies for event in reply]
            snapshots = actors.gather([books[s].call("snapshot") for s in symbols])
            return {"events": events, "books": dict(zip(symbols, snapshots))}

    def units(self, inputs):
        return len(inputs["orders"])
