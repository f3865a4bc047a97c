"""Hostile and malformed input, through the real app: every probe is refused with a 4xx
and a JSON body naming the field and the problem, and the store is the same afterwards.

The probes are those of issue 13 (a running server with keys on answered 2xx to each, or
stored something): numbers that are not finite or not sane, bodies and events too
large, timestamps outside the window the service accepts, ids with control characters
or invalid UTF-8, loose types and unknown fields in bodies.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support import CLOCK

from nbo.core.apikeys import Role, create_key
from nbo.service.app import create_app
from nbo.settings import Settings

TODAY = "2026-06-30T11:00:00Z"
TABLES = ("events", "purchase_lines", "consent", "erased")

ADMIN_KEY, ADMIN_ENTRY = create_key(Role.admin)
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


def purchase(event_id: str = "e1", customer: str = "a00", **changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": event_id,
        "type": "purchase",
        "customer_id": customer,
        "timestamp": TODAY,
        "order_id": f"o-{event_id}",
        "items": [{"item_id": "A01", "quantity": 2, "price": 2.5}],
    }
    event.update(changes)
    return event


def conversion(event_id: str = "c1", **changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": event_id,
        "type": "offer_conversion",
        "customer_id": "a00",
        "item_id": "A01",
        "timestamp": TODAY,
        "revenue": 9.5,
    }
    event.update(changes)
    return event


def snapshot(store: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables that hold what customers sent, read past the service."""
    if not store.exists():
        return {table: [] for table in TABLES}
    db = sqlite3.connect(store)
    try:
        return {
            table: db.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
            for table in TABLES
        }
    finally:
        db.close()


@pytest.fixture
def client(models_dir: Path, isolated_store: Path) -> Iterator[TestClient]:
    """The app with API keys on (as the probes were made), one stored event to keep."""
    settings = Settings(models_dir=models_dir, clock=CLOCK, api_keys=[ADMIN_ENTRY])
    with TestClient(create_app(settings), headers=AUTH) as client:
        assert client.post("/v1/events", json=purchase("kept")).status_code == 200
        yield client


def refused_event(
    client: TestClient, store: Path, body: dict[str, Any] | bytes, field: str, problem: str
) -> None:
    """The body is refused whole (422), the one event rejected naming ``field`` and
    ``problem``, and the store is unchanged."""
    before = snapshot(store)
    if isinstance(body, bytes):
        answer = client.post(
            "/v1/events", content=body, headers={"content-type": "application/json"}
        )
    else:
        answer = client.post("/v1/events", json=body)
    assert answer.status_code == 422, answer.text
    payload = answer.json()
    assert payload["accepted"] == [] and len(payload["rejected"]) == 1
    reason = payload["rejected"][0]["reason"]
    assert reason.startswith(f"{field}: "), reason
    assert problem in reason, reason
    assert snapshot(store) == before


def refused(answer: Any, status: int, field: str, problem: str) -> None:
    """An error answer: the status, and a JSON body whose details name the field and
    the problem."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    details = answer.json()["details"]
    assert any(d["field"] == field and problem in d["problem"] for d in details), details


# --- numbers ----------------------------------------------------------------------------

LINE = '{"item_id": "A01", "quantity": %s, "price": %s}'
RAW = (
    '{"event_id": "e1", "type": "purchase", "customer_id": "a00", '
    f'"timestamp": "{TODAY}", "items": [%s]}}'
)


@pytest.mark.parametrize(
    ("quantity", "price", "field", "problem"),
    [
        ("Infinity", "2.5", "items.0.quantity", "finite number"),
        ("-Infinity", "2.5", "items.0.quantity", "finite number"),
        ("NaN", "2.5", "items.0.quantity", "finite number"),
        ("1e309", "2.5", "items.0.quantity", "finite number"),  # 1e308 x 10: Infinity
        ("1e308", "2.5", "items.0.quantity", "less than or equal to 1000000"),
        ("1000001", "2.5", "items.0.quantity", "less than or equal to 1000000"),
        ("2", "Infinity", "items.0.price", "finite number"),
        ("2", "1e309", "items.0.price", "finite number"),
        ("2", "1e10", "items.0.price", "less than or equal to 1000000000"),
        ("2", "0", "items.0.price", "greater than 0"),
        ('"3"', "2.5", "items.0.quantity", "valid number"),
        ("2", '"2.5"', "items.0.price", "valid number"),
        ("true", "2.5", "items.0.quantity", "valid number"),
    ],
)
def test_purchase_numbers_must_be_finite_and_sane(
    client: TestClient, isolated_store: Path, quantity: str, price: str, field: str, problem: str
) -> None:
    body = (RAW % (LINE % (quantity, price))).encode()
    refused_event(client, isolated_store, body, field, problem)


@pytest.mark.parametrize(
    ("revenue", "problem"),
    [
        ("Infinity", "finite number"),
        ("NaN", "finite number"),
        ("1e309", "finite number"),
        ("1e12", "less than or equal to 1000000000"),
        ("-1", "greater than or equal to 0"),
        ('"9.5"', "valid number"),
    ],
)
def test_a_conversions_revenue_must_be_finite_and_sane(
    client: TestClient, isolated_store: Path, revenue: str, problem: str
) -> None:
    body = json.dumps(conversion()).replace('"revenue": 9.5', f'"revenue": {revenue}')
    refused_event(client, isolated_store, body.encode(), "revenue", problem)


def test_the_largest_sane_numbers_are_accepted(client: TestClient) -> None:
    line = {"item_id": "A01", "quantity": 1_000_000, "price": 1e9}
    answer = client.post("/v1/events", json=purchase("big", items=[line]))
    assert answer.json()["accepted"] == ["big"]
    answer = client.post("/v1/events", json=conversion("c-big", revenue=1e9))
    assert answer.json()["accepted"] == ["c-big"]


# --- sizes ------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_refused_with_413(models_dir: Path, isolated_store: Path) -> None:
    settings = Settings(models_dir=models_dir, clock=CLOCK, max_body_bytes=4096)
    with TestClient(create_app(settings)) as client:
        before = snapshot(isolated_store)
        many = {"events": [purchase(f"e{n}") for n in range(40)]}  # about 7 kB
        answer = client.post("/v1/events", json=many)
        refused(answer, 413, "body", "larger than 4096 bytes")
        assert answer.json()["error"] == "payload_too_large"
        assert answer.headers["x-request-id"]  # answered inside the request middleware
        assert snapshot(isolated_store) == before
        # The same events in bodies under the limit are stored.
        assert client.post("/v1/events", json={"events": many["events"][:10]}).status_code == 200


def test_a_streamed_body_is_counted_as_it_arrives(models_dir: Path, isolated_store: Path) -> None:
    """A chunked body declares no length: the bytes are counted as they come."""
    settings = Settings(models_dir=models_dir, clock=CLOCK, max_body_bytes=4096)
    body = json.dumps({"events": [purchase(f"e{n}") for n in range(40)]}).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    with TestClient(create_app(settings)) as client:
        before = snapshot(isolated_store)
        answer = client.post(
            "/v1/events", content=chunks(), headers={"content-type": "application/json"}
        )
        refused(answer, 413, "body", "larger than 4096 bytes")
        assert snapshot(isolated_store) == before
        small = json.dumps(purchase("ok")).encode()
        answer = client.post(
            "/v1/events",
            content=iter([small[:50], small[50:]]),
            headers={"content-type": "application/json"},
        )
        assert answer.json()["accepted"] == ["ok"]


def test_the_default_body_limit_is_one_mebibyte(client: TestClient, isolated_store: Path) -> None:
    before = snapshot(isolated_store)
    lines = [{"item_id": f"X{n:07d}", "quantity": 1, "price": 1.0} for n in range(1000)]
    events = [purchase(f"big-{n}", items=lines) for n in range(25)]  # about 1.5 MB
    answer = client.post("/v1/events", json={"events": events})
    refused(answer, 413, "body", "larger than 1048576 bytes")
    assert snapshot(isolated_store) == before


def test_a_purchase_holds_at_most_1000_lines(client: TestClient, isolated_store: Path) -> None:
    lines = [{"item_id": "A01", "quantity": 1}] * 1001
    refused_event(client, isolated_store, purchase(items=lines), "items", "at most 1000 items")
    assert client.post("/v1/events", json=purchase("e2", items=lines[:1000])).status_code == 200


# --- timestamps -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timestamp", "problem"),
    [
        ("9999-12-31T00:00:00Z", "after the latest event time accepted"),
        ("9999-12-31", "after the latest event time accepted"),
        ("2026-06-30T12:05:01Z", "after the latest event time accepted"),  # clock + 5 min + 1 s
        ("0001-01-01T00:00:00Z", "before the earliest event time accepted"),
        ("0001-01-01T00:00:00+01:00", "out of range"),
        ("1970-01-01T00:00:00Z", "before the earliest event time accepted"),
        ("1999-12-31T23:59:59Z", "before the earliest event time accepted"),
        (0, "must be ISO 8601 text"),  # epoch 0 as a number
        (1782813600, "must be ISO 8601 text"),
        ("yesterday", "must be an ISO 8601 time"),
    ],
)
def test_timestamps_outside_the_window_are_refused(
    client: TestClient, isolated_store: Path, timestamp: object, problem: str
) -> None:
    refused_event(client, isolated_store, purchase(timestamp=timestamp), "timestamp", problem)


def test_a_refused_timestamp_names_the_setting_to_change(client: TestClient) -> None:
    late = client.post("/v1/events", json=purchase(timestamp="2030-01-01T00:00:00Z")).json()
    assert "NBO_CLOCK_SKEW_SECONDS" in late["rejected"][0]["reason"]
    assert "2026-06-30T12:05:00+00:00" in late["rejected"][0]["reason"]
    early = client.post("/v1/events", json=purchase(timestamp="1990-01-01T00:00:00Z")).json()
    assert "NBO_EARLIEST_EVENT" in early["rejected"][0]["reason"]


@pytest.mark.parametrize(
    "timestamp",
    [
        "2026-06-30T12:05:00Z",  # the clock plus the skew: the last time accepted
        "2026-06-30T14:04:00+02:00",
        "2026-06-30T10:00:00",  # no zone: UTC
        "2026-06-30 10:00:00",
        "2026-06-30T10:00:00.123456Z",
        "2026-06-30",
        "2000-01-01T00:00:00Z",  # the earliest accepted
    ],
)
def test_iso_timestamps_inside_the_window_are_accepted(client: TestClient, timestamp: str) -> None:
    answer = client.post("/v1/events", json=purchase("in", timestamp=timestamp))
    assert answer.status_code == 200 and answer.json()["accepted"] == ["in"], answer.text


def test_the_window_follows_its_settings(models_dir: Path) -> None:
    settings = Settings(
        models_dir=models_dir,
        clock=CLOCK,
        clock_skew_seconds=0,
        earliest_event="1990-01-01T00:00:00Z",
    )
    with TestClient(create_app(settings)) as client:
        old = client.post("/v1/events", json=purchase("old", timestamp="1995-05-05T00:00:00Z"))
        assert old.json()["accepted"] == ["old"]
        now = client.post("/v1/events", json=purchase("now", timestamp=CLOCK))
        assert now.json()["accepted"] == ["now"]
        ahead = client.post("/v1/events", json=purchase("ahead", timestamp="2026-06-30T12:00:01Z"))
        assert ahead.status_code == 422


def test_a_future_purchase_never_reaches_a_profile(client: TestClient) -> None:
    """The probe: a year-9999 purchase made the profile live and suppressed an item."""
    client.post("/v1/events", json=purchase("future", "newbie", timestamp="9999-12-31"))
    offers = client.get("/v1/customers/newbie/offers").json()
    assert offers["profile"] == "none" and offers["suppressed_items"] == 0
    assert client.get("/v1/customers/newbie").json()["known"] is False


# --- ids --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("%00", "U+0000"),
        ("a%00b", "U+0000 at position 1"),
        ("a%0Ab", "U+000A"),
        ("%1B%5B31m", "U+001B"),
        ("%E2%80%AE", "U+202E"),  # right-to-left override
        ("%FF%FE", "not valid UTF-8"),
        ("%20a00", "start or end with a space"),
        # A trailing '/' is refused, not read as the customer "a00/" (ids may hold '/').
        ("a00%2F", "start or end with '/'"),
        ("a00/", "start or end with '/'"),
    ],
)
def test_customer_ids_in_paths_are_checked(
    client: TestClient, isolated_store: Path, path: str, problem: str
) -> None:
    before = snapshot(isolated_store)
    consent = {"personalization": False}
    refused(client.put(f"/v1/customers/{path}/consent", json=consent), 422, "customer_id", problem)
    refused(client.get(f"/v1/customers/{path}/offers"), 422, "customer_id", problem)
    refused(client.get(f"/v1/customers/{path}"), 422, "customer_id", problem)
    refused(client.get(f"/v1/customers/{path}/data"), 422, "customer_id", problem)
    refused(client.delete(f"/v1/customers/{path}"), 422, "customer_id", problem)
    assert snapshot(isolated_store) == before


def test_two_invalid_raw_ids_never_become_one_customer(
    client: TestClient, isolated_store: Path
) -> None:
    """%FF%FE and %FE%FF both decode to U+FFFD U+FFFD: both are refused."""
    for raw in ("%FF%FE", "%FE%FF"):
        answer = client.put(f"/v1/customers/{raw}/consent", json={"personalization": False})
        assert answer.status_code == 422
    assert snapshot(isolated_store)["consent"] == []


def test_item_ids_in_paths_are_checked(client: TestClient) -> None:
    refused(client.get("/v1/items/%00/similar"), 422, "item_id", "U+0000")
    assert client.get("/v1/items/A01/similar").status_code == 200


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("customer_id", "\x00", "U+0000"),
        ("customer_id", "a\nb", "U+000A"),
        ("customer_id", "\ufffd", "not valid UTF-8"),
        ("customer_id", " a00", "start or end with a space"),
        ("customer_id", "a00/", "start or end with '/'"),
        ("customer_id", "", "at least 1 character"),
        ("customer_id", "c" * 257, "at most 256 characters"),
        ("customer_id", 12347, "valid string"),
        ("event_id", "e\x001", "U+0000"),
        ("order_id", "o\r1", "U+000D"),
    ],
)
def test_ids_in_event_bodies_follow_the_same_rule(
    client: TestClient, isolated_store: Path, field: str, value: object, problem: str
) -> None:
    refused_event(client, isolated_store, purchase(**{field: value}), field, problem)


def test_item_ids_in_purchase_lines_follow_the_same_rule(
    client: TestClient, isolated_store: Path
) -> None:
    line = {"item_id": "A0\x001", "quantity": 1}
    refused_event(client, isolated_store, purchase(items=[line]), "items.0.item_id", "U+0000")
    bad_offer = conversion(item_id="A01\u2028")
    refused_event(client, isolated_store, bad_offer, "item_id", "U+2028")


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        # A channel is one of the service's (what the caps count impressions in).
        ("channel", "e" * 65, "'email' or 'app'"),
        ("channel", "email\n", "'email' or 'app'"),
        ("variant", "\u200b", "U+200B"),  # a zero-width space
        ("request_id", "r\x07", "U+0007"),
    ],
)
def test_names_in_offer_events_follow_the_same_rule(
    client: TestClient, isolated_store: Path, field: str, value: str, problem: str
) -> None:
    refused_event(client, isolated_store, conversion(**{field: value}), field, problem)


def test_a_rejection_never_echoes_an_invalid_id(client: TestClient) -> None:
    answer = client.post("/v1/events", json=purchase("e\x00" + "x" * 300)).json()
    assert answer["rejected"][0]["event_id"] is None


# --- strict bodies ----------------------------------------------------------------------


def test_a_reload_takes_true_and_false_only(client: TestClient) -> None:
    """The probe: {"force": "yes"} forced a swap."""
    loaded_at = client.get("/v1/model").json()["loaded_at"]
    for force in ("yes", "true", 1, "1"):
        refused(client.post("/v1/admin/reload", json={"force": force}), 422, "force", "boolean")
    refused(client.post("/v1/admin/reload", json={"forced": True}), 422, "forced", "Extra")
    refused(client.post("/v1/admin/reload", json={"version": 3}), 422, "version", "string")
    assert client.get("/v1/model").json()["loaded_at"] == loaded_at  # nothing swapped
    answer = client.post("/v1/admin/reload", json={"force": True})
    assert answer.status_code == 200 and answer.json()["swapped"] is True


@pytest.mark.parametrize(
    ("body", "field", "problem"),
    [
        ({"personalization": "false"}, "personalization", "boolean"),
        ({"personalization": 0}, "personalization", "boolean"),
        ({"personalization": True, "channels": {"email": "no"}}, "channels.email", "boolean"),
        ({"personalization": True, "channels": ["email"]}, "channels", "dictionary"),
        ({"personalization": True, "marketing": False}, "marketing", "Extra"),
        ({"channels": {"email": False}}, "personalization", "Field required"),
    ],
)
def test_consent_bodies_are_strict(
    client: TestClient, isolated_store: Path, body: dict[str, Any], field: str, problem: str
) -> None:
    before = snapshot(isolated_store)
    refused(client.put("/v1/customers/a00/consent", json=body), 422, field, problem)
    assert snapshot(isolated_store) == before


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"discount": 5}, "discount", "Extra"),
        ({"timestamp": 1782813600.0}, "timestamp", "ISO 8601"),
        ({"order_id": 17}, "order_id", "valid string"),
        ({"items": {"item_id": "A01"}}, "items", "valid list"),
    ],
)
def test_event_bodies_are_strict(
    client: TestClient, isolated_store: Path, change: dict[str, Any], field: str, problem: str
) -> None:
    refused_event(client, isolated_store, purchase(**change), field, problem)


def test_a_line_with_an_unknown_field_is_refused(client: TestClient, isolated_store: Path) -> None:
    line = {"item_id": "A01", "quantity": 1, "colour": "red"}
    refused_event(client, isolated_store, purchase(items=[line]), "items.0.colour", "Extra")


def test_a_batch_with_an_unknown_field_is_refused_whole(
    client: TestClient, isolated_store: Path
) -> None:
    before = snapshot(isolated_store)
    answer = client.post("/v1/events", json={"events": [purchase("e9")], "dry_run": True})
    refused(answer, 422, "dry_run", "unknown field")
    assert snapshot(isolated_store) == before


def test_a_key_written_twice_in_a_body_is_refused_naming_it(
    client: TestClient, isolated_store: Path
) -> None:
    """Duplicate keys were last-wins: ``{"customer_id": "a", ..., "customer_id": "b"}``
    stored the purchase for b."""
    body = (
        b'{"event_id": "dup-1", "type": "purchase", "customer_id": "a00", '
        b'"timestamp": "2026-06-30T10:00:00Z", "customer_id": "a01", '
        b'"items": [{"item_id": "A01", "quantity": 1}]}'
    )
    before = snapshot(isolated_store)
    answer = client.post("/v1/events", content=body, headers={"content-type": "application/json"})
    refused(answer, 422, "body", "duplicate key 'customer_id'")
    assert snapshot(isolated_store) == before
    consent = client.put(
        "/v1/customers/a00/consent",
        content=b'{"personalization": true, "personalization": false}',
        headers={"content-type": "application/json"},
    )
    refused(consent, 422, "body", "duplicate key 'personalization'")


def test_a_compressed_body_is_415_naming_content_encoding(
    client: TestClient, isolated_store: Path
) -> None:
    """A gzip body answered 400 "not readable as JSON (not UTF-8 text ...)"."""
    before = snapshot(isolated_store)
    packed = gzip.compress(json.dumps(purchase("gz-1")).encode())
    headers = {"content-type": "application/json", "content-encoding": "gzip"}
    answer = client.post("/v1/events", content=packed, headers=headers)
    refused(answer, 415, "Content-Encoding", "'gzip' is not accepted: send the body uncompressed")
    assert answer.json()["error"] == "unsupported_media_type"
    assert snapshot(isolated_store) == before
    identity = {"content-type": "application/json", "content-encoding": "identity"}
    plain = json.dumps(purchase("gz-2")).encode()
    assert client.post("/v1/events", content=plain, headers=identity).status_code == 200


def test_a_purchase_dated_inside_the_skew_counts_in_the_profile_at_once(client: TestClient) -> None:
    """A client's clock a minute ahead of ours: the purchase is accepted and suppresses
    its item in the offers, and the profile counts it now (it counted only once the
    service clock reached its time)."""
    ahead = purchase("ahead", "newbie", timestamp="2026-06-30T12:01:00Z")
    assert client.post("/v1/events", json=ahead).json()["accepted"] == ["ahead"]
    profile = client.get("/v1/customers/newbie").json()
    assert profile["known"] is True and profile["frequency"] == 1, profile
    assert profile["last_purchase"].startswith("2026-06-30T12:00:00"), profile
    assert profile["recency_days"] < 0.001, profile
    offers = client.get("/v1/customers/newbie/offers").json()
    assert offers["profile"] != "none" and offers["suppressed_items"] == 1, offers
