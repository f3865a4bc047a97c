"""Errors answer JSON: an unknown route or method is a JSON 404 or 405, never HTML."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support import assert_json_error

from nbo.service import errors


def test_unknown_route_and_method_are_json(client: TestClient) -> None:
    body = assert_json_error(client.get("/no/such/route"), 404)
    assert body["error"] == "not_found"
    assert "<html" not in client.get("/no/such/route").text.lower()
    assert_json_error(client.post("/v1/customers/a00/offers"), 405)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/events/"),
        ("GET", "/health/live/"),
        ("GET", "/v1/model/"),
        ("POST", "/v1/admin/reload/"),
        ("GET", "/docs/"),
    ],
)
def test_a_trailing_slash_is_an_unknown_route_not_a_redirect(
    client: TestClient, method: str, path: str
) -> None:
    """A path with a trailing slash answered 307 to the path without it, an absolute URL
    built from the Host header (``Host: evil.example`` came back in ``Location``)."""
    answer = client.request(method, path, headers={"Host": "evil.example"}, follow_redirects=False)
    body = assert_json_error(answer, 404)
    assert body["error"] == "not_found" and "location" not in answer.headers


def test_the_dashboard_with_a_slash_leads_to_the_overview_by_its_path_alone(
    client: TestClient,
) -> None:
    """``/dashboard/``, as a person types it, was a redirect built from the Host header,
    then a 404 once slashes stopped redirecting: it leads to the overview, naming only
    the path."""
    answer = client.get("/dashboard/", headers={"Host": "evil.example"}, follow_redirects=False)
    assert answer.status_code == 308
    assert answer.headers["location"] == "/dashboard"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        # Two routes share each of these paths: the 405 named the first one's only.
        ("DELETE", "/v1/customers/12347/consent", "GET, HEAD, PUT"),
        ("POST", "/v1/customers/12347/consent", "GET, HEAD, PUT"),
        ("POST", "/v1/customers/12347", "DELETE, GET, HEAD"),
        ("PUT", "/v1/customers/shop%2F123", "DELETE, GET, HEAD"),
        # HEAD is answered wherever GET is (nbo.service.head), so it is allowed there too.
        ("PUT", "/v1/customers/12347/offers", "GET, HEAD"),
        ("POST", "/health/live", "GET, HEAD"),
        ("POST", "/dashboard", "GET, HEAD"),
        ("POST", "/docs", "GET, HEAD"),
        ("POST", "/dashboard/static/dashboard.css", "GET, HEAD"),
        ("GET", "/v1/events", "POST"),
        ("HEAD", "/v1/events", "POST"),
        ("GET", "/v1/admin/reload", "POST"),
    ],
)
def test_a_405_allows_every_method_the_path_takes(
    client: TestClient, method: str, path: str, allow: str
) -> None:
    """RFC 9110, section 15.5.6: a 405's Allow lists the methods the target resource
    supports, every route's on that path."""
    answer = client.request(method, path)
    assert answer.status_code == 405, answer.text
    assert answer.headers["allow"] == allow
    if method != "HEAD" and "dashboard" not in path and "docs" not in path:
        # The message names the method and those allowed (it said "Method Not Allowed").
        body = answer.json()
        assert body["message"] == f"method {method} not allowed here; this path takes {allow}"
        assert body["details"] == [
            {"field": "method", "problem": f"{method} is not one of {allow}"}
        ]


def test_a_store_error_tells_the_client_neither_path_nor_host(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A 503 store_unavailable gave the client the store's own words: the SQLite file's
    path (disk full) or the PostgreSQL server's host and port. The client gets a generic
    message; the details go to the log only."""
    store = client.app.state.store  # type: ignore[attr-defined]
    sqlite = getattr(store, "_inner", store)
    pages = sqlite._db.execute("PRAGMA page_count").fetchone()[0]
    sqlite._db.execute(f"PRAGMA max_page_count={pages + 2}")
    events = [
        {
            "event_id": f"e{n}-{'x' * 120}",
            "type": "purchase",
            "customer_id": "a00",
            "timestamp": "2026-06-01T10:00:00Z",
            "items": [{"item_id": f"i{n}-{'y' * 120}", "quantity": 1, "price": 2.0}],
        }
        for n in range(200)
    ]
    answer = client.post("/v1/events", json={"events": events})
    assert answer.status_code == 503, answer.text[:500]
    assert answer.json()["error"] == "store_unavailable"
    assert "disk is full" in answer.json()["message"]
    assert str(sqlite.path) not in answer.text and "nbo.db" not in answer.text
    assert str(sqlite.path) in caplog.text


def test_every_refusal_nbo_makes_itself_reads_as_fastapis(client: TestClient) -> None:
    """The refusals nbo builds itself (a HEAD with record=true, an unknown query
    parameter or one given twice, a duplicate body key, an unknown consent channel, a
    request id a delivery cannot take) are each a 422 ``validation_error`` naming the
    field, through one helper (``nbo.service.errors.refused``): no module of the service
    writes FastAPI's error entries by hand any more."""
    offers = "/v1/customers/a00/offers"
    json_type = {"content-type": "application/json"}
    cases = [
        (client.head(f"{offers}?record=true"), None),
        (client.get(f"{offers}?kk=1"), "kk"),
        (client.get(f"{offers}?k=1&k=2"), "k"),
        (
            client.put(
                "/v1/customers/a00/consent",
                content=b'{"personalization": true, "personalization": false}',
                headers=json_type,
            ),
            "body",
        ),
        (
            client.get(f"{offers}?record=true", headers={"X-Request-ID": "order:1"}),
            "X-Request-ID",
        ),
    ]
    for answer, field in cases:
        assert answer.status_code == 422
        if field is not None:  # a HEAD's answer has no body
            body = assert_json_error(answer, 422)
            assert body["error"] == "validation_error"
            assert [d["field"] for d in body["details"]] == [field]
    both = client.put(
        "/v1/customers/a00/consent",
        json={"personalization": True, "channels": {"sms": True, "fax": False}},
    )
    body = assert_json_error(both, 422)
    assert [d["field"] for d in body["details"]] == ["channels.sms", "channels.fax"]
    assert all(d["problem"].startswith("unknown channel") for d in body["details"])
    service = Path(errors.__file__).parent
    by_hand = [
        path.relative_to(service).as_posix()
        for path in service.rglob("*.py")
        if "RequestValidationError(" in path.read_text(encoding="utf-8")
    ]
    assert by_hand == ["errors.py"]
