"""Keyed pseudonyms of customer ids, for logs.

Logs are shipped, kept and searched where an erasure cannot reach them, so they never
hold a customer id: a log line names a customer by a pseudonym, the first 16 hex digits
of HMAC-SHA256(key, id). The same id gives the same pseudonym in every line, every
restart and every replica of one deployment (one key), so an operator can follow one
customer through the logs; nobody can go from a pseudonym back to the id without the
key and a list of candidate ids, and a pseudonym says nothing about ids outside the
deployment. ``nbo keys pseudonym ID`` computes one, to find a customer's lines.

The key is ``NBO_LOG_KEY`` when set (replicas with stores of their own must share it);
otherwise a random 256-bit key generated once and kept in the store
(``Store.pseudonym_key``), so replicas sharing a store agree without configuration.
Deleting that key (or changing ``NBO_LOG_KEY``) unlinks every pseudonym already logged
from the ids for good.

64 bits: two ids of one deployment share a pseudonym with odds of about n^2 / 2^65
(one in 37 million for a million customers), enough to follow a customer, and the
short form keeps lines readable.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

PREFIX = "ps_"
DIGITS = 16
KEY_BYTES = 32


def new_key() -> bytes:
    """A random key for a deployment's pseudonyms."""
    return secrets.token_bytes(KEY_BYTES)


class Pseudonyms:
    """A deployment's pseudonyms: ``of(customer_id)`` is ``ps_`` and 16 hex digits."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("a pseudonym key must not be empty")
        self._key = key

    def of(self, customer_id: str) -> str:
        # surrogatepass: any str encodes (an id that reaches a log line may be one the
        # API refused as invalid).
        digest = hmac.new(
            self._key, customer_id.encode("utf-8", "surrogatepass"), hashlib.sha256
        ).hexdigest()
        return PREFIX + digest[:DIGITS]
