"""What is known of a customer besides the model: their consent, the offers they were shown
and answered, and the purchases posted since training.

The decision takes this state as plain values; the runtime reads it from the store
(``nbo.runtime``), so the decision itself never does I/O and the API, campaigns and
experiments pass it the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PostedPurchase:
    """One purchased item of a purchase event posted to the service."""

    item_id: str
    quantity: float
    occurred_at: int  # unix seconds
    order_id: str | None
    event_id: str
    # Unit price as posted (None when the event gave none).
    price: float | None = None

    @property
    def order_key(self) -> str:
        """The order the item belongs to (the event's, without an order id): an item
        counts once per order."""
        return self.order_id or self.event_id


@dataclass(frozen=True)
class Consent:
    """A customer's stored consent: personalization and a flag per channel.

    A channel the record does not name is consented (so a record written before a channel
    existed does not withdraw it). A customer without a record consents to everything:
    the store answers None and callers use ``DEFAULT_CONSENT``.
    """

    personalization: bool
    channels: dict[str, bool]
    updated_at: int  # unix seconds; 0 for the default

    def allows(self, channel: str) -> bool:
        """Whether offers may be sent on ``channel``."""
        return self.channels.get(channel, True)


# What a customer without a consent record gets: consent to everything.
DEFAULT_CONSENT = Consent(personalization=True, channels={}, updated_at=0)


@dataclass(frozen=True)
class Contact:
    """One offer shown (an impression) or answered (a click or a conversion)."""

    item_id: str
    channel: str | None
    delivery: str  # what groups impressions into one delivery: the offers call's request id
    at: int


@dataclass(frozen=True)
class ContactHistory:
    impressions: list[Contact] = field(default_factory=list)
    responses: list[Contact] = field(default_factory=list)


@dataclass(frozen=True)
class CustomerState:
    """What the store knows of a customer, as far back as any rule looks."""

    consent: Consent = DEFAULT_CONSENT
    contacts: ContactHistory = field(default_factory=ContactHistory)
    posted: Sequence[PostedPurchase] = ()
