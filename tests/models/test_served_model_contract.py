"""The contract of a served model (``nbo.models.served``), whatever ranks inside it: the
model trained on the planted data with its ranker, and one trained without (ALS alone,
``ranker.enabled = false``), pass the same suite, ``ServedModelContract``. A new kind of
model passes by subclassing it: the training config that makes one, and a ``served_dir``
fixture with one published.

Rankings are asked of ``rank_offers`` for every planted customer and two the model never
saw, in the lifecycle stages and channels in turn, under a small catalogue with a
category offer, an incentive and an excluded item.
"""

from __future__ import annotations

import copy
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
from support import small_training_config

from nbo.catalog.loading import load_catalog
from nbo.catalog.terms import Catalog
from nbo.core.vocabulary import CHANNELS, DAY, STAGES
from nbo.data.mapping import load_mapping
from nbo.models.artifacts import Artifact, load_artifact
from nbo.models.served import ServingModel, load_serving_model, serving_model_from_artifact
from nbo.offers.ranking import (
    SOURCE_POPULAR,
    TASTE_NONE,
    TASTE_TRAINED,
    OfferRequest,
    Ranking,
    rank_offers,
)
from nbo.offers.state import PostedPurchase
from nbo.offers.suppression import SuppressionWindow
from training import publish
from training.config import RankerConfig, TrainingConfig
from training.pipeline import train

WINDOW = SuppressionWindow.parse("30")
STRANGERS = ("nobody-we-know", "someone-new")
EXCLUDED_ITEM = "A09"
CATALOG = textwrap.dedent(
    f"""
    version: 1
    products:
      value: 10.0
    items:
      - item_id: {EXCLUDED_ITEM}
        exclude: true
    categories:
      firsts: [A00, B00]
    offers:
      - id: firsts
        kind: product
        category: firsts
        value: 12.0
      - id: thanks
        kind: incentive
        incentive: percent_off
        amount: 10
        title: 10% off
        value: 25.0
        response_rate: 0.3
        stages: [at_risk, lapsed]
    """
)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    path = tmp_path_factory.mktemp("catalog") / "catalog.yaml"
    path.write_text(CATALOG, encoding="utf-8")
    return load_catalog(path)


@pytest.fixture(scope="module")
def customers(planted_purchases: pd.DataFrame) -> list[str]:
    return sorted(planted_purchases["customer_id"].unique())


def requests_for(
    customer_ids: Sequence[str],
    k: int,
    now_s: int,
    posted: dict[str, list[str]] | None = None,
    fatigued: dict[str, list[str]] | None = None,
) -> list[OfferRequest]:
    """One request per customer, in the stages and channels in turn; ``posted``: items
    each bought just now (the second stranger always buys B01), ``fatigued``: items each
    is tired of."""
    posted = {STRANGERS[1]: ["B01"], **(posted or {})}
    fatigued = fatigued or {}
    return [
        OfferRequest(
            customer_id,
            k,
            recent=[
                PostedPurchase(item, 1.0, now_s, f"{customer_id}-{item}", f"{customer_id}-{item}")
                for item in posted.get(customer_id, [])
            ],
            fatigued=fatigued.get(customer_id, []),
            stage=STAGES[n % len(STAGES)],
            channel=CHANNELS[n % len(CHANNELS)],
        )
        for n, customer_id in enumerate(customer_ids)
    ]


def publish_capturing(data: Path, config: TrainingConfig, folder: Path) -> tuple[Path, Artifact]:
    """Train and publish into ``folder``/models, and keep what the trainer handed the
    writer: an artifact never written (its side files, bytes the writer copies as they
    are, in ``folder``/unsaved)."""
    held: dict[str, Any] = {}
    write = publish.write_artifact

    def capture(
        models_dir: Path,
        version: str,
        arrays: dict[str, np.ndarray],
        documents: dict[str, Any],
        manifest: dict[str, Any],
        extra_files: dict[str, bytes] | None = None,
    ) -> Path:
        held.update(
            version=version,
            arrays={name: np.array(array, copy=True) for name, array in arrays.items()},
            documents=copy.deepcopy(documents),
            manifest=copy.deepcopy(manifest),
            extra=dict(extra_files or {}),
        )
        return write(models_dir, version, arrays, documents, manifest, extra_files)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(publish, "write_artifact", capture)
        train(data, load_mapping("canonical"), folder / "models", config)
    side = folder / "unsaved"
    side.mkdir()
    for name, content in held["extra"].items():
        (side / name).write_bytes(content)
    return folder / "models", Artifact(
        side,
        {"version": held["version"], **held["manifest"]},
        held["arrays"],
        held["documents"],
        {name: side / name for name in held["extra"]},
    )


def answer(ranking: Ranking) -> tuple[Any, ...]:
    """What a ranking says, less where it sat among the call's rankings."""
    return (
        ranking.customer_id,
        ranking.personalized,
        ranking.taste,
        ranking.suppressed_items,
        ranking.removed,
        tuple(ranking.offers),
    )


def product_ids(ranking: Ranking) -> list[str]:
    return [o.item_id for o in ranking.offers if o.item_id is not None]


class ServedModelContract:
    """What every served model must do. A subclass gives the training config of its kind
    (``config``), the folder a model of that kind was published to (``served_dir``) and
    says whether it ranks with a ranker."""

    has_ranker: ClassVar[bool]

    def config(self) -> TrainingConfig:
        """The training config this kind of model is trained with."""
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def served_dir(cls) -> Path:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def model(cls, served_dir: Path) -> ServingModel:
        return load_serving_model(served_dir)

    @staticmethod
    def now(model: ServingModel) -> int:
        return model.trained_until_s + 3600

    def rank(
        self,
        model: ServingModel,
        requests: Sequence[OfferRequest],
        catalog: Catalog | None,
    ) -> list[Ranking]:
        return rank_offers(model, requests, self.now(model), WINDOW, catalog)

    def everyone(self, model: ServingModel, customers: list[str], k: int) -> list[OfferRequest]:
        return requests_for([*customers, *STRANGERS], k, self.now(model))

    def test_is_the_kind_it_claims(self, model: ServingModel) -> None:
        assert (model.ranker is not None) == self.has_ranker

    def test_save_then_load_ranks_the_same(
        self, planted_csv: Path, customers: list[str], catalog: Catalog, tmp_path: Path
    ) -> None:
        """The model as the trainer holds it before writing it ranks as the one loaded
        from what it wrote, mapped or read into memory."""
        models, unsaved = publish_capturing(planted_csv, self.config(), tmp_path)
        held = serving_model_from_artifact(unsaved)
        requests = self.everyone(held, customers, 10)
        expected = [answer(r) for r in self.rank(held, requests, catalog)]
        assert sum(len(a[-1]) for a in expected) > 5 * len(customers)  # something to compare
        for loaded in (
            load_serving_model(models),
            serving_model_from_artifact(load_artifact(models, mmap=False)),
        ):
            assert [answer(r) for r in self.rank(loaded, requests, catalog)] == expected

    @pytest.mark.parametrize("k", [1, 5, 25])
    def test_at_most_k_distinct_offers_best_first(
        self, model: ServingModel, customers: list[str], catalog: Catalog, k: int
    ) -> None:
        for ranking in self.rank(model, self.everyone(model, customers, k), catalog):
            offers = ranking.offers
            who = ranking.customer_id
            assert 0 < len(offers) <= k, who
            offer_ids = [o.offer_id for o in offers]
            assert len(set(offer_ids)) == len(offer_ids), who
            items = product_ids(ranking)
            assert len(set(items)) == len(items), who
            priorities = [o.priority for o in offers]
            assert priorities == sorted(priorities, reverse=True), who
            assert [o.rank for o in offers] == list(range(1, len(offers) + 1)), who

    def test_never_a_suppressed_or_excluded_item(
        self,
        model: ServingModel,
        customers: list[str],
        catalog: Catalog,
        planted_purchases: pd.DataFrame,
    ) -> None:
        """Not what the customer bought inside the window (items without a learned
        cycle), nor what they bought just now, nor what they are tired of, nor an item
        the catalogue excludes."""
        now = self.now(model)
        everyone = [*customers, *STRANGERS]
        first = self.rank(model, requests_for(everyone, 5, now), catalog)
        # What each was offered first is what they now buy, and then are tired of.
        posted = {r.customer_id: product_ids(r)[:1] for r in first}
        tired = {r.customer_id: product_ids(r)[1:2] for r in first}
        recent = planted_purchases[
            planted_purchases["timestamp"] >= pd.Timestamp(now - WINDOW.days * DAY, unit="s")
        ]
        in_window = recent.groupby("customer_id")["item_id"].agg(set).to_dict()
        for ranking in self.rank(model, requests_for(everyone, 20, now, posted, tired), catalog):
            who = ranking.customer_id
            offered = set(product_ids(ranking))
            window = {i for i in in_window.get(who, set()) if model.cycle_days_of(i) is None}
            assert not offered & window, who
            assert not offered & {*posted[who], *tired[who]}, who
            assert EXCLUDED_ITEM not in offered, who
        assert all(posted.values()) and all(tired.values())

    def test_the_same_answer_every_time(
        self, model: ServingModel, customers: list[str], catalog: Catalog
    ) -> None:
        requests = self.everyone(model, customers, 10)
        first = [answer(r) for r in self.rank(model, requests, catalog)]
        assert [answer(r) for r in self.rank(model, requests, catalog)] == first

    def test_many_customers_at_once_equal_one_at_a_time(
        self, model: ServingModel, customers: list[str], catalog: Catalog
    ) -> None:
        requests = self.everyone(model, customers, 10)
        together = [answer(r) for r in self.rank(model, requests, catalog)]
        alone = [answer(self.rank(model, [r], catalog)[0]) for r in requests]
        assert alone == together

    @pytest.mark.parametrize("k", [1, 5])
    def test_an_unknown_customer_gets_popular_offers_labelled_so(
        self, model: ServingModel, k: int
    ) -> None:
        ranking = self.rank(model, requests_for(STRANGERS[:1], k, self.now(model)), None)[0]
        assert not ranking.personalized and ranking.taste == TASTE_NONE
        assert product_ids(ranking) == [model.item_ids[i] for i in model.popular_order[:k]]
        assert {o.reason.source for o in ranking.offers} == {SOURCE_POPULAR}

    def test_forget_makes_a_known_customer_unknown(
        self, served_dir: Path, customers: list[str], catalog: Catalog
    ) -> None:
        model = load_serving_model(served_dir)  # its own: forgetting changes it
        known = customers[0]
        requests = [OfferRequest(known, 10), OfferRequest(STRANGERS[0], 10)]
        before = self.rank(model, requests, catalog)[0]
        assert before.personalized and before.taste == TASTE_TRAINED
        assert model.forget(known) is True
        after, stranger = self.rank(model, requests, catalog)
        assert not after.personalized and after.taste == TASTE_NONE
        assert answer(after)[1:] == answer(stranger)[1:]


class TestRankerModel(ServedModelContract):
    """The planted data's model, with its ranker (``tests/conftest.py``)."""

    has_ranker = True

    def config(self) -> TrainingConfig:
        return small_training_config()

    @pytest.fixture(scope="class")
    @classmethod
    def served_dir(cls, models_dir: Path) -> Path:
        return models_dir


def als_only_config() -> TrainingConfig:
    return small_training_config().model_copy(update={"ranker": RankerConfig(enabled=False)})


@pytest.fixture(scope="module")
def als_only_dir(tmp_path_factory: pytest.TempPathFactory, planted_csv: Path) -> Path:
    models = tmp_path_factory.mktemp("als-only")
    train(planted_csv, load_mapping("canonical"), models, als_only_config())
    return models


class TestAlsModel(ServedModelContract):
    """The planted data's model trained without a ranker: ALS ranks alone."""

    has_ranker = False

    def config(self) -> TrainingConfig:
        return als_only_config()

    @pytest.fixture(scope="class")
    @classmethod
    def served_dir(cls, als_only_dir: Path) -> Path:
        return als_only_dir
