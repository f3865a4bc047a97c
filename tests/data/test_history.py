"""Purchase histories: what counts as an order."""

from __future__ import annotations

import pandas as pd

from nbo.data.history import build_history


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
