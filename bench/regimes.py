"""Synthetic shops of five kinds, for judging what nbo serves on data it has not seen.

The shared Online Retail file is one kind of shop. Real purchase histories differ in ways
that decide which offers win; these seeded generators reproduce five of them, so every
change to what is served can be measured on each (``python -m bench --only quality``):

- ``grocery``: a large catalogue; each customer reorders a set of staples on weekly,
  fortnightly or monthly cycles and tries a few other items per trip; most lines are
  repeats of the customer's own items, so buying again is by far the best simple rule
  on every purchase (``all``), while what they buy new is taste and popularity.
- ``grocery-chain``: the same kind of shop seen through a chain's loyalty cards for
  only four months: eight thousand customers, twenty thousand items, fewer staples and
  trips further apart; the trainer's earliest windows have a month of history or less.
- ``small-catalogue``: about two hundred items, bought from a popularity that drifts
  week to week, with little personal taste: recent popularity is the best simple rule.
- ``wholesale``: like the shared Online Retail file (a gift wholesaler): many distinct
  items per customer, long and irregular gaps between orders, orders that mix repeats
  of the customer's own items with new ones from the categories they buy, products
  launched during the year and a year-end season. Its repeats, gaps, baskets and
  customers' spans are fitted to the shared file's own figures (``bench/calibrate.py``).
- ``wholesale-reorders``: the same wholesaler with trade customers who mostly reorder
  (twice the shared file's repeats): buying again is nearly as good as the generator's
  own odds, so little is left for taste to win.

Each writes canonical Parquet (``customer_id``, ``item_id``, ``timestamp``, ``quantity``,
``price``, ``order_id``), cached under ``bench/.cache/`` keyed by regime, version and
seed. Sizes are chosen so that ``nbo train`` runs in about a minute on two cores.
Per-customer loops are small numpy work (a few thousand customers), seconds in all.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from bench.generate import CACHE_DIR

# 2: the wholesale knobs fitted to the shared file (the first ones: wholesale-reorders).
REGIMES_VERSION = 2
START = pd.Timestamp("2024-01-01")
DAY_S = 86_400


@dataclass
class _Lines:
    """Purchase lines being generated: customer, item, day (float), order number."""

    customer: list[np.ndarray]
    item: list[np.ndarray]
    day: list[np.ndarray]
    order: list[np.ndarray]

    @classmethod
    def empty(cls) -> _Lines:
        return cls([], [], [], [])

    def add(self, customer: int, items: np.ndarray, day: float, order: int) -> None:
        n = len(items)
        self.customer.append(np.full(n, customer, np.int64))
        self.item.append(np.asarray(items, np.int64))
        self.day.append(np.full(n, day))
        self.order.append(np.full(n, order, np.int64))

    def frame(
        self, n_items: int, rng: np.random.Generator, price_sigma: float = 0.8
    ) -> pd.DataFrame:
        """The lines as a canonical purchase table, in time order: one timestamp per
        order (its day plus a time in shop hours), quantities, prices per item."""
        customer = np.concatenate(self.customer)
        item = np.concatenate(self.item)
        day = np.concatenate(self.day)
        order = np.concatenate(self.order)
        # Shop hours: 8:00 to 20:00, one moment per order.
        order_ids, first = np.unique(order, return_index=True)
        hour = rng.random(len(order_ids)) * 12 * 3600 + 8 * 3600
        seconds = np.floor(day[first]) * DAY_S + hour
        at = seconds[np.searchsorted(order_ids, order)]
        base_price = np.round(rng.lognormal(1.0, price_sigma, size=n_items), 2) + 0.05
        width_c, width_i = len(str(customer.max())), len(str(n_items - 1))
        table = pd.DataFrame(
            {
                "customer_id": np.char.add("c", np.char.zfill(customer.astype(str), width_c)),
                "item_id": np.char.add("i", np.char.zfill(item.astype(str), width_i)),
                "timestamp": START + pd.to_timedelta(at.astype(np.int64), unit="s"),
                "quantity": rng.geometric(0.5, size=len(item)).astype(np.int64),
                "price": base_price[item],
                "order_id": np.char.add("o", order.astype(str)),
            }
        )
        return table.sort_values(["timestamp", "order_id"], kind="stable").reset_index(drop=True)


def _zipf(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Popularity weights of ``n`` items (ranked by a random permutation, so ids carry
    no order), summing to one."""
    weight = 1.0 / (rng.permutation(n) + 10.0) ** exponent
    return weight / weight.sum()


class _Draw:
    """Draws items by weight (inverse CDF on a cumulative sum, computed once): numpy's
    ``choice(p=...)`` sums the weights again on every call."""

    def __init__(self, items: np.ndarray, weights: np.ndarray) -> None:
        self.items = items
        self.cumulative = np.cumsum(weights)

    def __call__(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if not len(self.items):
            return self.items[:0]
        at = np.searchsorted(self.cumulative, rng.random(n) * self.cumulative[-1], side="right")
        return self.items[np.minimum(at, len(self.items) - 1)]


def _categories(
    weights: np.ndarray, n_categories: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[_Draw]]:
    """Each item's category, and per category a draw of its items by weight."""
    category = rng.integers(0, n_categories, size=len(weights))
    members = [np.flatnonzero(category == c) for c in range(n_categories)]
    return category, [_Draw(m, weights[m]) for m in members]


def _span(
    days: int, rng: np.random.Generator, joining: float, leaving: float
) -> tuple[float, float]:
    """A customer's first and last possible day: a ``joining`` share arrives during the
    data (the others were customers before it began), a ``leaving`` share stops."""
    start = float(rng.uniform(0, 0.8 * days)) if rng.random() < joining else 0.0
    end = float(rng.uniform(start, days)) if rng.random() < leaving else float(days)
    return start, end


# --- what drew the data ----------------------------------------------------------------


@dataclass(frozen=True)
class SmallCatalogueOdds:
    """What drew the small catalogue's lines: each week's popularity and each customer's
    favourites. A line of customer c in week w is item j with probability
    ``(1 - taste_share) * weekly[w, j] / sum(weekly[w]) + taste_share * (favourites of c
    equal to j) / len(favourites of c)``."""

    weekly: np.ndarray  # weeks x items, popularity weights
    favourites: np.ndarray  # customers x favourites, item numbers
    taste_share: float
    # Per item, the chance that each favourite is that item (favourites are drawn with
    # replacement from the popularity at the start).
    favourite_prior: np.ndarray

    def line_odds(
        self, customers: np.ndarray, items: np.ndarray, day: float, own: sp.csr_matrix
    ) -> np.ndarray:
        """Per customer (rows) and item (columns): the chance that a line of theirs on
        ``day`` is that item. ``own`` is unused (this shop draws no repeats)."""
        popular = self._popular(items, day)
        favourite = (self.favourites[customers][:, :, None] == items[None, None, :]).mean(axis=1)
        return (1.0 - self.taste_share) * popular[None, :] + self.taste_share * favourite

    def _popular(self, items: np.ndarray, day: float) -> np.ndarray:
        week = self._week(day)
        return self.weekly[week, items] / self.weekly[week].sum()

    def _week(self, day: float | np.ndarray) -> np.ndarray:
        return np.minimum(np.asarray(day) // 7, len(self.weekly) - 1).astype(np.int64)

    def inferred_odds(
        self, lines: list[tuple[np.ndarray, np.ndarray]], items: np.ndarray, day: float
    ) -> np.ndarray:
        """What a model could know at most, per customer (one entry of ``lines`` each:
        the item numbers and days of their lines before ``day``) and item (columns): the
        chance that a line of theirs on ``day`` is that item, with the week's popularity
        known exactly (more than any model knows) and the favourites not known but
        inferred from the customer's lines (``favourite_chances``). The gap between this
        and ``line_odds`` is what no model can learn from the data."""
        popular = self._popular(items, day)
        out = np.empty((len(lines), len(items)))
        for row, (bought, days) in enumerate(lines):
            chances = self.favourite_chances(bought, days)[items]
            out[row] = (1.0 - self.taste_share) * popular + self.taste_share * chances
        return out

    def favourite_chances(self, bought: np.ndarray, days: np.ndarray) -> np.ndarray:
        """Per item, the expected share of a customer's favourites that are that item,
        given their lines (item numbers ``bought`` on ``days``): the exact posterior of
        Bayes' rule under the generator's own model. Each line is a favourite or the
        week's popular pick; an item bought while it was rarely picked is evidence of a
        favourite. Only the items bought tell favourites apart (every line's chances sum
        to one whatever the favourites are), so the favourites are enumerated over the
        bought items and one class for all the others, which share their mass by the
        prior."""
        prior = self.favourite_prior
        n_favourites, share = self.favourites.shape[1], self.taste_share
        own, at = np.unique(np.asarray(bought, np.int64), return_inverse=True)
        weekly = self.weekly[self._week(days)]
        picked = weekly[np.arange(len(bought)), bought] / weekly.sum(axis=1)
        # evidence[j, m]: the log likelihood ratio of the customer's lines of own item j
        # if m of the favourites are j, against none.
        evidence = np.zeros((len(own) + 1, n_favourites + 1))
        for m in range(1, n_favourites + 1):
            ratio = np.log1p(share * m / n_favourites / ((1.0 - share) * picked))
            evidence[: len(own), m] = np.bincount(at, weights=ratio, minlength=len(own))
        classes = np.append(prior[own], max(1.0 - prior[own].sum(), 0.0))
        draws = np.indices((len(classes),) * n_favourites).reshape(n_favourites, -1)
        log_weight = np.zeros(draws.shape[1])
        for slot in draws:
            times = (draws == slot).sum(axis=0)
            with np.errstate(divide="ignore"):
                log_weight += np.log(classes[slot]) + evidence[slot, times] / times
        weight = np.exp(log_weight - log_weight.max())
        weight /= weight.sum()
        expected = sum(
            (np.bincount(slot, weights=weight, minlength=len(classes)) for slot in draws),
            np.zeros(len(classes)),
        )
        out = np.zeros(len(prior))
        others = np.ones(len(prior), dtype=bool)
        others[own] = False
        if others.any():
            out[others] = expected[-1] * prior[others] / prior[others].sum()
        out[own] = expected[: len(own)]
        return out / n_favourites


@dataclass(frozen=True)
class WholesaleOdds:
    """What drew the wholesaler's lines: popularity (boosted for the year-end category
    from ``season_from``), categories, launch days, each customer's favourite
    categories, and the shares of repeats and of taste. A line is a repeat with chance
    ``repeat_share`` (of an own item, in proportion to its orders so far), else a fresh
    pick: from a favourite category with chance ``taste_share`` (by weight within it),
    from everything otherwise; an item not launched yet is not bought."""

    weights: np.ndarray  # per item
    boosted: np.ndarray  # per item, in season
    season_from: float  # day
    category: np.ndarray  # per item
    launch: np.ndarray  # per item, day launched (-1: before the data)
    favourites: np.ndarray  # customers x favourite categories
    taste_share: float
    repeat_share: float

    def line_odds(
        self, customers: np.ndarray, items: np.ndarray, day: float, own: sp.csr_matrix
    ) -> np.ndarray:
        """Per customer (rows) and item (columns): the chance that a line of theirs on
        ``day`` is that item. ``own``: their orders of each of ``items`` so far."""
        base = self.boosted if day > self.season_from else self.weights
        everything = base[items] / base.sum()
        in_category = np.bincount(self.category, weights=self.weights)
        within = self.weights[items] / in_category[self.category[items]]
        favourite = self.favourites[customers][:, :, None] == self.category[items][None, None, :]
        taste = favourite.mean(axis=1) * within[None, :]
        fresh = (1.0 - self.taste_share) * everything[None, :] + self.taste_share * taste
        fresh = fresh * (self.launch[items] <= day)[None, :]
        counts = np.asarray(own.todense(), dtype=np.float64)
        total = counts.sum(axis=1, keepdims=True)
        repeat = np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)
        share = np.where(total > 0, self.repeat_share, 0.0)
        return share * repeat + (1.0 - share) * fresh


# --- grocery ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Grocery:
    """A grocery app's complete order histories: weekly and monthly reorders.

    Knobs: ``customers``; ``items`` (the catalogue; most of it is a long tail only
    explored); ``days`` of data; ``zipf`` (popularity skew); ``categories`` and
    ``favourite_categories`` (taste: a share ``taste_share`` of staples and explored
    items come from the customer's favourites); ``staples`` (range of the number of
    items a customer reorders); ``cycles`` and ``cycle_shares`` (the reorder cycles in
    days, weekly, fortnightly and monthly, and how often each is a staple's); ``cadence``
    (range of days between a customer's trips); ``reorder`` (chance a due staple is
    bought on a trip; a skipped one stays due); ``explore`` (mean items tried per trip
    besides the staples); ``adopt`` (chance an item tried becomes a staple, replacing
    one: tastes drift); ``turnover`` (chance per trip that a staple is given up for
    another item of the customer's taste); ``joining`` and ``leaving`` (shares of
    customers who start or stop during the data)."""

    customers: int = 1_000
    items: int = 10_000
    days: int = 240
    zipf: float = 1.0
    categories: int = 120
    favourite_categories: int = 3
    taste_share: float = 0.6
    staples: tuple[int, int] = (10, 40)
    cycles: tuple[float, ...] = (7.0, 14.0, 30.0)
    cycle_shares: tuple[float, ...] = (0.4, 0.3, 0.3)
    cadence: tuple[float, float] = (5.0, 10.0)
    reorder: float = 0.5
    explore: float = 4.0
    adopt: float = 0.1
    turnover: float = 0.05
    joining: float = 0.3
    leaving: float = 0.2

    def generate(self, seed: int) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        weights = _zipf(self.items, self.zipf, rng)
        _, by_category = _categories(weights, self.categories, rng)
        everything = _Draw(np.arange(self.items), weights)
        lines, order = _Lines.empty(), 0

        def pick(favourites: np.ndarray, n: int) -> np.ndarray:
            """``n`` items: from a favourite category (popularity-weighted within it) or
            from everything (popularity-weighted)."""
            out = everything(rng, n)
            mine = np.flatnonzero(rng.random(n) < self.taste_share)
            chosen = favourites[rng.integers(len(favourites), size=len(mine))]
            for j, category in zip(mine.tolist(), chosen.tolist(), strict=True):
                drawn = by_category[category](rng, 1)
                if len(drawn):
                    out[j] = drawn[0]
            return out

        for c in range(self.customers):
            start, end = _span(self.days, rng, self.joining, self.leaving)
            favourites = rng.choice(self.categories, size=self.favourite_categories, replace=False)
            staples = np.unique(pick(favourites, int(rng.integers(*self.staples, endpoint=True))))
            cycle = rng.choice(self.cycles, size=len(staples), p=self.cycle_shares)
            cycle = cycle * rng.uniform(0.85, 1.15, size=len(staples))
            due = start + rng.random(len(staples)) * cycle
            mean_gap = rng.uniform(*self.cadence)
            day = start + rng.random() * mean_gap
            while day < end:
                bought = (due <= day) & (rng.random(len(staples)) < self.reorder)
                tried = pick(favourites, int(rng.poisson(self.explore)))
                basket = np.unique(np.concatenate([staples[bought], tried]))
                if len(basket):
                    lines.add(c, basket, day, order)
                    order += 1
                due[bought] = day + cycle[bought] * rng.lognormal(0.0, 0.12, size=int(bought.sum()))
                for item in tried:
                    if rng.random() < self.adopt and item not in staples:
                        j = int(rng.integers(len(staples)))
                        staples[j] = item
                        due[j] = day + cycle[j]
                dropped = np.flatnonzero(rng.random(len(staples)) < self.turnover)
                if len(dropped):
                    staples[dropped] = pick(favourites, len(dropped))
                    due[dropped] = day + rng.random(len(dropped)) * cycle[dropped]
                day += mean_gap * rng.gamma(8.0, 1.0 / 8.0)
        return lines.frame(self.items, rng)


# --- small catalogue -------------------------------------------------------------------


@dataclass(frozen=True)
class SmallCatalogue:
    """A small catalogue bought by members from a popularity that moves week to week.

    Knobs: ``customers``; ``items`` (about two hundred); ``days``; ``zipf`` (popularity
    skew at the start); ``drift`` (weekly standard deviation of each item's log
    popularity: what is popular now is not what was popular in spring); ``orders``
    (mean orders per customer per 30 days, log-normal across customers with
    ``activity_sigma``); ``basket`` (mean lines per order); ``taste_share`` (share of
    lines from the customer's few favourite items: little personal taste);
    ``favourites`` (how many); ``joining`` and ``leaving``."""

    customers: int = 4_000
    items: int = 200
    days: int = 240
    zipf: float = 1.1
    drift: float = 0.3
    orders: float = 1.5
    activity_sigma: float = 0.6
    basket: float = 4.0
    taste_share: float = 0.1
    favourites: int = 3
    joining: float = 0.3
    leaving: float = 0.2

    def generate(self, seed: int) -> pd.DataFrame:
        return self.generate_with_odds(seed)[0]

    def generate_with_odds(self, seed: int) -> tuple[pd.DataFrame, SmallCatalogueOdds]:
        """The data, and what drew it (``SmallCatalogueOdds``): the same draws as
        ``generate``, so the data is the same."""
        rng = np.random.default_rng(seed)
        weeks = self.days // 7 + 1
        log_weight = np.log(_zipf(self.items, self.zipf, rng))
        walk = np.cumsum(rng.normal(0.0, self.drift, size=(weeks, self.items)), axis=0)
        weekly = np.exp(log_weight[None, :] + walk)
        cumulative = np.cumsum(weekly / weekly.sum(axis=1, keepdims=True), axis=1)
        lines, order = _Lines.empty(), 0
        chosen_favourites = np.empty((self.customers, self.favourites), np.int64)
        for c in range(self.customers):
            start, end = _span(self.days, rng, self.joining, self.leaving)
            favourites = rng.choice(self.items, size=self.favourites, p=np.exp(log_weight))
            chosen_favourites[c] = favourites
            rate = (
                self.orders
                / 30.0
                * rng.lognormal(-(self.activity_sigma**2) / 2, self.activity_sigma)
            )
            n_orders = max(1, int(rng.poisson(rate * (end - start))))
            for day in np.sort(rng.uniform(start, end, size=n_orders)):
                n = 1 + int(rng.poisson(self.basket - 1))
                week = min(int(day // 7), weeks - 1)
                items = np.searchsorted(cumulative[week], rng.random(n) * cumulative[week, -1])
                items = np.minimum(items, self.items - 1)
                mine = rng.random(n) < self.taste_share
                items[mine] = rng.choice(favourites, size=int(mine.sum()))
                lines.add(c, np.unique(items), float(day), order)
                order += 1
        odds = SmallCatalogueOdds(weekly, chosen_favourites, self.taste_share, np.exp(log_weight))
        return lines.frame(self.items, rng, price_sigma=0.5), odds


# --- wholesale -------------------------------------------------------------------------


@dataclass(frozen=True)
class Wholesale:
    """A gift wholesaler's trade customers, like the shared Online Retail file.

    Knobs: ``customers``; ``items``; ``days``; ``zipf``; ``categories`` and
    ``favourite_categories`` (taste); ``taste_share`` (share of new lines from the
    favourite categories); ``gap_days`` and ``gap_sigma`` (the median days between a
    customer's orders across customers, and the log-normal spread of each customer's
    gaps around their own: long and irregular cycles); ``basket`` (median lines per
    order, log-normal); ``repeat_share`` (share of lines that reorder one of the
    customer's own items, the often-bought more likely); ``launched`` (share of items
    launched during the data, unavailable before); ``season`` (a year-end category's
    popularity multiplier in the last two months); ``joining`` and ``leaving``.

    The defaults of the repeats, taste, gaps, baskets and customers' spans are the ones
    nearest the shared file's own figures that ``python -m bench.calibrate --search 60``
    found (about 30% of lines reorder an own item, a third of the next items new to the
    customer were bought before, a third of customers with one order); the first knobs
    drew twice the shared file's repeats and are the ``wholesale-reorders`` regime."""

    customers: int = 2_500
    items: int = 3_600
    days: int = 365
    zipf: float = 0.9
    categories: int = 150
    # Fitted to the shared file's figures (bench/calibrate.py), not to any result.
    favourite_categories: int = 5
    taste_share: float = 0.75
    gap_days: float = 53.0
    gap_sigma: float = 1.07
    basket: float = 19.6
    repeat_share: float = 0.12
    launched: float = 0.25
    season: float = 4.0
    joining: float = 0.67
    leaving: float = 0.57

    def generate(self, seed: int) -> pd.DataFrame:
        return self.generate_with_odds(seed)[0]

    def generate_with_odds(self, seed: int) -> tuple[pd.DataFrame, WholesaleOdds]:
        """The data, and what drew it (``WholesaleOdds``): the same draws as
        ``generate``, so the data is the same."""
        rng = np.random.default_rng(seed)
        weights = _zipf(self.items, self.zipf, rng)
        category, by_category = _categories(weights, self.categories, rng)
        launch = np.where(
            rng.random(self.items) < self.launched, rng.uniform(0, self.days, self.items), -1.0
        )
        everything = _Draw(np.arange(self.items), weights)
        # The last two months: the year-end category (category 0) sells more.
        boosted = np.where(category == 0, weights * self.season, weights)
        in_season = _Draw(np.arange(self.items), boosted)

        def seasonal_draw(n: int) -> np.ndarray:
            return in_season(rng, n)

        lines, order = _Lines.empty(), 0
        chosen_favourites = np.empty((self.customers, self.favourite_categories), np.int64)

        for c in range(self.customers):
            start, end = _span(self.days, rng, self.joining, self.leaving)
            favourites = rng.choice(self.categories, size=self.favourite_categories, replace=False)
            chosen_favourites[c] = favourites
            own: dict[int, int] = {}
            gap = self.gap_days * rng.lognormal(0.0, 0.5)
            day = start + rng.random() * gap
            while day < end:
                n = max(1, int(rng.lognormal(np.log(self.basket), 0.6)))
                repeats = int(rng.binomial(n, self.repeat_share)) if own else 0
                basket: list[np.ndarray] = []
                if repeats:
                    items = np.fromiter(own.keys(), np.int64)
                    counts = np.fromiter(own.values(), np.float64)
                    size = min(repeats, len(items))
                    basket.append(
                        rng.choice(items, size=size, replace=False, p=counts / counts.sum())
                    )
                fresh = n - repeats
                picked = everything(rng, fresh) if day <= self.days - 61 else seasonal_draw(fresh)
                mine = np.flatnonzero(rng.random(fresh) < self.taste_share)
                chosen = favourites[rng.integers(len(favourites), size=len(mine))]
                for j, group in zip(mine.tolist(), chosen.tolist(), strict=True):
                    drawn = by_category[group](rng, 1)
                    if len(drawn):
                        picked[j] = drawn[0]
                # Not launched yet: not bought yet.
                basket.append(picked[launch[picked] <= day])
                items = np.unique(np.concatenate(basket))
                lines.add(c, items, day, order)
                order += 1
                for item in items.tolist():
                    own[item] = own.get(item, 0) + 1
                day += gap * rng.lognormal(0.0, self.gap_sigma)
        odds = WholesaleOdds(
            weights=weights,
            boosted=boosted,
            season_from=self.days - 61,
            category=category,
            launch=launch,
            favourites=chosen_favourites,
            taste_share=self.taste_share,
            repeat_share=self.repeat_share,
        )
        return lines.frame(self.items, rng), odds


def wholesale_reorders() -> Wholesale:
    """A wholesaler whose trade customers mostly reorder: the ``wholesale`` regime's first
    knobs, with twice the shared file's repeats (55% of lines reorder an own item; five
    of nine next items new to the customer were bought before the suppression window).
    Buying again is nearly as good as the regime's own odds there (bench/README.md)."""
    return Wholesale(
        favourite_categories=4,
        taste_share=0.7,
        gap_days=35.0,
        gap_sigma=0.7,
        basket=14.0,
        repeat_share=0.45,
        joining=0.35,
        leaving=0.25,
    )


def grocery_chain() -> Grocery:
    """A grocery chain's loyalty cards: four months of baskets (the length of the chain
    in issue 15's table), many more customers and items than ``grocery``, fewer staples
    and trips further apart. The shop where the trainer's windows are young: the window
    before the test window has a month of history before its cutoff."""
    return Grocery(
        customers=8_000,
        items=20_000,
        days=120,
        staples=(5, 20),
        cadence=(7.0, 21.0),
        reorder=0.35,
        explore=3.0,
    )


REGIMES: dict[str, Callable[[], Grocery | SmallCatalogue | Wholesale]] = {
    "grocery": Grocery,
    "grocery-chain": grocery_chain,
    "small-catalogue": SmallCatalogue,
    "wholesale": Wholesale,
    "wholesale-reorders": wholesale_reorders,
}


def regime_path(name: str, seed: int = 0, cache_dir: Path = CACHE_DIR) -> Path:
    return cache_dir / f"regime-{name}-v{REGIMES_VERSION}-s{seed}.parquet"


def ensure_regime(
    name: str, seed: int = 0, cache_dir: Path = CACHE_DIR
) -> tuple[Path, float | None]:
    """The cached file of regime ``name``, generated first if missing; (path, seconds
    or None when cached)."""
    path = regime_path(name, seed, cache_dir)
    if path.is_file():
        return path, None
    cache_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    table = REGIMES[name]().generate(seed)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    table.to_parquet(staging, index=False)
    os.replace(staging, path)
    return path, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description="Generate (or reuse) a regime's data set.")
    parser.add_argument("regime", choices=sorted(REGIMES))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    path, seconds = ensure_regime(args.regime, args.seed)
    how = "cached" if seconds is None else f"generated in {seconds:.1f} s"
    table = pd.read_parquet(path)
    print(
        f"{path} ({len(table):,} lines, {table['customer_id'].nunique():,} customers, "
        f"{table['item_id'].nunique():,} items; {how})"
    )


if __name__ == "__main__":
    main()
