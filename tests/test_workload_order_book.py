"""The order book's matching rules, and its two independent engines agreeing on random order flow."""

from __future__ import annotations

import pytest

from workloads.order_book import Book, make_orders, reference_book


def test_equal_prices_trade_oldest_first_at_the_resting_price():
    book = Book("X")
    book.order(1, "sell", 100, 5)
    book.order(2, "sell", 100, 5)
    book.order(3, "sell", 99, 5)
    assert book.order(4, "buy", 101, 12) == (("T", 4, 3, 99, 5), ("T", 4, 1, 100, 5), ("T", 4, 2, 100, 2))
    assert book.snapshot() == ((), ((2, 100, 3),))


def test_a_buy_below_the_best_ask_rests_and_a_cancel_takes_it_away():
    book = Book("X")
    book.order(1, "sell", 100, 5)
    assert book.order(2, "buy", 99, 5) == ()
    assert book.snapshot() == (((2, 99, 5),), ((1, 100, 5),))
    assert book.order(3, "cancel", 2, 0) == (("X", 2, 5),)
    assert book.order(4, "cancel", 2, 0) == ()            # gone already: removes nothing
    assert book.order(5, "sell", 99, 5) == ()             # nothing left to trade with
    assert book.snapshot() == ((), ((5, 99, 5), (1, 100, 5)))


def test_a_cancelled_order_never_trades():
    book = Book("X")
    book.order(1, "sell", 100, 5)
    book.order(2, "sell", 101, 5)
    book.order(3, "cancel", 1, 0)
    assert book.order(4, "buy", 101, 5) == (("T", 4, 2, 101, 5),)


@pytest.mark.parametrize("seed", range(5))
def test_the_heap_book_agrees_with_the_sorted_list_reference(seed):
    orders = make_orders(seed, 3_000, 3)
    books = {}
    events = []
    for oid, symbol, kind, price, qty in orders:
        events.extend(books.setdefault(symbol, Book(symbol)).order(oid, kind, price, qty))
    want_events, want_books = reference_book(orders)
    assert events == want_events
    assert {s: b.snapshot() for s, b in books.items()} == want_books
    assert sum(e[0] == "T" for e in events) > 500 and sum(e[0] == "X" for e in events) > 50
