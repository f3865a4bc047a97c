"""Customer ids in logs are keyed pseudonyms: stable per deployment (the same id, the same
pseudonym across restarts and replicas sharing a store), unlinkable without the key, and
computable by an operator with ``nbo keys pseudonym``."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from nbo.cli import EXIT_USER_ERROR, main
from nbo.core.errors import ConfigError
from nbo.core.pseudonyms import Pseudonyms
from nbo.service.app import create_app
from nbo.service.logs import JsonFormatter
from nbo.settings import Settings, load_settings
from nbo.store import read_pseudonym_key
from nbo.store.sqlite import SQLiteStore

CLOCK = "2026-06-30T12:00:00Z"
KEY = "0123456789abcdef0123456789abcdef"


def test_a_pseudonym_is_the_keyed_hash_of_the_id() -> None:
    pseudonyms = Pseudonyms(b"k" * 32)
    expected = hmac.new(b"k" * 32, b"12347", hashlib.sha256).hexdigest()[:16]
    assert pseudonyms.of("12347") == f"ps_{expected}"
    assert re.fullmatch(r"ps_[0-9a-f]{16}", pseudonyms.of("x" * 100_000))
    assert pseudonyms.of("12347") != pseudonyms.of("12348")
    assert Pseudonyms(b"j" * 32).of("12347") != pseudonyms.of("12347")


def test_the_store_keeps_one_key_made_once(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    assert read_pseudonym_key(f"sqlite:///{path}") is None  # no store yet
    first, replica = SQLiteStore(path), SQLiteStore(path)
    try:
        key = first.pseudonym_key()
        assert len(key) == 32
        assert replica.pseudonym_key() == key  # a second process on the same store
    finally:
        first.close()
        replica.close()
    reopened = SQLiteStore(path)
    try:
        assert reopened.pseudonym_key() == key
    finally:
        reopened.close()
    assert read_pseudonym_key(f"sqlite:///{path}") == key
    other = SQLiteStore(tmp_path / "other.db")
    try:
        assert other.pseudonym_key() != key
    finally:
        other.close()


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("nbo.access")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield sink
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def logged_customers(sink: io.StringIO) -> list[str]:
    return [json.loads(line)["customer"] for line in sink.getvalue().splitlines()]


def call(models_dir: Path, customer: str, **settings: object) -> None:
    with TestClient(create_app(Settings(models_dir=models_dir, clock=CLOCK, **settings))) as c:
        assert c.get(f"/v1/customers/{customer}/offers").status_code == 200


def test_restarts_keep_the_pseudonym_and_the_cli_computes_it(
    models_dir: Path,
    isolated_store: Path,
    logs: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    call(models_dir, "a00")
    call(models_dir, "a00")  # a restart on the same store
    call(models_dir, "b00")
    first, again, other = logged_customers(logs)
    assert first == again != other
    assert "a00" not in logs.getvalue()

    # The operator's command reads the same key from the store the service uses.
    assert main(["keys", "pseudonym", "a00", "b00"]) == 0
    assert capsys.readouterr().out.split() == [first, other]
    monkeypatch.setattr(sys, "stdin", io.StringIO("a00\nb00\n"))
    assert main(["keys", "pseudonym", "-"]) == 0
    assert capsys.readouterr().out.split() == [first, other]


def test_nbo_log_key_sets_the_key(
    models_dir: Path,
    logs: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    call(models_dir, "a00", log_key=KEY)
    call(models_dir, "a00", log_key=KEY, store_url=f"sqlite:///{tmp_path / 'replica.db'}")
    call(models_dir, "a00")  # the store's own key instead
    with_key, replica, stored = logged_customers(logs)
    assert with_key == replica == Pseudonyms(KEY.encode()).of("a00") != stored
    monkeypatch.setenv("NBO_LOG_KEY", KEY)
    assert main(["keys", "pseudonym", "a00"]) == 0
    assert capsys.readouterr().out.strip() == with_key


def test_the_cli_says_when_there_is_no_key_yet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"sqlite:///{tmp_path / 'never-served.db'}"
    assert main(["keys", "pseudonym", "a00", "--store-url", store]) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("nbo keys: error: store") and "NBO_LOG_KEY" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "never-served.db").exists()  # a look, nothing created


def test_a_short_log_key_refuses_the_start() -> None:
    with pytest.raises(ConfigError, match=r"NBO_LOG_KEY: .*at least 16 characters"):
        load_settings(log_key="short")
    assert "0123" not in repr(load_settings(log_key=KEY))  # never printed
