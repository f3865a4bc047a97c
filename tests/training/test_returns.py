"""Returns and cancellations in the training data are netted off the purchases: a
customer's profile counts the orders and value they kept, and their own history
(buy-again, "you bought this before", the ALS confidence) holds no item they sent back
whole."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from support import END, GROUP_ITEMS, profile_one, rank_one, small_training_config

from nbo.data.mapping import load_mapping
from nbo.models.served import load_serving_model
from nbo.offers.explanations import SOURCE_BUY_AGAIN
from nbo.offers.suppression import SuppressionWindow
from training.pipeline import train


def _line(customer: str, item: str, days_before_end: float, quantity: int, order: str) -> dict:
    return {
        "customer_id": customer,
        "item_id": item,
        "timestamp": END - pd.Timedelta(days=days_before_end),
        "quantity": quantity,
        "price": 2.5,
        "order_id": order,
    }


def test_returned_purchases_are_not_counted_nor_offered_back(
    tmp_path: Path, planted_purchases: pd.DataFrame
) -> None:
    mine = planted_purchases[planted_purchases["customer_id"] == "a00"]
    # An item of a00's own taste they never kept: bought, and returned whole a day later.
    returned = next(i for i in GROUP_ITEMS["a"] if i not in set(mine["item_id"]))
    extra = pd.DataFrame(
        [
            _line("a00", returned, 60, 2, "ret-1"),
            _line("a00", returned, 59, -2, "ret-2"),
            # A customer whose only order, 1,000 units, came back the next day.
            _line("ret", "A01", 40, 1000, "ret-3"),
            _line("ret", "A01", 39, -1000, "ret-4"),
        ]
    )
    path = tmp_path / "purchases.csv"
    pd.concat([planted_purchases, extra]).to_csv(path, index=False)

    result = train(path, load_mapping("canonical"), tmp_path / "models", small_training_config())
    assert result.path is not None
    model = load_serving_model(result.path.parent)

    # Nothing kept, no customer: not an order of 1,000 units worth 2,500.
    assert model.customers.get("ret") is None
    a00 = model.customers.get("a00")
    assert a00 is not None
    items, _confidence, _last = model.history_of(a00)
    assert returned not in set(model.items.external(items))
    now = model.trained_until_s + 3600
    profile = profile_one(model, "a00", (), now)
    assert profile.frequency == mine["order_id"].nunique()
    assert profile.monetary == pytest.approx(float((mine["quantity"] * mine["price"]).sum()))
    ranking = rank_one(model, "a00", 20, now, SuppressionWindow(30))
    for offer in ranking.offers:
        assert returned not in offer.reason.because
        if offer.item_id == returned:
            assert offer.reason.source != SOURCE_BUY_AGAIN
            assert "bought this before" not in offer.reason.text
