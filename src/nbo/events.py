"""Events posted to the service: purchases, offer impressions, clicks and conversions.

Each event is validated on its own, so one bad event in a batch is rejected with its
reason while the good ones are stored. Times are stored as UTC unix seconds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

MAX_BATCH = 1000
Id = Annotated[str, Field(min_length=1, max_length=256)]

PURCHASE = "purchase"
IMPRESSION = "offer_impression"
CLICK = "offer_click"
CONVERSION = "offer_conversion"
EVENT_TYPES = (PURCHASE, IMPRESSION, CLICK, CONVERSION)


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    event_id: Id
    customer_id: Id
    timestamp: datetime = Field(description="when it happened; without a zone it is UTC")

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @property
    def occurred_at(self) -> int:
        """Unix seconds, the store's clock unit."""
        return int(self.timestamp.timestamp())


class PurchaseLine(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    item_id: Id
    quantity: float = Field(1.0, gt=0, description="units; returns are not purchases")
    price: float | None = Field(None, gt=0, description="unit price")


class PurchaseEvent(_Event):
    type: Literal["purchase"]
    order_id: Id | None = None
    items: list[PurchaseLine] = Field(min_length=1, max_length=MAX_BATCH)


class _OfferEvent(_Event):
    item_id: Id = Field(description="the offered item (or offer id)")
    channel: str | None = Field(None, max_length=64)
    request_id: str | None = Field(
        None, max_length=256, description="the request id of the offers call that showed it"
    )
    experiment: str | None = Field(
        None, max_length=64, description="the experiment the offers answer named, if any"
    )
    variant: str | None = Field(
        None, max_length=64, description="the variant the offers answer named, if any"
    )


class ImpressionEvent(_OfferEvent):
    type: Literal["offer_impression"]


class ClickEvent(_OfferEvent):
    type: Literal["offer_click"]


class ConversionEvent(_OfferEvent):
    type: Literal["offer_conversion"]
    revenue: float = Field(0.0, ge=0)


Event = Annotated[
    PurchaseEvent | ImpressionEvent | ClickEvent | ConversionEvent, Field(discriminator="type")
]
_EVENT = TypeAdapter(Event)


class Rejection(BaseModel):
    index: int = Field(description="position of the event in the batch")
    event_id: str | None = None
    reason: str


def parse_events(body: Any) -> tuple[list[tuple[int, Event]], list[Rejection]]:
    """Split a request body (one event, or ``{"events": [...]}``) into valid events (with
    their positions) and rejections naming the field and the problem.

    Raises ValueError for a body that is neither (the whole request is refused).
    """
    if isinstance(body, dict) and "events" in body and "type" not in body:
        raw = body["events"]
        if not isinstance(raw, list):
            raise ValueError("events: must be a list of events")
        if len(raw) > MAX_BATCH:
            raise ValueError(f"events: at most {MAX_BATCH} events per request, got {len(raw)}")
    elif isinstance(body, dict):
        raw = [body]
    else:
        raise ValueError('body: must be one event object or {"events": [...]}')
    valid: list[tuple[int, Event]] = []
    rejected: list[Rejection] = []
    for index, item in enumerate(raw):
        event_id = item.get("event_id") if isinstance(item, dict) else None
        try:
            valid.append((index, _EVENT.validate_python(item)))
        except ValidationError as exc:
            rejected.append(
                Rejection(
                    index=index,
                    event_id=event_id if isinstance(event_id, str) else None,
                    reason=_reason(exc),
                )
            )
    return valid, rejected


def _reason(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        location = [str(p) for p in error["loc"] if p not in EVENT_TYPES]
        parts.append(f"{'.'.join(location) or 'event'}: {error['msg']}")
    return "; ".join(parts)
