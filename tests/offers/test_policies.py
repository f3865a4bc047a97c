"""Contact policies, the pure functions: frequency caps and offer fatigue at their
boundaries (through the app: tests/service/test_offers_route.py)."""

from __future__ import annotations

from nbo.core.vocabulary import DAY
from nbo.offers.policies import FatigueRule, FrequencyCap, check_frequency_cap, fatigued_items
from nbo.offers.state import Contact, ContactHistory

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
