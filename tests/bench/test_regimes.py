"""The synthetic regimes (bench/regimes.py): seeded, canonical, and each with the
character it stands for, checked with the simple rules at the trainer's time split."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from bench.calibrate import shop_statistics
from bench.regimes import Grocery, SmallCatalogue, Wholesale, wholesale_reorders
from nbo.data.history import encode_purchases
from training.methods import (
    buy_again_recommender,
    evaluate_methods,
    evaluation_customers,
    popularity_recommender,
    split_popularity,
)
from training.ranker import fit_knn, knn_recommender
from training.split import time_split

COLUMNS = ["customer_id", "item_id", "timestamp", "quantity", "price", "order_id"]
SMALL = {
    "grocery": Grocery(customers=150, items=2_000, days=150),
    "small-catalogue": SmallCatalogue(customers=800, days=150),
    "wholesale": Wholesale(customers=300, items=800, days=240),
    "wholesale-reorders": dataclasses.replace(
        wholesale_reorders(), customers=300, items=800, days=240
    ),
}


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return {name: regime.generate(seed=1) for name, regime in SMALL.items()}


def _simple_rules(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """NDCG@10 of buy-again, popularity and ItemKNN per truth, as the trainer scores them."""
    with threadpool_limits(limits=1, user_api="blas"):
        split = time_split(encode_purchases(table), 30, 30)
        popularity = split_popularity(split, 90)
        # ItemKNN alone reads only the similarity of the item side.
        items = SimpleNamespace(similarity=fit_knn(split.train.counts, 100))
        methods = {
            "buy_again": buy_again_recommender(
                split.train.counts, split.train.last_purchase, popularity, 10
            ),
            "popularity": popularity_recommender(popularity, 10),
            "itemknn": knn_recommender(items, split, 10),
        }
        metrics = evaluate_methods(split, methods, evaluation_customers(split, None, 0), 10)
    return {t: {m: v["ndcg@10"] for m, v in by.items()} for t, by in metrics.items()}


@pytest.mark.parametrize("name", list(SMALL))
def test_a_regime_is_canonical_purchase_data_the_same_for_a_seed(
    name: str, tables: dict[str, pd.DataFrame]
) -> None:
    table = tables[name]
    assert list(table.columns) == COLUMNS
    assert table["timestamp"].is_monotonic_increasing
    assert (table["quantity"] >= 1).all() and (table["price"] > 0).all()
    # One moment and one customer per order; no item twice in an order.
    orders = table.groupby("order_id")
    assert (orders["timestamp"].nunique() == 1).all()
    assert (orders["customer_id"].nunique() == 1).all()
    assert not table.duplicated(["order_id", "item_id"]).any()
    assert table.equals(SMALL[name].generate(seed=1))
    assert not table.equals(SMALL[name].generate(seed=2))


def test_grocery_is_mostly_reorders_and_buying_again_wins_by_far(
    tables: dict[str, pd.DataFrame],
) -> None:
    table = tables["grocery"]
    repeat = table.duplicated(["customer_id", "item_id"]).mean()
    assert repeat > 0.5
    rules = _simple_rules(table)
    assert rules["all"]["buy_again"] > 2 * rules["all"]["popularity"]
    assert rules["all"]["buy_again"] == max(rules["all"].values())


def test_a_small_catalogue_is_won_by_popularity(tables: dict[str, pd.DataFrame]) -> None:
    table = tables["small-catalogue"]
    assert table["item_id"].nunique() <= 200
    rules = _simple_rules(table)
    for truth in ("all", "new"):
        assert rules[truth]["popularity"] == max(rules[truth].values()), (truth, rules[truth])


def test_wholesale_mixes_repeats_and_new_items_over_long_irregular_gaps(
    tables: dict[str, pd.DataFrame],
) -> None:
    table = tables["wholesale"]
    per_customer = table.groupby("customer_id")["item_id"].nunique()
    assert per_customer.median() >= 15
    # Like the shared file (about 0.31 and 0.31): repeats are a minority of the lines, and
    # most items new to a customer's next month were never bought by them.
    figures = shop_statistics(table)
    assert 0.2 < figures["line_repeat"] < 0.4, figures
    assert figures["new_from_before"] < 0.4, figures
    assert figures["one_order"] > 0.15, figures
    days = table.groupby("order_id")["timestamp"].first().sort_values()
    by_customer = table.groupby("order_id")["customer_id"].first()[days.index]
    gaps = (
        pd.DataFrame({"customer": by_customer.to_numpy(), "at": days.to_numpy()})
        .groupby("customer")["at"]
        .diff()
        .dt.days.dropna()
    )
    assert gaps.median() > 14 and np.percentile(gaps, 90) > 2 * gaps.median()
    rules = _simple_rules(table)
    for truth in ("all", "new"):
        assert (
            min(rules[truth]["buy_again"], rules[truth]["itemknn"]) > 2 * rules[truth]["popularity"]
        )


def test_the_reordering_wholesaler_repeats_twice_as_much(
    tables: dict[str, pd.DataFrame],
) -> None:
    plain = shop_statistics(tables["wholesale"])
    reorders = shop_statistics(tables["wholesale-reorders"])
    assert reorders["line_repeat"] > 1.5 * plain["line_repeat"], (plain, reorders)
    assert reorders["new_from_before"] > 1.3 * plain["new_from_before"], (plain, reorders)
    rules = _simple_rules(tables["wholesale-reorders"])
    assert rules["new"]["buy_again"] > rules["new"]["popularity"]
