"""``nbo store purge --older-than 400d [--kind KIND ...] [--dry-run]``: the store's
retention, for a retailer to run from cron.

It deletes what is older than the cutoff, per kind, in small transactions, and refuses
(one line, nothing deleted) a cutoff that would delete what the running service still
reads; what it checks is ``nbo.runtime.retention``'s, against the service's own settings:
the contact policy (``NBO_FREQUENCY_CAPS``, ``NBO_FATIGUE``, the catalogue's offer caps in
``NBO_CATALOG``), the experiments (``NBO_EXPERIMENTS``), the suppression window and the
models it serves (``NBO_MODELS_DIR``, ``NBO_MODEL_VERSION``), at its clock
(``NBO_CLOCK``): run it with the service's environment.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from nbo.runtime.retention import FLAG, KINDS, PURGE_BATCH_OUTPUTS

if TYPE_CHECKING:
    from nbo.runtime.retention import Plan, Purge, Rules
    from nbo.settings import Settings


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "store",
        help="the store's retention: purge what is older than a cutoff",
        description="The store the service records to (--store-url, default NBO_STORE_URL).",
    )
    actions = parser.add_subparsers(dest="store_command", metavar="ACTION")
    actions.required = True
    purge = actions.add_parser(
        "purge",
        help="delete stored events, consent history and campaign records older than a cutoff",
        description="Delete what the store holds that is older than the cutoff: offer "
        "impressions, clicks and conversions and posted purchases (by when they happened), "
        "consent changes (each customer's latest kept: the consent in force), registrations "
        "of campaign files that are gone, and records of campaign runs not heard from "
        "since. Refuses a cutoff the service's rules still read (the contact rules' "
        "window, a running experiment, the suppression window, purchases no served model "
        "was trained on), reading the service's settings: run it with the service's "
        "environment. In batches of 1,000 rows a transaction. Prints what it deleted per "
        "kind.",
    )
    purge.add_argument(
        FLAG,
        dest="older_than",
        required=True,
        metavar="DAYS",
        help="the cutoff: delete what is older than this many days before now, e.g. 400d",
    )
    purge.add_argument(
        "--kind",
        action="append",
        choices=KINDS,
        default=None,
        metavar="KIND",
        help=f"purge only this kind, one of {', '.join(KINDS)} (repeat for several; "
        "default: every kind)",
    )
    purge.add_argument(
        "--dry-run", action="store_true", help="count what would be deleted, delete nothing"
    )
    purge.add_argument("--store-url", default=None, help="NBO_STORE_URL (the service's)")
    purge.add_argument(
        "--models-dir", default=None, help="NBO_MODELS_DIR (the models the service serves)"
    )
    purge.set_defaults(handler=run_purge)


def run_purge(args: argparse.Namespace) -> int:
    from nbo.runtime.retention import parse_age, plan_purge, purge
    from nbo.settings import load_settings
    from nbo.store import open_existing_store, store_setting

    days = parse_age(args.older_than)
    kinds = tuple(dict.fromkeys(args.kind or KINDS))
    settings = load_settings(
        {"models_dir": "--models-dir", "store_url": "--store-url"},
        store_url=args.store_url,
        models_dir=args.models_dir,
    )
    rules = _rules(settings, kinds)
    plan = plan_purge(rules, int(settings.now().timestamp()), days, kinds)
    store = open_existing_store(settings.store_url, store_setting(args.store_url))
    try:
        done = purge(store, plan, args.dry_run)
    finally:
        store.close()
    for warning in plan.warnings:
        print(f"nbo store: warning: {warning}", file=sys.stderr)
    for line in purge_lines(plan, done, args.dry_run):
        print(line)
    return 0


def _rules(settings: Settings, kinds: tuple[str, ...]) -> Rules:
    """The service's rules as ``plan_purge`` checks them; the served models' last
    training purchases only when purchases are purged (none: nothing published)."""
    from nbo.catalog.holder import CatalogHolder
    from nbo.experiments.definitions import configured_experiments
    from nbo.models.artifacts import current_version, has_current, read_trained_until
    from nbo.models.registry import MODEL_VERSION_SETTING, resolve
    from nbo.runtime.decide import contact_policy
    from nbo.runtime.retention import Rules as RulesOf
    from nbo.store.base import PURGE_PURCHASES

    experiments = configured_experiments(settings.experiments)
    trained_until: dict[str, int] | None = None
    if PURGE_PURCHASES in kinds:
        models_dir = settings.models_dir
        if settings.model_version is not None:
            current: str | None = resolve(models_dir, settings.model_version, MODEL_VERSION_SETTING)
        else:
            current = current_version(models_dir) if has_current(models_dir) else None
        if current is not None:
            versions = {current, *(resolve(models_dir, r) for r in experiments.models())}
            trained_until = {v: read_trained_until(models_dir, v) for v in sorted(versions)}
    return RulesOf(
        policy=contact_policy(settings),
        catalog=CatalogHolder(settings.catalog).current(),
        experiments=experiments,
        suppression=settings.suppression,
        trained_until=trained_until,
    )


def purge_lines(plan: Plan, done: Purge, dry_run: bool) -> list[str]:
    """What was deleted (would be, in a dry run), one line per kind."""
    from nbo.core.vocabulary import iso_utc

    verb = "would delete" if dry_run else "deleted"
    lines = [
        f"nbo store: purge{' (dry run)' if dry_run else ''} of what is older than "
        f"{plan.days} days (before {iso_utc(plan.cutoff_s)}):"
    ]
    width = max(len(kind) for kind in KINDS)
    for purged in done.purged:
        detail = ""
        if purged.lines:
            detail = f" ({purged.lines:,} purchase line{'' if purged.lines == 1 else 's'})"
        elif purged.kind == PURGE_BATCH_OUTPUTS and done.kept_files:
            detail = (
                f" ({len(done.kept_files):,} kept: the file is still there, and erasures "
                "must reach it; delete the file and the next purge lets it go)"
            )
        lines.append(f"  {purged.kind:<{width}}  {verb} {purged.rows:,}{detail}")
    return lines
