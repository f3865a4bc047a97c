"""/v1/customers/{id}/consent and DELETE /v1/customers/{id} through the real app: consent
stored and read back, what it changes in offers, erasure and its receipt (the store, the
served model, a restart), and no request body in the logs."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support import CLOCK, GROUP_ITEMS, POSTED_AT, purchase_event

from nbo.data.events import EVENT_TYPES
from nbo.offers.state import DEFAULT_CONSENT
from nbo.service.app import create_app
from nbo.service.schemas import Channel
from nbo.settings import Settings
from nbo.store.sqlite import SQLiteStore

TODAY = POSTED_AT
NO_EVENTS = dict.fromkeys(EVENT_TYPES, 0)


def offer_event(event_id: str, customer: str, kind: str, item: str = "A01") -> dict:
    return {
        "event_id": event_id,
        "type": kind,
        "customer_id": customer,
        "timestamp": TODAY,
        "item_id": item,
        "channel": "email",
    }


def offers(client: TestClient, customer: str, channel: str = "email") -> dict:
    answer = client.get(f"/v1/customers/{customer}/offers", params={"k": 5, "channel": channel})
    assert answer.status_code == 200, answer.text
    return answer.json()


def put_consent(client: TestClient, customer: str, body: dict) -> dict:
    answer = client.put(f"/v1/customers/{customer}/consent", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def erase(client: TestClient, customer: str) -> dict:
    answer = client.delete(f"/v1/customers/{customer}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_without_a_record_the_customer_consents_to_everything(client: TestClient) -> None:
    body = client.get("/v1/customers/a00/consent").json()
    assert body == {
        "customer_id": "a00",
        "personalization": True,
        "channels": {channel.value: True for channel in Channel},
        "stored": False,
        "updated_at": None,
    }


def test_consent_is_stored_and_unnamed_channels_keep_their_value(
    client: TestClient, isolated_store: Path
) -> None:
    stored = put_consent(client, "a00", {"personalization": False, "channels": {"email": False}})
    assert stored["personalization"] is False and stored["stored"] is True
    assert stored["channels"] == {"email": False, "app": True}
    assert stored["updated_at"] is not None
    assert client.get("/v1/customers/a00/consent").json() == stored

    # Withdrawing one channel never grants another back: email stays withdrawn.
    again = put_consent(client, "a00", {"personalization": True, "channels": {"app": False}})
    assert again["personalization"] is True
    assert again["channels"] == {"email": False, "app": False}
    # Without channels only personalization changes.
    assert put_consent(client, "a00", {"personalization": False})["channels"] == again["channels"]

    consent = SQLiteStore(isolated_store).consent_of("a00")
    assert consent is not None and consent.personalization is False
    assert not consent.allows("email") and not consent.allows("app")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"personalization": True, "channels": {"sms": False}}, "channels.sms"),
        ({"personalization": True, "channels": {"email": "no"}}, "channels.email"),
        ({"channels": {"email": False}}, "personalization"),
        ({"personalization": "yes"}, "personalization"),
        ({"personalization": True, "personalisation": False}, "personalisation"),
    ],
)
def test_bad_consent_bodies_are_422_naming_the_field(
    client: TestClient, body: dict, field: str
) -> None:
    answer = client.put("/v1/customers/a00/consent", json=body)
    assert answer.status_code == 422
    details = answer.json()["details"]
    assert [d["field"] for d in details] == [field]
    assert client.get("/v1/customers/a00/consent").json()["stored"] is False


def test_store_consent_defaults() -> None:
    assert DEFAULT_CONSENT.personalization is True
    assert all(DEFAULT_CONSENT.allows(channel.value) for channel in Channel)


def test_without_personalization_consent_offers_are_popular_and_labelled(
    client: TestClient,
) -> None:
    assert offers(client, "a00")["personalized"] is True
    put_consent(client, "a00", {"personalization": False})

    body = offers(client, "a00")
    assert body["personalized"] is False and body["profile"] == "none"
    assert body["offers"] and all(o["reason"]["source"] == "popular" for o in body["offers"])

    put_consent(client, "a00", {"personalization": True})
    assert offers(client, "a00")["profile"] == "trained"


def test_a_withdrawn_channel_is_refused_with_a_reason(client: TestClient) -> None:
    put_consent(client, "a00", {"personalization": True, "channels": {"email": False}})

    answer = client.get("/v1/customers/a00/offers", params={"channel": "email"})
    # An empty answer with its reason, like a frequency cap: never offers.
    assert answer.status_code == 200
    body = answer.json()
    assert body["offers"] == [] and body["suppressed_reason"] == "no_channel_consent"
    # Nothing was ranked: no taste to name. It said "none", the profile of a customer
    # without consent to personalization, beside this one's own stage and churn risk.
    profile = client.get("/v1/customers/a00").json()
    assert profile["profiled"] is True
    assert body["profile"] is None and body["personalized"] is False
    assert (body["stage"], body["churn_risk"]) == (profile["stage"], profile["churn_risk"])
    # Every answer names the four rules, a withheld one with zeros.
    assert body["removed"] == {"just_bought": 0, "fatigue": 0, "ineligible": 0, "offer_cap": 0}
    served = offers(client, "a00", channel="app")
    assert served["offers"]  # the other channel still serves
    assert set(served["removed"]) == set(body["removed"])

    put_consent(client, "a00", {"personalization": True, "channels": {"email": True}})
    assert offers(client, "a00", channel="email")["offers"]


def test_erasure_deletes_the_customer_and_answers_a_receipt(
    client: TestClient, isolated_store: Path, current: str
) -> None:
    assert offers(client, "a00")["profile"] == "trained"
    events = [
        purchase_event("e1", "a00", ["A01", "A02"]),
        purchase_event("e2", "a00", ["A03"]),
        offer_event("e3", "a00", "offer_impression"),
        offer_event("e4", "a00", "offer_click"),
        purchase_event("e5", "b00", ["B01"]),  # someone else: untouched
    ]
    assert len(client.post("/v1/events", json={"events": events}).json()["accepted"]) == 5
    put_consent(client, "a00", {"personalization": True, "channels": {"app": False}})

    receipt = erase(client, "a00")

    assert receipt.pop("erased_at")
    assert receipt == {
        "customer_id": "a00",
        "already_erased": False,
        "deleted": {
            "events": {**NO_EVENTS, "purchase": 2, "offer_impression": 1, "offer_click": 1},
            "purchase_lines": 3,
            "consent_records": 1,
            "consent_changes": 1,
        },
        "model_row_removed": True,
        "all_workers": True,
        # No campaign file written: none to go through (tests/campaigns/test_files.py).
        "batch_files": [],
        "batch_files_untouched": [],
        "partial_files_removed": [],
        "known": True,
        "near_match": None,
        # The model's files still hold them, until the version is pruned.
        "model_versions_holding": [current],
    }
    store = SQLiteStore(isolated_store)
    assert store.events_of("a00") == [] and store.purchases_of("a00") == []
    assert store.consent_of("a00") is None
    assert store.is_erased("a00") and store.erased_list().among(["a00", "b00"]) == {"a00"}
    assert len(store.erased_list()) == 1
    assert [p.item_id for p in store.purchases_of("b00")] == ["B01"]
    with sqlite3.connect(isolated_store) as db:
        for table in ("events", "purchase_lines", "consent"):
            count = db.execute(f"SELECT COUNT(*) FROM {table} WHERE customer_id = 'a00'")
            assert count.fetchone()[0] == 0, table
        erased_columns = [row[1] for row in db.execute("PRAGMA table_info(erased)")]
    # A keyed hash of the id and the time, nothing else: not the id.
    assert erased_columns == ["id_hash", "erased_at"]
    assert b"a00" not in isolated_store.read_bytes()
    # After erasure: consent is back to the defaults (no record).
    assert client.get("/v1/customers/a00/consent").json()["stored"] is False


def test_after_erasure_the_customer_is_unknown_to_offers(client: TestClient) -> None:
    erase(client, "a00")
    body = offers(client, "a00")
    assert body["personalized"] is False and body["profile"] == "none"
    assert all(o["reason"]["source"] == "popular" for o in body["offers"])
    assert offers(client, "a01")["profile"] == "trained"  # nobody else is affected


def test_erasing_twice_answers_zeros_and_already_erased(client: TestClient) -> None:
    client.post("/v1/events", json=purchase_event("e1", "a00", ["A01"]))
    first = erase(client, "a00")
    second = erase(client, "a00")
    assert first["already_erased"] is False and first["model_row_removed"] is True
    assert second["already_erased"] is True and second["model_row_removed"] is False
    assert second["deleted"] == {
        "events": NO_EVENTS,
        "purchase_lines": 0,
        "consent_records": 0,
        "consent_changes": 0,
    }


def test_erasing_a_customer_nobody_knows_answers_zeros(client: TestClient) -> None:
    receipt = erase(client, "never-seen")
    assert receipt["already_erased"] is False and receipt["model_row_removed"] is False
    assert receipt["deleted"]["purchase_lines"] == 0


def test_events_after_erasure_are_stored_but_the_old_model_row_never_returns(
    client: TestClient, isolated_store: Path
) -> None:
    """The rule: erasure is not a block list. New events are stored and used (the customer
    is unknown to the model, so offers personalize from the new purchases only); the id
    stays erased, and erasing again deletes the new events."""
    erase(client, "a00")
    answer = client.post("/v1/events", json=purchase_event("e1", "a00", ["B01", "B02"]))
    assert answer.json()["accepted"] == ["e1"]

    body = offers(client, "a00")
    assert body["profile"] == "live"  # not "updated": the trained row is gone
    assert {o["item_id"] for o in body["offers"]} <= set(GROUP_ITEMS["b"])
    assert all(set(o["reason"]["because"]) <= {"B01", "B02"} for o in body["offers"])
    assert SQLiteStore(isolated_store).is_erased("a00")

    again = erase(client, "a00")
    assert again["already_erased"] is True
    assert again["deleted"]["events"]["purchase"] == 1
    assert again["deleted"]["purchase_lines"] == 2
    assert offers(client, "a00")["profile"] == "none"


def test_a_restart_applies_the_erased_ids_to_the_loaded_model(models_dir: Path) -> None:
    settings = Settings(models_dir=models_dir, clock=CLOCK)
    with TestClient(create_app(settings)) as client:
        erase(client, "a00")
    with TestClient(create_app(settings)) as client:
        assert client.app.state.models.model.customers.get("a00") is None
        assert offers(client, "a00")["profile"] == "none"
        assert erase(client, "a00")["model_row_removed"] is False


def test_erasure_without_a_model_still_erases(models_dir: Path, tmp_path: Path) -> None:
    settings = Settings(models_dir=tmp_path / "no-models", require_model=False)
    with TestClient(create_app(settings)) as client:
        client.post("/v1/events", json=purchase_event("e1", "a00", ["A01"]))
        receipt = erase(client, "a00")
    assert receipt["model_row_removed"] is False
    assert receipt["deleted"]["events"]["purchase"] == 1


def test_no_request_body_reaches_the_logs(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    secrets = ["ITEM-PRIVATE-93871", "ORDER-PRIVATE-55512", "EVT-PRIVATE-777", "PIGEON-PRIVATE"]
    caplog.set_level(logging.DEBUG)
    customer = "log-customer-1"
    bad = purchase_event("EVT-PRIVATE-777-bad", customer, ["ITEM-PRIVATE-93871"])
    bad["items"][0]["quantity"] = -5  # rejected, with its reason in the answer only
    events = [
        purchase_event(
            "EVT-PRIVATE-777", customer, ["ITEM-PRIVATE-93871"], order_id="ORDER-PRIVATE-55512"
        ),
        bad,
    ]
    client.post("/v1/events", json={"events": events})
    client.post("/v1/events", json={"events": "ITEM-PRIVATE-93871"})
    put_consent(client, customer, {"personalization": False, "channels": {"email": False}})
    client.put(
        f"/v1/customers/{customer}/consent",
        json={"personalization": True, "channels": {"PIGEON-PRIVATE": True}},
    )
    offers(client, customer)
    erase(client, customer)

    logged = [
        f"{record.getMessage()} {record.exc_text or ''} {record.args!r}"
        for record in caplog.records
        if record.name != "httpx"  # the test client's own log of its URLs
    ]
    # Logs were captured, naming the customer by their pseudonym, never by the id.
    pseudonym = client.app.state.pseudonyms.of(customer)
    assert any(pseudonym in line and "erased" in line for line in logged)
    for line in logged:
        for secret in [*secrets, customer]:
            assert secret not in line
