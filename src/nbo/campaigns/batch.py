"""Batch offer generation: a campaign's offers for many customers, as one file.

Every customer goes through ``nbo.runtime.decide.decide_customers``, the sequence behind
``GET /v1/customers/{id}/offers``, with the state the store holds for them (consent,
contacts, purchases posted since training), so a campaign obeys exactly the rules of a
single call: suppression (posted purchases included), eligibility, consent, frequency
caps and offer fatigue. Customers are decided in chunks and written chunk by chunk to a
temporary file beside the output, renamed over it only when every customer is done, so
an interrupted or failed run never leaves a half-written campaign behind.

A campaign that will be sent (``--record``) delivers each chunk as the API delivers one
customer (``nbo.runtime.deliver``): decided and its impressions recorded under the
customers' locks, so an API delivery at the same moment never doubles a capped contact.
A run that fails before its file is in place takes its impressions back
(``Store.remove_impressions``), as it does for customers erased while it ran.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from nbo.campaigns.files import (
    SCHEMA,
    Outcomes,
    folder_lock,
    format_of,
    read_batches,
    remove_customers,
)
from nbo.campaigns.recovery import Heartbeat, begin_delivering, end_delivering, partial_path
from nbo.catalog.holder import CatalogHolder
from nbo.core import processes
from nbo.core.columns import CUSTOMER_ID
from nbo.core.errors import NboError
from nbo.core.ids import MAX_ID_LENGTH, CaseIndex, path_id_problem, spreadsheet_original
from nbo.core.outputs import check_output_file, create_private
from nbo.core.pseudonyms import Pseudonyms
from nbo.core.vocabulary import STAGES, iso_utc
from nbo.data.events import ImpressionEvent
from nbo.data.mapping import names_customer_id
from nbo.experiments.assignment import load_serving_models
from nbo.experiments.definitions import configured_experiments
from nbo.models.registry import MODEL_VERSION_SETTING
from nbo.models.send_time import next_send_at
from nbo.models.served import ServingModel
from nbo.offers.decision import REASON_NO_CHANNEL_CONSENT, Occasion
from nbo.offers.policies import REASON_FREQUENCY_CAP
from nbo.offers.ranking import OfferTable
from nbo.runtime.decide import Context, Decided, context_for, decide_customers, everyone
from nbo.runtime.deliver import deliver_customers, impressions_of
from nbo.settings import Settings
from nbo.store import open_store
from nbo.store.base import BatchOutput, Store

SUFFIXES = (".parquet", ".csv")
ALL = "all"
STAGE_PREFIX = "stage="
CHUNK = 1000
# The reason of a customer who may be contacted but has no offer left to make.
NO_OFFERS = "no_offers"
# The reasons of customers this campaign may not reach at all (``--without-unreachable``
# leaves their rows out): no consent for the channel, or its frequency cap (a delivered
# run). A ``no_offers`` customer may be reached; there is only nothing to offer.
UNREACHABLE = (REASON_NO_CHANNEL_CONSENT, REASON_FREQUENCY_CAP)

# One row per customer and rank; a customer without offers (no consent for the channel,
# frequency cap) gets one row with rank 0 and the reason in ``suppressed_reason``.


class BatchError(NboError):
    """A batch that cannot run: a bad customer selection or output path."""


@dataclass(frozen=True)
class Selection:
    """Which customers a batch covers: explicit ids, or every customer the model and the
    store know; optionally only those in ``stage`` (decided per customer, live)."""

    customer_ids: Sequence[str]
    stage: str | None = None
    description: str = ""
    # Ids a list named again after their first line, left out: one row set each.
    repeated: int = 0
    # Rows of a list without an id (a blank line, an empty cell, a NaN), left out.
    empty: int = 0


@dataclass
class BatchSummary:
    customers: int = 0  # decided
    with_offers: int = 0
    rows: int = 0
    skipped_stage: int = 0  # not in the selected stage
    without_offers: dict[str, int] = field(default_factory=dict)  # reason -> customers
    recorded: int = 0  # impressions recorded
    # Customers erased while the batch ran, and their rows, taken out of the file before
    # (or right after) it was put in place; the counts above leave them out.
    erased_customers: int = 0
    erased_rows: int = 0
    # Customers the campaign may not reach, per reason, left out of the file
    # (``--without-unreachable``); not counted in ``customers`` nor ``without_offers``.
    left_out: dict[str, int] = field(default_factory=dict)
    # Customers given offers who withdrew consent to the channel while the batch ran, and
    # their rows, taken out of the file as the erased are (the counts leave them out).
    withdrawn_customers: int = 0
    withdrawn_rows: int = 0

    @property
    def removed_rows(self) -> int:
        """Rows taken out of the file after they were written: erased or withdrawn."""
        return self.erased_rows + self.withdrawn_rows

    @property
    def capped(self) -> int:
        """Customers the channel's frequency cap kept from this (delivered) run, in the
        file or left out of it."""
        return self.without_offers.get(REASON_FREQUENCY_CAP, 0) + self.left_out.get(
            REASON_FREQUENCY_CAP, 0
        )

    def leave_out(self, erased: Outcomes, withdrawn: bool = False) -> None:
        """The customers of ``erased`` (taken out of the file; ``withdrawn``: for a
        consent withdrawn, not an erasure) out of the counts, so the summary says what
        the file holds."""
        self.customers -= erased.customers
        if withdrawn:
            self.withdrawn_customers += erased.customers
        else:
            self.erased_customers += erased.customers
        self.with_offers -= erased.with_offers
        for reason, count in erased.without_offers.items():
            left = self.without_offers.get(reason, 0) - count
            if left > 0:
                self.without_offers[reason] = left
            else:
                self.without_offers.pop(reason, None)


def select_customers(spec: str, model: ServingModel, store: Store) -> Selection:
    """``all``, ``stage=NAME`` (all, kept when their live stage is NAME) or a file of ids
    (``.txt``: one per line, a first line ``customer_id`` taken as a header;
    ``.csv``/``.parquet``: a ``customer_id`` column)."""
    if spec == ALL or spec.startswith(STAGE_PREFIX):
        stage = None
        if spec.startswith(STAGE_PREFIX):
            stage = spec[len(STAGE_PREFIX) :]
            if stage not in STAGES:
                raise BatchError(
                    f"--customers {spec}: unknown stage '{stage}' (one of {', '.join(STAGES)})"
                )
        return Selection(everyone(model, store), stage, spec)
    listed, empty = _listed_ids(Path(spec))
    ids = list(dict.fromkeys(listed))
    return Selection(ids, None, spec, repeated=len(listed) - len(ids), empty=empty)


def leave_out_erased(selection: Selection, store: Store) -> tuple[Selection, int]:
    """A customer list without the erased customers the store has heard nothing of since
    (no event, no consent record): an erasure dropped their consent record with the rest,
    so a customer who had withdrawn consent to the channel would get a campaign again
    from an old list. A returning customer (an event or a consent record since) stays.
    Answers the list kept and how many were left out; ``all`` and stages cover no erased
    customer (``nbo.runtime.decide.everyone``)."""
    if selection.description == ALL or selection.description.startswith(STAGE_PREFIX):
        return selection, 0
    erased = store.erased_among(list(selection.customer_ids))
    if not erased:
        return selection, 0
    returned = set(store.consents_of(sorted(erased)))
    returned.update(c for c in erased - returned if store.stored_events_of(c))
    gone = erased - returned
    if not gone:
        return selection, 0
    kept = [c for c in selection.customer_ids if c not in gone]
    return replace(selection, customer_ids=kept), len(gone)


def strangers(selection: Selection, model: ServingModel, store: Store) -> list[str]:
    """The ids of a customer list that neither the model nor the store knows (no trained
    history, no posted purchase): they get a new customer's offers, which is right for a
    new customer and wrong for a mistyped id, so the command says how many there are.
    Empty for ``all`` and stages, which cover known customers only."""
    if selection.description == ALL or selection.description.startswith(STAGE_PREFIX):
        return []
    unknown = [c for c in selection.customer_ids if model.customers.get(c) is None]
    if not unknown:
        return []
    posted = set(store.customers_with_purchases())
    return [c for c in unknown if c not in posted]


def strangers_line(
    found: Sequence[str],
    total: int,
    model: ServingModel,
    pseudonyms: Pseudonyms,
    posted: Iterable[str] = (),
) -> str:
    """One line on ``strangers``, with examples, and the likely cause when the ids look
    like numbers a spreadsheet wrote ("12347.0" for the customer "12347") or differ only
    by case from a known one: the model's customers or those the store knows alone
    (``posted``: customers with a posted purchase; a customer who joined after training
    was not named when the list changed their id's case). Customers are named by their
    pseudonyms, as in the service's logs (stderr goes to logs): ``nbo keys pseudonym -``
    finds them in the list."""
    examples = ", ".join(pseudonyms.of(c) for c in found[:3])
    line = (
        f"{len(found):,} of {total:,} customers are known neither to the model nor to the "
        f"store ({examples}{', ...' if len(found) > 3 else ''}): they get a new customer's offers"
    )
    floats = [
        c
        for c in found
        if (number := spreadsheet_original(c)) is not None
        and model.customers.get(number) is not None
    ]
    if floats:
        line += (
            f"; {len(floats):,} look like numbers a spreadsheet wrote: the model knows "
            "them without their '.0'"
        )
    case_indexes = [model.customer_case_index(), CaseIndex(posted)]
    cased = sum(1 for c in found if any(index.meant(c) is not None for index in case_indexes))
    if cased:
        line += (
            f"; {cased:,} differ only in upper or lower case from ids the model or the store "
            "knows "
            "('m-1' is not 'M-1': ids are matched exactly): correct the list's case"
        )
    return line


def _listed_ids(path: Path) -> tuple[list[str], int]:
    """Every id of a list file, as listed (repeats included), each checked; and how many
    rows had none (blank lines, empty cells), left out."""
    where = f"--customers {path}"
    if not path.exists():
        raise BatchError(f"{where}: no such file (or use 'all' or 'stage=NAME')")
    if not path.is_file():
        # A folder, a device (/dev/null) or a pipe: it exists, so not "no such file".
        raise BatchError(f"{where}: not a regular file (a customer list is a file)")
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv", ".txt"):
        # A file without a suffix (/etc/passwd) was read as a .txt list, one with another
        # suffix (list.json) refused: both are refused now.
        raise BatchError(f"{where}: a customer list is a .txt, .csv or .parquet file")
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        else:
            # utf-8-sig: a byte-order mark (as Excel writes) is not part of the first id.
            lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
            while lines and not lines[-1]:
                lines.pop()  # an editor's blank lines at the end: no rows
            ids = [line for line in lines if line]
            blank = len(lines) - len(ids)
            if ids and names_customer_id(ids[0]):
                # The header of the CSV form (a column exported with its name, as
                # customer_id or CustomerID): a list, not a customer called "CustomerID",
                # who would be decided and delivered.
                ids = ids[1:]
            if not ids:
                raise BatchError(f"{where}: no customer ids in the file")
            return _valid(ids, where), blank
    except (OSError, UnicodeDecodeError, ValueError, pa.ArrowException) as exc:
        if isinstance(exc, BatchError):
            raise
        raise BatchError(f"{where}: cannot be read ({exc})") from None
    column = _id_column(frame, where)
    ids, empty = _ids_of(frame[column].tolist(), f"{where}: column '{column}'")
    if not ids:
        raise BatchError(f"{where}: no customer ids in the file")
    return _valid(ids, where), empty


def _id_column(frame: pd.DataFrame, where: str) -> str:
    """The list's column of customer ids: ``customer_id``, else the one column named as
    nbo reads a customer id's (``CustomerID``, ``client_id``:
    ``nbo.data.mapping.names_customer_id``)."""
    names = [str(name) for name in frame.columns]
    if CUSTOMER_ID in names:
        return CUSTOMER_ID
    like = [name for name in names if names_customer_id(name)]
    if len(like) == 1:
        return like[0]
    raise BatchError(f"{where}: no 'customer_id' column (columns: {', '.join(names)})")


# A float column holds whole numbers exactly up to here (2**53): past it, "12347" read as
# a float may be another customer's number.
_EXACT_FLOAT = 2**53


def _ids_of(values: list[object], where: str) -> tuple[list[str], int]:
    """The ids of a list's column as text, and how many rows had none. A null (an empty
    cell, NaN) is no customer, as a blank line is not: str() would make one called "nan".
    A number in a float column (what pandas writes for ids with a blank among them) is
    its integer text ("12347", not "12347.0", a customer nobody knows); one that is not
    a whole number is no id and refuses the list."""
    ids: list[str] = []
    for value in values:
        if isinstance(value, float | np.floating):
            number = float(value)
            if math.isnan(number):
                continue
            if not number.is_integer() or abs(number) >= _EXACT_FLOAT:
                raise BatchError(
                    f"{where} holds {number!r}, not a whole number: customer ids are whole "
                    "numbers or text"
                )
            ids.append(str(int(number)))
        elif value is not None and not pd.isna(value) and (text := str(value).strip()):
            ids.append(text)
    return ids, len(values) - len(ids)


def _valid(ids: list[str], where: str) -> list[str]:
    """``ids``, or BatchError naming the first that breaks the service's rule for a
    customer id (a control character, too long, ending in a route's name): no such
    customer can be posted, and a delivered run failed on it half-way with a traceback."""
    broken = [(c, problem) for c in ids if (problem := path_id_problem(c)) is not None]
    if not broken:
        return ids
    first, problem = broken[0]
    more = f" ({len(broken):,} ids in all)" if len(broken) > 1 else ""
    shown = first if len(first) <= 40 else first[:40] + "..."
    raise BatchError(f"{where}: customer id {shown!r} {problem}{more}")


def check_output(path: Path) -> None:
    """Refuse an output the batch could not write, before any work is done."""
    if path.suffix.lower() not in SUFFIXES:
        raise BatchError(f"--out {path}: the output is a .parquet or .csv file")
    check_output_file(path, "--out")


@dataclass(frozen=True)
class BatchRun:
    """What every customer of the batch is decided with (the runtime's ``Context``: the
    served models, the catalogue, the contact policy and the store) and on which occasion
    (channel, k, the clock, and whether the batch will be delivered: frequency caps apply
    and impressions are recorded)."""

    context: Context
    occasion: Occasion
    run_id: str = ""
    # Leave the customers the campaign may not reach (``UNREACHABLE``) out of the file
    # instead of giving each a rank-0 row (``--without-unreachable``).
    reachable_only: bool = False

    @property
    def store(self) -> Store:
        return self.context.store

    @property
    def now(self) -> datetime:
        return datetime.fromtimestamp(self.occasion.now_s, UTC)


# The offer's columns, null on the row of a customer without offers.
_TEXT_COLUMNS = (
    "offer_id",
    "kind",
    "item_id",
    "item_name",
    "title",
    "incentive",
    "reason_source",
    "reason_because",
    "reason_text",
)
_NUMBER_COLUMNS = (
    "amount",
    "priority",
    "propensity",
    "value",
    "stage_weight",
    "lever",
    "score",
)


def chunk_table(run: BatchRun, decided: Sequence[Decided]) -> pa.Table:
    """The output rows (``SCHEMA``) of a chunk's decisions, in the customers' order and
    best offer first: one row per offer, read column by column from the rankings' offer
    tables, or one row with rank 0 and the reason for a customer without offers."""
    decisions = [one.decision for one in decided]
    profiles = [decision.profile for decision in decisions]
    rankings = [decision.ranking for decision in decisions]
    assignments = [one.assignment for one in decided]
    # Offers to write, per offer table: (decided customer, the customer's position in it).
    by_table: dict[int, tuple[OfferTable, ServingModel, list[int], list[int]]] = {}
    without: list[int] = []
    suppressed: list[object] = []  # the reason, None for a customer with offers
    for d, ranking in enumerate(rankings):
        if ranking is None or not ranking.has_offers:
            suppressed.append(decisions[d].suppressed_reason or NO_OFFERS)
            without.append(d)
            continue
        suppressed.append(None)
        entry = by_table.get(id(ranking.table))
        if entry is None:
            entry = by_table[id(ranking.table)] = (ranking.table, assignments[d].model, [], [])
        entry[2].append(d)
        entry[3].append(ranking.position)
    send_at: dict[int, str] = {}  # best send hour -> its next time (168 at most)
    for hour in {profile.best_send_hour for profile in profiles}:
        send_at[hour] = next_send_at(hour, run.now).isoformat()
    run_id = run.run_id
    # Per decided customer: their columns that do not depend on the offer.
    customer: dict[str, list[object]] = {
        "customer_id": [one.customer_id for one in decided],
        "stage": [profile.stage for profile in profiles],
        "churn_risk": [profile.churn_risk for profile in profiles],
        "best_send_at": [send_at[profile.best_send_hour] for profile in profiles],
        "model_version": [assignment.model.version for assignment in assignments],
        "experiment": [assignment.experiment for assignment in assignments],
        "variant": [assignment.variant for assignment in assignments],
        "request_id": [delivery_id(run_id, one.customer_id) if run_id else None for one in decided],
        # Null where nothing was ranked (no consent for the channel, the frequency cap):
        # "false" there read as a customer who withdrew consent to personalization, or
        # as popular items, when no offer was made at all.
        "personalized": [None if r is None else r.personalized for r in rankings],
        "suppressed_reason": suppressed,
        "next_allowed_at": [
            None if (at := decision.next_allowed_at) is None else iso_utc(at)
            for decision in decisions
        ],
    }

    owners: list[np.ndarray] = [np.asarray(without, dtype=np.int64)]
    ranks: list[np.ndarray] = [np.zeros(len(without), dtype=np.int64)]
    # Each offer column as arrays, one per offer table, after the rank-0 rows' nulls.
    offer_columns: dict[str, list[np.ndarray]] = {
        name: [np.full(len(without), None, dtype=object)] for name in _TEXT_COLUMNS
    }
    for name in _NUMBER_COLUMNS:
        offer_columns[name] = [np.full(len(without), np.nan)]
    for table, model, deciders, positions in by_table.values():
        chosen, why = table.choices, table.explanations
        begin = chosen.starts[positions]
        lengths = chosen.starts[np.asarray(positions) + 1] - begin
        rows = np.repeat(begin, lengths) + (
            np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        )
        owners.append(np.repeat(np.asarray(deciders, dtype=np.int64), lengths))
        ranks.append(rows - np.repeat(begin, lengths) + 1)
        # The catalogue's offer behind each row: an incentive's, None for a product
        # (most rows): their columns are filled in where there is one.
        offers = chosen.offer[rows].tolist()
        incentives = [n for n, o in enumerate(offers) if o is not None]
        incentive = np.full(len(rows), None, dtype=object)
        amount = np.full(len(rows), np.nan)
        for n in incentives:
            offer = offers[n]
            incentive[n] = offer.incentive
            if offer.amount is not None:
                amount[n] = offer.amount
        parts = {
            "offer_id": chosen.offer_id[rows],
            "kind": chosen.kind[rows],
            "item_id": chosen.item_id[rows],
            "item_name": model.item_name_array[chosen.item[rows]],
            "title": chosen.title[rows],
            "incentive": incentive,
            "amount": amount,
            "priority": chosen.propensity[rows]
            * chosen.value[rows]
            * chosen.stage_weight[rows]
            * chosen.lever[rows],
            "propensity": chosen.propensity[rows],
            "value": chosen.value[rows],
            "stage_weight": chosen.stage_weight[rows],
            "lever": chosen.lever[rows],
            "score": chosen.score[rows],
            "reason_source": why.source[rows],
            "reason_because": _joined(why.because[rows]),
            "reason_text": why.text[rows],
        }
        for name, values in parts.items():
            offer_columns[name].append(values)
    owner = np.concatenate(owners)
    rank = np.concatenate(ranks)
    order = np.lexsort((rank, owner))
    columns: dict[str, pa.Array] = {}
    for name, values in customer.items():
        columns[name] = pa.array(values, type=SCHEMA.field(name).type).take(owner[order])
    columns["rank"] = pa.array(rank[order], type=pa.int32())
    for name in _TEXT_COLUMNS:
        columns[name] = pa.array(np.concatenate(offer_columns[name])[order], type=pa.string())
    for name in _NUMBER_COLUMNS:
        numbers = np.concatenate(offer_columns[name])[order]
        columns[name] = pa.array(numbers, type=pa.float64(), mask=np.isnan(numbers))
    return pa.table([columns[name] for name in SCHEMA.names], schema=SCHEMA)


# The ids behind each offer (tuples) as one text each, ``|`` between them.
_joined = np.frompyfunc("|".join, 1, 1)


# Called after each chunk with the customers screened so far (every selected one) and
# those decided, whose rows are written (fewer with a stage: the others are skipped).
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RunSpec:
    """What opens a batch run, in this process or in a worker process (picklable): the
    settings (models, store, catalogue, experiments, contact policy) and the campaign."""

    settings: Settings
    channel: str
    k: int
    now: datetime
    delivery: bool
    run_id: str
    reachable_only: bool = False


def open_run(spec: RunSpec) -> BatchRun:
    """The served models (the current one and the experiments' variants, erased customers
    removed, as the service loads them), the catalogue and the store of ``spec``."""
    settings = spec.settings
    catalog = CatalogHolder(settings.catalog).current()
    configured = configured_experiments(settings.experiments)
    store = open_store(settings.store_url)
    try:
        models = load_serving_models(
            settings.models_dir,
            settings.model_version,
            configured,
            store.erased_list(),
            MODEL_VERSION_SETTING,
        )
    except BaseException:
        store.close()
        raise
    return run_of(spec, context_for(settings, models, catalog, store))


def run_of(spec: RunSpec, context: Context) -> BatchRun:
    """The run of ``spec`` deciding with ``context`` (a forked worker's: its parent's
    models with a store of its own)."""
    return BatchRun(
        context,
        Occasion(spec.channel, spec.k, int(spec.now.timestamp()), spec.delivery),
        run_id=spec.run_id,
        reachable_only=spec.reachable_only,
    )


@dataclass
class ChunkResult:
    """One chunk's rows (None when no customer of it was kept) and its counts;
    ``called_off``: the campaign was stopping, and the chunk decided and recorded
    nothing."""

    table: pa.Table | None
    customers: int = 0
    with_offers: int = 0
    without_offers: dict[str, int] = field(default_factory=dict)
    skipped_stage: int = 0
    recorded: int = 0  # impressions recorded (a delivered campaign)
    called_off: bool = False
    # Customers left out of the file as unreachable, per reason (``reachable_only``).
    left_out: dict[str, int] = field(default_factory=dict)


class CalledOff(Exception):
    """A delivery abandoned half-way because the campaign is stopping: its transaction
    rolls back, so nothing of it is recorded (and nothing has to be taken back)."""


def decide_chunk(
    run: BatchRun,
    customer_ids: Sequence[str],
    stage: str | None,
    stopping: Callable[[], bool] | None = None,
) -> ChunkResult:
    """The output rows of one chunk of customers (delivered, when the campaign is).
    ``stopping`` (a worker's): whether the campaign is stopping, asked before the chunk
    starts and, when delivered, before each customer's impressions are made (most of a
    delivered chunk's time, in the store's transaction): the chunk is then called off
    rather than recorded for the run to take back."""
    if stopping is not None and stopping():
        return ChunkResult(None, called_off=True)
    recorded = 0
    if run.occasion.delivery:

        def impressions(one: Decided) -> list[ImpressionEvent]:
            if stopping is not None and stopping():
                raise CalledOff
            return _impressions(run, one)

        try:
            delivered = deliver_customers(
                run.context, customer_ids, run.occasion, impressions, stage
            )
        except CalledOff:
            return ChunkResult(None, called_off=True)
        decided, recorded = delivered.decided, delivered.recorded
    else:
        decided = decide_customers(run.context, customer_ids, run.occasion, stage)
    result = ChunkResult(None, skipped_stage=len(customer_ids) - len(decided), recorded=recorded)
    kept: list[Decided] = []
    for one in decided:
        decision = one.decision
        ranking = decision.ranking
        if ranking is None or not ranking.has_offers:
            reason = decision.suppressed_reason or NO_OFFERS
            if run.reachable_only and reason in UNREACHABLE:
                result.left_out[reason] = result.left_out.get(reason, 0) + 1
                continue
            result.without_offers[reason] = result.without_offers.get(reason, 0) + 1
        else:
            result.with_offers += 1
        result.customers += 1
        kept.append(one)
    if kept:
        result.table = chunk_table(run, kept)
    return result


class Workers(Protocol):
    """Processes deciding chunks in parallel (``nbo.campaigns.workers.BatchWorkers``)."""

    def decide(
        self, chunks: Sequence[Sequence[str]], stage: str | None
    ) -> Iterable[ChunkResult]: ...

    def close(self, wait: bool = True) -> None: ...


def write_batch(
    run: BatchRun,
    selection: Selection,
    out: Path,
    chunk: int = CHUNK,
    progress: Progress | None = None,
    workers: Workers | None = None,
    managed: bool = True,
    stopping: Callable[[], None] | None = None,
) -> BatchSummary:
    """Decide every selected customer and write the rows to ``out`` (.parquet or .csv),
    through a temporary file renamed at the end; with ``run.occasion.delivery`` each chunk
    is delivered (its impressions recorded as it is decided), and taken back if the run
    fails before the rename.

    ``managed`` (the default): the finished file is registered in the store, so a later
    erasure takes the customer out of it (``nbo.campaigns.files``); unmanaged, it is the
    user's alone (and a registration of the same path is dropped). Either way, customers
    erased while the batch ran are taken out of the file.

    With ``workers`` (``nbo.campaigns.workers``, started for ``run``), chunks are decided
    by those processes, each with a run of its own, and written in order: the same file
    as one process writes. ``progress`` is called after each chunk with the number of
    customers screened and decided so far. ``stopping`` is called at once when the run
    is interrupted (Ctrl-C, SIGTERM), before its clean-up: the workers' chunks called
    off and, when delivered, the run's impressions taken back, with Ctrl-C ignored.
    """
    check_output(out)
    summary = BatchSummary()
    # The erased list keeps keyed hashes, not ids: what is erased later is told apart
    # by its hashes, and tested against the selection's ids (``nbo.core.erased``).
    erased_before = run.store.erased_list()
    # Consent changes from here on may postdate a customer's decision (the store's time).
    consent_since = int(time.time())
    temporary = partial_path(out)
    writer: pq.ParquetWriter | pacsv.CSVWriter | None = None
    ids = list(selection.customer_ids)
    chunks = [ids[start : start + chunk] for start in range(0, len(ids), chunk)]
    placed = False
    heartbeat: Heartbeat | None = None
    try:
        if run.occasion.delivery:
            heartbeat = begin_delivering(run.store, run.run_id, temporary)
        # Customers' rows: the owner's alone, as the partial file and once in place.
        create_private(temporary)
        if out.suffix.lower() == ".parquet":
            writer = pq.ParquetWriter(temporary, SCHEMA)
        else:
            writer = pacsv.CSVWriter(temporary, SCHEMA)
        if workers is not None and len(chunks) > 1:
            results: Iterable[ChunkResult] = workers.decide(chunks, selection.stage)
        else:
            results = (decide_chunk(run, c, selection.stage) for c in chunks)
        done = 0
        for chosen, result in zip(chunks, results, strict=True):
            if result.called_off:
                # Only a stopping run calls its chunks off: never a result to write.
                raise BatchError("the campaign was stopped while it ran; no file was written")
            if heartbeat is not None:
                heartbeat.check()
            summary.customers += result.customers
            summary.recorded += result.recorded
            summary.with_offers += result.with_offers
            summary.skipped_stage += result.skipped_stage
            for reason, count in result.without_offers.items():
                summary.without_offers[reason] = summary.without_offers.get(reason, 0) + count
            for reason, count in result.left_out.items():
                summary.left_out[reason] = summary.left_out.get(reason, 0) + count
            if result.table is not None:
                writer.write_table(result.table)
                summary.rows += result.table.num_rows
            done += len(chosen)
            if progress is not None:
                progress(done, summary.customers)
        writer.close()
        writer = None
        fmt = format_of(out)
        # Erased while the batch ran: out before the rename, their impressions too.
        erased_now = run.store.erased_list()
        erased_during = erased_now.since(erased_before).among(ids)
        if erased_during:
            erased = Outcomes()
            summary.erased_rows += remove_customers(temporary, fmt, erased_during, removed=erased)
            summary.leave_out(erased)
            if run.occasion.delivery:
                summary.recorded -= take_back(run, sorted(erased_during))
        # Consent to the channel withdrawn while the batch ran, by customers it gave offers
        # to: out before the rename (a withdrawal rewrites only registered files), their
        # impressions too, as nothing was sent yet.
        withdrawn = withdrawn_during(run, temporary, fmt, consent_since)
        if withdrawn:
            gone = Outcomes()
            summary.withdrawn_rows += remove_customers(temporary, fmt, withdrawn, removed=gone)
            summary.leave_out(gone, withdrawn=True)
            if run.occasion.delivery:
                summary.recorded -= take_back(run, sorted(withdrawn))
        _put_in_place(run, temporary, out, summary, managed)
        placed = True
        # Erased before the registration: that erasure may not have seen this file.
        erased_since = run.store.erased_list().since(erased_now).among(ids)
        if erased_since:
            erased = Outcomes()
            summary.erased_rows += remove_customers(
                out,
                fmt,
                erased_since,
                rewritten=_registered_rows(run, out) if managed else None,
                removed=erased,
            )
            summary.leave_out(erased)
        # Withdrawn before the registration: that withdrawal may not have seen this file.
        late = withdrawn_during(run, out, fmt, consent_since) - withdrawn
        if late:
            gone = Outcomes()
            summary.withdrawn_rows += remove_customers(
                out,
                fmt,
                late,
                rewritten=_registered_rows(run, out) if managed else None,
                removed=gone,
            )
            summary.leave_out(gone, withdrawn=True)
        summary.rows -= summary.removed_rows
    except BaseException as exc:
        if (
            isinstance(exc, OSError)
            and exc.errno is not None
            and exc.filename in (None, str(temporary))
        ):
            # The output the user named (the partial file is gone below): nbo.cli's line.
            # Only on an error with an errno: on one without, a filename turns its message
            # into "[Errno None] None: ...".
            exc.filename = str(out)
        delivered = run.occasion.delivery and not placed
        # No campaign file, no delivery: once no worker can record any more. A second
        # Ctrl-C must not stop this half-way (processes.uninterrupted).
        with processes.uninterrupted() if delivered else contextlib.nullcontext():
            if stopping is not None and isinstance(exc, KeyboardInterrupt):
                # Saying so must not keep the clean-up from running (a closed stderr).
                with contextlib.suppress(OSError):
                    stopping()
            if workers is not None:
                # The chunks being decided are called off, queued ones never start.
                workers.close(wait=delivered)
            if delivered:
                withdraw(run, ids)
        raise
    finally:
        if heartbeat is not None:
            heartbeat.stop()
        if writer is not None:
            # Only a failed run's: closing flushes, which a full disk refuses again, and
            # that second error must not take the first's place.
            with contextlib.suppress(OSError):
                writer.close()
        temporary.unlink(missing_ok=True)
    return summary


def _put_in_place(
    run: BatchRun, temporary: Path, out: Path, summary: BatchSummary, managed: bool
) -> None:
    """Rename the finished file over ``out`` and register it (or drop the registration of
    that path, when unmanaged), under the folder's lock: an erasure rewriting the
    previous file at ``out`` finishes first, and one that comes later sees this file."""
    path = managed_path(out)
    with folder_lock(out.parent) as folder:
        if run.occasion.delivery:
            # Before the rename: a death between the two leaves impressions of a
            # campaign never written (as before this record), never a written campaign
            # whose impressions the next run takes back (nbo.campaigns.recovery). Not
            # at all when another run took this one for dead and its impressions back.
            end_delivering(run.store, run.run_id)
        os.replace(temporary, out)
        os.fsync(folder)
        if managed:
            run.store.register_batch_output(registration(run, path, format_of(out), summary))
        else:
            run.store.unregister_batch_output(path)


def registration(run: BatchRun, path: str, fmt: str, summary: BatchSummary) -> BatchOutput:
    """What the store keeps of a finished campaign file: its rows (those erased during the
    run left out), its channel (a consent withdrawn for it takes the customer out of the
    file), and whether it was delivered, with its customers recorded and capped: a
    delivered run whose every customer was capped recorded nothing, which alone read as a
    preview on the dashboard."""
    delivered = run.occasion.delivery
    return BatchOutput(
        path,
        int(time.time()),
        run.run_id,
        summary.rows - summary.removed_rows,
        fmt,
        run.occasion.channel,
        delivered,
        summary.with_offers if delivered else 0,
        summary.capped,
    )


def withdrawn_during(run: BatchRun, path: Path, fmt: str, since: int) -> set[str]:
    """The customers given offers in the campaign file at ``path`` whose consent changed
    at or after ``since`` and no longer allows the run's channel. Reads nothing of the
    file when nobody's consent changed (the store's index on the change's time)."""
    changed = run.store.consent_changed_since(since)
    if not changed:
        return set()
    channel = run.occasion.channel
    consents = run.store.consents_of(changed)
    refused = [c for c, consent in consents.items() if not consent.allows(channel)]
    if not refused:
        return set()
    wanted = pa.array(sorted(refused), pa.string())
    found: set[str] = set()
    for batch in read_batches(path, fmt, [CUSTOMER_ID, "rank"]):
        offered = pc.and_(
            pc.is_in(batch.column(0), value_set=wanted), pc.greater(batch.column(1), 0)
        )
        found.update(batch.column(0).filter(offered).to_pylist())
    return found


def check_replaces_no_delivery(store: Store, out: Path) -> None:
    """Refuse to replace the file of a delivered campaign: a second run onto the same
    ``--out`` (everyone frequency-capped by the first) would leave rank-0 rows in place
    of what was sent, while the first run's impressions stay recorded. A file at
    ``out`` registered by a run whose impressions are in the store is such a file;
    ``--overwrite`` replaces it all the same."""
    if not out.exists():
        return
    path = managed_path(out)
    for output in store.batch_outputs():
        if output.path != path:
            continue
        recorded = store.count_run_impressions(output.run_id)
        if recorded:
            written = datetime.fromtimestamp(output.written_at, UTC).isoformat(timespec="seconds")
            raise BatchError(
                f"--out {out}: holds the campaign run {output.run_id} delivered ({recorded:,} "
                f"impressions recorded, written {written}): replacing it would lose the file "
                "of what was sent; choose another --out, or pass --overwrite to replace it"
            )


def managed_path(out: Path) -> str:
    """The path a campaign file is registered under: absolute, its folder's links
    resolved but not a link at the file itself (the rename replaces the link)."""
    return str(out.parent.resolve() / out.name)


def _registered_rows(run: BatchRun, out: Path) -> Callable[[int], None]:
    path = managed_path(out)
    return lambda kept: run.store.set_batch_output_rows(path, kept)


# An impression's event id is its delivery's id, '-' and the offer's rank (at most 100).
RANK_ROOM = len("-100")


def delivery_id(run_id: str, customer_id: str) -> str:
    """The request id of a run's delivery to a customer, ``{run_id}-{customer}``; for a
    customer id too long for that to stay an id with its impressions' ranks (an id is at
    most ``MAX_ID_LENGTH`` characters, and a customer's may use them all), the run and a
    digest of the customer id. The run's prefix stays, by which its impressions are found."""
    plain = f"{run_id}-{customer_id}"
    if len(plain) + RANK_ROOM <= MAX_ID_LENGTH:
        return plain
    return f"{run_id}-sha256-{hashlib.sha256(customer_id.encode('utf-8')).hexdigest()}"


def _impressions(run: BatchRun, one: Decided) -> list[ImpressionEvent]:
    """A delivered customer's impressions, tagged with the run: idempotent event ids
    (``{delivery}-{rank}``) and one request id per customer (``delivery_id``), the
    delivery the frequency cap counts."""
    delivery = delivery_id(run.run_id, one.customer_id)
    return impressions_of(one, run.occasion.channel, run.now, delivery, delivery)


def take_back(run: BatchRun, customer_ids: Sequence[str]) -> int:
    """Delete the impressions this run recorded for ``customer_ids``."""
    return run.store.remove_impressions([(c, delivery_id(run.run_id, c)) for c in customer_ids])


def withdraw(run: BatchRun, customer_ids: Sequence[str]) -> None:
    """A delivered run that failed before its file was in place, on either engine: every
    impression it recorded taken back, then off the record of runs being delivered
    (``nbo.campaigns.recovery``)."""
    take_back(run, customer_ids)
    run.store.end_delivering(run.run_id)


def new_run_id(now: datetime) -> str:
    """A batch run's id: its time and a random suffix (impression and request ids)."""
    return f"batch-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{os.urandom(3).hex()}"
