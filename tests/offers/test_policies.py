"""Contact policies: frequency caps and offer fatigue, at their boundaries, in the pure
functions and through the real app with recorded deliveries."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from nbo.core.vocabulary import DAY
from nbo.offers.policies import FatigueRule, FrequencyCap, check_frequency_cap, fatigued_items
from nbo.offers.state import Contact, ContactHistory
from nbo.service.app import create_app
from nbo.settings import Settings

NOW = 1_800_000_000


def shown(item: str, at: int, delivery: str, channel: str = "email") -> Contact:
    return Contact(item_id=item, channel=channel, delivery=delivery, at=at)


def test_cap_counts_deliveries_not_impressions() -> None:
    cap = FrequencyCap(max_deliveries=2, days=7)
    one_delivery_of_three = ContactHistory(
        impressions=[shown(i, NOW - 100, "r1") for i in ("A", "B", "C")]
    )
    assert check_frequency_cap(cap, one_delivery_of_three, "email", NOW).allowed


def test_cap_boundaries_and_next_allowed_time() -> None:
    cap = FrequencyCap(max_deliveries=1, days=7)
    history = ContactHistory(impressions=[shown("A", NOW - 7 * DAY + 1, "r1")])
    blocked = check_frequency_cap(cap, history, "email", NOW)
    assert not blocked.allowed and blocked.deliveries == 1
    assert blocked.next_allowed_at == NOW + 1  # the delivery ages out one second later
    assert check_frequency_cap(cap, history, "email", NOW + 1).allowed
    # Other channels and deliveries from the future do not count.
    assert check_frequency_cap(cap, history, "app", NOW).allowed
    assert check_frequency_cap(cap, history, "email", NOW - 7 * DAY).allowed


def test_cap_of_zero_blocks_without_a_next_time_and_no_cap_allows() -> None:
    history = ContactHistory()
    blocked = check_frequency_cap(FrequencyCap(max_deliveries=0, days=1), history, "app", NOW)
    assert not blocked.allowed and blocked.next_allowed_at is None
    assert check_frequency_cap(None, history, "app", NOW).allowed


def test_fatigue_at_its_boundaries() -> None:
    rule = FatigueRule(impressions=3, days=14)
    three = [shown("A", NOW - d * DAY, f"r{d}") for d in (1, 2, 13)]
    assert fatigued_items(rule, ContactHistory(impressions=three), NOW) == {"A"}
    # Two impressions are not enough; the third one aging out of the window ends it.
    assert fatigued_items(rule, ContactHistory(impressions=three[:2]), NOW) == set()
    later = NOW + 1 * DAY  # the 13-day-old one is now 14 days old: out of the window
    assert fatigued_items(rule, ContactHistory(impressions=three), later) == set()
    # A click or conversion within the window keeps the item alive.
    clicked = ContactHistory(impressions=three, responses=[shown("A", NOW - 5 * DAY, "c")])
    assert fatigued_items(rule, clicked, NOW) == set()
    assert fatigued_items(None, ContactHistory(impressions=three), NOW) == set()


CLOCK = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)


@contextmanager
def app_at(models_dir: Path, clock: datetime, **settings: object) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(models_dir=models_dir, clock=clock, **settings))) as c:
        yield c


def deliver(client: TestClient, customer: str, channel: str, k: int = 3) -> dict:
    params = {"k": k, "channel": channel, "record": "true"}
    answer = client.get(f"/v1/customers/{customer}/offers", params=params)
    assert answer.status_code == 200
    return answer.json()


def test_email_cap_holds_for_seven_days_then_lifts(models_dir: Path) -> None:
    with app_at(models_dir, CLOCK) as client:
        first = deliver(client, "a00", "email")
        assert first["recorded"] is True and len(first["offers"]) == 3
        second = deliver(client, "a00", "email")
        assert second["offers"] == [] and second["suppressed_reason"] == "frequency_cap"
        assert second["removed"] == dict.fromkeys(first["removed"], 0)
        assert set(first["removed"]) == {"just_bought", "fatigue", "ineligible", "offer_cap"}
        assert second["next_allowed_at"] == (CLOCK + timedelta(days=7)).isoformat()
        # A preview (not recorded) is not a delivery and is not capped.
        preview = client.get("/v1/customers/a00/offers", params={"k": 3}).json()
        assert len(preview["offers"]) == 3 and preview["recorded"] is False
        # Another customer, and another channel, have their own counts.
        assert deliver(client, "a01", "email")["suppressed_reason"] is None
        assert deliver(client, "a00", "app")["suppressed_reason"] is None
    with app_at(models_dir, CLOCK + timedelta(days=7) - timedelta(seconds=1)) as client:
        assert deliver(client, "a00", "email")["suppressed_reason"] == "frequency_cap"
    with app_at(models_dir, CLOCK + timedelta(days=7)) as client:
        assert deliver(client, "a00", "email")["recorded"] is True


def test_items_shown_three_times_without_response_rest(models_dir: Path) -> None:
    caps = {"app": {"max_deliveries": 10, "days": 1}}
    with app_at(models_dir, CLOCK, frequency_caps=caps) as client:
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
                "timestamp": CLOCK.isoformat(),
            },
        )
        after_click = client.get("/v1/customers/b00/offers", params={"k": 3}).json()
        assert after_click["removed"]["fatigue"] == 2
        assert shown_items[0] in [o["item_id"] for o in after_click["offers"]]


@pytest.mark.parametrize("fatigue", [None])
def test_fatigue_can_be_turned_off(models_dir: Path, fatigue: None) -> None:
    caps = {"app": {"max_deliveries": 10, "days": 1}}
    with app_at(models_dir, CLOCK, frequency_caps=caps, fatigue=fatigue) as client:
        first = [o["item_id"] for o in deliver(client, "b01", "app")["offers"]]
        for _ in range(3):
            deliver(client, "b01", "app")
        again = deliver(client, "b01", "app")
        assert [o["item_id"] for o in again["offers"]] == first
        assert again["removed"]["fatigue"] == 0
