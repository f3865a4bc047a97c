"""``nbo keys``: ``create`` prints a key its own entry lets in and the ready setting line,
and ``pseudonym`` says in one line when there is no key yet."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support import CLOCK, ENTRIES, bearer

from nbo.cli import EXIT_USER_ERROR, main
from nbo.core.apikeys import ApiKeyEntry, KeyRing
from nbo.service.app import create_app
from nbo.settings import load_settings


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def purchase(event_id: str, customer: str) -> dict:
    return {
        "event_id": event_id,
        "type": "purchase",
        "customer_id": customer,
        "timestamp": "2026-06-30T10:00:00Z",
        "order_id": f"o-{event_id}",
        "items": [{"item_id": "A01", "quantity": 1, "price": 2.0}],
    }


def _created(out: str) -> tuple[str, dict, str]:
    lines = out.splitlines()
    key = lines[1].strip()
    entry = json.loads(lines[3].strip())
    ready = lines[5].strip()
    return key, entry, ready


def test_keys_create_prints_a_key_that_its_own_entry_lets_in(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "--role", "write"]) == 0
    key, entry, ready = _created(capsys.readouterr().out)
    assert entry["role"] == "write" and key.startswith(f"nbo_{entry['id']}_")
    assert key not in json.dumps(entry) and key not in ready
    # The ready line is the setting, shell quotes and all.
    assert ready.startswith("NBO_API_KEYS='[") and ready.endswith("]'")
    monkeypatch.setenv("NBO_API_KEYS", ready.removeprefix("NBO_API_KEYS='").removesuffix("'"))
    settings = load_settings(models_dir=models_dir, clock=CLOCK)
    assert settings.api_keys == [ApiKeyEntry.model_validate(entry)]
    with TestClient(create_app(settings)) as client:
        answer = client.post(
            "/v1/events", json=purchase("e-new-key", "c-auth-6"), headers=bearer(key)
        )
        assert answer.status_code == 200 and answer.json()["accepted"] == ["e-new-key"]
        assert client.get("/v1/model", headers={"X-API-Key": key}).status_code == 200
        assert client.delete("/v1/customers/c-auth-6", headers=bearer(key)).status_code == 403


def test_keys_create_keeps_the_configured_keys_in_the_ready_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NBO_API_KEYS", json.dumps([e.model_dump(mode="json") for e in ENTRIES]))
    assert main(["keys", "create", "--role", "admin"]) == 0
    key, entry, ready = _created(capsys.readouterr().out)
    configured = json.loads(ready.removeprefix("NBO_API_KEYS='").removesuffix("'"))
    assert configured == [*(e.model_dump(mode="json") for e in ENTRIES), entry]
    assert entry["id"] not in {e.id for e in ENTRIES}
    assert KeyRing([ApiKeyEntry.model_validate(e) for e in configured]).authenticate(key)


def test_keys_create_refuses_an_unknown_role_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["keys", "create", "--role", "root"])
    assert exited.value.code == EXIT_USER_ERROR
    captured = capsys.readouterr()
    line = _one_error_line(captured.err)
    assert "--role" in line and "'root'" in line
    assert captured.out == ""


def test_the_cli_says_when_there_is_no_key_yet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No file at the path was said as "the store holds no pseudonym key yet", naming no
    path: it is said as the other commands say it; a store with no key names its file."""
    path = tmp_path / "never-served.db"
    store = f"sqlite:///{path}"
    assert main(["keys", "pseudonym", "a00", "--store-url", store]) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert err == (
        f"nbo keys: error: --store-url: no store at {path} (point it at the store the "
        "service records to)"
    )
    assert not path.exists()  # a look, nothing created
    with sqlite3.connect(path) as db:  # a store of an nbo before the key: no key table
        db.execute("CREATE TABLE schema_migrations (version INTEGER, applied_at INTEGER)")
    db.close()
    assert main(["keys", "pseudonym", "a00", "--store-url", store]) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        f"nbo keys: error: --store-url: the store (SQLite {path}) holds no pseudonym key yet"
    )
    assert "NBO_LOG_KEY" in err and "NBO_STORE_URL" not in err
    assert len(err.splitlines()) == 1


def test_a_bad_store_is_said_of_the_flag_or_the_setting_the_user_gave(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("NBO_LOG_KEY", raising=False)
    assert main(["keys", "pseudonym", "a00", "--store-url", "db1:5432"]) == EXIT_USER_ERROR
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("nbo keys: error: --store-url: unsupported store 'db1:5432'")
    monkeypatch.setenv("NBO_STORE_URL", "db1:5432")
    assert main(["keys", "pseudonym", "a00"]) == EXIT_USER_ERROR
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("nbo keys: error: setting NBO_STORE_URL: unsupported store")


def test_a_store_in_a_folder_that_does_not_exist_is_a_wrong_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("NBO_LOG_KEY", raising=False)
    missing = tmp_path / "nowhere" / "nbo.db"
    assert main(["keys", "pseudonym", "a00", "--store-url", f"sqlite:///{missing}"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"nbo keys: error: --store-url: no folder {missing.parent} ")
    assert not missing.parent.exists()
