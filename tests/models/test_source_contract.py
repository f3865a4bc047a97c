"""The contract every candidate source meets (``nbo.models.candidates``), in the manner of
implicit's ``RecommenderBaseTestMixin``: ``SourceContract`` holds the properties, one
subclass per source adds the answer planted in a small shop that the source must find.

A new source passes by subclassing ``SourceContract`` (``test_every_source_has_a_contract``
fails until it does): name the source, say what it proposes to a stranger and what it
must find in the planted shop.

The shop: 30 items in three groups of ten (0-9, 10-19, 20-29). ALS's item factors point
each group its own way, the first of a group furthest; items are ItemKNN neighbours only
within their group, the nearer in number the more similar (1 / (1 + distance));
popularity and each lifecycle stage's favourites are fixed permutations. The customers
below bought, are excluded from and sit in stages chosen so that each source has one
right answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pytest
import scipy.sparse as sp

from nbo.core.vocabulary import DAY, STAGES
from nbo.data.sparse import Rows
from nbo.models.candidates import (
    NO_STAGE,
    SOURCES,
    STAGE_CODE,
    CustomerSide,
    ItemSide,
    SourceProposals,
    candidates,
    propose_source,
)

N_ITEMS = 30
GROUP = 10
# Distinct popularity per item and share of each stage's customers per item.
POPULARITY = [(11 * item) % 31 for item in range(N_ITEMS)]
STAGE_SHARES = [
    [((7 * item + 5 * stage) % 31) / 31 for item in range(N_ITEMS)] for stage in range(len(STAGES))
]
BY_POPULARITY = sorted(range(N_ITEMS), key=lambda item: -POPULARITY[item])
# Small, medium, beyond the popularity sources' floor of ten, beyond the catalogue.
SIZES = (1, 4, 12, 3 * N_ITEMS)
# The size the planted answers are written for.
PLANTED_N = 5


@dataclass(frozen=True)
class Planted:
    """A customer of the shop: item -> (orders, day of their last purchase), their ALS
    taste, what they are excluded from and their lifecycle stage (None: unknown)."""

    bought: dict[int, tuple[int, int]]
    taste: tuple[float, float, float]
    excluded: frozenset[int] = field(default_factory=frozenset)
    stage: str | None = None


CUSTOMERS: dict[str, Planted] = {
    "group 0": Planted({0: (2, 90)}, (1.0, 0.0, 0.0), stage="loyal"),
    "group 1": Planted({15: (1, 80)}, (0.0, 1.0, 0.0), frozenset({10, 14}), "lapsed"),
    "regular": Planted({3: (1, 50), 5: (4, 10), 7: (2, 90), 8: (2, 95)}, (1.0, 0.0, 0.0)),
    "stranger": Planted({}, (0.0, 0.0, 0.0), frozenset({28, 1}), "new"),
    "stranger without a stage": Planted({}, (0.0, 0.0, 0.0)),
    "excluded from a favourite": Planted(
        {25: (3, 99), 21: (1, 20)}, (0.0, 0.0, 1.0), frozenset({20, 25, 28, 11}), "active"
    ),
    "wide": Planted(
        {item: (1 + item % 3, 30 + item) for item in range(0, N_ITEMS, 2)},
        (0.5, 0.5, 0.5),
        frozenset({2, 4, 14}),
        "at_risk",
    ),
}
NAMES = list(CUSTOMERS)
STRANGERS = [name for name, planted in CUSTOMERS.items() if not planted.bought]


def planted_items() -> ItemSide:
    factors = np.zeros((N_ITEMS, 3), np.float32)
    similarity = np.zeros((N_ITEMS, N_ITEMS), np.float32)
    for item in range(N_ITEMS):
        factors[item, item // GROUP] = 1.0 - 0.02 * (item % GROUP)
        for other in range(N_ITEMS):
            if other != item and other // GROUP == item // GROUP:
                similarity[item, other] = 1.0 / (1 + abs(item - other))
    popularity = np.asarray(POPULARITY, np.float64)
    return ItemSide.build(
        100 * DAY,
        factors,
        sp.csr_matrix(similarity),
        popularity,
        popularity / 2,
        None,
        stage_popularity=np.asarray(STAGE_SHARES),
    )


def customer_side(customers: list[Planted]) -> CustomerSide:
    """The customers, one row each, in the order given."""

    def rows(values: list[dict[int, float]]) -> Rows:
        matrix = sp.lil_matrix((len(values), N_ITEMS))
        for row, cells in enumerate(values):
            for item, value in cells.items():
                matrix[row, item] = value
        return Rows.of(matrix.tocsr())

    return CustomerSide(
        np.asarray([c.taste for c in customers], np.float32).reshape(len(customers), 3),
        rows([{i: float(o) for i, (o, _) in c.bought.items()} for c in customers]),
        rows([{i: float(day * DAY) for i, (_, day) in c.bought.items()} for c in customers]),
        rows([dict.fromkeys(c.excluded, 1.0) for c in customers]),
        stage=np.asarray(
            [NO_STAGE if c.stage is None else STAGE_CODE[c.stage] for c in customers], np.int64
        ),
    )


def allowed(name: str, ranked: list[int]) -> list[int]:
    """``ranked`` less what customer ``name`` is excluded from."""
    return [item for item in ranked if item not in CUSTOMERS[name].excluded]


class SourceContract:
    """What every source must do, whatever it proposes. A subclass names its ``source``
    and states what it gives a stranger (``for_a_stranger``) and the answers it must find
    (``planted``)."""

    source: ClassVar[str]
    # Whether a stranger's proposals have an order worth asserting.
    stranger_in_order: ClassVar[bool] = True

    def most(self, n: int) -> int:
        """The most items the source proposes per customer when asked for ``n``."""
        return min(n, N_ITEMS)

    def for_a_stranger(self, name: str, n: int) -> list[int]:
        """What the source proposes to customer ``name``, who has no history."""
        raise NotImplementedError

    def planted(self) -> dict[str, list[int]]:
        """Customer name -> the items the source must propose, best first, at
        ``PLANTED_N``."""
        raise NotImplementedError

    def proposed(self, n: int, names: list[str] | None = None) -> SourceProposals:
        side = customer_side([CUSTOMERS[name] for name in names or NAMES])
        return propose_source(self.source, planted_items(), side, n)

    def by_name(self, n: int, names: list[str] | None = None) -> dict[str, list[int]]:
        names = names or NAMES
        per_customer = self.proposed(n, names).per_customer()
        return {name: items.tolist() for name, items in zip(names, per_customer, strict=True)}

    @pytest.mark.parametrize("n", SIZES)
    def test_at_most_its_share_distinct_and_for_the_customers_asked_about(self, n: int) -> None:
        """(An item is a cell of its customer's row, so it is in the catalogue; a stray
        cell, such as ALS's -1 filler taken for an item, lands in another row or none.)"""
        proposed = self.proposed(n)
        assert set(proposed.rows.tolist()) <= set(range(len(NAMES)))
        for name, items in self.by_name(n).items():
            assert len(items) <= self.most(n), name
            assert len(set(items)) == len(items), name

    @pytest.mark.parametrize("n", SIZES)
    def test_never_an_excluded_item(self, n: int) -> None:
        for name, items in self.by_name(n).items():
            assert not set(items) & CUSTOMERS[name].excluded, name

    @pytest.mark.parametrize("n", SIZES)
    def test_ranks_run_from_one_in_order_grouped_by_customer(self, n: int) -> None:
        proposed = self.proposed(n)
        assert len(proposed.rows) == len(proposed.items) == len(proposed.ranks)
        assert np.all(np.diff(proposed.rows) >= 0), "grouped by customer"
        for row in range(len(NAMES)):
            ranks = proposed.ranks[proposed.rows == row]
            assert ranks.tolist() == list(range(1, len(ranks) + 1)), NAMES[row]

    @pytest.mark.parametrize("n", SIZES)
    def test_the_same_answer_every_time(self, n: int) -> None:
        first, second = self.proposed(n), self.proposed(n)
        for name in ("rows", "items", "ranks"):
            np.testing.assert_array_equal(getattr(first, name), getattr(second, name))

    @pytest.mark.parametrize("n", SIZES)
    def test_a_customer_alone_gets_what_they_get_among_many(self, n: int) -> None:
        """One request, a campaign's chunk and the customers in another order all give
        each the same."""
        together = self.by_name(n)
        for name in NAMES:
            assert self.by_name(n, [name])[name] == together[name], name
        assert self.by_name(n, NAMES[::-1]) == together

    @pytest.mark.parametrize("n", SIZES)
    def test_a_customer_without_history_gets_what_a_stranger_gets(self, n: int) -> None:
        proposed = self.by_name(n)
        for name in STRANGERS:
            expected = self.for_a_stranger(name, n)
            if self.stranger_in_order:
                assert proposed[name] == expected, name
            else:
                assert sorted(proposed[name]) == sorted(expected), name

    def test_asking_for_more_than_the_catalogue_is_asking_for_all_of_it(self) -> None:
        assert self.by_name(3 * N_ITEMS) == self.by_name(N_ITEMS)

    @pytest.mark.parametrize("n", SIZES)
    def test_the_union_flags_what_the_source_proposes(self, n: int) -> None:
        """``candidates`` runs this very source: its flag marks exactly its proposals."""
        table = candidates(planted_items(), customer_side(list(CUSTOMERS.values())), n)
        flagged = table.sources[:, SOURCES.index(self.source)]
        for row, (name, items) in enumerate(self.by_name(n).items()):
            assert set(table.items[flagged & (table.rows == row)].tolist()) == set(items), name

    def test_finds_the_planted_answer(self) -> None:
        proposed = self.by_name(PLANTED_N)
        for name, expected in self.planted().items():
            assert proposed[name] == expected, name


class TestALS(SourceContract):
    """ALS proposes the items nearest the customer's taste. It sees the taste, not the
    history: a customer with no history has the zero taste, which scores every item 0,
    and ALS proposes the first ``n`` items the customer may be offered, in implicit's
    order for ties (no preference; the service never asks: a customer with no known
    purchase gets popular offers)."""

    source = "als"
    stranger_in_order = False

    def for_a_stranger(self, name: str, n: int) -> list[int]:
        return allowed(name, list(range(N_ITEMS)))[:n]

    def planted(self) -> dict[str, list[int]]:
        return {
            "group 0": [0, 1, 2, 3, 4],
            "group 1": [11, 12, 13, 15, 16],  # 10 and 14 excluded
            "regular": [0, 1, 2, 3, 4],
            "excluded from a favourite": [21, 22, 23, 24, 26],  # 20 and 25 excluded
        }


class TestItemKNN(SourceContract):
    """ItemKNN proposes the neighbours of what the customer bought, weighed by how often:
    nothing to a stranger."""

    source = "knn"

    def for_a_stranger(self, name: str, n: int) -> list[int]:
        return []

    def planted(self) -> dict[str, list[int]]:
        return {
            # Bought item 0: its group, nearest first.
            "group 0": [1, 2, 3, 4, 5],
            # Bought 15, excluded from 14 and 10: equally near neighbours by item.
            "group 1": [16, 13, 17, 12, 18],
            # Bought 25 three times and 21 once (25 excluded): 24 = 3/2 + 1/4, 26 = 3/2
            # + 1/6, 23 = 3/3 + 1/3, 22 = 3/4 + 1/2, 27 = 3/3 + 1/7.
            "excluded from a favourite": [24, 26, 23, 22, 27],
        }


class TestBuyAgain(SourceContract):
    """Buy again proposes the customer's own items, most ordered first, then the most
    recently bought: nothing to a stranger."""

    source = "buy_again"

    def for_a_stranger(self, name: str, n: int) -> list[int]:
        return []

    def planted(self) -> dict[str, list[int]]:
        return {
            "group 0": [0],
            # 5 four times; 8 and 7 twice, 8 the later; 3 once.
            "regular": [5, 8, 7, 3],
            "excluded from a favourite": [21],
            # Three orders of 26, 20, 8 (2 and 14 excluded), latest first; then two.
            "wide": [26, 20, 8, 28, 22],
        }


class PopularityContract(SourceContract):
    """The popularity sources propose a few items, whatever ``n``: a fifth of it, ten at
    least (so more than ``n`` when ``n`` is small), never more than the catalogue."""

    def most(self, n: int) -> int:
        return max(10, min(n, N_ITEMS) // 5)


class TestPopular(PopularityContract):
    """Popular proposes the most popular items the customer may be offered: to a stranger
    as to anyone."""

    source = "popular"

    def for_a_stranger(self, name: str, n: int) -> list[int]:
        return allowed(name, BY_POPULARITY)[: self.most(n)]

    def planted(self) -> dict[str, list[int]]:
        return {name: allowed(name, BY_POPULARITY)[:10] for name in NAMES}


class TestStagePopular(PopularityContract):
    """Stage popular proposes the favourites of the customer's lifecycle stage: to a
    stranger their stage's, nothing without a stage."""

    source = "stage_popular"

    def for_a_stranger(self, name: str, n: int) -> list[int]:
        return self.favourites(name)[: self.most(n)]

    @staticmethod
    def favourites(name: str) -> list[int]:
        stage = CUSTOMERS[name].stage
        if stage is None:
            return []
        shares = STAGE_SHARES[STAGE_CODE[stage]]
        return allowed(name, sorted(range(N_ITEMS), key=lambda item: -shares[item]))

    def planted(self) -> dict[str, list[int]]:
        return {name: self.favourites(name)[:10] for name in NAMES}


def test_every_source_has_a_contract() -> None:
    contracts = {cls.source for cls in _subclasses(SourceContract) if hasattr(cls, "source")}
    assert contracts == set(SOURCES)


def _subclasses(cls: type[SourceContract]) -> list[type[SourceContract]]:
    found: list[type[SourceContract]] = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def test_an_unknown_source_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="source: unknown 'nope', expected one of als, knn"):
        propose_source("nope", planted_items(), customer_side([CUSTOMERS["regular"]]), 5)
