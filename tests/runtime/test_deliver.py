"""Deliveries (``nbo.runtime.deliver``): decided and recorded as one step per customer,
on every store backend; a delivery made elsewhere between the unlocked read and the lock
is seen, and the customer decided again."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from nbo.catalog.loading import default_catalog
from nbo.data.events import ImpressionEvent
from nbo.experiments.assignment import ServingModels
from nbo.models.served import load_serving_model
from nbo.offers.decision import Occasion
from nbo.runtime.decide import Context, Decided, contact_policy, decide_customers
from nbo.runtime.deliver import deliver_customers, impressions_of
from nbo.settings import Settings
from nbo.store import open_store
from nbo.store.base import Delivery, Store

NOW = datetime(2026, 6, 30, 12, tzinfo=UTC)
EMAIL = Occasion("email", 3, int(NOW.timestamp()), delivery=True)  # a cap of one a week


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = open_store(store_url)
    yield opened
    opened.close()


def context_on(models_dir: Path, store: Store) -> Context:
    model = load_serving_model(models_dir)
    return Context(ServingModels(model), default_catalog(), contact_policy(Settings()), store)


def tagged(delivery: str) -> Callable[[Decided], list[ImpressionEvent]]:
    return lambda one: impressions_of(one, "email", NOW, f"{delivery}-{one.customer_id}", delivery)


def test_a_delivery_records_its_offers_and_the_next_one_is_capped(
    models_dir: Path, store: Store
) -> None:
    context = context_on(models_dir, store)
    first = deliver_customers(context, ["a00", "b01"], EMAIL, tagged("run-1"))
    assert [d.customer_id for d in first.decided] == ["a00", "b01"] and first.recorded == 6
    shown = [c.item_id for c in store.contacts_of("a00", 0).impressions]
    ranking = first.decided[0].decision.ranking
    assert ranking is not None and shown == [o.item_id for o in ranking.offers]
    assert {c.delivery for c in store.contacts_of("a00", 0).impressions} == {"run-1"}

    again = deliver_customers(context, ["a00"], EMAIL, tagged("run-2"))
    assert again.recorded == 0
    assert again.decided[0].decision.suppressed_reason == "frequency_cap"
    # A preview is not a delivery, and a delivery is not a preview.
    preview = Occasion("email", 3, EMAIL.now_s)
    assert decide_customers(context, ["a00"], preview)[0].decision.ranking is not None
    with pytest.raises(ValueError, match="deliver_customers"):
        decide_customers(context, ["a00"], EMAIL)
    with pytest.raises(ValueError, match="decide_customers"):
        deliver_customers(context, ["a00"], preview, tagged("run-3"))


class DeliveredElsewhere:
    """The store, with another replica's delivery to ``customer`` landing just before
    this process takes the customer's lock."""

    def __init__(self, store: Store, customer: str) -> None:
        self._store = store
        self._customer = customer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def deliver(self, customer_ids: Sequence[str], record: Callable[[Delivery], Any]) -> Any:
        elsewhere = ImpressionEvent(
            type="offer_impression",
            event_id="elsewhere-1",
            customer_id=self._customer,
            timestamp=NOW,
            item_id="A09",
            channel="email",
            request_id="elsewhere",
        )
        self._store.add_events([elsewhere])
        return self._store.deliver(customer_ids, record)


def test_a_delivery_elsewhere_before_the_lock_is_seen_and_capped(
    models_dir: Path, store: Store
) -> None:
    racing = DeliveredElsewhere(store, "a00")
    context = context_on(models_dir, racing)  # type: ignore[arg-type]
    delivered = deliver_customers(context, ["b01", "a00"], EMAIL, tagged("run-1"))
    by_customer = {d.customer_id: d.decision for d in delivered.decided}
    assert by_customer["a00"].suppressed_reason == "frequency_cap"
    assert by_customer["b01"].ranking is not None and delivered.recorded == 3
    assert [c.delivery for c in store.contacts_of("a00", 0).impressions] == ["elsewhere"]


def test_a_failed_delivery_records_nothing(models_dir: Path, store: Store) -> None:
    context = context_on(models_dir, store)

    def failing(one: Decided) -> list[ImpressionEvent]:
        if one.customer_id == "b01":
            raise RuntimeError("the caller failed")
        return tagged("run-1")(one)

    with pytest.raises(RuntimeError):
        deliver_customers(context, ["a00", "b01"], EMAIL, failing)
    assert store.contacts_of_many(["a00", "b01"], 0) == {}


def test_each_impression_names_the_model_version_that_decided_it(
    two_models: tuple[Path, str, str], experiments_file: Path, store: Store
) -> None:
    """An impression said the experiment and variant but not the model that decided it:
    a report could not tell the models of an arm apart once CURRENT moved, nor an
    export which model decided what a customer was shown. Each one names it now: the
    variant's model, or the current one's for the control (its popular offers)."""
    from nbo.experiments.assignment import load_serving_models
    from nbo.experiments.definitions import load_experiments

    folder, production, candidate = two_models
    models = load_serving_models(folder, None, load_experiments(experiments_file))
    context = Context(models, default_catalog(), contact_policy(Settings()), store)
    customers = [f"{g}{n:02d}" for g in "ab" for n in range(10)]
    delivered = deliver_customers(context, customers, EMAIL, tagged("run-1"))
    seen = set()
    for one in delivered.decided:
        stored = [e for e in store.events_of(one.customer_id) if e["type"] == "offer_impression"]
        assert stored, one.customer_id
        version = {"production": production}.get(one.assignment.variant or "", candidate)
        assert one.assignment.model.version == version
        assert {e["model_version"] for e in stored} == {version}
        seen.add(one.assignment.variant)
    assert seen == {"control", "production", "candidate"}
