"""The settings replicas must share, compared at ``nbo serve``'s start with those of the
service started on the store before (``nbo.service.shared``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from nbo.service.shared import SharedSettingsWatch, check_shared_settings
from nbo.settings import Settings
from nbo.store import open_store

KEY_A = {"id": "aaaa1111", "role": "read", "sha256": "a" * 64}
KEY_B = {"id": "bbbb2222", "role": "read", "sha256": "b" * 64}


def settings(tmp_path: Path, catalog: str, **extra: object) -> Settings:
    path = tmp_path / f"catalog-{abs(hash(catalog))}.yaml"
    path.write_text(catalog)
    return Settings(store_url=f"sqlite:///{tmp_path / 'nbo.db'}", catalog=path, **extra)  # type: ignore[arg-type]


def test_replicas_whose_shared_settings_differ_are_told_which(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two replicas on one store, the second with other API keys and another catalogue
    (the same file name, other offers): its start warns naming both, nothing else. Before,
    nothing compared them: a key accepted by one replica was refused by the other."""
    first = settings(tmp_path, "offers: []\n", api_keys=[KEY_A])
    same = settings(tmp_path, "offers: []\n", api_keys=[KEY_A], workers=3, port=9001)
    other = settings(tmp_path, "offers: [] # edited\n", api_keys=[KEY_A, KEY_B])
    store = open_store(first.store_url)
    try:
        assert check_shared_settings(store, first) == []  # the first start: nothing before
        assert check_shared_settings(store, same) == []  # per-replica settings may differ
        with caplog.at_level(logging.WARNING, logger="nbo.service.shared"):
            assert check_shared_settings(store, other) == ["NBO_API_KEYS", "NBO_CATALOG"]
        assert "NBO_API_KEYS, NBO_CATALOG" in caplog.text
        # Recorded: the next replica started like the last one is not warned.
        assert check_shared_settings(store, other) == []
    finally:
        store.close()


def test_only_digests_go_in_the_store(tmp_path: Path) -> None:
    """No key hash, secret or file content is stored: digests of them."""
    secret = "a-log-key-of-sixteen-or-more"
    config = settings(tmp_path, "offers: []\n", api_keys=[KEY_A], log_key=secret)
    store = open_store(config.store_url)
    try:
        check_shared_settings(store, config)
        recorded, _ = store.swap_shared_settings({}) or ({}, 0)
    finally:
        store.close()
    text = json.dumps(recorded)
    assert "NBO_LOG_KEY" in recorded and secret not in text and KEY_A["sha256"] not in text
    assert all(len(digest) == 16 for digest in recorded.values())


def test_the_replica_started_first_hears_of_a_later_one_that_differs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The start compares with the start before it only: the replica started first was
    never told that a later one differs. Its watch reads the recorded settings and warns,
    once per later start that differs; a later start alike, or a look with nothing new,
    says nothing. (A warning, as at the start.)"""
    first = settings(tmp_path, "offers: []\n", api_keys=[KEY_A])
    other = settings(tmp_path, "offers: []\n", api_keys=[KEY_A, KEY_B])
    store = open_store(first.store_url)
    try:
        check_shared_settings(store, first)  # the first replica starts
        watch = SharedSettingsWatch(store, first)
        assert watch.check() == []  # its first look notes the row (its own start)
        assert watch.check() == []
        # The second replica starts, with another key.
        with caplog.at_level(logging.WARNING, logger="nbo.service.shared"):
            assert check_shared_settings(store, other) == ["NBO_API_KEYS"]  # it is told
            caplog.clear()
            assert watch.check() == ["NBO_API_KEYS"]  # and now the first one too
        assert "started on this store after this one" in caplog.text
        assert "NBO_API_KEYS" in caplog.text
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="nbo.service.shared"):
            assert watch.check() == []  # once per start
            # A worker that is not its replica's speaker counts it and says nothing.
            quiet = SharedSettingsWatch(store, first, speaks=lambda: False)
            quiet.seen = (0, "")
            assert quiet.check() == ["NBO_API_KEYS"]
        assert caplog.text == ""
    finally:
        store.close()
