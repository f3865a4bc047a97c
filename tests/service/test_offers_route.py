"""GET /v1/customers/{id}/offers through the real app: the answer's contract, the planted
items first, suppression and its setting, validation, the clock; category offers; the
contact policy over recorded deliveries; and, on the churn model with a catalogue of
stage offers, each stage's incentives and never the others', arbitrated products, offer
caps, and a live catalogue file whose lever change reorders offers.

Expectations about purchases and stages are computed from the planted data and the
published customers file, never read back from the service."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from httpx import Response
from pydantic import TypeAdapter
from pydantic_core import to_json
from support import ALL_ITEMS, CLOCK, END, assert_json_error, write

from nbo.catalog.holder import CatalogHolder
from nbo.catalog.loading import load_catalog
from nbo.models.served import ServingModel, load_serving_model
from nbo.offers import ranking as ranking_module
from nbo.offers.arbitration import Components
from nbo.offers.decision import ContactPolicy, DecisionRequest, Occasion, decide
from nbo.offers.ranking import Offer
from nbo.offers.suppression import SuppressionWindow
from nbo.service.app import create_app
from nbo.service.routes.offers import offers_out
from nbo.service.schemas import ComponentsOut, OfferOut, OffersResponse, ReasonOut
from nbo.settings import Settings, load_settings
from nbo.store.sqlite import SQLiteStore
from training.pipeline import TrainResult


def offer_out(model: ServingModel, offer: Offer) -> OfferOut:
    """One offer of the answer built from its ``Offer`` object and validated field by
    field: what ``offers_out`` builds from the ranking's columns must equal it."""
    names = model.item_names
    item = offer.item_id
    components = offer.components or Components(0.0, 0.0, 0.0, 0.0)
    return OfferOut(
        offer_id=offer.offer_id,
        kind=offer.kind,
        item_id=item,
        item_name=names.get(item) if item is not None else None,
        title=offer.title,
        incentive=offer.incentive,
        amount=offer.amount,
        priority=components.priority,
        components=ComponentsOut(
            propensity=components.propensity,
            value=components.value,
            stage_weight=components.stage_weight,
            lever=components.lever,
        ),
        score=offer.score,
        rank=offer.rank,
        reason=ReasonOut(
            source=offer.reason.source, because=list(offer.reason.because), text=offer.reason.text
        ),
    )


# --- the planted model ----------------------------------------------------------------


def bought(purchases: pd.DataFrame, customer: str, days: int | None) -> set[str]:
    """Items the customer bought at or after ``END - days`` (ever when None)."""
    mine = purchases[purchases["customer_id"] == customer]
    if days is not None:
        mine = mine[mine["timestamp"] >= END - pd.Timedelta(days=days)]
    return set(mine["item_id"])


def offered(body: dict) -> list[str]:
    return [offer["item_id"] for offer in body["offers"]]


def test_offers_contract(client: TestClient, current: str) -> None:
    response = client.get("/v1/customers/a00/offers", params={"k": 5})
    assert response.status_code == 200
    body = response.json()
    assert body["customer_id"] == "a00"
    assert body["model_version"] == current
    assert body["channel"] == "email"
    assert body["personalized"] is True
    assert body["suppressed_items"] == 2
    assert [offer["rank"] for offer in body["offers"]] == [1, 2, 3, 4, 5]
    for offer in body["offers"]:
        assert set(offer) >= {"item_id", "score", "rank", "reason"}
        assert offer["item_id"] in ALL_ITEMS
        assert isinstance(offer["score"], float)
        # The two-stage ranker credits each offer to the source that proposed it.
        assert offer["reason"]["source"] in ("cf", "buy_again", "also_bought", "popular")
        assert offer["reason"]["text"]
    scores = [offer["score"] for offer in body["offers"]]
    assert scores == sorted(scores, reverse=True)

    app_channel = client.get("/v1/customers/a00/offers", params={"k": 5, "channel": "app"})
    assert app_channel.status_code == 200
    assert app_channel.json()["channel"] == "app"
    assert offered(app_channel.json()) == offered(body)


def test_without_reasons_the_same_offers_and_no_explanations_worked_out(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``reasons=false``: every offer as in the default answer but its reason null, and
    the explanations never computed (the metrics count offers by source all the same)."""
    explained = client.get("/v1/customers/a00/offers", params={"k": 5}).json()

    def never(*args: object) -> None:
        raise AssertionError("explanations worked out for a call that asked for none")

    monkeypatch.setattr(ranking_module, "explain", never)
    for customer in ("a00", "b03", "someone-new"):
        response = client.get(
            f"/v1/customers/{customer}/offers", params={"k": 5, "reasons": "false"}
        )
        assert response.status_code == 200, response.text
        the_model_would_say_the_same(response.content)
        body = response.json()
        assert body["offers"] and all(offer["reason"] is None for offer in body["offers"])
    without = client.get("/v1/customers/a00/offers", params={"k": 5, "reasons": "false"}).json()
    for mine, theirs in zip(without["offers"], explained["offers"], strict=True):
        assert mine == {**theirs, "reason": None}
    for name in ("request_id", "offers"):
        del without[name], explained[name]
    assert without == explained
    bad = client.get("/v1/customers/a00/offers", params={"reasons": "maybe"})
    assert "reasons" in str(assert_json_error(bad, 422)["details"])


def the_model_would_say_the_same(body: bytes) -> None:
    """The route writes its answer without the model: it must be an ``OffersResponse``,
    every field there under its own name, type and order (the model's own serialisation
    of what it reads back is the body, byte for byte)."""
    assert OffersResponse.model_validate_json(body).model_dump_json().encode() == body


def test_every_kind_of_answer_is_the_models_own(
    client: TestClient, models_dir: Path, churn_client: TestClient, stages: pd.DataFrame
) -> None:
    answers = [
        client.get("/v1/customers/a00/offers", params={"k": 5}),
        client.get("/v1/customers/a00/offers", params={"k": 5, "channel": "app"}),
        client.get("/v1/customers/nobody-known/offers"),
        churn_client.get(f"/v1/customers/{customers_in(stages, 'at_risk')[0]}/offers"),
    ]
    with app_at(models_dir, NOW) as capped:
        answers += [deliver_response(capped, "a01", "email") for _ in range(2)]
    bodies = [answer.json() for answer in answers]
    assert bodies[-1]["suppressed_reason"] == "frequency_cap" and bodies[-1]["offers"] == []
    assert bodies[-2]["recorded"] is True
    assert any(offer["kind"] == "incentive" for offer in bodies[3]["offers"])
    assert bodies[2]["personalized"] is False
    for answer in answers:
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/json"
        the_model_would_say_the_same(answer.content)


def test_offers_for_every_customer(
    client: TestClient, planted_purchases: pd.DataFrame, current: str
) -> None:
    for customer in sorted(planted_purchases["customer_id"].unique()):
        response = client.get(f"/v1/customers/{customer}/offers", params={"k": 10})
        assert response.status_code == 200
        body = response.json()
        assert body["model_version"] == current
        ids = offered(body)
        assert len(ids) == 10
        assert len(set(ids)) == 10
        assert [offer["rank"] for offer in body["offers"]] == list(range(1, 11))
        window = bought(planted_purchases, customer, 30)
        assert body["suppressed_items"] == len(window)
        assert not set(ids) & window, (customer, set(ids) & window)
        cf_scores = [o["score"] for o in body["offers"] if o["reason"]["source"] == "cf"]
        assert cf_scores == sorted(cf_scores, reverse=True)
        # The planted answer: the top 3 come from the customer's own group.
        assert all(item[0].lower() == customer[0] for item in ids[:3]), (customer, ids)
        ever = bought(planted_purchases, customer, None)
        for offer in body["offers"]:
            if offer["reason"]["source"] == "cf":
                assert set(offer["reason"]["because"]) <= ever


def test_offers_never_include_suppressed_items_even_for_large_k(
    client: TestClient, planted_purchases: pd.DataFrame
) -> None:
    response = client.get("/v1/customers/a00/offers", params={"k": 20})
    assert response.status_code == 200
    ids = offered(response.json())
    assert not set(ids) & bought(planted_purchases, "a00", 30)
    assert len(ids) == len(set(ids))


def test_unknown_customer_gets_popular_items(client: TestClient, current: str) -> None:
    response = client.get("/v1/customers/never-seen-42/offers", params={"k": 4})
    assert response.status_code == 200
    body = response.json()
    assert body["customer_id"] == "never-seen-42"
    assert body["model_version"] == current
    assert body["personalized"] is False
    assert body["suppressed_items"] == 0
    assert [offer["rank"] for offer in body["offers"]] == [1, 2, 3, 4]
    for offer in body["offers"]:
        assert offer["reason"]["source"] == "popular"
        assert offer["reason"]["because"] == []
    scores = [offer["score"] for offer in body["offers"]]
    assert scores == sorted(scores, reverse=True)
    # The same list for any unknown customer.
    other = client.get("/v1/customers/someone-else/offers", params={"k": 4}).json()
    assert offered(other) == offered(body)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"k": 0}, "k"),
        ({"k": 101}, "k"),
        ({"k": "abc"}, "k"),
        ({"k": -3}, "k"),
        ({"channel": "sms"}, "channel"),
    ],
)
def test_offers_validation(client: TestClient, query: dict, field: str) -> None:
    body = assert_json_error(client.get("/v1/customers/a00/offers", params=query), 422)
    assert body["error"] == "validation_error"
    assert [detail["field"] for detail in body["details"]] == [field]
    assert field in body["message"]


def test_k_limits_are_inclusive(client: TestClient) -> None:
    assert len(offered(client.get("/v1/customers/a00/offers", params={"k": 1}).json())) == 1
    response = client.get("/v1/customers/never-seen/offers", params={"k": 100})
    assert response.status_code == 200
    # An unknown customer gets the whole (20-item) catalogue, each item once.
    assert sorted(offered(response.json())) == ALL_ITEMS


@pytest.mark.parametrize(
    "value", ["2026-07-04T09:15:00Z", "2026-07-04T11:15:00+02:00", "2026-07-04T09:15:00"]
)
def test_clock_from_the_environment_pins_as_of(
    monkeypatch: pytest.MonkeyPatch, models_dir: Path, value: str
) -> None:
    # A naive clock is taken as UTC; an offset is converted to UTC.
    monkeypatch.setenv("NBO_CLOCK", value)
    settings = load_settings(models_dir=models_dir)
    pinned = datetime(2026, 7, 4, 9, 15, tzinfo=UTC)
    assert settings.now() == pinned
    with TestClient(create_app(settings)) as client:
        for customer in ("a00", "unknown-customer"):
            body = client.get(f"/v1/customers/{customer}/offers").json()
            assert datetime.fromisoformat(body["as_of"]) == pinned


def test_settings_clock_is_the_answer_as_of(client: TestClient) -> None:
    body = client.get("/v1/customers/b05/offers").json()
    assert datetime.fromisoformat(body["as_of"]) == datetime(2026, 6, 30, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("setting", "days"), [("0", 0), ("10", 10), ("30", 30), ("60", 60), ("all", None)]
)
def test_suppression_setting_changes_what_is_suppressed(
    models_dir: Path, planted_purchases: pd.DataFrame, setting: str, days: int | None
) -> None:
    settings = Settings(models_dir=models_dir, clock=CLOCK, suppression_days=setting)
    with TestClient(create_app(settings)) as client:
        for customer in ("a00", "a17", "b03", "b21"):
            window = set() if days == 0 else bought(planted_purchases, customer, days)
            # Ask for exactly what is left, so the answer is every unsuppressed item.
            k = len(ALL_ITEMS) - len(window)
            response = client.get(f"/v1/customers/{customer}/offers", params={"k": k})
            assert response.status_code == 200
            body = response.json()
            assert body["suppressed_items"] == len(window)
            assert set(offered(body)) == set(ALL_ITEMS) - window


def test_suppression_setting_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, models_dir: Path
) -> None:
    monkeypatch.setenv("NBO_SUPPRESSION_DAYS", "all")
    settings = load_settings(models_dir=models_dir, clock=CLOCK)
    assert settings.suppression.days is None
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/customers/a00/offers").json()["suppressed_items"] == 7


# --- category offers ------------------------------------------------------------------


CATEGORY_OFFER = """
version: 1
categories:
  group-a: [A00, A01, A02, A03, A04, A05, A06, A07, A08, A09]
offers:
  - id: a-week
    kind: product
    category: group-a
    title: Our picks of the week
    lever: 5.0
    cap_per_customer: 1
    cap_days: 30
"""


def test_each_item_of_a_category_offer_is_its_own_offer_in_answers(
    models_dir: Path, tmp_path: Path, isolated_store: Path
) -> None:
    """Two items of one category offer in one answer carry two ids (``a-week:A03``),
    their impressions are the items, and the offer's cap counts each item apart."""
    catalog = write(tmp_path / "catalog.yaml", CATEGORY_OFFER)
    settings = Settings(models_dir=models_dir, clock="2026-06-30T12:00:00Z", catalog=catalog)
    with TestClient(create_app(settings)) as client:
        url = "/v1/customers/a00/offers"
        first = client.get(url, params={"k": 4, "record": True}).json()
        ids = [offer["offer_id"] for offer in first["offers"]]
        assert len(ids) == 4 and len(set(ids)) == 4
        assert all(o["offer_id"] == f"a-week:{o['item_id']}" for o in first["offers"])
        # The category offer's title goes with each of its items (it was always null).
        assert {o["title"] for o in first["offers"]} == {"Our picks of the week"}
        shown = [o["item_id"] for o in first["offers"]]
        # The next answer: each shown item reached the offer's cap of 1; the others not.
        again = client.get(url, params={"k": 4}).json()
        assert again["removed"]["offer_cap"] == 4
        assert not set(shown) & {o["item_id"] for o in again["offers"]}
    store = SQLiteStore(isolated_store)
    try:
        impressions = [e for e in store.events_of("a00") if e["type"] == "offer_impression"]
    finally:
        store.close()
    assert sorted(e["item_id"] for e in impressions) == sorted(shown)
    # Each impression says what the answer said: the offer's kind and source, the stage.
    said = {o["item_id"]: (o["kind"], o["reason"]["source"]) for o in first["offers"]}
    for event in impressions:
        assert (event["kind"], event["source"]) == said[event["item_id"]]
        assert event["stage"] == first["stage"]


# --- contact policies over recorded deliveries ----------------------------------------


NOW = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)  # CLOCK as a time


@contextmanager
def app_at(models_dir: Path, clock: datetime, **settings: object) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(models_dir=models_dir, clock=clock, **settings))) as c:
        yield c


def deliver_response(client: TestClient, customer: str, channel: str, k: int = 3) -> Response:
    params = {"k": k, "channel": channel, "record": "true"}
    return client.get(f"/v1/customers/{customer}/offers", params=params)


def deliver(client: TestClient, customer: str, channel: str, k: int = 3) -> dict:
    answer = deliver_response(client, customer, channel, k)
    assert answer.status_code == 200
    return answer.json()


def test_email_cap_holds_for_seven_days_then_lifts(models_dir: Path) -> None:
    with app_at(models_dir, NOW) as client:
        first = deliver(client, "a00", "email")
        assert first["recorded"] is True and len(first["offers"]) == 3
        second = deliver(client, "a00", "email")
        assert second["offers"] == [] and second["suppressed_reason"] == "frequency_cap"
        # Held, not ranked: no taste to name (first's was the model's own).
        assert first["profile"] == "trained" and second["profile"] is None
        assert second["removed"] == dict.fromkeys(first["removed"], 0)
        assert set(first["removed"]) == {"just_bought", "fatigue", "ineligible", "offer_cap"}
        assert second["next_allowed_at"] == (NOW + timedelta(days=7)).isoformat()
        # A preview (not recorded) is not a delivery and is not capped.
        preview = client.get("/v1/customers/a00/offers", params={"k": 3}).json()
        assert len(preview["offers"]) == 3 and preview["recorded"] is False
        # Another customer, and another channel, have their own counts.
        assert deliver(client, "a01", "email")["suppressed_reason"] is None
        assert deliver(client, "a00", "app")["suppressed_reason"] is None
    with app_at(models_dir, NOW + timedelta(days=7) - timedelta(seconds=1)) as client:
        assert deliver(client, "a00", "email")["suppressed_reason"] == "frequency_cap"
    with app_at(models_dir, NOW + timedelta(days=7)) as client:
        assert deliver(client, "a00", "email")["recorded"] is True


def test_a_request_id_names_one_delivery(models_dir: Path) -> None:
    """The cap counts deliveries by request id: a second delivery to a customer under a
    request id already recorded for them is refused (409, naming the header) and records
    nothing, instead of counting as the first and passing the cap."""
    caps = {"app": {"max_deliveries": 2, "days": 1}}
    params = {"k": 3, "channel": "app", "record": "true"}
    fixed = {"X-Request-ID": "fixed-request-id"}
    with app_at(models_dir, NOW, frequency_caps=caps) as client:
        first = client.get("/v1/customers/a00/offers", params=params, headers=fixed)
        assert first.status_code == 200 and first.json()["recorded"] is True
        for _ in range(3):
            again = client.get("/v1/customers/a00/offers", params=params, headers=fixed)
            body = assert_json_error(again, 409)
            assert body["details"][0]["field"] == "X-Request-ID"
            assert "fixed-request-id" in body["message"]
        # Nothing of the refused ones counted: one delivery more passes, then the cap.
        assert deliver(client, "a00", "app")["recorded"] is True
        assert deliver(client, "a00", "app")["suppressed_reason"] == "frequency_cap"
        exported = client.get("/v1/customers/a00/data").json()
        shown = [e for e in exported["events"] if e["type"] == "offer_impression"]
        assert len(shown) == 6  # two deliveries of three offers
        # Another customer's delivery may carry the same request id.
        other = client.get("/v1/customers/a01/offers", params=params, headers=fixed)
        assert other.status_code == 200 and other.json()["recorded"] is True


def test_a_repeated_request_id_is_refused_even_when_the_cap_is_reached(
    models_dir: Path,
) -> None:
    """Retrying a recorded call with its request id answered 200 ``frequency_cap`` (no
    offers) when the cap left nothing to record: the retry was told the customer is
    capped, not that its id names a delivery already recorded."""
    params = {"k": 3, "channel": "email", "record": "true"}
    fixed = {"X-Request-ID": "retried-id"}
    with app_at(models_dir, NOW) as client:
        first = client.get("/v1/customers/a00/offers", params=params, headers=fixed)
        assert first.status_code == 200 and first.json()["recorded"] is True
        again = client.get("/v1/customers/a00/offers", params=params, headers=fixed)
        body = assert_json_error(again, 409)
        assert body["error"] == "delivery_repeated"
        assert body["details"][0]["field"] == "X-Request-ID"
        # A new id is a new delivery, held back by the cap.
        other = client.get(
            "/v1/customers/a00/offers", params=params, headers={"X-Request-ID": "new-id"}
        )
        assert other.status_code == 200 and other.json()["suppressed_reason"] == "frequency_cap"


@pytest.mark.parametrize(
    ("sent", "named"),
    [("order:123", "':' at position 6"), ("x" * 129, "129 characters"), ("", "empty")],
)
def test_a_delivery_under_a_request_id_nbo_cannot_take_is_refused(
    models_dir: Path, sent: str, named: str
) -> None:
    """A request id outside 1 to 128 of ``A-Z a-z 0-9 . _ -`` is replaced by a new one;
    for a delivery that made every retry a new delivery (two deliveries recorded for one
    call retried under ``order:123``). Refused now, naming the header, nothing recorded;
    a preview under the same id is still answered under a new id."""
    params = {"k": 3, "channel": "app", "record": "true"}
    with app_at(models_dir, NOW) as client:
        for _ in range(2):
            refused = client.get(
                "/v1/customers/a00/offers", params=params, headers={"X-Request-ID": sent}
            )
            body = assert_json_error(refused, 422)
            assert body["details"][0]["field"] == "X-Request-ID"
            assert named in body["details"][0]["problem"]
            assert "nothing recorded" in body["message"]
        exported = client.get("/v1/customers/a00/data").json()
        assert [e for e in exported["events"] if e["type"] == "offer_impression"] == []
        preview = client.get("/v1/customers/a00/offers", headers={"X-Request-ID": sent})
        assert preview.status_code == 200
        assert preview.headers["X-Request-ID"] != sent
        # Without the header a delivery is recorded as before (under a new id).
        delivered = client.get("/v1/customers/a00/offers", params=params)
        assert delivered.status_code == 200 and delivered.json()["recorded"] is True


def test_items_shown_three_times_without_response_rest(models_dir: Path) -> None:
    caps = {"app": {"max_deliveries": 10, "days": 1}}
    with app_at(models_dir, NOW, frequency_caps=caps) as client:
        shown_items = [o["item_id"] for o in deliver(client, "b00", "app")["offers"]]
        for _ in range(2):
            assert [o["item_id"] for o in deliver(client, "b00", "app")["offers"]] == shown_items
        rested = deliver(client, "b00", "app")
        assert not set(shown_items) & {o["item_id"] for o in rested["offers"]}
        assert rested["removed"]["fatigue"] == 3
        # A click brings the item back.
        client.post(
            "/v1/events",
            json={
                "event_id": "click-1",
                "type": "offer_click",
                "customer_id": "b00",
                "item_id": shown_items[0],
                "timestamp": NOW.isoformat(),
            },
        )
        after_click = client.get("/v1/customers/b00/offers", params={"k": 3}).json()
        assert after_click["removed"]["fatigue"] == 2
        assert shown_items[0] in [o["item_id"] for o in after_click["offers"]]


B_WEEK = """
version: 1
categories:
  b-items: [B00, B01, B02, B03, B04, B05, B06, B07, B08, B09]
offers:
  - {id: b-week, kind: product, category: b-items, lever: 1.0}
"""


@pytest.mark.parametrize("category_offer", [False, True])
def test_a_click_on_an_offer_id_is_a_click_on_its_item(
    models_dir: Path, tmp_path: Path, category_offer: bool
) -> None:
    """A click or conversion posted with the answer's ``offer_id`` (``product:B03``,
    ``b-week:B03``) was stored as is and never matched the impressions, which store the
    item id: it lifted no fatigue and counted as no take-up."""
    caps = {"app": {"max_deliveries": 10, "days": 1}}
    catalog = write(tmp_path / "catalog.yaml", B_WEEK) if category_offer else None
    with app_at(models_dir, NOW, frequency_caps=caps, catalog=catalog) as client:
        first = deliver(client, "b00", "app")["offers"]
        prefix = "b-week:" if category_offer else "product:"
        assert [o["offer_id"] for o in first] == [prefix + o["item_id"] for o in first]
        for _ in range(2):
            deliver(client, "b00", "app")
        offer, item = first[0]["offer_id"], first[0]["item_id"]
        for kind in ("offer_click", "offer_conversion"):
            posted = client.post(
                "/v1/events",
                json={
                    "event_id": f"{kind}-1",
                    "type": kind,
                    "customer_id": "b00",
                    "item_id": offer,
                    "timestamp": NOW.isoformat(),
                },
            )
            assert posted.json()["accepted"] == [f"{kind}-1"]
        after_click = client.get("/v1/customers/b00/offers", params={"k": 3}).json()
        assert after_click["removed"]["fatigue"] == 2
        assert item in [o["item_id"] for o in after_click["offers"]]
        exported = client.get("/v1/customers/b00/data").json()["events"]
        answered = [e for e in exported if e["type"] in ("offer_click", "offer_conversion")]
        assert {e["payload"]["item_id"] for e in answered} == {item}


@pytest.mark.parametrize("fatigue", [None])
def test_fatigue_can_be_turned_off(models_dir: Path, fatigue: None) -> None:
    caps = {"app": {"max_deliveries": 10, "days": 1}}
    with app_at(models_dir, NOW, frequency_caps=caps, fatigue=fatigue) as client:
        first = [o["item_id"] for o in deliver(client, "b01", "app")["offers"]]
        for _ in range(3):
            deliver(client, "b01", "app")
        again = deliver(client, "b01", "app")
        assert [o["item_id"] for o in again["offers"]] == first
        assert again["removed"]["fatigue"] == 0


# --- stages and the catalogue, on the churn model -------------------------------------


CHURN_CLOCK = "2026-07-01T00:00:00Z"  # the day after the churn data ends
STAGE_CATALOG = """
version: 1
products:
  value: 4.0
offers:
  - id: winback
    kind: incentive
    incentive: percent_off
    amount: 15
    title: 15% off
    value: 30.0
    response_rate: 0.1
    stages: [at_risk, lapsed]
    cap_per_customer: 1
    cap_days: 30
  - id: double-points
    kind: incentive
    incentive: points_multiplier
    amount: 2
    value: 30.0
    response_rate: 0.1
    stages: [loyal]
  - id: welcome
    kind: incentive
    incentive: free_shipping
    value: 30.0
    response_rate: 0.1
    stages: [new]
  - id: app-only
    kind: incentive
    incentive: percent_off
    amount: 5
    value: 30.0
    response_rate: 0.1
    channels: [app]
  - id: expired
    kind: incentive
    incentive: percent_off
    amount: 50
    value: 1000.0
    response_rate: 0.9
    valid_to: 2026-06-01T00:00:00Z
stage_weights:
  at_risk: {incentive: 2.0}
"""


@pytest.fixture(scope="module")
def catalog_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "catalog.yaml"
    path.write_text(textwrap.dedent(STAGE_CATALOG), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def churn_client(
    churn_trained: TrainResult,
    catalog_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TestClient]:
    assert churn_trained.path is not None
    store = tmp_path_factory.mktemp("store") / "nbo.db"
    settings = Settings(
        models_dir=churn_trained.path.parent,
        clock=CHURN_CLOCK,
        store_url=f"sqlite:///{store}",
        catalog=catalog_file,
    )
    with TestClient(create_app(settings)) as churn_client:
        # The service's own holder, looking at the file on every call instead of once a
        # second, so the test sees a change at once.
        churn_client.app.state.catalog = CatalogHolder(catalog_file, check_every_s=0.0)
        yield churn_client


@pytest.fixture(scope="module")
def stages(churn_trained: TrainResult) -> pd.DataFrame:
    assert churn_trained.path is not None
    return pd.read_parquet(churn_trained.path / "customers.parquet")


def customers_in(stages: pd.DataFrame, stage: str, n: int = 5) -> list[str]:
    ids = stages.loc[stages["stage"] == stage, "customer_id"].astype(str).tolist()
    assert ids, f"the planted data has no {stage} customer"
    return ids[:n]


def offer_ids(body: dict) -> list[str]:
    return [offer["offer_id"] for offer in body["offers"]]


def test_the_planted_data_has_every_stage(stages: pd.DataFrame) -> None:
    assert {"at_risk", "lapsed", "loyal", "active"} <= set(stages["stage"])


@pytest.mark.parametrize(
    ("stage", "wanted", "never"),
    [
        ("at_risk", "winback", {"double-points", "welcome"}),
        ("lapsed", "winback", {"double-points", "welcome"}),
        ("loyal", "double-points", {"winback", "welcome"}),
        ("active", None, {"winback", "double-points", "welcome"}),
    ],
)
def test_each_stage_gets_its_incentive_and_never_the_others(
    churn_client: TestClient, stages: pd.DataFrame, stage: str, wanted: str | None, never: set[str]
) -> None:
    for customer in customers_in(stages, stage):
        body = churn_client.get(f"/v1/customers/{customer}/offers", params={"k": 5}).json()
        assert body["stage"] == stage
        ids = offer_ids(body)
        if wanted is not None:
            assert wanted in ids
        assert not never & set(ids)
        assert "expired" not in ids and "app-only" not in ids  # email call
        profile = churn_client.get(f"/v1/customers/{customer}").json()
        assert profile["stage"] == stage and profile["churn_risk"] == body["churn_risk"]


def test_at_risk_customers_get_the_reactivation_incentive_first(
    churn_client: TestClient, stages: pd.DataFrame
) -> None:
    """0.1 x 30 x stage weight 2 = 6: above any product (propensity <= 1 x value 4)."""
    for customer in customers_in(stages, "at_risk"):
        body = churn_client.get(f"/v1/customers/{customer}/offers", params={"k": 3}).json()
        first = body["offers"][0]
        assert first["offer_id"] == "winback" and first["kind"] == "incentive"
        assert first["item_id"] is None and first["incentive"] == "percent_off"
        assert first["components"] == {
            "propensity": 0.1,
            "value": 30.0,
            "stage_weight": 2.0,
            "lever": 1.0,
        }
        assert first["priority"] == pytest.approx(6.0)
        assert first["reason"]["source"] == "catalog"


def test_an_unknown_customer_is_new_and_gets_the_welcome_offer(churn_client: TestClient) -> None:
    body = churn_client.get("/v1/customers/never-seen/offers", params={"k": 3}).json()
    assert body["stage"] == "new" and body["churn_risk"] is None
    assert "welcome" in offer_ids(body)
    profile = churn_client.get("/v1/customers/never-seen").json()
    assert profile["known"] is False and profile["stage"] == "new"
    assert 0 <= profile["best_send_time"]["hour_of_week"] < 168


def test_app_offers_appear_on_app_only(churn_client: TestClient, stages: pd.DataFrame) -> None:
    customer = customers_in(stages, "active")[0]
    app = churn_client.get(f"/v1/customers/{customer}/offers", params={"channel": "app"}).json()
    assert "app-only" in offer_ids(app)


def test_products_carry_their_components_and_rank_by_priority(
    churn_client: TestClient, stages: pd.DataFrame
) -> None:
    customer = customers_in(stages, "active")[0]
    body = churn_client.get(f"/v1/customers/{customer}/offers", params={"k": 10}).json()
    products = [o for o in body["offers"] if o["kind"] == "product"]
    assert products
    for offer in products:
        c = offer["components"]
        assert offer["item_id"] and offer["offer_id"] == f"product:{offer['item_id']}"
        assert 0.0 <= c["propensity"] <= 1.0 and c["value"] == 4.0
        assert offer["priority"] == pytest.approx(
            c["propensity"] * c["value"] * c["stage_weight"] * c["lever"]
        )
    priorities = [o["priority"] for o in body["offers"]]
    assert priorities == sorted(priorities, reverse=True)


def test_a_recorded_incentive_respects_its_cap(
    churn_client: TestClient, stages: pd.DataFrame
) -> None:
    customer = customers_in(stages, "lapsed")[-1]
    first = churn_client.get(f"/v1/customers/{customer}/offers", params={"record": "true"}).json()
    assert first["recorded"] and "winback" in offer_ids(first)
    # Shown once, cap 1 in 30 days: gone from the next answer (an app call: the email
    # frequency cap would refuse a second email delivery altogether).
    again = churn_client.get(f"/v1/customers/{customer}/offers", params={"channel": "app"}).json()
    assert "winback" not in offer_ids(again)
    assert again["removed"]["offer_cap"] == 1


def test_a_lever_change_in_the_live_file_reorders_and_a_broken_file_is_refused(
    churn_client: TestClient, stages: pd.DataFrame, catalog_file: Path
) -> None:
    customer = customers_in(stages, "active")[1]

    def products() -> list[dict]:
        body = churn_client.get(f"/v1/customers/{customer}/offers", params={"k": 10}).json()
        return [o for o in body["offers"] if o["kind"] == "product"]

    before = products()
    assert len(before) >= 3
    third = before[2]
    # A lever on the third item that lifts its priority just above the first's.
    lever = round(before[0]["priority"] / third["priority"] * 1.1, 3) + 0.001
    original = catalog_file.read_text(encoding="utf-8")
    try:
        _write(
            catalog_file,
            original.replace(
                "offers:",
                f'items:\n  - item_id: "{third["item_id"]}"\n    lever: {lever}\noffers:',
                1,
            ),
        )
        after = products()
        assert after[0]["item_id"] == third["item_id"]
        assert after[0]["components"]["lever"] == lever
        assert after[0]["priority"] == pytest.approx(third["priority"] * lever)

        _write(catalog_file, original.replace("response_rate: 0.1", "response_rate: 7", 1))
        kept = products()
        assert kept[0]["item_id"] == third["item_id"]  # the last good file still serves
        status = churn_client.get("/v1/catalog").json()
        assert "winback" in status["last_error"] and "response_rate" in status["last_error"]
    finally:
        _write(catalog_file, original)
    assert [o["item_id"] for o in products()] == [o["item_id"] for o in before]


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    stat = path.stat()
    # Whole seconds apart: a change within the file system's time resolution is still seen.
    os.utime(path, (stat.st_atime + 2, stat.st_mtime + 2))


def test_without_personalization_consent_nothing_is_profiled(
    churn_client: TestClient, stages: pd.DataFrame
) -> None:
    customer = customers_in(stages, "at_risk")[-1]
    assert churn_client.get(f"/v1/customers/{customer}").json()["profiled"] is True
    answer = churn_client.put(f"/v1/customers/{customer}/consent", json={"personalization": False})
    assert answer.status_code == 200
    profile = churn_client.get(f"/v1/customers/{customer}").json()
    assert profile["profiled"] is False
    assert profile["stage"] == "active" and profile["churn_risk"] is None
    # Withheld, not made up: no "unknown", no zero orders for a customer with orders.
    withheld = ("known", "recency_days", "frequency", "monetary", "first_purchase")
    assert {name: profile[name] for name in (*withheld, "last_purchase")} == dict.fromkeys(
        (*withheld, "last_purchase")
    )
    body = churn_client.get(f"/v1/customers/{customer}/offers").json()
    assert body["personalized"] is False and body["stage"] == "active"
    assert "winback" not in offer_ids(body)  # no stage-targeted incentive from profiling


def test_a_posted_purchase_brings_a_lapsed_customer_back(
    churn_client: TestClient, stages: pd.DataFrame
) -> None:
    customer = customers_in(stages, "lapsed")[0]
    event = {
        "event_id": f"back-{customer}",
        "type": "purchase",
        "customer_id": customer,
        "timestamp": "2026-06-30T18:00:00Z",
        "order_id": f"back-{customer}",
        "items": [{"item_id": "I01", "quantity": 1, "price": 4.0}],
    }
    assert churn_client.post("/v1/events", json=event).status_code == 200
    profile = churn_client.get(f"/v1/customers/{customer}").json()
    assert profile["stage"] != "lapsed" and profile["recency_days"] < 1
    body = churn_client.get(f"/v1/customers/{customer}/offers").json()
    assert body["stage"] == profile["stage"]
    # The win-back offer is for at-risk and lapsed customers only.
    assert ("winback" in offer_ids(body)) == (body["stage"] == "at_risk")


def test_answer_offers_read_from_the_columns_are_the_offer_objects(
    churn_trained: TrainResult, catalog_file: Path, stages: pd.DataFrame
) -> None:
    """The route reads each answer's offers straight from the ranking's columns: the same
    JSON, field for field, as building them from ``Ranking.offers`` (products and
    incentives, every stage, a customer the model does not know)."""
    assert churn_trained.path is not None
    model = load_serving_model(churn_trained.path.parent)
    catalog = load_catalog(catalog_file)
    customers = [
        c for stage in ("at_risk", "lapsed", "loyal", "active") for c in customers_in(stages, stage)
    ]
    decisions = decide(
        model,
        catalog,
        ContactPolicy(SuppressionWindow(30)),
        [DecisionRequest(c) for c in [*customers, "nobody-known"]],
        Occasion("email", 6, int(datetime.fromisoformat(CHURN_CLOCK).timestamp())),
    )
    as_json = TypeAdapter(list[OfferOut]).dump_json
    kinds = set()
    for decision in decisions:
        ranking = decision.ranking
        assert ranking is not None and ranking.offers
        kinds |= {offer.kind for offer in ranking.offers}
        assert to_json(offers_out(model, ranking)) == as_json(
            [offer_out(model, offer) for offer in ranking.offers]
        )
    assert kinds == {"product", "incentive"}
