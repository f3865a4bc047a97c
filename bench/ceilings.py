"""The ceiling of a synthetic shop: how well the odds that drew its data rank what came next.

A regime's generator knows, at the cutoff, each customer's chance of buying each item on
their next line (``bench.regimes.SmallCatalogueOdds``, ``WholesaleOdds``). Ranking by
those odds is as well as any model can do without seeing the future, give or take the
luck of the draw: no model learns more than the generator put in. Scored on the
trainer's own split, customers and truths, the ceiling says whether a target against the
best simple rule can be met on that regime at all (if the odds themselves are not 10%
above popularity on ``new``, no ranker will be).

The ranking is by the chance of one line; a customer with several lines in the holdout
buys an item at least once with a chance that grows with it, so the order is the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from bench.regimes import (
    DAY_S,
    REGIMES,
    START,
    SmallCatalogue,
    SmallCatalogueOdds,
    Wholesale,
    WholesaleOdds,
)
from nbo.data.mapping import load_mapping
from training.config import TrainingConfig
from training.load import load_data
from training.methods import (
    Metrics,
    Recommender,
    evaluate_methods,
    evaluation_customers,
    popularity_recommender,
    split_popularity,
)
from training.progress import Steps
from training.split import TimeSplit, time_split

ODDS = "odds"
# The odds with the favourites inferred from each customer's lines (the small catalogue):
# as well as a model can rank from the data, with the week's popularity known exactly.
ODDS_FROM_DATA = "odds_from_data"
POPULARITY = "popularity"
# Customers ranked at a time: a block's odds are a dense customers x items array.
BLOCK = 1_000


@dataclass(frozen=True)
class Ceiling:
    """The odds' figures and popularity's on the same split (popularity's must equal
    the trainer's own: the check that the split and customers are the same)."""

    metrics: Metrics
    customers: int


def has_odds(name: str) -> bool:
    """Whether the regime's generator gives the odds it drew with."""
    return isinstance(REGIMES[name](), SmallCatalogue | Wholesale)


def ceiling(
    regime: SmallCatalogue | Wholesale, seed: int, path: Path, config: TrainingConfig
) -> Ceiling:
    """The odds of ``regime`` (seed ``seed``, its data at ``path``) scored like the
    trainer scores its methods under ``config``."""
    generated, odds = regime.generate_with_odds(seed)
    if not generated.equals(pd.read_parquet(path)):
        raise ValueError(f"{path} was not drawn by this regime with seed {seed}")
    data = load_data(path, load_mapping("canonical"), (), Steps())
    split = time_split(data.encoded, config.holdout_days, config.suppression.days)
    customers = evaluation_customers(split, config.eval_max_customers, config.als.random_state)
    methods: dict[str, Recommender] = {
        ODDS: odds_recommender(split, odds, config.k),
        POPULARITY: popularity_recommender(
            split_popularity(split, config.popularity_days), config.k
        ),
    }
    if isinstance(odds, SmallCatalogueOdds):
        methods[ODDS_FROM_DATA] = inferred_recommender(split, odds, config.k)
    return Ceiling(evaluate_methods(split, methods, customers, config.k), len(customers))


def odds_recommender(
    split: TimeSplit, odds: SmallCatalogueOdds | WholesaleOdds, k: int
) -> Recommender:
    """The top ``k`` items by the generator's odds at the cutoff, minus each customer's
    excluded items (ties by item, like every method)."""
    numbers = _numbers(split.train.customers.ids), _numbers(split.train.items.ids)
    day = (split.cutoff - START).total_seconds() / DAY_S
    counts = split.train.counts.tocsr()

    def odds_of(rows: np.ndarray) -> np.ndarray:
        return odds.line_odds(numbers[0][rows], numbers[1], day, counts[rows])

    return _top_by(odds_of, len(numbers[1]), k)


def inferred_recommender(split: TimeSplit, odds: SmallCatalogueOdds, k: int) -> Recommender:
    """The top ``k`` items by the odds a model could know at most at the cutoff
    (``SmallCatalogueOdds.inferred_odds``: each customer's favourites inferred from their
    lines before it), minus each customer's excluded items."""
    items = _numbers(split.train.items.ids)
    day = (split.cutoff - START).total_seconds() / DAY_S
    lines = split.train_lines
    order = np.argsort(lines.customer, kind="stable")
    bounds = np.searchsorted(lines.customer[order], np.arange(len(split.train.customers) + 1))
    bought = items[lines.item[order]]
    days = (lines.time[order] - START.value // 1_000_000_000) / DAY_S

    def odds_of(rows: np.ndarray) -> np.ndarray:
        mine = [
            (bought[bounds[r] : bounds[r + 1]], days[bounds[r] : bounds[r + 1]])
            for r in rows.tolist()
        ]
        return odds.inferred_odds(mine, items, day)

    return _top_by(odds_of, len(items), k)


def _top_by(odds_of: Callable[[np.ndarray], np.ndarray], n_items: int, k: int) -> Recommender:
    """A recommender of the top ``k`` items by ``odds_of`` (customer rows -> their odds
    of every item), block by block."""

    def recommend(customers: np.ndarray, exclude: sp.csr_matrix | None) -> np.ndarray:
        out = np.empty((len(customers), min(k, n_items)), np.int64)
        for at in range(0, len(customers), BLOCK):
            rows = customers[at : at + BLOCK]
            scores = odds_of(rows)
            if exclude is not None:
                block = exclude[at : at + BLOCK].tocoo()
                scores[block.row, block.col] = -np.inf
            # Best first, ties by item: a stable sort of the negated odds; -1 where the
            # allowed items run out.
            top = np.argsort(-scores, axis=1, kind="stable")[:, : out.shape[1]]
            allowed = np.isfinite(np.take_along_axis(scores, top, axis=1))
            out[at : at + BLOCK] = np.where(allowed, top, -1)
        return out

    return recommend


def _numbers(ids: np.ndarray) -> np.ndarray:
    """The generator's numbers of ids like ``c0042`` or ``i0042``."""
    return np.array([int(str(value)[1:]) for value in ids], dtype=np.int64)
