"""The regimes' odds (bench/regimes.py) and the ceiling they set (bench/ceilings.py):
the odds are the generator's own, they are chances, and ranking by them beats the
simple rule the regime stands for."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from bench.ceilings import ODDS, ODDS_FROM_DATA, POPULARITY, ceiling
from bench.regimes import SmallCatalogue, SmallCatalogueOdds, Wholesale
from training.config import TrainingConfig

SMALL = {
    "small-catalogue": SmallCatalogue(customers=800, days=150),
    "wholesale": Wholesale(customers=300, items=800, days=240),
}


@pytest.fixture(scope="module")
def drawn() -> dict[str, tuple[pd.DataFrame, object]]:
    return {name: regime.generate_with_odds(seed=1) for name, regime in SMALL.items()}


@pytest.mark.parametrize("name", list(SMALL))
def test_the_odds_come_with_the_very_data_generate_draws(
    name: str, drawn: dict[str, tuple[pd.DataFrame, object]]
) -> None:
    assert drawn[name][0].equals(SMALL[name].generate(seed=1))


def test_a_small_catalogue_line_is_some_item_for_sure(
    drawn: dict[str, tuple[pd.DataFrame, object]],
) -> None:
    odds = drawn["small-catalogue"][1]
    items = np.arange(SMALL["small-catalogue"].items)
    customers = np.arange(50)
    chances = odds.line_odds(customers, items, 100.0, sp.csr_matrix((50, len(items))))
    np.testing.assert_allclose(chances.sum(axis=1), 1.0)
    # A favourite is likelier for its customer than for the others.
    favourite = odds.favourites[0, 0]
    others = ~(odds.favourites[1:50] == favourite).any(axis=1)
    assert chances[0, favourite] > chances[1:][others, favourite].max()


def test_a_wholesale_line_is_a_repeat_in_proportion_to_orders_or_a_fresh_pick(
    drawn: dict[str, tuple[pd.DataFrame, object]],
) -> None:
    regime, odds = SMALL["wholesale"], drawn["wholesale"][1]
    items, customers = np.arange(regime.items), np.array([0, 1])
    own = sp.csr_matrix(([3.0, 1.0], ([0, 0], [5, 9])), shape=(2, regime.items))
    early, late = 10.0, regime.days - 1.0
    # Every item launched: a line is some item for sure.
    launched = dataclasses.replace(odds, launch=np.full(regime.items, -1.0))
    for day in (early, late):
        np.testing.assert_allclose(launched.line_odds(customers, items, day, own).sum(axis=1), 1)
    # An item not launched yet is never bought (its line is dropped, not redrawn).
    chances = odds.line_odds(customers, items, early, own)
    assert (odds.launch > early).any()
    assert (chances[:, odds.launch > early] == 0).all()
    # Customer 1 owns nothing, so their chances are the fresh picks alone.
    fresh, repeat = chances[1], regime.repeat_share
    assert chances[0, 5] == pytest.approx(repeat * 0.75 + (1 - repeat) * fresh[5])
    assert chances[0, 9] == pytest.approx(repeat * 0.25 + (1 - repeat) * fresh[9])
    # In season the year-end category (0) is likelier than before it.
    year_end = odds.category == 0
    in_season = launched.line_odds(customers, items, late, own)
    before = launched.line_odds(customers, items, early, own)
    assert in_season[1, year_end].sum() > before[1, year_end].sum()


@pytest.mark.parametrize("name", list(SMALL))
def test_ranking_by_the_odds_beats_popularity_on_new_items(
    name: str, drawn: dict[str, tuple[pd.DataFrame, object]], tmp_path: Path
) -> None:
    path = tmp_path / f"{name}.parquet"
    drawn[name][0].to_parquet(path, index=False)
    with threadpool_limits(limits=1, user_api="blas"):
        found = ceiling(SMALL[name], 1, path, TrainingConfig())
    new = found.metrics["new"]
    assert found.customers > 0
    assert new[ODDS]["ndcg@10"] > new[POPULARITY]["ndcg@10"]


def test_a_ceiling_refuses_data_another_seed_drew(tmp_path: Path) -> None:
    path = tmp_path / "other.parquet"
    SMALL["small-catalogue"].generate(seed=2).to_parquet(path, index=False)
    with pytest.raises(ValueError, match="not drawn by this regime with seed 1"):
        ceiling(SMALL["small-catalogue"], 1, path, TrainingConfig())


def test_favourites_are_inferred_from_what_was_bought_while_it_was_rarely_picked(
    drawn: dict[str, tuple[pd.DataFrame, object]],
) -> None:
    odds = drawn["small-catalogue"][1]
    assert isinstance(odds, SmallCatalogueOdds)
    nothing = np.empty(0, np.int64)
    # No lines: the favourites are the prior, shared by the items in proportion to it.
    blank = odds.favourite_chances(nothing, np.empty(0))
    np.testing.assert_allclose(blank, odds.favourite_prior / odds.favourite_prior.sum())
    # An item bought three times in a week it was among the least picked is almost
    # surely a favourite; the most picked item bought as often is much less so.
    week = 10
    rare, common = np.argsort(odds.weekly[week])[[0, -1]]
    days = np.full(3, week * 7.0 + 1.0)
    found_rare = odds.favourite_chances(np.full(3, rare), days)
    found_common = odds.favourite_chances(np.full(3, common), days)
    assert found_rare[rare] > 0.3 > blank[rare]
    assert found_rare[rare] > found_common[common]
    for found in (found_rare, found_common):
        # Chances of the share of favourites: they sum to one whatever was bought.
        assert found.sum() == pytest.approx(1.0)
    # The odds from the data are line chances, between the week's popularity and the
    # favourites' share.
    items = np.arange(len(odds.favourite_prior))
    inferred = odds.inferred_odds([(nothing, np.empty(0)), (np.full(3, rare), days)], items, 100.0)
    np.testing.assert_allclose(inferred.sum(axis=1), 1.0)
    assert inferred[1, rare] > inferred[0, rare]


def test_the_odds_from_the_data_lie_between_popularity_and_the_odds_on_new_items(
    drawn: dict[str, tuple[pd.DataFrame, object]], tmp_path: Path
) -> None:
    path = tmp_path / "small.parquet"
    drawn["small-catalogue"][0].to_parquet(path, index=False)
    with threadpool_limits(limits=1, user_api="blas"):
        found = ceiling(SMALL["small-catalogue"], 1, path, TrainingConfig())
    new = {name: found.metrics["new"][name]["ndcg@10"] for name in (ODDS, ODDS_FROM_DATA)}
    assert new[ODDS_FROM_DATA] < new[ODDS]
    assert new[ODDS_FROM_DATA] > found.metrics["new"][POPULARITY]["ndcg@10"]
