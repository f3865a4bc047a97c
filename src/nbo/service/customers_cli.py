"""``nbo customers erase ID``, ``nbo customers export ID [--out FILE]``: a customer's
erasure and data export from the command line, for an operator without the API at hand,
and for a customer the API cannot name. ``nbo customers consent ID --personalization
yes|no [--channel email=no]``: a consent change the API did not receive, recorded with
the source "cli" in the customer's consent history.

Both run the API's own code (``nbo.service.customer_data``): the erasure is
``erase_customer_data``, the sequence of ``DELETE /v1/customers/{id}``; the export is
``export_customer``, the document of ``GET /v1/customers/{id}/data``, with the models
the service would load (``NBO_MODELS_DIR``, ``NBO_MODEL_VERSION``, ``NBO_EXPERIMENTS``)
and its clock (``NBO_CLOCK``).

The id is taken as the store holds it: any id an event could ever carry, so also one
the API refuses in a path since it names a route (``a/offers``: ``path_id_problem``),
which an earlier release stored. Only what no id can be (empty, a control character,
too long: ``id_problem``) is refused.

This process holds no served model, so the erasure forgets the customer in no model
here: every service on the store learns it from the store's erased list, a running one
at its next call for the customer and every model it loads later, and the trainer from
the same list.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbo.core.errors import NboError
from nbo.core.ids import id_problem
from nbo.core.outputs import check_output_file, write_file
from nbo.core.vocabulary import CHANNELS

if TYPE_CHECKING:
    from nbo.experiments.assignment import ServingModels
    from nbo.service.customer_data import Erasure
    from nbo.settings import Settings
    from nbo.store.base import Store

# The longest id shown in an error line (an id may be 256 characters).
SHOWN_ID = 60
YES_NO = ("yes", "no")


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "customers",
        help="erase a customer, or export everything nbo holds on them (GDPR)",
        description="A customer's erasure and data export, exactly as the API's DELETE "
        "/v1/customers/{id} and GET /v1/customers/{id}/data, on the store --store-url "
        "(default NBO_STORE_URL) names, for any id the store holds: also one the API "
        "refuses since it ends in a route's name (a/offers), stored by an earlier release.",
    )
    actions = parser.add_subparsers(dest="customers_command", metavar="ACTION")
    actions.required = True
    erase = actions.add_parser(
        "erase",
        help="erase a customer: events, consent, campaign rows; models and training leave them out",
        description="Erase the customer as DELETE /v1/customers/{id} does: their events, "
        "purchase lines and consent record in the store (the id goes on the erased list), "
        "and their rows in the campaign files nbo manages. Every service on the store "
        "forgets them at its next call for them and in every model it loads; the next "
        "training leaves them out. Prints one line: what was deleted.",
    )
    erase.add_argument("customer_id", metavar="ID", help="the customer id, as stored")
    erase.add_argument("--store-url", default=None, help="NBO_STORE_URL (the service's)")
    erase.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="NBO_MODELS_DIR (models): the versions whose files still hold the customer are named",
    )
    erase.set_defaults(handler=run_erase)
    export = actions.add_parser(
        "export",
        help="write everything nbo holds on a customer as JSON (the API's data export)",
        description="Write the document GET /v1/customers/{id}/data answers: every stored "
        "event, the consent, the profile now and what each served model learned (with the "
        "models NBO_MODELS_DIR, NBO_MODEL_VERSION and NBO_EXPERIMENTS name, at NBO_CLOCK), "
        "the experiment assignment, and the customer's rows in managed campaign files. "
        "Without a published model, the export has no profile, model or assignment part.",
    )
    export.add_argument("customer_id", metavar="ID", help="the customer id, as stored")
    export.add_argument(
        "--out", type=Path, default=None, help="write the JSON to FILE (default: stdout)"
    )
    export.add_argument("--store-url", default=None, help="NBO_STORE_URL (the service's)")
    export.add_argument("--models-dir", type=Path, default=None, help="NBO_MODELS_DIR (models)")
    export.set_defaults(handler=run_export)
    consent = actions.add_parser(
        "consent",
        help="record a customer's consent, as PUT /v1/customers/{id}/consent does",
        description="Record a consent change the API did not receive (given on paper, by "
        "phone, at a till) as PUT /v1/customers/{id}/consent does: channels not named "
        "keep their value. The change goes to the customer's consent history with the "
        "source 'cli'. Prints one line: the record now in force.",
    )
    consent.add_argument("customer_id", metavar="ID", help="the customer id, as stored")
    consent.add_argument(
        "--personalization",
        required=True,
        choices=YES_NO,
        help="consent to personalized offers and profiling",
    )
    consent.add_argument(
        "--channel",
        action="append",
        default=[],
        metavar="NAME=yes|no",
        help=f"consent to be contacted on a channel ({', '.join(CHANNELS)}); repeat for several",
    )
    consent.add_argument("--store-url", default=None, help="NBO_STORE_URL (the service's)")
    consent.set_defaults(handler=run_consent)


def checked_id(customer_id: str) -> str:
    """The id, or NboError naming the argument when no customer can have it."""
    problem = id_problem(customer_id)
    if problem is None:
        return customer_id
    shown = customer_id if len(customer_id) <= SHOWN_ID else customer_id[:SHOWN_ID] + "..."
    # repr: a control character shows as its escape, the error stays one line.
    raise NboError(f"ID {shown!r}: {problem}")


def run_erase(args: argparse.Namespace) -> int:
    from nbo.service.customer_data import erase_customer_data
    from nbo.settings import load_settings
    from nbo.store import open_existing_store, store_setting

    customer_id = checked_id(args.customer_id)
    settings = load_settings(store_url=args.store_url, models_dir=args.models_dir)
    # An existing store only: an erasure recorded in a new, empty file (a mistyped path)
    # would reach no service and no training.
    store = open_existing_store(settings.store_url, store_setting(args.store_url))
    try:
        erasure, _ = erase_customer_data(customer_id, store, _no_models, settings.models_dir)
    finally:
        store.close()
    print(f"nbo customers: {erasure_line(customer_id, erasure)}")
    for path in erasure.partials:
        print(f"nbo customers: removed {path}, left by a campaign run that died")
    if not erasure.known:
        print(f"nbo customers: warning: {unknown_line(customer_id, erasure)}", file=sys.stderr)
    for file in erasure.untouched:
        print(f"nbo customers: campaign file {file.path} left as it is: {file.reason}")
    if erasure.model_versions:
        print(f"nbo customers: {model_files_line(erasure.model_versions, settings.models_dir)}")
    return 0


def unknown_line(customer_id: str, erasure: Erasure) -> str:
    """What an erasure of an id nbo knew nothing of says: most likely a typo."""
    line = (
        f"neither the store nor any model knows customer {customer_id!r}: nothing of "
        "theirs was held (a mistyped id?); the id is on the erased list all the same, so "
        "no later training learns it"
    )
    if erasure.near_match is not None:
        line += (
            f"; did you mean {erasure.near_match!r}? ({customer_id!r} looks like a "
            f"spreadsheet's writing of it; {erasure.near_match!r} is untouched)"
        )
    return line


def model_files_line(versions: list[str], models_dir: Path) -> str:
    """The model versions whose read-only files still hold the erased customer."""
    return (
        f"the files of {_count(len(versions), 'model version')} in {models_dir} still hold "
        f"them ({', '.join(versions)}): no service serves their rows again; they stay until "
        "those versions are pruned (nbo models --prune) once a training without them has "
        "replaced them"
    )


def _no_models(customer_id: str) -> None:
    """This process serves no model: services learn the erasure from the store."""


def erasure_line(customer_id: str, erasure: Erasure) -> str:
    """What the erasure did, in the receipt's words, as one line."""
    receipt = erasure.receipt
    events = sum(receipt.events.values())
    kinds = ", ".join(f"{count} {kind}" for kind, count in receipt.events.items() if count)
    deleted = (
        f"deleted {_count(events, 'event')}{f' ({kinds})' if kinds else ''}, "
        f"{_count(receipt.purchase_lines, 'purchase line')}, "
        f"{_count(receipt.consent_records, 'consent record')}, "
        f"{_count(receipt.consent_changes, 'consent change')}"
    )
    # The files that held rows, of those gone through: every managed file is checked,
    # and saying only the checked count read as if each had changed.
    changed = sum(1 for file in erasure.scrubbed if file.rows_removed)
    files = (
        f"{_count(erasure.rows_removed, 'row')} removed from {changed:,} of "
        f"{_count(len(erasure.scrubbed), 'managed campaign file')} checked"
    )
    if erasure.untouched:
        files += f", {_count(len(erasure.untouched), 'file')} left untouched (below)"
    again = " (erased before)" if receipt.already_erased else ""
    return (
        f"erased customer {customer_id!r}{again}: {deleted}; {files}; services forget them "
        "at their next call for them and the next training leaves them out"
    )


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def run_export(args: argparse.Namespace) -> int:
    from threadpoolctl import threadpool_limits

    from nbo.service.customer_data import export_customer
    from nbo.settings import load_settings
    from nbo.store import open_existing_store, store_setting

    customer_id = checked_id(args.customer_id)
    if args.out is not None:
        check_output_file(args.out, "--out")
    settings = load_settings(store_url=args.store_url, models_dir=args.models_dir)
    store = open_existing_store(settings.store_url, store_setting(args.store_url))
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            models = _serving_models(settings, store)
            export = export_customer(customer_id, store, models, settings)
    finally:
        store.close()
    # The JSON the API answers (FastAPI encodes a response model the same way).
    document = json.dumps(export.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"
    rows = sum(len(file.rows) for file in export.batch_files)
    summary = (
        f"exported customer {customer_id!r}"
        f"{' (erased)' if export.erased else ''}: {_count(len(export.events), 'event')}, "
        f"consent {'stored' if export.consent and export.consent.stored else 'not stored'}, "
        f"{_count(sum(m.known for m in export.models), 'model')} knowing them, "
        f"{_count(rows, 'row')} in {_count(len(export.batch_files), 'campaign file')}"
    )
    if models is None:
        summary += " (no published model: no profile, model or assignment part)"
    if args.out is None:
        sys.stdout.write(document)
        print(f"nbo customers: {summary}", file=sys.stderr)
    else:
        write_file(args.out, document, "--out", private=True)
        print(f"nbo customers: {summary}; written to {args.out}")
    return 0


def channel_flags(values: list[str]) -> dict[str, bool]:
    """``--channel email=no`` flags as a channel -> consent mapping; NboError naming the
    flag for an unknown channel or a value other than yes or no."""
    channels: dict[str, bool] = {}
    for value in values:
        name, _, answer = value.partition("=")
        if name not in CHANNELS:
            raise NboError(
                f"--channel {value!r}: unknown channel {name!r} (use {', '.join(CHANNELS)})"
            )
        if answer not in YES_NO:
            raise NboError(f"--channel {value!r}: expected {name}=yes or {name}=no")
        channels[name] = answer == "yes"
    return channels


def run_consent(args: argparse.Namespace) -> int:
    from nbo.service.customer_data import consent_out, record_consent
    from nbo.settings import load_settings
    from nbo.store import open_existing_store, store_setting
    from nbo.store.base import CONSENT_FROM_CLI

    customer_id = checked_id(args.customer_id)
    channels = channel_flags(args.channel)
    settings = load_settings(store_url=args.store_url)
    # An existing store only: a consent recorded in a new, empty file reaches no service.
    store = open_existing_store(settings.store_url, store_setting(args.store_url))
    try:
        change = record_consent(
            store, customer_id, args.personalization == "yes", channels, source=CONSENT_FROM_CLI
        )
    finally:
        store.close()
    shown = consent_out(customer_id, change.consent)
    flags = ", ".join(
        f"{name} {'yes' if allowed else 'no'}" for name, allowed in shown.channels.items()
    )
    print(
        f"nbo customers: consent of customer {customer_id!r} recorded: personalization "
        f"{'yes' if shown.personalization else 'no'}, {flags} (at {shown.updated_at}, "
        "source cli)"
    )
    files = change.line()
    if files is not None:
        print(f"nbo customers: {files}")
    return 0


def _serving_models(settings: Settings, store: Store) -> ServingModels | None:
    """The models the service would serve, without the erased customers, as it loads
    them; None when nothing is published (the service then serves no model either, and
    its export leaves the model parts out). A model that cannot be loaded is an error."""
    from nbo.experiments.assignment import load_serving_models
    from nbo.experiments.definitions import configured_experiments
    from nbo.models.artifacts import has_current
    from nbo.models.registry import MODEL_VERSION_SETTING

    if settings.model_version is None and not has_current(settings.models_dir):
        return None
    experiments = configured_experiments(settings.experiments)
    return load_serving_models(
        settings.models_dir,
        settings.model_version,
        experiments,
        store.erased_list(),
        MODEL_VERSION_SETTING,
    )
