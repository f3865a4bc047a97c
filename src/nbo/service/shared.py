"""The settings replicas on one store must share (docs/store.md, Replicas), compared at
``nbo serve``'s start with those of the last service started on the store.

Replicas that differ answer differently depending on which one the balancer picks: a key
accepted by one is refused by the other, an offer of one catalogue is missing from the
other. Nothing refused that before; each replica read its own environment. Each start now
records a digest per setting in the store and warns, naming the settings, when the one
before recorded others. Digests only: no key, secret or file content goes in the store.
A warning, not a refusal: a rolling change of a setting (a key rotated replica by replica)
differs on purpose for a while.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nbo.settings import Settings
from nbo.store.base import Store, StoreUnavailable

log = logging.getLogger(__name__)


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
    differ = sorted(name for name, digest in ours.items() if theirs.get(name, digest) != digest)
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
