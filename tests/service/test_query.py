"""Unknown query parameters (``nbo.service.query``) through the real app: a typo is a
422 naming it and the route's parameters, never a silently different answer."""

from __future__ import annotations

from fastapi.testclient import TestClient
from support import assert_json_error

from nbo.service.query import QueryCheckedRoute

OFFERS = "/v1/customers/a00/offers"
KNOWN = "its parameters: k, channel, record, reasons"


def test_a_misspelt_parameter_is_refused_naming_it_and_the_known_ones(
    client: TestClient,
) -> None:
    body = assert_json_error(client.get(f"{OFFERS}?chanel=app"), 422)
    assert body["details"] == [
        {"field": "chanel", "problem": f"not a parameter of this route ({KNOWN})"}
    ]
    assert body["message"] == f"chanel: not a parameter of this route ({KNOWN})"
    body = assert_json_error(client.get("/v1/items/i1/similar?kk=3"), 422)
    assert (
        body["details"][0]["field"] == "kk" and "its parameters: k, min_buyers)" in body["message"]
    )


def test_a_misspelt_record_records_nothing(client: TestClient) -> None:
    assert_json_error(client.get(f"{OFFERS}?k=3&rcord=true"), 422)
    answer = client.get(f"{OFFERS}?k=3&record=true")
    assert answer.status_code == 200 and answer.json()["recorded"] is True
    events = client.app.state.store.events_of("a00")  # type: ignore[attr-defined]
    requests = {e["request_id"] for e in events if e["type"] == "offer_impression"}
    assert requests == {answer.json()["request_id"]}  # the typo's call recorded nothing


def test_known_parameters_pass_however_they_are_written(client: TestClient) -> None:
    plain = client.get(f"{OFFERS}?k=3&channel=app&reasons=false")
    assert plain.status_code == 200, plain.text
    # Percent-escaped, '+' in a value, a blank value, an empty pair: as Starlette reads them.
    escaped = client.get(f"{OFFERS}?%6B=3&ch%61nnel=app&&reasons=false")
    assert escaped.status_code == 200, escaped.text
    assert escaped.json()["offers"] == plain.json()["offers"]
    assert_json_error(client.get(f"{OFFERS}?k"), 422)  # k without a value: k's own check


def test_a_parameter_given_twice_is_refused_naming_it(client: TestClient) -> None:
    """Every parameter takes one value: the last of two won unseen, so
    ``record=false&record=true`` recorded a delivery and ``k=2&k=50`` answered 50."""
    for query, name in [
        ("record=false&record=true", "record"),
        ("k=2&k=5", "k"),
        ("k=2&%6B=5", "k"),  # however it is written
    ]:
        body = assert_json_error(client.get(f"{OFFERS}?{query}"), 422)
        assert body["details"] == [{"field": name, "problem": "given more than once: send it once"}]
    events = client.app.state.store.events_of("a00")  # type: ignore[attr-defined]
    assert [e for e in events if e["type"] == "offer_impression"] == []
    assert client.get(f"{OFFERS}?k=2&channel=app&reasons=false").status_code == 200


def test_head_answers_as_get_and_probes_take_any(client: TestClient) -> None:
    assert client.head(f"{OFFERS}?chanel=app").status_code == 422
    assert client.head(f"{OFFERS}?channel=app").status_code == 200
    # Monitors add cache busters to probes and scrapes: those ignore any parameter.
    assert client.get("/health/live?_=1712345678").status_code == 200
    assert client.head("/health/ready?nocache=1").status_code == 200
    assert client.get("/metrics?_=1").status_code == 200


def test_a_route_without_query_parameters_refuses_any(client: TestClient) -> None:
    """A write route ran as if the parameter were not there: ``?dry_run=true`` erased
    the customer, ``?version=x`` reloaded CURRENT, ``?dry_run=true`` stored the event."""
    store = client.app.state.store  # type: ignore[attr-defined]
    event = {
        "event_id": "q1",
        "type": "purchase",
        "customer_id": "a00",
        "timestamp": "2026-06-30T11:00:00Z",
        "order_id": "q1",
        "items": [{"item_id": "A01", "quantity": 1, "price": 1.0}],
    }
    body = assert_json_error(client.post("/v1/events?dry_run=true", json=event), 422)
    assert body["details"] == [
        {"field": "dry_run", "problem": "not a parameter of this route (it takes none)"}
    ]
    assert not [e for e in store.events_of("a00") if e.get("event_id") == "q1"]
    body = assert_json_error(client.delete("/v1/customers/a00?dry_run=true"), 422)
    assert body["details"][0]["field"] == "dry_run"
    assert client.get("/v1/customers/a00").status_code == 200
    assert client.get("/v1/customers/a00/offers?k=1").json()["personalized"] is True
    body = assert_json_error(client.post("/v1/admin/reload?version=nope&force=true"), 422)
    assert body["details"][0]["field"] == "version"
    put = client.put("/v1/customers/a00/consent?x=1", json={"personalization": False})
    assert_json_error(put, 422)
    # Read routes other than the probes too: ``?as_of=...`` is not silently ignored.
    assert_json_error(client.get("/v1/customers/a00?as_of=2026-01-01"), 422)
    assert_json_error(client.get("/v1/model?nocache=1"), 422)
    assert_json_error(client.get("/v1/catalog?x=1"), 422)


def test_every_api_route_checks_its_query_and_the_document_is_unchanged(
    client: TestClient,
) -> None:
    routes = client.app.state.api_routes  # type: ignore[attr-defined]
    assert routes and all(isinstance(route, QueryCheckedRoute) for route in routes)
    document = client.get("/openapi.json").json()
    parameters = document["paths"]["/v1/customers/{customer_id}/offers"]["get"]["parameters"]
    assert [p["name"] for p in parameters if p["in"] == "query"] == [
        "k",
        "channel",
        "record",
        "reasons",
    ]


def test_a_boolean_parameter_takes_true_or_false_only(client: TestClient) -> None:
    """``?record=yes`` (or ``1``, ``on``, ``True``) recorded a delivery: FastAPI read any
    of pydantic's lax spellings as true, where a body takes JSON's ``true`` alone. Every
    boolean query parameter of the API now takes ``true`` or ``false`` and refuses the
    rest naming it; nothing is recorded."""
    for value in ["yes", "1", "on", "True", "TRUE", "t", "", "0", "no", "off", "False"]:
        for name in ["record", "reasons"]:
            body = assert_json_error(client.get(f"{OFFERS}?{name}={value}"), 422)
            assert body["details"] == [
                {"field": name, "problem": "must be true or false (lowercase, as in JSON)"}
            ]
    body = assert_json_error(client.get(f"{OFFERS}?record"), 422)  # no value at all
    assert body["details"][0]["field"] == "record"
    events = client.app.state.store.events_of("a00")  # type: ignore[attr-defined]
    assert [e for e in events if e["type"] == "offer_impression"] == []
    # As JSON writes them, however the value is escaped.
    assert client.get(f"{OFFERS}?reasons=false&record=false").status_code == 200
    assert client.get(f"{OFFERS}?reasons=%66alse").json()["offers"][0]["reason"] is None
    assert client.get(f"{OFFERS}?record=true").json()["recorded"] is True


def test_every_boolean_query_parameter_of_the_document_is_strict(client: TestClient) -> None:
    """Whatever route declares one, found from the document: ``yes`` is refused naming it."""
    document = client.get("/openapi.json").json()
    checked = []
    for path, operations in document["paths"].items():
        get = operations.get("get")
        if get is None or ("{" in path and "customer_id" not in path and "item_id" not in path):
            continue
        for parameter in get.get("parameters", []):
            schema = parameter.get("schema", {})
            if parameter["in"] == "query" and schema.get("type") == "boolean":
                url = path.replace("{customer_id}", "a00").replace("{item_id}", "A01")
                body = assert_json_error(client.get(f"{url}?{parameter['name']}=yes"), 422)
                assert body["details"][0]["field"] == parameter["name"]
                checked.append(parameter["name"])
    assert sorted(checked) == ["reasons", "record"]


def test_an_integer_parameter_takes_decimal_digits_only(client: TestClient) -> None:
    """``?k=1.0``, ``k=%203`` (a space) and ``k=1_000`` answered as numbers, read by
    pydantic's lax mode, where a body takes a JSON number alone."""
    problem = "must be a whole number in plain decimal digits, as in JSON"
    for query, name in [
        ("k=1.0", "k"),
        ("k=%203", "k"),
        ("k=+3", "k"),
        ("k=1_0", "k"),
        ("k=", "k"),
        ("k", "k"),
    ]:
        body = assert_json_error(client.get(f"{OFFERS}?{query}"), 422)
        assert body["details"] == [{"field": name, "problem": problem}], query
    body = assert_json_error(client.get("/v1/items/A01/similar?min_buyers=2.0"), 422)
    assert body["details"] == [{"field": "min_buyers", "problem": problem}]
    assert len(client.get(f"{OFFERS}?k=3").json()["offers"]) <= 3
    assert client.get(f"{OFFERS}?k=%33").status_code == 200  # escaped digits are digits
    # The declared bounds still apply after.
    assert assert_json_error(client.get(f"{OFFERS}?k=0"), 422)["details"][0]["field"] == "k"
