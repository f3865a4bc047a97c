"""API keys: ordered roles, a key authenticated only against its own hash (always through
a hash comparison), and which addresses ``nbo serve`` may bind without keys."""

from __future__ import annotations

import logging
import re

import pytest
from support import ENTRIES, KEYS

import nbo.core.apikeys as apikeys
from nbo.core.apikeys import KeyRing, Role, check_bind, create_key, hash_key, is_loopback
from nbo.core.errors import ConfigError


def test_roles_are_ordered() -> None:
    assert Role.admin.allows(Role.write) and Role.admin.allows(Role.read)
    assert Role.write.allows(Role.read) and Role.write.allows(Role.write)
    assert not Role.write.allows(Role.admin)
    assert not Role.read.allows(Role.write) and not Role.read.allows(Role.admin)


def test_a_key_authenticates_only_against_its_own_hash() -> None:
    key, entry = create_key(Role.write)
    assert re.fullmatch(r"nbo_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", key)
    assert key.split("_")[1] == entry.id and entry.sha256 == hash_key(key)
    ring = KeyRing([entry, *ENTRIES])
    assert ring.authenticate(key) == entry
    assert ring.authenticate(key + "x") is None
    assert KeyRing(ENTRIES).authenticate(key) is None
    assert KeyRing([]).enabled is False


def test_every_check_compares_a_hash_even_for_an_unknown_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Constant time in the sense that matters: the same steps whether the id exists or
    not, and the comparison through hmac.compare_digest."""
    calls: list[tuple[str, str]] = []

    def counting(a: str, b: str) -> bool:
        calls.append((a, b))
        return a == b

    monkeypatch.setattr(apikeys.hmac, "compare_digest", counting)
    ring = KeyRing(ENTRIES)
    for key in (READ, READ[:-1] + "x", "nbo_00000000_" + "a" * 43, "garbage"):
        ring.authenticate(key)
    assert len(calls) == 4
    assert all(len(a) == len(b) == 64 for a, b in calls)


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost", "LOCALHOST"]
)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "192.168.1.2", "example.com", ""])
def test_other_hosts_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_without_keys_loopback_is_allowed_and_says_auth_is_off() -> None:
    checked = check_bind("127.0.0.1", [])
    assert checked.level == logging.INFO
    assert "no API keys: serving on 127.0.0.1 only" in checked.message


def test_without_keys_another_address_is_refused() -> None:
    with pytest.raises(ConfigError) as refused:
        check_bind("0.0.0.0", [])
    message = str(refused.value)
    assert "0.0.0.0" in message and "\n" not in message
    assert "set NBO_API_KEYS or NBO_ALLOW_UNAUTHENTICATED=true" in message


def test_the_override_allows_another_address_with_a_warning() -> None:
    checked = check_bind("0.0.0.0", [], allow_unauthenticated=True)
    assert checked.level == logging.WARNING
    assert "NO AUTHENTICATION" in checked.message and "0.0.0.0" in checked.message


def test_with_keys_any_address_is_allowed_and_the_roles_are_counted() -> None:
    extra = create_key(Role.read)[1]
    checked = check_bind("0.0.0.0", [*ENTRIES, extra])
    assert checked.level == logging.INFO
    assert "4 key(s) (admin 1, write 1, read 2)" in checked.message
    assert all(entry.sha256 not in checked.message for entry in [*ENTRIES, extra])


READ = KEYS[Role.read][0]
