"""Contact policies: how often a customer may be contacted, and when an offer is stale.

Pure functions over a customer's contact history, so the API, batch generation and
experiments apply the same rules. The caller reads the history from the store.

- Frequency cap, per channel: at most ``max_deliveries`` deliveries (offers calls made
  for delivery, i.e. recorded) in any ``days``-long window. Beyond it the answer has no
  offers, the reason, and when the next delivery is allowed.
- Offer fatigue: an item shown ``impressions`` times or more in the last ``days`` days,
  with no click or conversion of it in that time, is not offered; it comes back once
  the impressions age out of the window.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from nbo.core.vocabulary import DAY
from nbo.offers.state import Contact, ContactHistory

RULE_JUST_BOUGHT = "just_bought"
RULE_FATIGUE = "fatigue"
REASON_FREQUENCY_CAP = "frequency_cap"


class FrequencyCap(BaseModel):
    """At most ``max_deliveries`` deliveries per customer in ``days`` days on a channel."""

    # A misspelt field ("day") must not leave a rule at a default nobody chose.
    model_config = ConfigDict(extra="forbid")
    max_deliveries: int = Field(ge=0)
    days: float = Field(gt=0)


class FatigueRule(BaseModel):
    """Shown ``impressions`` times in ``days`` days without a response: rest the item."""

    model_config = ConfigDict(extra="forbid")
    impressions: int = Field(3, ge=1)
    days: float = Field(14, gt=0)


@dataclass(frozen=True)
class CapDecision:
    allowed: bool
    deliveries: int
    next_allowed_at: int | None = None


def check_frequency_cap(
    cap: FrequencyCap | None, history: ContactHistory, channel: str, now_s: int
) -> CapDecision:
    """Whether one more delivery on ``channel`` is allowed at ``now_s``."""
    if cap is None:
        return CapDecision(allowed=True, deliveries=0)
    since = now_s - cap.days * DAY
    delivered: dict[str, int] = {}
    for contact in history.impressions:
        if contact.channel == channel and since < contact.at <= now_s:
            delivered[contact.delivery] = max(delivered.get(contact.delivery, 0), contact.at)
    times = sorted(delivered.values(), reverse=True)
    if len(times) < cap.max_deliveries:
        return CapDecision(allowed=True, deliveries=len(times))
    if cap.max_deliveries == 0:
        return CapDecision(allowed=False, deliveries=len(times), next_allowed_at=None)
    # The window frees a slot when the oldest delivery that keeps it full ages out.
    oldest_counted = times[cap.max_deliveries - 1]
    return CapDecision(
        allowed=False,
        deliveries=len(times),
        next_allowed_at=int(oldest_counted + cap.days * DAY),
    )


def fatigued_items(rule: FatigueRule | None, history: ContactHistory, now_s: int) -> set[str]:
    """Items shown ``rule.impressions`` times or more in the window with no response."""
    if rule is None or not history.impressions:
        return set()
    since = now_s - rule.days * DAY
    shown = Counter(c.item_id for c in _within(history.impressions, since, now_s))
    answered = {c.item_id for c in _within(history.responses, since, now_s)}
    return {item for item, n in shown.items() if n >= rule.impressions and item not in answered}


def _within(contacts: Iterable[Contact], since: float, now_s: int) -> Iterable[Contact]:
    return (c for c in contacts if since < c.at <= now_s)
