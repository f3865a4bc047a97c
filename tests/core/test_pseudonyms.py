"""Pseudonyms: the keyed hash of a customer id."""

from __future__ import annotations

import hashlib
import hmac
import re

from nbo.core.pseudonyms import Pseudonyms


def test_a_pseudonym_is_the_keyed_hash_of_the_id() -> None:
    pseudonyms = Pseudonyms(b"k" * 32)
    expected = hmac.new(b"k" * 32, b"12347", hashlib.sha256).hexdigest()[:16]
    assert pseudonyms.of("12347") == f"ps_{expected}"
    assert re.fullmatch(r"ps_[0-9a-f]{16}", pseudonyms.of("x" * 100_000))
    assert pseudonyms.of("12347") != pseudonyms.of("12348")
    assert Pseudonyms(b"j" * 32).of("12347") != pseudonyms.of("12347")
