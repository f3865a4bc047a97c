"""A customer's consent, the export of their data, and erasure of everything nbo holds.

Consent: a personalization flag and a flag per channel (the channels of ``Channel``).
Without a stored record a customer consents to everything. The export
(``GET /{id}/data``) shows everything nbo holds on the customer (the right of access).
Erasure deletes the customer's events and consent record from the store, keeps only the
id on the erased list, makes the served model forget the customer and takes their rows
out of the campaign files nbo manages; the answer is a receipt of what was deleted.

Logs name the customer by their pseudonym (``nbo.core.pseudonyms``) and counts, never the id
or a request body's values.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from nbo.core.apikeys import Role
from nbo.core.vocabulary import CHANNELS
from nbo.service.auth import AUTH_RESPONSES, requires
from nbo.service.customer_data import (
    ConsentOut,
    CustomerDataOut,
    ErasureReceiptOut,
    consent_out,
    erase_customer_data,
    erasure_receipt_out,
    export_customer,
    record_consent,
)
from nbo.service.deps import (
    CustomerId,
    MaybeServingModelsDep,
    PseudonymsDep,
    ReloaderDep,
    SettingsDep,
    StoreDep,
)
from nbo.service.errors import refused
from nbo.service.query import QueryCheckedRoute

log = logging.getLogger(__name__)

# Roles per route: consent is written with a write key and read with a read key; the data
# export and erasure need admin (each hands out or removes a whole record at once).
router = APIRouter(
    route_class=QueryCheckedRoute,
    prefix="/v1/customers",
    tags=["customers"],
    responses=AUTH_RESPONSES,
)


class ConsentIn(BaseModel):
    # Strict, as every request body: true/false only (no "yes", no 1), no unknown field.
    model_config = ConfigDict(extra="forbid", strict=True)

    personalization: StrictBool = Field(
        description="false: only non-personalized (popular) offers, nothing from the history"
    )
    channels: dict[str, StrictBool] = Field(
        default_factory=dict,
        description=f"per channel ({', '.join(CHANNELS)}): false withdraws consent to offers "
        "on it. Channels not named keep their current value (consented when never set).",
    )


@router.put(
    "/{customer_id:id}/consent",
    response_model=ConsentOut,
    dependencies=[requires(Role.write)],
)
def put_consent(
    customer_id: CustomerId,
    store: StoreDep,
    pseudonyms: PseudonymsDep,
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
    """Store the customer's consent; answers the stored record.
    \f
    A plain ``def``: the durable commit waits on the disk."""
    unknown = [name for name in body.channels if name not in CHANNELS]
    if unknown:
        problem = f"unknown channel (use {', '.join(CHANNELS)})"
        first, *others = [("body", "channels", name) for name in unknown]
        raise refused(first, problem, *[(other, problem) for other in others])
    change = record_consent(store, customer_id, body.personalization, body.channels)
    log.info("consent of customer %s updated", pseudonyms.of(customer_id))
    files = change.line()
    if files is not None:
        # A file left holding them (unreadable, read-only) is the operator's to clean.
        level = logging.WARNING if change.untouched else logging.INFO
        log.log(level, "consent of customer %s: %s", pseudonyms.of(customer_id), files)
    return consent_out(customer_id, change.consent)


@router.get(
    "/{customer_id:id}/consent",
    response_model=ConsentOut,
    dependencies=[requires(Role.read)],
)
def get_consent(customer_id: CustomerId, store: StoreDep) -> ConsentOut:
    """The customer's consent; the defaults (consent to everything) when none is stored."""
    return consent_out(customer_id, store.consent_of(customer_id))


@router.get(
    "/{customer_id:id}/data",
    response_model=CustomerDataOut,
    dependencies=[requires(Role.admin)],
)
def export_data(
    customer_id: CustomerId,
    store: StoreDep,
    settings: SettingsDep,
    models: MaybeServingModelsDep,
    pseudonyms: PseudonymsDep,
) -> CustomerDataOut:
    """Everything nbo holds on the customer (the right of access that goes with erasure):
    stored events, consent, the profile computed now, what each served model learned from
    them, their experiment assignment, and their rows in the campaign files nbo manages.

    An id nbo never saw is not an error: 200 with an empty export (no events, the default
    consent, a model that does not know them), as every customer route treats an unknown
    customer. An erased customer nbo holds nothing on since answers ``erased`` and
    nothing else. Without a loaded model the profile, model and assignment parts are
    left out.
    \f
    A plain ``def``: it reads the store and the campaign files.
    """
    export = export_customer(customer_id, store, models, settings)
    log.info(
        "data of customer %s exported: %d events, %d campaign files (%d rows)",
        pseudonyms.of(customer_id),
        len(export.events),
        len(export.batch_files),
        sum(len(file.rows) for file in export.batch_files),
    )
    return export


# ``:bare_id``: any path below the prefix but one ending in a suffixed route's name
# (``nbo.service.deps.BareIdConvertor``), so ``DELETE /v1/customers/12347/consent`` is a
# 405, never the erasure of "12347/consent".
@router.delete(
    "/{customer_id:bare_id}",
    response_model=ErasureReceiptOut,
    dependencies=[requires(Role.admin)],
)
def erase_customer(
    customer_id: CustomerId,
    store: StoreDep,
    settings: SettingsDep,
    pseudonyms: PseudonymsDep,
    reloader: ReloaderDep,
) -> ErasureReceiptOut:
    """Erase the customer: their events, purchase lines and consent record in the store,
    their row in the served model, and their rows in the campaign files nbo manages (a
    file that cannot be rewritten is listed in ``batch_files_untouched``, never a failed
    erasure). Afterwards the customer is unknown, and the next
    training leaves them out even if the input file still holds them. Erasing again
    answers zeros with ``already_erased``.
    \f
    A plain ``def``: the commit waits on the disk.
    """
    # The one erasure sequence (``nbo customers erase`` runs it too), forgetting the
    # customer in every worker's models, not only this one's
    # (``Reloader.forget_everywhere``).
    erasure, (removed, everywhere) = erase_customer_data(
        customer_id, store, reloader.forget_everywhere, settings.models_dir
    )
    log.info(
        "customer %s erased: %d records deleted, model row removed: %s, %d campaign rows "
        "removed from %d files, %d files untouched",
        pseudonyms.of(customer_id),
        erasure.receipt.total,
        removed,
        erasure.rows_removed,
        len(erasure.scrubbed),
        len(erasure.untouched),
    )
    return erasure_receipt_out(customer_id, erasure, removed, everywhere)
