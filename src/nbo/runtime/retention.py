"""Retention: what the store may forget, and the purge that makes it (``nbo store purge``).

A purge deletes what is older than a cutoff, per kind (``nbo.store.base.PURGE_KINDS``,
and the registrations of campaign files), but never what the running rules still read:

- **Offer impressions, clicks and conversions** are read back as far as the longest
  contact rule looks (``ContactPolicy.lookback_days``: the frequency caps, fatigue and the
  catalogue's offer caps; ``nbo.runtime.decide.contact_window_start``), and an
  experiment's report counts its tagged events and conversions from its start
  (``nbo.experiments.outcomes``): a cutoff inside either window is refused while the
  experiment runs. An experiment that has ended only loses the events cut from its report,
  and is named in a warning.
- **Posted purchases** are not read by the trainer (it learns from the retailer's
  purchase file, and reads only the erased list from the store); the service reads the
  newest ``NBO_MAX_POSTED_LINES`` of a customer, and uses those after the served model's
  training data as news (older ones are in the model already) and any of them within the
  suppression window. So a cutoff after a served model's last training purchase, or
  inside the suppression window, is refused, and so are purchases with
  ``NBO_SUPPRESSION_DAYS=all`` or no model published.
- **Consent history**: changes older than the cutoff, but each customer's latest (the
  consent in force, and when it was given) stays; the ``consent`` records themselves are
  never purged (no record means consent to everything).
- **Campaign files** (``batch_outputs``): a registration older than the cutoff goes only
  once its file is gone, since erasures find the customer's rows through it; files still
  on disk are counted, for the operator to delete.
- **Campaign runs being delivered** (``delivering_runs``): records not heard from since
  the cutoff (their process died long ago; the next ``nbo batch`` would take their
  impressions back and remove their temporary file).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nbo.catalog.terms import Catalog
from nbo.core.errors import NboError, Refused
from nbo.core.vocabulary import DAY, iso_utc
from nbo.data.events import CLICK, CONVERSION, IMPRESSION
from nbo.experiments.definitions import Experiments
from nbo.offers.decision import ContactPolicy
from nbo.offers.suppression import SuppressionWindow
from nbo.store.base import (
    PURGE_CLICKS,
    PURGE_CONSENT_HISTORY,
    PURGE_CONVERSIONS,
    PURGE_DELIVERING_RUNS,
    PURGE_IMPRESSIONS,
    PURGE_PURCHASES,
    Purged,
    Store,
)

FLAG = "--older-than"
# The registrations of campaign files: purged here, not by ``Store.purge`` (a file still
# on disk keeps its registration).
PURGE_BATCH_OUTPUTS = "batch_outputs"
# Every kind, in the order a purge goes through them and prints them.
KINDS = (
    PURGE_IMPRESSIONS,
    PURGE_CLICKS,
    PURGE_CONVERSIONS,
    PURGE_PURCHASES,
    PURGE_CONSENT_HISTORY,
    PURGE_BATCH_OUTPUTS,
    PURGE_DELIVERING_RUNS,
)
# The kinds the contact rules and the experiments' reports read.
OFFER_EVENTS = (IMPRESSION, CLICK, CONVERSION)
_AGE = re.compile(r"\s*(\d+)\s*d?\s*")


def parse_age(text: str) -> int:
    """Days in ``400d`` (or ``400``); NboError naming ``--older-than`` otherwise."""
    found = _AGE.fullmatch(text)
    if found is None:
        raise NboError(f"{FLAG} {text!r}: expected a number of days, e.g. 400d")
    days = int(found.group(1))
    if days < 1:
        raise NboError(f"{FLAG} {text!r}: expected at least 1 day")
    return days


@dataclass(frozen=True)
class Rules:
    """What the running service reads, as the purge checks it: the contact policy and
    catalogue (how far back contacts are read), the experiments, the suppression window,
    and the last training purchase of each model it serves (None: none published)."""

    policy: ContactPolicy
    catalog: Catalog
    experiments: Experiments
    suppression: SuppressionWindow
    trained_until: dict[str, int] | None  # model version -> unix seconds


@dataclass(frozen=True)
class Plan:
    """A purge checked against the rules: the cutoff, the kinds, and warnings to show."""

    now_s: int
    days: int
    cutoff_s: int
    kinds: tuple[str, ...]
    warnings: list[str]


def plan_purge(rules: Rules, now_s: int, days: int, kinds: Sequence[str]) -> Plan:
    """The purge of what is older than ``days`` before ``now_s``, or Refused (one line,
    naming ``--older-than``; exit 3, the cutoff itself is well formed) when it would
    delete what a rule still reads."""
    cutoff = now_s - days * DAY
    warnings: list[str] = []
    if any(kind in OFFER_EVENTS for kind in kinds):
        lookback = rules.policy.lookback_days(rules.catalog)
        if cutoff > now_s - lookback * DAY:
            raise Refused(
                f"{FLAG} {days}d: the contact rules read {_days(lookback)} of offer events "
                "back (frequency caps, fatigue, the catalogue's offer caps): use "
                f"{math.ceil(lookback)}d or more"
            )
        for experiment in rules.experiments.experiments:
            if experiment.start_s >= cutoff:
                continue
            if experiment.status(now_s) == "ended":
                warnings.append(
                    f"experiment {experiment.name!r} (ended {iso_utc(experiment.end_s or 0)}): "
                    f"its report no longer counts the offer events before {iso_utc(cutoff)}"
                )
                continue
            if experiment.status(now_s) == "running":
                needed = math.ceil((now_s - experiment.start_s) / DAY)
                raise Refused(
                    f"{FLAG} {days}d: experiment {experiment.name!r} runs since "
                    f"{iso_utc(experiment.start_s)} and its report counts the offer events "
                    f"from then: use {needed}d or more (or end it in NBO_EXPERIMENTS)"
                )
    if PURGE_PURCHASES in kinds:
        _check_purchases(rules, now_s, days, cutoff)
    return Plan(now_s, days, cutoff, tuple(kinds), warnings)


def _check_purchases(rules: Rules, now_s: int, days: int, cutoff: int) -> None:
    leave_out = f"(or name the kinds to purge with --kind, leaving {PURGE_PURCHASES} out)"
    if rules.suppression.days is None:
        raise Refused(
            f"{FLAG} {days}d: NBO_SUPPRESSION_DAYS=all holds back every item a customer "
            f"ever bought, posted purchases included: purchases are not purged {leave_out}"
        )
    if cutoff > now_s - rules.suppression.days * DAY:
        raise Refused(
            f"{FLAG} {days}d: posted purchases of the last {_days(rules.suppression.days)} "
            f"hold items back (NBO_SUPPRESSION_DAYS): use {rules.suppression.days}d or more "
            f"{leave_out}"
        )
    if not rules.trained_until:
        raise Refused(
            f"{FLAG} {days}d: no model is published, so the posted purchases are all the "
            f"service knows of them: train one first {leave_out}"
        )
    version, until = min(rules.trained_until.items(), key=lambda item: item[1])
    if until <= 0:
        raise Refused(
            f"{FLAG} {days}d: model {version}'s manifest does not say when its training "
            f"data ended, so no posted purchase is known to be in it {leave_out}"
        )
    if cutoff > until:
        needed = math.ceil((now_s - until) / DAY)
        raise Refused(
            f"{FLAG} {days}d: model {version} was trained on purchases up to {iso_utc(until)}; "
            f"those posted since are in no model yet: use {needed}d or more, or train a "
            f"newer model first {leave_out}"
        )


@dataclass(frozen=True)
class Purge:
    """What a purge deleted (or, in a dry run, would delete), per kind in ``KINDS``
    order, and the campaign files older than the cutoff whose registration was kept
    (the file is still there, where erasures must still reach it)."""

    purged: list[Purged]
    kept_files: list[str]


def purge(store: Store, plan: Plan, dry_run: bool) -> Purge:
    """Run ``plan`` (``dry_run``: count only), kind by kind in ``KINDS`` order."""
    purged: list[Purged] = []
    kept: list[str] = []
    for kind in KINDS:
        if kind not in plan.kinds:
            continue
        if kind == PURGE_BATCH_OUTPUTS:
            gone, kept = purge_campaign_files(store, plan.cutoff_s, dry_run)
            purged.append(Purged(kind, gone))
        else:
            purged.append(store.purge(kind, plan.cutoff_s, dry_run))
    return Purge(purged, kept)


def purge_campaign_files(store: Store, cutoff_s: int, dry_run: bool) -> tuple[int, list[str]]:
    """Unregister the campaign files written before ``cutoff_s`` that are gone (a
    Spark campaign's folder of parts included); those still there stay registered.
    Answers how many went, and the paths kept."""
    gone, kept = 0, []
    for output in store.batch_outputs():
        if output.written_at >= cutoff_s:
            continue
        if Path(output.path).exists():
            kept.append(output.path)
            continue
        if not dry_run:
            store.unregister_batch_output(output.path)
        gone += 1
    return gone, kept


def _days(days: float) -> str:
    return f"{days:g} day{'' if days == 1 else 's'}"
