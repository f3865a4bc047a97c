"""A customer's consent, and erasure of everything the service holds on them.

Consent: a personalization flag and a flag per channel (the channels of ``Channel``).
Without a stored record a customer consents to everything. Erasure deletes the customer's
events and consent record from the store, keeps only the id on the erased list, and
makes the served model forget the customer; the answer is a receipt of what was deleted.

Logs name the customer id and counts, never a request body's values.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Body, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from nbo.apikeys import Role
from nbo.service.auth import AUTH_RESPONSES, requires
from nbo.service.deps import CustomerId, StoreDep
from nbo.service.schemas import Channel
from nbo.store import DEFAULT_CONSENT, Consent

log = logging.getLogger(__name__)

# Roles per route: consent is written with a write key and read with a read key; erasure
# needs admin.
router = APIRouter(prefix="/v1/customers", tags=["customers"], responses=AUTH_RESPONSES)
CHANNELS = tuple(channel.value for channel in Channel)


class ConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    personalization: StrictBool = Field(
        description="false: only non-personalized (popular) offers, nothing from the history"
    )
    channels: dict[str, StrictBool] = Field(
        default_factory=dict,
        description=f"per channel ({', '.join(CHANNELS)}): false withdraws consent to offers "
        "on it. Channels not named keep their current value (consented when never set).",
    )


class ConsentOut(BaseModel):
    customer_id: str
    personalization: bool
    channels: dict[str, bool] = Field(description="every channel, with its consent")
    stored: bool = Field(description="false: no record, the defaults (consent to everything)")
    updated_at: str | None = Field(description="when the record was last written")


class DeletedCounts(BaseModel):
    events: dict[str, int] = Field(description="deleted events, per type")
    purchase_lines: int
    consent_records: int


class ErasureReceiptOut(BaseModel):
    customer_id: str
    erased_at: str
    already_erased: bool = Field(description="the customer had been erased before")
    deleted: DeletedCounts
    model_row_removed: bool = Field(
        description="the served model knew the customer and no longer does"
    )


@router.put(
    "/{customer_id}/consent",
    response_model=ConsentOut,
    dependencies=[requires(Role.write)],
)
def put_consent(
    customer_id: CustomerId,
    store: StoreDep,
    body: Annotated[
        ConsentIn,
        Body(
            openapi_examples={
                "no email, no personalization": {
                    "value": {"personalization": False, "channels": {"email": False}}
                }
            }
        ),
    ],
) -> ConsentOut:
    """Store the customer's consent; answers the stored record. A plain ``def``: the
    durable commit waits on the disk."""
    unknown = [name for name in body.channels if name not in CHANNELS]
    if unknown:
        raise RequestValidationError(
            [
                {
                    "loc": ("body", "channels", name),
                    "msg": f"unknown channel (use {', '.join(CHANNELS)})",
                    "type": "value_error",
                }
                for name in unknown
            ]
        )
    consent = store.set_consent(customer_id, body.personalization, body.channels)
    log.info("consent of customer %s updated", customer_id)
    return _consent_out(customer_id, consent, stored=True)


@router.get(
    "/{customer_id}/consent",
    response_model=ConsentOut,
    dependencies=[requires(Role.read)],
)
def get_consent(customer_id: CustomerId, store: StoreDep) -> ConsentOut:
    """The customer's consent; the defaults (consent to everything) when none is stored."""
    consent = store.consent_of(customer_id)
    if consent is None:
        return _consent_out(customer_id, DEFAULT_CONSENT, stored=False)
    return _consent_out(customer_id, consent, stored=True)


@router.delete(
    "/{customer_id}",
    response_model=ErasureReceiptOut,
    dependencies=[requires(Role.admin)],
)
def erase_customer(customer_id: CustomerId, store: StoreDep, request: Request) -> ErasureReceiptOut:
    """Erase the customer: their events, purchase lines and consent record in the store,
    and their row in the served model. Afterwards the customer is unknown, and the next
    training leaves them out even if the input file still holds them. Erasing again
    answers zeros with ``already_erased``. A plain ``def``: the commit waits on the disk.
    """
    receipt = store.erase(customer_id)
    removed = request.app.state.models.forget(customer_id)
    log.info(
        "customer %s erased: %d records deleted, model row removed: %s",
        customer_id,
        receipt.total,
        removed,
    )
    return ErasureReceiptOut(
        customer_id=customer_id,
        erased_at=_iso(receipt.erased_at),
        already_erased=receipt.already_erased,
        deleted=DeletedCounts(
            events=receipt.events,
            purchase_lines=receipt.purchase_lines,
            consent_records=receipt.consent_records,
        ),
        model_row_removed=removed,
    )


def _consent_out(customer_id: str, consent: Consent, stored: bool) -> ConsentOut:
    return ConsentOut(
        customer_id=customer_id,
        personalization=consent.personalization,
        channels={channel: consent.allows(channel) for channel in CHANNELS},
        stored=stored,
        updated_at=_iso(consent.updated_at) if stored else None,
    )


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()
