"""Access control: API keys with ordered roles, through the real app; the key settings;
the secure default of ``nbo serve``; ``nbo keys create``; and that no key reaches a log.

Keys are made by ``create_key`` (the code ``nbo keys create`` runs), one per role.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastapi.routing
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

import nbo.core.apikeys as apikeys
from nbo.cli import EXIT_USER_ERROR, main
from nbo.core.apikeys import (
    ApiKeyEntry,
    KeyRing,
    Role,
    check_bind,
    create_key,
    hash_key,
    is_loopback,
)
from nbo.core.errors import ConfigError
from nbo.service.app import create_app
from nbo.service.auth import OPEN_PATHS, role_of
from nbo.settings import Settings, load_settings

CLOCK = "2026-06-30T12:00:00Z"
KEYS = {role: create_key(role) for role in Role}
ENTRIES = [entry for _, entry in KEYS.values()]
READ, WRITE, ADMIN = (KEYS[role][0] for role in (Role.read, Role.write, Role.admin))

# The documented table (docs/service.md, nbo.service.auth): which role each route needs.
ROUTE_ROLES = {
    ("GET", "/v1/customers/{customer_id}/offers"): Role.read,
    ("GET", "/v1/customers/{customer_id}"): Role.read,
    ("GET", "/v1/customers/{customer_id}/consent"): Role.read,
    ("GET", "/v1/items/{item_id}/similar"): Role.read,
    ("GET", "/v1/model"): Role.read,
    ("GET", "/v1/models"): Role.read,
    ("GET", "/v1/catalog"): Role.read,
    ("GET", "/v1/experiments"): Role.read,
    ("GET", "/v1/experiments/{name}/report"): Role.read,
    ("POST", "/v1/events"): Role.write,
    ("PUT", "/v1/customers/{customer_id}/consent"): Role.write,
    ("DELETE", "/v1/customers/{customer_id}"): Role.admin,
    ("GET", "/v1/customers/{customer_id}/data"): Role.admin,
    ("POST", "/v1/admin/reload"): Role.admin,
}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def purchase(event_id: str, customer: str) -> dict:
    return {
        "event_id": event_id,
        "type": "purchase",
        "customer_id": customer,
        "timestamp": "2026-06-30T10:00:00Z",
        "order_id": f"o-{event_id}",
        "items": [{"item_id": "A01", "quantity": 1, "price": 2.0}],
    }


@pytest.fixture
def client(models_dir: Path) -> Iterator[TestClient]:
    settings = Settings(models_dir=models_dir, clock=CLOCK, api_keys=ENTRIES)
    with TestClient(create_app(settings)) as client:
        yield client


def assert_error(response, status: int, error: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "message", "details"}
    assert body["error"] == error and body["message"]
    return body


# --- the HTTP check ------------------------------------------------------------------


def test_no_key_is_401_json_with_a_bearer_challenge(client: TestClient) -> None:
    answer = client.get("/v1/customers/a00/offers")
    body = assert_error(answer, 401, "unauthorized")
    assert answer.headers["www-authenticate"] == "Bearer"
    assert body["details"] == [{"field": "Authorization", "problem": "missing"}]
    # Not FastAPI's own answer for a missing credential.
    assert "detail" not in body


@pytest.mark.parametrize(
    "headers",
    [
        bearer(READ[:-4] + "AAAA"),  # a configured id with a wrong secret
        bearer("nbo_00000000_" + READ.split("_", 2)[2]),  # an unknown id
        bearer("not-an-nbo-key"),
        {"X-API-Key": ADMIN + "x"},
        {"Authorization": f"Basic {READ}"},  # not a Bearer credential: no key at all
    ],
)
def test_a_wrong_key_is_401(client: TestClient, headers: dict[str, str]) -> None:
    answer = client.get("/v1/customers/a00/offers", headers=headers)
    assert_error(answer, 401, "unauthorized")
    assert answer.headers["www-authenticate"] == "Bearer"


def test_the_right_role_is_200_in_either_header(client: TestClient) -> None:
    for headers in (bearer(READ), {"X-API-Key": READ}, {"Authorization": f"bearer {READ}"}):
        answer = client.get("/v1/customers/a00/offers", headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["customer_id"] == "a00"


def test_a_read_key_cannot_post_events_and_nothing_is_stored(client: TestClient) -> None:
    answer = client.post("/v1/events", json=purchase("e-read", "c-auth-1"), headers=bearer(READ))
    body = assert_error(answer, 403, "forbidden")
    assert "'write'" in body["message"] and "'read'" in body["message"]
    assert body["details"][0]["field"] == "Authorization"
    # The event was not stored: the write key now stores it as new, not as a duplicate.
    stored = client.post("/v1/events", json=purchase("e-read", "c-auth-1"), headers=bearer(WRITE))
    assert stored.status_code == 200, stored.text
    assert stored.json()["accepted"] == ["e-read"]


def test_read_and_write_keys_cannot_erase_and_the_customer_stays(client: TestClient) -> None:
    customer = "c-auth-2"
    consent = {"personalization": False, "channels": {"email": False}}
    put = client.put(f"/v1/customers/{customer}/consent", json=consent, headers=bearer(WRITE))
    assert put.status_code == 200, put.text
    for key, role in ((READ, "read"), (WRITE, "write")):
        answer = client.delete(f"/v1/customers/{customer}", headers={"X-API-Key": key})
        body = assert_error(answer, 403, "forbidden")
        assert "'admin'" in body["message"] and f"'{role}'" in body["message"]
        assert body["details"][0]["field"] == "X-API-Key"
    still = client.get(f"/v1/customers/{customer}/consent", headers=bearer(READ)).json()
    assert still["stored"] is True and still["personalization"] is False
    # The admin key erases.
    erased = client.delete(f"/v1/customers/{customer}", headers=bearer(ADMIN))
    assert erased.status_code == 200, erased.text
    assert erased.json()["deleted"]["consent_records"] == 1


def test_a_read_key_cannot_write_consent(client: TestClient) -> None:
    answer = client.put(
        "/v1/customers/c-auth-3/consent", json={"personalization": False}, headers=bearer(READ)
    )
    assert_error(answer, 403, "forbidden")
    assert client.get("/v1/customers/c-auth-3/consent", headers=bearer(READ)).json()["stored"] is (
        False
    )


def test_higher_roles_may_do_what_lower_roles_may(client: TestClient) -> None:
    for key in (READ, WRITE, ADMIN):
        for path in ("/v1/customers/a00/offers", "/v1/customers/a00", "/v1/catalog", "/v1/model"):
            answer = client.get(path, headers=bearer(key))
            assert answer.status_code == 200, (path, answer.text)
    for i, key in enumerate((WRITE, ADMIN)):
        answer = client.post(
            "/v1/events", json=purchase(f"e-up-{i}", "c-auth-4"), headers=bearer(key)
        )
        assert answer.status_code == 200 and answer.json()["accepted"] == [f"e-up-{i}"]


def test_open_routes_answer_without_a_key(client: TestClient) -> None:
    assert client.get("/health/live").status_code == 200
    assert client.get("/health/ready").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200


def served_routes(app: Any) -> list[Any]:
    """The routes as served: FastAPI from 0.12x on keeps included routers whole in
    ``app.routes`` and walks them with ``iter_route_contexts``."""
    walk = getattr(fastapi.routing, "iter_route_contexts", None)
    return list(walk(app.routes)) if walk is not None else list(app.routes)


def test_every_route_is_open_or_needs_its_documented_role(client: TestClient) -> None:
    """Walks the app's routes: a new route that names no role fails here until it does
    (or is added to OPEN_PATHS on purpose)."""
    seen = {}
    for route in served_routes(client.app):
        path = route.path
        if not isinstance(getattr(route, "original_route", route), APIRoute):
            assert path in OPEN_PATHS, f"{path} is not an API route and not listed open"
            continue
        role = role_of(route)
        for method in route.methods:
            seen[(method, path)] = role
            if path in OPEN_PATHS:
                assert role is None, f"{method} {path} is listed open but needs {role}"
                continue
            assert role is not None, f"{method} {path} needs no role and is not open"
            # The check runs: without a key the route answers 401 before anything.
            answer = client.request(method, re.sub(r"\{[^}]+\}", "x", path))
            assert answer.status_code == 401, (method, path, answer.text)
    protected = {route: role for route, role in seen.items() if role is not None}
    assert protected == ROUTE_ROLES
    assert ("GET", "/health/ready") in seen  # the walk reached the included routers


def test_without_keys_every_route_is_open(models_dir: Path) -> None:
    """The local mode: no keys configured, no check (nbo serve then binds loopback only)."""
    with TestClient(create_app(Settings(models_dir=models_dir, clock=CLOCK))) as client:
        assert client.get("/v1/customers/a00/offers").status_code == 200
        # A key nobody configured is ignored, not refused.
        assert client.get("/v1/model", headers=bearer("whatever")).status_code == 200
        answer = client.post("/v1/events", json=purchase("e-open", "c-auth-5"))
        assert answer.status_code == 200 and answer.json()["accepted"] == ["e-open"]
        assert client.delete("/v1/customers/c-auth-5").status_code == 200


def test_the_openapi_spec_declares_the_key_schemes(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["HTTPBearer"]["description"],
    }
    assert schemes["APIKeyHeader"]["in"] == "header"
    assert schemes["APIKeyHeader"]["name"] == "X-API-Key"
    offers = spec["paths"]["/v1/customers/{customer_id}/offers"]["get"]
    assert {name for entry in offers["security"] for name in entry} == set(schemes)
    assert {"401", "403"} <= set(offers["responses"])
    assert "security" not in spec["paths"]["/health/ready"]["get"]


# --- logs ----------------------------------------------------------------------------


def test_failed_checks_log_at_most_the_key_id_never_the_key(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    read_id = KEYS[Role.read][1].id
    wrong_secret = READ[:-4] + "AAAA"
    unknown = "nbo_0badc0de_" + "s3cr3t-unknown-key-material-123456789"
    client.get("/v1/customers/a00/offers")
    client.get("/v1/customers/a00/offers", headers=bearer(wrong_secret))
    client.get("/v1/customers/a00/offers", headers={"X-API-Key": unknown})
    client.delete("/v1/customers/a00", headers=bearer(READ))
    client.get("/v1/customers/a00/offers", headers=bearer(READ))

    lines = [
        f"{record.getMessage()} {record.exc_text or ''} {record.args!r}"
        for record in caplog.records
    ]
    refusals = [line for line in lines if "refused" in line]
    assert len(refusals) == 4, lines
    assert any(read_id in line and "wrong secret" in line for line in refusals)
    assert any(read_id in line and "needs role admin" in line for line in refusals)
    # An unknown id is not logged: it may be part of something mistyped.
    assert not any("0badc0de" in line for line in lines)
    forbidden = [READ, wrong_secret, unknown, READ.split("_", 2)[2], unknown.split("_", 2)[2]]
    forbidden += [entry.sha256 for entry in ENTRIES]
    for line in lines:
        for secret in forbidden:
            assert secret not in line


# --- the keys themselves -------------------------------------------------------------


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


def test_keys_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBO_API_KEYS", json.dumps([e.model_dump(mode="json") for e in ENTRIES]))
    settings = load_settings()
    assert settings.api_keys == ENTRIES
    # The hashes stay out of the settings' repr (and so out of any log of it).
    assert all(entry.sha256 not in repr(settings) for entry in ENTRIES)


def _entry(**change: str) -> dict:
    return {"id": "abcd1234", "role": "read", "sha256": "ab" * 32, **change}


@pytest.mark.parametrize(
    ("entries", "problem"),
    [
        ([_entry(role="root")], "'read', 'write' or 'admin'"),
        ([_entry(), _entry(role="admin", sha256="cd" * 32)], "duplicate key id abcd1234"),
        ([_entry(sha256="ab" * 31)], "64 hex characters"),
        ([_entry(sha256="zz" * 32)], "64 hex characters"),
        ([_entry(id="key-one")], "8 lowercase hex"),
        ([{"id": "abcd1234", "role": "read"}], "sha256"),
    ],
)
def test_bad_key_settings_refuse_the_start_naming_nbo_api_keys(
    monkeypatch: pytest.MonkeyPatch, entries: list[dict], problem: str
) -> None:
    monkeypatch.setenv("NBO_API_KEYS", json.dumps(entries))
    with pytest.raises(ConfigError) as refused:
        load_settings()
    message = str(refused.value)
    assert message.startswith("setting NBO_API_KEYS: ") and "\n" not in message
    assert problem in message


def test_key_settings_that_are_not_json_refuse_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBO_API_KEYS", "[{not json")
    with pytest.raises(ConfigError, match=r"^setting NBO_API_KEYS: not valid JSON$"):
        load_settings()


# --- secure by default ---------------------------------------------------------------


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


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_serve_refuses_a_public_host_without_keys_before_anything_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # tmp_path holds no model: the host is refused first, in one line.
    code = main(["serve", "--host", "0.0.0.0", "--models-dir", str(tmp_path)])
    assert code == EXIT_USER_ERROR
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("nbo serve: error: setting NBO_HOST: '0.0.0.0'")
    assert line.endswith("set NBO_API_KEYS or NBO_ALLOW_UNAUTHENTICATED=true")


@pytest.fixture
def uvicorn_runs(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The server replaced: what nbo serve would have served, without a server."""
    from nbo.service import cli

    runs: list[dict] = []
    monkeypatch.setattr(cli, "serve", lambda settings: runs.append(settings.model_dump()))
    monkeypatch.setattr(cli, "check_port_free", lambda host, port: None)
    return runs


def test_serve_with_the_override_warns_and_serves(
    models_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    uvicorn_runs: list[dict],
) -> None:
    monkeypatch.setenv("NBO_ALLOW_UNAUTHENTICATED", "true")
    caplog.set_level(logging.INFO)
    assert main(["serve", "--host", "0.0.0.0", "--models-dir", str(models_dir)]) == 0
    assert [run["host"] for run in uvicorn_runs] == ["0.0.0.0"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("NO AUTHENTICATION" in message for message in warnings)


def test_serve_with_keys_says_auth_is_on(
    models_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    uvicorn_runs: list[dict],
) -> None:
    monkeypatch.setenv("NBO_API_KEYS", json.dumps([e.model_dump(mode="json") for e in ENTRIES]))
    caplog.set_level(logging.INFO)
    assert main(["serve", "--host", "0.0.0.0", "--models-dir", str(models_dir)]) == 0
    assert [run["host"] for run in uvicorn_runs] == ["0.0.0.0"]
    assert any("API keys on: 3 key(s)" in r.getMessage() for r in caplog.records)
    for entry in ENTRIES:
        assert entry.sha256 not in caplog.text


# --- nbo keys create -----------------------------------------------------------------


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
