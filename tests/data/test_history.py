"""Purchase histories: what counts as an order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nbo.core.vocabulary import DAY
from nbo.data.history import build_history, decay, encode_purchases


def test_lines_without_an_order_id_each_count_as_an_order() -> None:
    frame = pd.DataFrame(
        {
            "customer_id": ["c1", "c1", "c1", "c1"],
            "item_id": ["i1", "i1", "i1", "i2"],
            "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-03"]),
            "order_id": ["o1", None, None, "o1"],
        }
    )
    history = build_history(frame)
    row = history.counts.toarray()[0].tolist()
    counts = dict(zip(history.items.ids.tolist(), row, strict=True))
    assert counts == {"i1": 3.0, "i2": 1.0}


def recency_lines(extra: list[tuple[str, str, str, str]] | None = None) -> pd.DataFrame:
    """Customer a: item x in order o1 (two lines) on day 0, x and y in o2 on day 60;
    customer b: y in o3 on day 120. Day 0 = 2024-01-01."""
    lines = [
        ("a", "x", "o1", "2024-01-01"),
        ("a", "x", "o1", "2024-01-01"),
        ("a", "x", "o2", "2024-03-01"),
        ("a", "y", "o2", "2024-03-01"),
        ("b", "y", "o3", "2024-04-30"),
        *(extra or []),
    ]
    customer, item, order, day = zip(*lines, strict=True)
    return pd.DataFrame(
        {
            "customer_id": customer,
            "item_id": item,
            "order_id": order,
            "timestamp": pd.to_datetime(list(day)),
        }
    )


def day_s(day: int) -> int:
    return int(pd.Timestamp("2024-01-01").timestamp()) + day * DAY


def test_recent_orders_weigh_each_order_by_its_age() -> None:
    encoded = encode_purchases(recency_lines())
    recent = encoded.recent_orders(day_s(120), half_life_days=60.0)
    history = encoded.history()

    # The counts' pattern, each order once (o1's two lines are one order), halved every
    # 60 days: a's x from day 0 (1/4) and day 60 (1/2), y from day 60; b's y today.
    assert np.array_equal(recent.pairs.indptr, history.counts.indptr)
    assert np.array_equal(recent.pairs.indices, history.counts.indices)
    assert recent.pairs.toarray().tolist() == [[0.75, 0.5], [0.0, 1.0]]
    # Per customer each order once: a's o1 (1/4) and o2 (1/2), b's o3.
    assert recent.customers.tolist() == [0.75, 1.0]


def test_recent_orders_decay_to_a_later_clock_and_new_orders_add() -> None:
    """value(t) = value(t0) * decay(t - t0) + the orders placed since: the same as
    counting again from every line."""
    t0, t = day_s(120), day_s(180)
    before = encode_purchases(recency_lines()).recent_orders(t0, 60.0)
    fade = float(decay(t - t0, 60.0))
    assert fade == pytest.approx(0.5)
    assert decay(0, 60.0) == 1.0

    # Nothing since: every value halves by day 180.
    again = encode_purchases(recency_lines()).recent_orders(t, 60.0)
    assert np.allclose(again.pairs.toarray(), before.pairs.toarray() * fade)
    assert np.allclose(again.customers, before.customers * fade)

    # a orders x again on day 150: it adds decay(180 - 150) to a's x and to a's orders.
    later = encode_purchases(recency_lines([("a", "x", "o4", "2024-05-30")])).recent_orders(t, 60.0)
    added = float(decay(t - day_s(150), 60.0))
    assert added == pytest.approx(2**-0.5)
    assert later.pairs[0, 0] == pytest.approx(before.pairs[0, 0] * fade + added)
    assert later.pairs[0, 1] == pytest.approx(before.pairs[0, 1] * fade)
    assert later.customers[0] == pytest.approx(before.customers[0] * fade + added)
    assert later.customers[1] == pytest.approx(before.customers[1] * fade)
