"""API keys and roles: the key format, making a key, checking one, and the secure default.

A key is ``nbo_<id>_<secret>``. The id (8 hex characters) is public: it names the key in
the configuration and is the only part of a key that may appear in a log. The secret is
``secrets.token_urlsafe(32)``: 256 random bits. nbo never stores a key in clear; the
configuration (``NBO_API_KEYS``) holds ``{"id", "role", "sha256"}`` per key, the SHA-256
of the whole key in hex, and a key presented to the service is hashed and compared with
``hmac.compare_digest``.

Why plain SHA-256 and not bcrypt or argon2: slow, salted hashes exist to stop an attacker
who has the hashes from guessing low-entropy passwords. A 256-bit random secret cannot be
guessed whatever the hash, so a slow hash would add nothing but milliseconds to every
request.

Roles are ordered, ``admin > write > read``: a key may do what its role allows and what
every lower role allows. ``read`` reads offers, profiles, consent, similar items and
reports; ``write`` also posts events and consent; ``admin`` also erases customers,
exports a customer's data and reloads models and the catalogue. Which route needs which
role is in ``nbo.service.auth``.

Without any key the service is open, and then it must listen on loopback only
(``check_bind``): a service anyone on the network can call without a key is a choice
made with ``NBO_ALLOW_UNAUTHENTICATED=true``, never a default.

This module knows nothing of HTTP: the settings, ``nbo keys`` and the service share it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, field_validator

from nbo.core.errors import ConfigError

KEY_PREFIX = "nbo"
_KEY = re.compile(r"^nbo_(?P<id>[0-9a-f]{8})_(?P<secret>[A-Za-z0-9_-]{16,})$")
_ID = re.compile(r"^[0-9a-f]{8}$")
# The id of anything shaped like a key, whatever follows it: a refused key whose secret is
# too short or mangled (cut when pasted, a quote kept) still names the key meant.
_ANY_KEY_ID = re.compile(r"^nbo_(?P<id>[0-9a-f]{8})_")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Compared against when a key names no configured id, so a check takes the same steps
# whether or not the id exists. Random per process: no key can ever match it.
_DUMMY_SHA256 = secrets.token_hex(32)


class Role(StrEnum):
    read = "read"
    write = "write"
    admin = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def allows(self, needed: Role) -> bool:
        """Whether a key of this role may do what ``needed`` may: admin > write > read."""
        return self.rank >= needed.rank


_RANKS = {Role.read: 1, Role.write: 2, Role.admin: 3}


class ApiKeyEntry(BaseModel):
    """One configured key: its public id, its role and the SHA-256 (hex) of the full key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    role: Role
    sha256: str

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError(f"id {value!r} is not 8 lowercase hex characters")
        return value

    @field_validator("sha256")
    @classmethod
    def _check_hash(cls, value: str) -> str:
        value = value.strip().lower()
        if not _SHA256.match(value):
            # Never echo the value: it is not a secret, but a pasted key would be.
            raise ValueError("not 64 hex characters (the SHA-256 of the key; see nbo keys create)")
        return value


def check_unique_ids(entries: Sequence[ApiKeyEntry]) -> list[ApiKeyEntry]:
    """Refuse two entries with one id: the id picks the hash a key is checked against."""
    repeated = sorted(key_id for key_id, n in Counter(e.id for e in entries).items() if n > 1)
    if repeated:
        raise ValueError(f"duplicate key id {', '.join(repeated)}")
    return list(entries)


def hash_key(key: str) -> str:
    """The SHA-256 of a whole key, in hex: what the configuration stores."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_id_of(key: str) -> str | None:
    """The id of a well-formed key, else None."""
    match = _KEY.match(key)
    return match.group("id") if match else None


def create_key(role: Role, taken: Collection[str] = ()) -> tuple[str, ApiKeyEntry]:
    """A new key and its configuration entry. The key is returned once and kept nowhere."""
    key_id = secrets.token_hex(4)
    while key_id in taken:
        key_id = secrets.token_hex(4)
    key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    return key, ApiKeyEntry(id=key_id, role=role, sha256=hash_key(key))


class KeyRing:
    """The configured keys, looked up by id and checked in constant time."""

    def __init__(self, entries: Sequence[ApiKeyEntry]) -> None:
        self._by_id = {entry.id: entry for entry in entries}

    @property
    def enabled(self) -> bool:
        """Access control is on when at least one key is configured."""
        return bool(self._by_id)

    def authenticate(self, key: str) -> ApiKeyEntry | None:
        """The entry the key belongs to, or None. The same work either way: the key is
        hashed and compared with a stored hash, or a dummy one when its id is unknown."""
        key_id = key_id_of(key)
        entry = self._by_id.get(key_id) if key_id is not None else None
        expected = entry.sha256 if entry is not None else _DUMMY_SHA256
        matches = hmac.compare_digest(hash_key(key), expected)
        return entry if matches and entry is not None else None

    def known_id(self, key: str) -> str | None:
        """The id a refused key names, when that id is configured (so safe to log: it is
        a public id, not part of a secret someone mistyped); else None. Read from the
        key's prefix alone: a botched rotation's secret is often not even well formed
        (cut short, a stray character), and the id is what diagnoses it."""
        match = _ANY_KEY_ID.match(key.strip())
        key_id = match.group("id") if match else None
        return key_id if key_id in self._by_id else None

    def counts(self) -> dict[Role, int]:
        """Keys per role, for the start-up line (never ids or hashes)."""
        per_role = Counter(entry.role for entry in self._by_id.values())
        return {role: per_role.get(role, 0) for role in reversed(Role)}


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: only this machine can connect."""
    name = host.strip().strip("[]").lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class BindCheck:
    """What ``nbo serve`` logs at start, and how loudly."""

    level: int
    message: str


def check_bind(
    host: str,
    keys: Sequence[ApiKeyEntry],
    allow_unauthenticated: bool = False,
    host_named: str = "setting NBO_HOST",
) -> BindCheck:
    """Secure by default: without keys, serve loopback only. A pure function, so every
    case is a unit test; ConfigError (one line) refuses the start. ``host_named``: what
    the refusal names, the flag when the host came from one (``--host``)."""
    if keys:
        counts = KeyRing(keys).counts()
        roles = ", ".join(f"{role.value} {n}" for role, n in counts.items())
        return BindCheck(
            logging.INFO,
            f"API keys on: {len(keys)} key(s) ({roles}); /v1 routes need a key",
        )
    if is_loopback(host):
        return BindCheck(
            logging.INFO,
            f"no API keys: serving on {host} only, every route open "
            "(set NBO_API_KEYS to serve other machines)",
        )
    if not allow_unauthenticated:
        raise ConfigError(
            f"{host_named}: {host!r} is not a loopback address and no API keys are "
            "configured; set NBO_API_KEYS or NBO_ALLOW_UNAUTHENTICATED=true"
        )
    return BindCheck(
        logging.WARNING,
        f"NO AUTHENTICATION: serving on {host} without API keys because "
        "NBO_ALLOW_UNAUTHENTICATED=true; anyone who can reach this port can read offers and "
        "profiles, post events and consent, and erase customers",
    )
