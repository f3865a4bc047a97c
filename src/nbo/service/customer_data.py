"""What nbo holds on one customer, as the API shows it: consent, the data export, and
erasure of all of it.

The export (``GET /v1/customers/{id}/data``) is the right of access that goes with
erasure: every stored event, the consent record, the profile the service computes now,
what each served model learned from the customer in training, their experiment
assignment, and their rows in the campaign files nbo manages. Each part is read the way
the rest of the service reads it (the profile through the profile route's own function,
the assignment through ``ServingModels.assign``), so the export shows exactly what nbo
uses, not a second account of it.

Erasure (``erase_customer_data``) is one sequence, whoever asks for it (``DELETE
/v1/customers/{id}`` or ``nbo customers erase``): the store first (events, purchase
lines, consent; the id on the erased list), then the models of the process that asks,
then the campaign files. Every other process learns it from the store's erased list
(``nbo.runtime.decide.forget_erased``, and every model load).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from nbo.campaigns.files import (
    CustomerRows,
    Scrubbed,
    Untouched,
    clear_dead_runs_files,
    erase_from_outputs,
    rows_in_outputs,
    withdraw_from_outputs,
)
from nbo.core.ids import spreadsheet_original
from nbo.core.vocabulary import CHANNELS, iso_utc
from nbo.data.events import IMPRESSION
from nbo.experiments.assignment import ServingModels
from nbo.models.holdings import held_profile, versions_holding
from nbo.models.served import ServingModel
from nbo.offers.state import DEFAULT_CONSENT, Consent
from nbo.runtime.decide import forget_erased
from nbo.service.profiles import current_profile
from nbo.service.schemas import CustomerProfileOut
from nbo.settings import Settings
from nbo.store.base import CONSENT_FROM_API, ErasureReceipt, Store, StoredEvent


class ConsentOut(BaseModel):
    customer_id: str
    personalization: bool
    channels: dict[str, bool] = Field(description="every channel, with its consent")
    stored: bool = Field(description="false: no record, the defaults (consent to everything)")
    updated_at: str | None = Field(description="when the record was last written")


class ConsentChangeOut(BaseModel):
    personalization: bool
    channels: dict[str, bool] = Field(description="the channels the record named after it")
    changed_at: str
    source: str = Field(
        description="api, cli, or migrated: the record in force when the history began"
    )


class ExportedEventOut(BaseModel):
    event_id: str
    type: str = Field(description="purchase, offer_impression, offer_click, offer_conversion")
    occurred_at: str
    received_at: str = Field(description="when the store received it")
    payload: dict[str, Any] = Field(description="the event as stored (as posted, validated)")
    model_version: str | None = Field(
        None,
        description="an offer_impression's: the model version that decided the offer "
        "(automated decision-making: which model decided what the customer was shown); "
        "null for other events, and for an impression that does not say (recorded before "
        "nbo kept it, or posted without it: unknown)",
    )


class TrainedItemOut(BaseModel):
    item_id: str
    item_name: str | None = None
    orders: float | None = Field(description="orders of the item in the training data")
    last_purchase: str | None = Field(description="the last one in the training data")


class ModelDataOut(BaseModel):
    model_version: str
    known: bool = Field(
        description="the model was trained on the customer's purchases and serves them "
        "(false after an erasure, even before the next training)"
    )
    used: bool = Field(
        description="what the model holds of the customer is used for them: false while "
        "their consent withdraws personalization (held in the model's files, not used for "
        "their profile, offers or campaigns) and when the model does not know them"
    )
    held_profile: dict[str, Any] | None = Field(
        description="the customer's row of the model's customers table (customers.parquet): "
        "stage, churn risk, recency, frequency, monetary value and best send hour as of the "
        "end of its training data; null when the model does not know them"
    )
    items: list[TrainedItemOut] = Field(
        description="the customer's purchase history as the model holds it"
    )


class ModelFileOut(BaseModel):
    model_version: str
    served: bool = Field(description="a model the service serves now (in models)")


class AssignmentOut(BaseModel):
    model_version: str = Field(description="the model that answers the customer's offers")
    experiment: str | None = None
    variant: str | None = None
    personalized: bool = Field(
        description="false for a control variant, and without consent to personalization: "
        "popular offers"
    )


class BatchFileRowsOut(BaseModel):
    path: str
    written_at: str
    run_id: str
    rows: list[dict[str, Any]] = Field(description="the customer's rows, as in the file")


class BatchFileUntouchedOut(BaseModel):
    path: str
    reason: str = Field(
        description="missing, unreadable, not writable, or not written by nbo (no "
        "customer_id column)"
    )


class CustomerDataOut(BaseModel):
    """Everything nbo holds on a customer. An id nbo never saw answers an empty export
    (nothing stored, the defaults that would apply), not a 404."""

    customer_id: str
    exported_at: str
    erased: bool = Field(description="the id is on the erased list")
    erased_at: str | None = Field(None, description="when it was last erased")
    served_model: str | None = Field(
        description="the current model's version; null when none is loaded (no profile, "
        "model or assignment part)"
    )
    events: list[ExportedEventOut] = Field(description="every stored event, oldest first")
    consent: ConsentOut | None = Field(
        description="the stored record, or the defaults (stored false); null for an erased "
        "customer nbo holds nothing on"
    )
    consent_history: list[ConsentChangeOut] = Field(
        default_factory=list,
        description="every change of the consent, oldest first (the last one is in force)",
    )
    profile: CustomerProfileOut | None = Field(
        description="what GET /v1/customers/{id} answers now (the neutral profile without "
        "consent to personalization)"
    )
    models: list[ModelDataOut] = Field(
        description="per served model (the current one first, then experiment variants)"
    )
    model_files: list[ModelFileOut] = Field(
        description="every published model version on disk, served or not, whose files "
        "hold the customer id (and what it was trained on of them) until it is pruned"
    )
    assignment: AssignmentOut | None = Field(description="the customer's experiment variant")
    batch_files: list[BatchFileRowsOut] = Field(
        description="the managed campaign files that hold the customer, with their rows"
    )
    batch_files_unread: list[BatchFileUntouchedOut] = Field(
        description="managed campaign files that could not be read, and why"
    )


class DeletedCounts(BaseModel):
    events: dict[str, int] = Field(description="deleted events, per type")
    purchase_lines: int
    consent_records: int
    consent_changes: int = Field(description="deleted rows of the consent history")


class BatchFileErasedOut(BaseModel):
    path: str
    rows_removed: int


class ErasureReceiptOut(BaseModel):
    customer_id: str
    erased_at: str
    already_erased: bool = Field(description="the customer had been erased before")
    deleted: DeletedCounts
    model_row_removed: bool = Field(
        description="the served model knew the customer and no longer does"
    )
    all_workers: bool = Field(
        description="every worker of nbo serve had forgotten the customer before this "
        "answer (true with one process); false: a worker had not answered within a "
        "minute, and forgets them when it does"
    )
    batch_files: list[BatchFileErasedOut] = Field(
        description="every managed campaign file gone through, with the customer's rows "
        "removed from it (0: it held none)"
    )
    batch_files_untouched: list[BatchFileUntouchedOut] = Field(
        description="managed campaign files that could not be gone through, and why: "
        "what is left to clean by hand"
    )
    partial_files_removed: list[str] = Field(
        description="temporary files of campaign runs that died (killed before their file "
        "was complete) removed: they held rows an erasure cannot take a customer out of"
    )
    known: bool = Field(
        description="false: neither the store, a model on disk nor a campaign file held "
        "anything of this id (a mistyped id, most likely): nothing was deleted, and the id "
        "is on the erased list all the same, so no later training learns it"
    )
    near_match: str | None = Field(
        description="with known false, a customer id nbo does know that this one looks "
        "like a spreadsheet's writing of ('12347' for '12347.0'); that customer is untouched"
    )
    model_versions_holding: list[str] = Field(
        description="published model versions on disk (served or not) whose read-only "
        "files still hold the customer's rows: no service serves them again, and they "
        "stay until those versions are pruned (nbo models --prune) once a training "
        "without the customer has replaced them"
    )


@dataclass(frozen=True)
class Erasure:
    """What one erasure did in the store and in the campaign files, and the model
    versions whose files still hold the customer."""

    receipt: ErasureReceipt
    scrubbed: list[Scrubbed]
    untouched: list[Untouched]
    model_versions: list[str]
    # Temporary files of dead campaign runs, removed (``clear_dead_partials``).
    partials: list[str] = field(default_factory=list)
    # The store, a model version on disk or a campaign file held something of the id.
    known: bool = True
    # Unknown: the id nbo does know that this one looks like a spreadsheet's writing of.
    near_match: str | None = None

    @property
    def rows_removed(self) -> int:
        """The customer's rows taken out of the campaign files."""
        return sum(file.rows_removed for file in self.scrubbed)


Forgotten = TypeVar("Forgotten")


def erase_customer_data(
    customer_id: str, store: Store, forget: Callable[[str], Forgotten], models_dir: Path
) -> tuple[Erasure, Forgotten]:
    """Erase the customer: their events, purchase lines and consent record in the store
    (the id on the erased list), then ``forget`` (the models of the process that asks:
    the service's workers; nothing for a command, which holds none), then their rows in
    the campaign files nbo manages (a file that cannot be rewritten is listed in
    ``untouched``, never a failed erasure). Answers what was done, and what ``forget``
    answered. Any id the store may hold, so also one the API no longer takes (a
    ``path_id_problem``, stored by an earlier release). ``models_dir``: the published
    versions there whose files still hold the customer are named in the answer."""
    receipt = store.erase(customer_id)
    forgotten = forget(customer_id)
    # After the store: the id is on the erased list, so a batch finishing now leaves the
    # customer out of its file itself (``nbo.campaigns.batch.write_batch``).
    scrubbed, untouched = erase_from_outputs(store, customer_id)
    # A run killed while it wrote left rows no erasure can take the customer out of.
    partials = clear_dead_runs_files(store)
    versions = versions_holding(models_dir, customer_id)
    erasure = Erasure(receipt, scrubbed, untouched, versions, partials)
    if not (receipt.total or versions or erasure.rows_removed or untouched):
        # Recorded all the same (an id not trained on yet must stay out of training),
        # but most likely a typo: said, with the customer it may have meant.
        erasure = replace(
            erasure, known=False, near_match=_near_match(customer_id, store, models_dir)
        )
    return erasure, forgotten


def _near_match(customer_id: str, store: Store, models_dir: Path) -> str | None:
    """The customer nbo knows (in the store or a model on disk) whose id a spreadsheet
    would write as ``customer_id`` ("12347.0" for "12347"), or None."""
    number = spreadsheet_original(customer_id)
    if number is None or store.is_erased(number):
        return None
    if store.stored_events_of(number) or store.consent_of(number) is not None:
        return number
    return number if versions_holding(models_dir, number) else None


def erasure_receipt_out(
    customer_id: str, erasure: Erasure, model_row_removed: bool, all_workers: bool
) -> ErasureReceiptOut:
    """The receipt ``DELETE /v1/customers/{id}`` answers."""
    receipt = erasure.receipt
    return ErasureReceiptOut(
        customer_id=customer_id,
        erased_at=iso_utc(receipt.erased_at),
        already_erased=receipt.already_erased,
        deleted=DeletedCounts(
            events=receipt.events,
            purchase_lines=receipt.purchase_lines,
            consent_records=receipt.consent_records,
            consent_changes=receipt.consent_changes,
        ),
        model_row_removed=model_row_removed,
        all_workers=all_workers,
        batch_files=[
            BatchFileErasedOut(path=file.path, rows_removed=file.rows_removed)
            for file in erasure.scrubbed
        ],
        batch_files_untouched=[_unread(file) for file in erasure.untouched],
        partial_files_removed=erasure.partials,
        known=erasure.known,
        near_match=erasure.near_match,
        model_versions_holding=erasure.model_versions,
    )


@dataclass(frozen=True)
class ConsentChange:
    """A consent stored, the channels it withdrew, and the campaign files of those
    channels the customer was taken out of (or that could not be rewritten)."""

    consent: Consent
    withdrawn: list[str]
    scrubbed: list[Scrubbed]
    untouched: list[Untouched]

    @property
    def rows_removed(self) -> int:
        return sum(file.rows_removed for file in self.scrubbed)

    def line(self) -> str | None:
        """What the campaign files saw of the change, or None when it withdrew nothing
        or no managed file is on a withdrawn channel (nothing to say, nothing scanned)."""
        if not self.withdrawn or not (self.scrubbed or self.untouched):
            return None
        files = [f for f in self.scrubbed if f.rows_removed]
        line = (
            f"consent to {', '.join(self.withdrawn)} withdrawn: {self.rows_removed:,} rows "
            f"taken out of {len(files):,} campaign file{'' if len(files) == 1 else 's'}"
        )
        for file in self.untouched:
            line += f"; {file.path} untouched: {file.reason}"
        return line


def record_consent(
    store: Store,
    customer_id: str,
    personalization: bool,
    channels: dict[str, bool],
    source: str = CONSENT_FROM_API,
) -> ConsentChange:
    """Store the customer's consent (``Store.set_consent``) and, for each channel it
    withdraws (allowed before, not after), take the customer out of the managed campaign
    files of that channel (``withdraw_from_outputs``), as an erasure takes them out of
    every file: a campaign file waiting for its send must not reach a customer who has
    since said no. Only a withdrawal rewrites: a record that withdrew the channel before
    (the same form sent again) scans no file. Taken before the change: of two changes at
    once, at most both look at the files, never neither."""
    before = store.consent_of(customer_id) or DEFAULT_CONSENT
    consent = store.set_consent(customer_id, personalization, channels, source=source)
    withdrawn: list[str] = [c for c in CHANNELS if before.allows(c) and not consent.allows(c)]
    scrubbed: list[Scrubbed] = []
    untouched: list[Untouched] = []
    if withdrawn:
        scrubbed, untouched = withdraw_from_outputs(store, customer_id, withdrawn)
    return ConsentChange(consent, withdrawn, scrubbed, untouched)


def consent_out(customer_id: str, consent: Consent | None) -> ConsentOut:
    """The consent as the API shows it: the stored record, or the defaults."""
    stored = consent is not None
    consent = consent or DEFAULT_CONSENT
    return ConsentOut(
        customer_id=customer_id,
        personalization=consent.personalization,
        channels={channel: consent.allows(channel) for channel in CHANNELS},
        stored=stored,
        updated_at=iso_utc(consent.updated_at) if stored else None,
    )


def export_customer(
    customer_id: str, store: Store, models: ServingModels | None, settings: Settings
) -> CustomerDataOut:
    """The export of one customer at the service clock (``settings.now()``): every
    stored event, and the profile as ``GET /v1/customers/{id}`` computes it (from the
    most recent ``NBO_MAX_POSTED_LINES`` posted lines, with ``NBO_CLOCK_SKEW_SECONDS``,
    as that route reads them). ``settings.models_dir``: where the served models' files
    are, and every other version that may still hold the customer (``model_files``).

    Without consent to personalization the profile is the neutral one the service uses,
    and each served model that knows the customer shows what it holds of them all the
    same (``held_profile``, ``items``), marked ``used: false``.

    An erased customer nbo holds nothing on since (no event, no consent record) gets an
    export that says erased and nothing else: no profile, model or assignment part, since
    every one of them would describe an id, not the person. Events posted after an
    erasure are the returning customer's and are exported like anyone's. The campaign
    files are read in every case: a file an erasure could not rewrite still holds rows.
    """
    now, models_dir = settings.now(), settings.models_dir
    erased_at = store.erased_at(customer_id)
    events = store.stored_events_of(customer_id)
    consent = store.consent_of(customer_id)
    found, unread = rows_in_outputs(store, customer_id)
    holds = erased_at is None or bool(events) or consent is not None
    served = set() if models is None else {model.version for model in models.models()}
    export = CustomerDataOut(
        customer_id=customer_id,
        exported_at=datetime.now(UTC).isoformat(),
        erased=erased_at is not None,
        erased_at=None if erased_at is None else iso_utc(erased_at),
        served_model=None if models is None else models.current.version,
        events=[
            ExportedEventOut(
                event_id=event.event_id,
                type=event.type,
                occurred_at=iso_utc(event.occurred_at),
                received_at=iso_utc(event.received_at),
                payload=event.payload,
                model_version=_decided_by(event),
            )
            for event in events
        ],
        consent=consent_out(customer_id, consent) if holds else None,
        consent_history=[
            ConsentChangeOut(
                personalization=change.personalization,
                channels=change.channels,
                changed_at=iso_utc(change.changed_at),
                source=change.source,
            )
            for change in store.consent_history_of(customer_id)
        ],
        profile=None,
        models=[],
        model_files=[
            ModelFileOut(model_version=version, served=version in served)
            for version in versions_holding(models_dir, customer_id)
        ],
        assignment=None,
        batch_files=[_file_rows(rows) for rows in found],
        batch_files_unread=[_unread(file) for file in unread],
    )
    if holds and models is not None:
        # Erased in another process (a replica, ``nbo customers erase``): unknown to every
        # model first, as a decision makes them, not only to the current one the profile
        # reads (an experiment's model would show what it learned before the erasure).
        forget_erased(models, store, [customer_id])
        export.profile = current_profile(models.current, store, customer_id, now, settings)
        personalization = (consent or DEFAULT_CONSENT).personalization
        export.models = [
            _model_data(model, customer_id, models_dir, personalization)
            for model in models.models()
        ]
        assignment = models.assign(customer_id, consent or DEFAULT_CONSENT, int(now.timestamp()))
        export.assignment = AssignmentOut(
            model_version=assignment.model.version,
            experiment=assignment.experiment,
            variant=assignment.variant,
            personalized=assignment.personalize,
        )
    return export


def _decided_by(event: StoredEvent) -> str | None:
    """The model version that decided an impression (its payload's), or None."""
    if event.type != IMPRESSION:
        return None
    version = event.payload.get("model_version")
    return version if isinstance(version, str) else None


def _model_data(
    model: ServingModel, customer_id: str, models_dir: Path, personalization: bool
) -> ModelDataOut:
    """What the model learned from the customer: their profile row and history as
    trained, used for them only with consent to personalization. Nothing once erased:
    ``forget`` made the row unreachable, and nothing serves it again."""
    row = model.customers.get(customer_id)
    if row is None:
        return ModelDataOut(
            model_version=model.version, known=False, used=False, held_profile=None, items=[]
        )
    held = held_profile(models_dir, model.version, customer_id)
    items, _confidence, last = model.history_of(row)
    counts = model.counts_of(row)
    orders = counts.tolist() if len(counts) == len(items) else [None] * len(items)
    item_ids = model.items.external(items)
    return ModelDataOut(
        model_version=model.version,
        known=True,
        used=personalization,
        held_profile=None
        if held is None
        else {name: _jsonable(value) for name, value in held.items()},
        items=[
            TrainedItemOut(
                item_id=item_id,
                item_name=model.item_names.get(item_id),
                orders=count,
                last_purchase=iso_utc(int(seconds)) if seconds > 0 else None,
            )
            for item_id, count, seconds in zip(item_ids, orders, last.tolist(), strict=True)
        ],
    )


def _file_rows(found: CustomerRows) -> BatchFileRowsOut:
    return BatchFileRowsOut(
        path=found.path,
        written_at=iso_utc(found.written_at),
        run_id=found.run_id,
        rows=[
            {name: _jsonable(value) for name, value in row.items()}
            for row in found.rows.to_pylist()
        ],
    )


def _unread(file: Untouched) -> BatchFileUntouchedOut:
    return BatchFileUntouchedOut(path=file.path, reason=file.reason)


def _jsonable(value: object) -> object:
    """A cell as JSON: NaN and infinities (not JSON) as null, times as ISO text, anything
    unusual (a file nbo did not write may hold it) as its text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)
