"""The settings replicas on one store must share (docs/store.md, Replicas), compared at
``nbo serve``'s start with those of the last service started on the store.

Replicas that differ answer differently depending on which one the balancer picks: a key
accepted by one is refused by the other, an offer of one catalogue is missing from the
other. Nothing refused that before; each replica read its own environment. Each start now
records a digest per setting in the store and warns, naming the settings, when the one
before recorded others. Digests only: no key, secret or file content goes in the store.
A warning, not a refusal: a rolling change of a setting (a key rotated replica by replica)
differs on purpose for a while.

The start compares with the start before it only, so the replica started first would
never hear of a later one that differs: each running replica also looks at the recorded
settings every ``WATCH_EVERY_S`` (``SharedSettingsWatch``, one read of one row), and
when a service started on the store since recorded others than this one's, it warns too,
once per such start.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nbo.settings import Settings
from nbo.store.base import Store, StoreUnavailable

log = logging.getLogger(__name__)

# How often a running replica reads the settings the latest start recorded.
WATCH_EVERY_S = 30.0


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _file(path: Path | None) -> Any:
    """A configured file by its content (replicas mount it at paths of their own)."""
    if path is None:
        return None
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return f"unreadable {path}"


def fingerprints(settings: Settings) -> dict[str, str]:
    """A digest of each setting replicas must share, by its variable's name."""
    log_key = settings.log_key.get_secret_value() if settings.log_key is not None else None
    values: dict[str, Any] = {
        "NBO_MODEL_VERSION": settings.model_version,
        "NBO_CATALOG": _file(settings.catalog),
        "NBO_EXPERIMENTS": _file(settings.experiments),
        "NBO_API_KEYS": sorted(key.model_dump_json() for key in settings.api_keys),
        "NBO_LOG_KEY": log_key,
        "NBO_SUPPRESSION_DAYS": settings.suppression_days,
        "NBO_MIN_HOLD_DAYS": settings.min_hold_days,
        "NBO_FREQUENCY_CAPS": {k: v.model_dump() for k, v in settings.frequency_caps.items()},
        "NBO_FATIGUE": settings.fatigue.model_dump() if settings.fatigue is not None else None,
        "NBO_MAX_POSTED_LINES": settings.max_posted_lines,
        "NBO_CLOCK_SKEW_SECONDS": settings.clock_skew_seconds,
        "NBO_EARLIEST_EVENT": settings.earliest_event,
        "NBO_MAX_BODY_BYTES": settings.max_body_bytes,
        "NBO_CLOCK": settings.clock,
    }
    return {name: _digest(value) for name, value in values.items()}


def check_shared_settings(store: Store, settings: Settings) -> list[str]:
    """Record this service's shared settings in ``store`` and return the names of those
    that differ from the ones the service started before it recorded (logged as a
    warning); none the first time, or when the store cannot be written now."""
    ours = fingerprints(settings)
    try:
        before = store.swap_shared_settings(ours)
    except StoreUnavailable:
        return []
    if before is None:
        return []
    theirs, at = before
    differ = _differing(ours, theirs)
    if differ:
        started = datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")
        log.warning(
            "settings replicas must share differ from those of the service that started "
            "on this store before (at %s): %s; replicas on one store answer alike only "
            "with the same values (docs/store.md, Replicas)",
            started,
            ", ".join(differ),
        )
    return differ


def _differing(ours: dict[str, str], theirs: dict[str, str]) -> list[str]:
    return sorted(name for name, digest in ours.items() if theirs.get(name, digest) != digest)


class SharedSettingsWatch:
    """A running replica's look at the shared settings the latest start recorded: warns,
    once per later start, when they differ from this replica's own (computed at the look:
    the catalogue and experiments files are read live, so their content now is what
    serves). The first look only notes which start recorded the row: the start before
    this one's was compared at this one's start. ``speaks``: whether this worker is the
    one of its replica that says it (one line per replica, not per worker)."""

    def __init__(
        self, store: Store, settings: Settings, speaks: Callable[[], bool] = lambda: True
    ) -> None:
        self.store = store
        self.settings = settings
        self.speaks = speaks
        # The row this worker saw last: when it was recorded and what (None: none read
        # yet). By both: two starts within one second have the same time.
        self.seen: tuple[int, str] | None = None

    def check(self) -> list[str]:
        """The settings a start since the last look recorded differently (warned of),
        or none: the row is the one seen already, the store is away, or they agree."""
        try:
            recorded = self.store.shared_settings()
        except StoreUnavailable:
            return []
        row = (
            (0, "") if recorded is None else (recorded[1], json.dumps(recorded[0], sort_keys=True))
        )
        before, self.seen = self.seen, row
        if recorded is None or before is None or row == before:
            return []
        at = recorded[1]
        differ = _differing(fingerprints(self.settings), recorded[0])
        if differ and self.speaks():
            started = datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")
            log.warning(
                "settings replicas must share differ from those of a service that started "
                "on this store after this one (at %s): %s; replicas on one store answer "
                "alike only with the same values (docs/store.md, Replicas)",
                started,
                ", ".join(differ),
            )
        return differ


async def watch_shared_settings(watch: SharedSettingsWatch, stop: asyncio.Event) -> None:
    """``watch.check`` every ``WATCH_EVERY_S`` until ``stop``, off the loop."""
    while not stop.is_set():
        try:
            await asyncio.to_thread(watch.check)
        except Exception:  # a look must never take the loop down; the next one retries
            log.exception("comparing the shared settings failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=WATCH_EVERY_S)
