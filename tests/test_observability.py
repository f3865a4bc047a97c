"""Observability: Prometheus metrics at /metrics, request ids, JSON logs.

Through the real app (``create_app`` and ``TestClient``): metrics are read back by parsing
the scrape with prometheus-client's own parser, and compared with what the answers said;
logs are captured as the JSON lines the service would write.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bench.servers import running_server
from nbo.core.apikeys import Role, create_key
from nbo.core.errors import ConfigError
from nbo.service.app import create_app
from nbo.service.deps import get_catalog
from nbo.service.logs import (
    FIELD_CHARS,
    LINE_CHARS,
    MESSAGE_CHARS,
    REQUEST_ID,
    JsonFormatter,
    TextFormatter,
)
from nbo.service.prometheus import ModelCollector, TimedStore
from nbo.settings import Settings, load_settings
from nbo.store.sqlite import SQLiteStore

CLOCK = "2026-06-30T12:00:00Z"
TODAY = "2026-06-30T11:00:00Z"
OFFERS = "/v1/customers/{customer_id}/offers"
HEX_ID = re.compile(r"[0-9a-f]{32}")

Sample = tuple[str, dict[str, str], float]


def app_for(models_dir: Path, **settings: object) -> TestClient:
    return TestClient(create_app(Settings(models_dir=models_dir, clock=CLOCK, **settings)))


@pytest.fixture
def client(models_dir: Path) -> Iterator[TestClient]:
    with app_for(models_dir) as client:
        yield client


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """What the ``nbo`` loggers write, as the service's JSON lines. The ``nbo`` logger
    only: the test client's own logger (httpx) logs full URLs, and it is not the
    service."""
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("nbo")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield sink
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def log_lines(sink: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in sink.getvalue().splitlines()]


def access_lines(sink: io.StringIO) -> list[dict]:
    return [line for line in log_lines(sink) if line["logger"] == "nbo.access"]


def scrape(client: TestClient) -> list[Sample]:
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    ]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when none)."""
    return sum(
        v
        for n, have, v in samples
        if n == name and all(have.get(k) == want for k, want in labels.items())
    )


def offers(client: TestClient, customer: str, **params: object) -> dict:
    answer = client.get(f"/v1/customers/{customer}/offers", params={"k": 5, **params})
    assert answer.status_code == 200, answer.text
    return answer.json()


def purchase(event_id: str, customer: str, item: str, order: str) -> dict:
    return {
        "event_id": event_id,
        "type": "purchase",
        "customer_id": customer,
        "timestamp": TODAY,
        "order_id": order,
        "items": [{"item_id": item, "quantity": 1, "price": 2.0}],
    }


def offer_event(event_id: str, customer: str, kind: str) -> dict:
    return {
        "event_id": event_id,
        "type": kind,
        "customer_id": customer,
        "timestamp": TODAY,
        "item_id": "A01",
        "channel": "email",
    }


# --- metrics ----------------------------------------------------------------------------


def test_requests_are_counted_by_route_template_never_by_path(client: TestClient) -> None:
    before = scrape(client)
    customer = "obs-customer-7731"
    offers(client, customer)
    assert client.get(f"/v1/customers/{customer}/offers", params={"k": 0}).status_code == 422
    assert client.get(f"/v1/nothing/{customer}/here").status_code == 404
    posted = client.post("/v1/events", json=purchase("obs-e1", customer, "A01", "obs-o1"))
    assert posted.status_code == 200
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "nbo_http_requests_total"
    assert delta(requests, route=OFFERS, method="GET", status="200") == 1
    assert delta(requests, route=OFFERS, method="GET", status="422") == 1
    assert delta(requests, route="unmatched", method="GET", status="404") == 1
    assert delta(requests, route="/v1/events", method="POST", status="200") == 1
    # The scrape before counts too: the one after is answered after it is rendered.
    assert delta(requests, route="/metrics", method="GET", status="200") == 1
    latency = "nbo_http_request_duration_seconds"
    assert delta(f"{latency}_count", route=OFFERS, method="GET") == 2
    assert delta(f"{latency}_count", route=OFFERS, method="GET", status="200") == 1
    assert delta(f"{latency}_count", route=OFFERS, method="GET", status="422") == 1
    assert delta(f"{latency}_sum", route=OFFERS, method="GET", status="200") > 0
    routes = {labels["route"] for name, labels, _ in after if name == requests}
    assert routes == {OFFERS, "unmatched", "/v1/events", "/metrics"}
    assert customer not in client.get("/metrics").text


def test_offers_served_and_suppressions_match_the_answers(
    client: TestClient, models_dir: Path
) -> None:
    before = scrape(client)
    answers = [
        offers(client, "a00"),
        offers(client, "b03", k=3),
        offers(client, "a05", channel="app"),
        offers(client, "obs-unknown-1", channel="app", k=4),  # cold start: popular
        offers(client, "b07", record=True),  # a delivery: email's cap is one a week
        offers(client, "b07", record=True),  # withheld: frequency_cap
    ]
    consent = client.put(
        "/v1/customers/a09/consent", json={"personalization": True, "channels": {"email": False}}
    )
    assert consent.status_code == 200
    answers.append(offers(client, "a09"))  # withheld: no_channel_consent
    after = scrape(client)

    served = Counter(
        (offer["reason"]["source"], answer["channel"])
        for answer in answers
        for offer in answer["offers"]
    )
    assert sum(served.values()) == 5 + 3 + 5 + 4 + 5
    assert {source for source, _ in served} >= {"popular"}
    for (source, channel), count in served.items():
        metric = "nbo_offers_served_total"
        got = value(after, metric, source=source, channel=channel)
        assert got - value(before, metric, source=source, channel=channel) == count
    assert value(after, "nbo_offers_served_total") - value(
        before, "nbo_offers_served_total"
    ) == sum(served.values())

    removed: Counter[str] = Counter()
    for answer in answers:
        removed.update(answer["removed"])
        if answer["suppressed_reason"] is not None:
            removed[answer["suppressed_reason"]] += 1
    assert removed["frequency_cap"] == 1 and removed["no_channel_consent"] == 1
    assert removed["just_bought"] > 0
    for rule, count in removed.items():
        metric = "nbo_suppressions_total"
        assert value(after, metric, rule=rule) - value(before, metric, rule=rule) == count, rule


def test_events_ingested_by_type_and_outcome(client: TestClient) -> None:
    before = scrape(client)
    batch = {
        "events": [
            purchase("obs-p1", "a01", "A01", "obs-o1"),
            purchase("obs-p2", "a02", "A02", "obs-o2"),
            offer_event("obs-i1", "a01", "offer_impression"),
            offer_event("obs-c1", "a01", "offer_click"),
            {"event_id": "obs-bad", "type": "purchase", "customer_id": "a01"},  # no items
        ]
    }
    answer = client.post("/v1/events", json=batch)
    assert answer.status_code == 200
    assert len(answer.json()["accepted"]) == 4 and len(answer.json()["rejected"]) == 1
    again = client.post("/v1/events", json=purchase("obs-p1", "a01", "A01", "obs-o1"))
    assert again.json()["duplicates"] == ["obs-p1"]
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    ingested = "nbo_events_ingested_total"
    assert delta(ingested, type="purchase", outcome="accepted") == 2
    assert delta(ingested, type="offer_impression", outcome="accepted") == 1
    assert delta(ingested, type="offer_click", outcome="accepted") == 1
    assert delta(ingested, type="offer_conversion") == 0
    assert delta(ingested, type="purchase", outcome="duplicate") == 1
    assert delta(ingested) == 5
    assert delta("nbo_events_rejected_total") == 1
    # Each POST wrote to the store once, and was timed.
    assert delta("nbo_store_seconds_count", operation="add_events") == 2


def test_store_reads_of_an_offers_call_are_timed(client: TestClient) -> None:
    before = scrape(client)
    offers(client, "a00")
    after = scrape(client)
    timed = {
        labels["operation"]
        for name, labels, v in after
        if name == "nbo_store_seconds_count" and v > value(before, name, **labels)
    }
    assert timed == {"erased_among", "consents_of", "contacts_of_many", "purchases_of_many"}
    assert isinstance(client.app.state.store, TimedStore)  # type: ignore[attr-defined]


def test_model_metrics_name_the_serving_version(client: TestClient) -> None:
    model = client.get("/v1/model").json()
    samples = scrape(client)
    info = [(labels, v) for name, labels, v in samples if name == "nbo_model_info"]
    assert info == [({"version": model["version"], "role": "current"}, 1.0)]
    loaded_at = client.app.state.models.model.loaded_at  # type: ignore[attr-defined]
    assert value(samples, "nbo_model_loaded_timestamp_seconds") == pytest.approx(loaded_at)
    assert value(samples, "nbo_model_load_seconds") > 0


def test_model_info_names_the_experiment_models_once() -> None:
    """The collector reads whatever the holder serves: here a current model and two
    experiment variants, one of which uses the current version itself."""
    current, other = (
        SimpleNamespace(version="v-cur", loaded_at=100.0),
        SimpleNamespace(version="v-exp", loaded_at=50.0),
    )
    serving = SimpleNamespace(current=current, models=lambda: [current, other, current])
    holder = SimpleNamespace(serving=serving, load_seconds=0.25)
    registry = CollectorRegistry()
    registry.register(ModelCollector(holder))  # type: ignore[arg-type]
    samples = [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    ]
    assert sorted(samples, key=lambda s: (s[0], sorted(s[1].items()))) == [
        ("nbo_model_info", {"version": "v-cur", "role": "current"}, 1.0),
        ("nbo_model_info", {"version": "v-exp", "role": "experiment"}, 1.0),
        ("nbo_model_load_seconds", {}, 0.25),
        ("nbo_model_loaded_timestamp_seconds", {}, 100.0),
    ]


def test_metrics_answer_without_a_model(tmp_path: Path) -> None:
    with app_for(tmp_path / "no-models", require_model=False) as client:
        assert client.get("/health/ready").status_code == 503
        samples = scrape(client)
    names = {name for name, _, _ in samples}
    assert "nbo_model_info" not in names and "nbo_model_load_seconds" not in names
    ready = value(samples, "nbo_http_requests_total", route="/health/ready", status="503")
    assert ready == 1


def test_metrics_are_not_in_the_openapi_schema(client: TestClient) -> None:
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_an_unknown_method_is_one_label(client: TestClient) -> None:
    assert client.request("BREW", "/v1/model").status_code == 405
    samples = scrape(client)
    methods = {labels["method"] for name, labels, _ in samples if name.startswith("nbo_http")}
    assert "BREW" not in methods and "other" in methods


def test_metrics_off(models_dir: Path, logs: io.StringIO) -> None:
    with app_for(models_dir, metrics=False) as client:
        answer = client.get("/metrics")
        assert answer.status_code == 404
        assert answer.json()["error"] == "not_found" and "NBO_METRICS" in answer.json()["message"]
        offers(client, "a00")
        assert client.app.state.metrics.registry is None  # type: ignore[attr-defined]
        assert not isinstance(client.app.state.store, TimedStore)  # type: ignore[attr-defined]
        # Request ids and the access log stay.
        assert client.get("/health/live", headers={"X-Request-ID": "off-1"}).headers[
            "x-request-id"
        ] == ("off-1")
    assert [line["request_id"] for line in access_lines(logs)][-1] == "off-1"


# --- request ids ------------------------------------------------------------------------


def test_request_id_is_echoed_when_sane(client: TestClient) -> None:
    sent = "Abc.DEF_123-xyz"
    answer = client.get("/v1/customers/a00/offers", headers={"X-Request-ID": sent})
    assert answer.headers["x-request-id"] == sent
    assert answer.json()["request_id"] == sent
    longest = "r" * 128
    assert client.get("/health/live", headers={"X-Request-ID": longest}).headers[
        "x-request-id"
    ] == (longest)


@pytest.mark.parametrize(
    "sent",
    ["", "has space", "r" * 129, "semi;colon", "new\\nline", 'quote"d', "ünïcode", "a/b"],
)
def test_an_insane_request_id_is_replaced(client: TestClient, sent: str) -> None:
    answer = client.get("/health/live", headers={"X-Request-ID": sent.encode()})
    assert HEX_ID.fullmatch(answer.headers["x-request-id"])


def test_request_id_is_generated_when_missing(client: TestClient) -> None:
    first = client.get("/v1/customers/a00/offers")
    second = client.get("/v1/customers/a00/offers")
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(HEX_ID.fullmatch(i) for i in ids) and ids[0] != ids[1]
    assert [first.json()["request_id"], second.json()["request_id"]] == ids


def test_error_responses_carry_the_request_id(client: TestClient, tmp_path: Path) -> None:
    for path, status in [
        ("/v1/nothing", 404),
        ("/v1/customers/a00/offers?k=0", 422),
        ("/v1/items/NOT-AN-ITEM/similar", 404),
    ]:
        answer = client.get(path, headers={"X-Request-ID": f"err-{status}"})
        assert answer.status_code == status
        assert answer.headers["x-request-id"] == f"err-{status}"
    with app_for(tmp_path / "none", require_model=False) as unready:
        answer = unready.get("/v1/customers/a00/offers", headers={"X-Request-ID": "err-503"})
        assert answer.status_code == 503 and answer.headers["x-request-id"] == "err-503"


def test_an_unexpected_error_answers_json_with_the_request_id(
    models_dir: Path, logs: io.StringIO
) -> None:
    def broken() -> None:
        raise RuntimeError("a bug")

    app = create_app(Settings(models_dir=models_dir, clock=CLOCK))
    app.dependency_overrides[get_catalog] = broken
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.get("/v1/customers/a00/offers", headers={"X-Request-ID": "boom-1"})
        assert answer.status_code == 500 and answer.json()["error"] == "internal_error"
        assert answer.headers["x-request-id"] == "boom-1"
        samples = scrape(client)
    assert value(samples, "nbo_http_requests_total", route=OFFERS, status="500") == 1
    lines = [line for line in log_lines(logs) if line.get("request_id") == "boom-1"]
    error = next(line for line in lines if line["level"] == "ERROR")
    assert "RuntimeError: a bug" in error["exception"]  # the traceback, in one JSON field
    assert [line["status"] for line in lines if line["logger"] == "nbo.access"] == [500]


def test_recorded_impressions_carry_the_clients_request_id(
    client: TestClient, isolated_store: Path
) -> None:
    # One request id for two customers: both deliveries are recorded in full.
    for customer in ("a00", "b00"):
        answer = client.get(
            f"/v1/customers/{customer}/offers",
            params={"k": 3, "record": True},
            headers={"X-Request-ID": "campaign-42"},
        )
        assert answer.json()["recorded"] is True and answer.json()["request_id"] == "campaign-42"
    store = SQLiteStore(isolated_store)
    try:
        for customer in ("a00", "b00"):
            shown = [e for e in store.events_of(customer) if e["type"] == "offer_impression"]
            assert len(shown) == 3
            assert {e["request_id"] for e in shown} == {"campaign-42"}
    finally:
        store.close()


# --- logs -------------------------------------------------------------------------------


def test_one_json_access_line_per_request(client: TestClient, logs: io.StringIO) -> None:
    client.get("/v1/customers/a00/offers", params={"k": 2}, headers={"X-Request-ID": "log-1"})
    client.get("/v1/customers/a00/offers", params={"k": 0}, headers={"X-Request-ID": "log-2"})
    client.get("/v1/items/A01/similar", headers={"X-Request-ID": "log-3"})
    client.get("/no/such/route", headers={"X-Request-ID": "log-4"})
    lines = access_lines(logs)
    assert [line["request_id"] for line in lines] == ["log-1", "log-2", "log-3", "log-4"]
    first = lines[0]
    assert first["level"] == "INFO" and first["time"].endswith("+00:00")
    assert {k: first[k] for k in ("method", "route", "status", "customer")} == {
        "method": "GET",
        "route": OFFERS,
        "status": 200,
        "customer": client.app.state.pseudonyms.of("a00"),  # never the id itself
    }
    assert "a00" not in logs.getvalue()
    assert isinstance(first["duration_ms"], float) and first["duration_ms"] > 0
    assert lines[1]["status"] == 422
    assert "customer" not in lines[2] and lines[2]["route"] == "/v1/items/{item_id}/similar"
    assert lines[3]["route"] == "unmatched" and "/no/such/route" not in json.dumps(lines[3])


def test_the_api_documentation_is_labelled_by_its_path(
    client: TestClient, logs: io.StringIO
) -> None:
    """/docs, /redoc and /openapi.json leave no route in the scope (FastAPI serves them
    outside its API routes): labelled by their fixed path, not as unmatched."""
    paths = ["/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"]
    for path in paths:
        assert client.get(path).status_code == 200
    assert [line["route"] for line in access_lines(logs)] == paths
    samples = scrape(client)
    for path in paths:
        assert value(samples, "nbo_http_requests_total", route=path, method="GET", status="200")
    assert not value(
        samples, "nbo_http_requests_total", route="unmatched", method="GET", status="200"
    )


def test_log_lines_hold_no_body_query_or_headers(client: TestClient, logs: io.StringIO) -> None:
    secret_item, secret_order = "ZZ-UNMISTAKABLE-ITEM-77", "ORDER-SECRET-991"
    headers = {"X-Request-ID": "quiet-1", "Authorization": "Bearer KEY-SECRET-123"}
    posted = client.post(
        "/v1/events",
        json=purchase("obs-secret-e1", "log-customer-5", secret_item, secret_order),
        headers=headers,
    )
    assert posted.status_code == 200
    bad = client.post("/v1/events", json={"type": "purchase", "items": [secret_item]})
    assert bad.status_code == 422
    client.get(
        "/v1/customers/log-customer-5/offers",
        params={"k": 3, "channel": "app", "record": True},
        headers=headers,
    )
    consent = {"personalization": False, "channels": {"email": False}}
    client.put("/v1/customers/log-customer-5/consent", json=consent, headers=headers)
    text = logs.getvalue()
    assert text.count('"logger": "nbo.access"') == 4  # logs were captured
    for secret in (secret_item, secret_order, "KEY-SECRET-123", "Bearer", "record=", "k=3"):
        assert secret not in text
    # A line a (thread-pool) route logs itself carries the request id too.
    consent_lines = [line for line in log_lines(logs) if "consent of customer" in line["message"]]
    assert [line["request_id"] for line in consent_lines] == ["quiet-1"]


def test_access_log_off(models_dir: Path, logs: io.StringIO) -> None:
    with app_for(models_dir, access_log=False) as client:
        offers(client, "a00")
        samples = scrape(client)
    assert access_lines(logs) == []
    assert value(samples, "nbo_http_requests_total", route=OFFERS) == 1  # metrics still on


def test_json_formatter_renders_extras_and_tracebacks_in_one_line() -> None:
    logger = logging.getLogger("nbo.test")
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logger.makeRecord(
            "nbo.test", logging.ERROR, __file__, 1, "failed %s", ("x",), sys.exc_info()
        )
    record.__dict__["rows"] = 3
    token = REQUEST_ID.set("ctx-1")
    try:
        line = JsonFormatter().format(record)
        text = TextFormatter().format(record)
    finally:
        REQUEST_ID.reset(token)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "failed x" and parsed["rows"] == 3
    assert parsed["request_id"] == "ctx-1" and parsed["logger"] == "nbo.test"
    assert "ValueError: bad\nthing" in parsed["exception"]
    assert text.splitlines()[0].endswith("ERROR nbo.test [ctx-1] failed x")
    outside = json.loads(JsonFormatter().format(logging.makeLogRecord({"msg": "start"})))
    assert "request_id" not in outside


def test_a_huge_customer_id_never_makes_a_huge_log_line(
    models_dir: Path, logs: io.StringIO
) -> None:
    """The probe: an unauthenticated GET /v1/customers/<100 kB id>/offers wrote a 100 kB
    access line. The line names the customer by a pseudonym of fixed length. (60 kB here:
    the test client refuses URLs over 64 kB.)"""
    key, entry = create_key(Role.read)
    huge = "x" * 60_000
    with app_for(models_dir, api_keys=[entry]) as client:
        assert client.get(f"/v1/customers/{huge}/offers").status_code == 401
        too_long = client.get(f"/v1/customers/{huge}/offers", headers={"X-API-Key": key})
        assert too_long.status_code == 422
        pseudonym = client.app.state.pseudonyms.of(huge)
    lines = logs.getvalue().splitlines()
    assert lines and max(len(line) for line in lines) < 1_000
    assert huge[:300] not in logs.getvalue()
    assert [line["customer"] for line in access_lines(logs)] == [pseudonym, pseudonym]


def test_what_a_log_line_may_carry_is_capped() -> None:
    """Each field, the message, a traceback and the whole line have a ceiling, in both
    formats, whatever the code logs."""
    record = logging.makeLogRecord(
        {"name": "nbo.test", "msg": "m" * 50_000, "levelname": "INFO", "note": "n" * 50_000}
    )
    line = json.loads(JsonFormatter().format(record))
    assert len(line["message"]) < MESSAGE_CHARS + 50 and line["message"].endswith("characters]")
    assert len(line["note"]) < FIELD_CHARS + 50 and "49000 more characters" in line["note"]
    assert len(TextFormatter().format(record)) < MESSAGE_CHARS + 200
    crowded = logging.makeLogRecord(
        {"name": "nbo.test", "msg": "many", **{f"field{n}": "v" * 5_000 for n in range(100)}}
    )
    text = JsonFormatter().format(crowded)
    assert len(text) <= LINE_CHARS
    kept = json.loads(text)
    assert kept["message"] == "many" and "field0" in kept["truncated"]
    assert "field0" not in kept


def test_a_bad_log_format_refuses_the_start() -> None:
    with pytest.raises(ConfigError, match="NBO_LOG_FORMAT"):
        load_settings(log_format="xml")


def test_serve_writes_json_lines_only(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``nbo serve`` for real: uvicorn's own lines are JSON too, and uvicorn writes no
    access line of its own (the middleware's is the one)."""
    monkeypatch.delenv("NBO_LOG_FORMAT", raising=False)  # serve's default format
    settings = {"NBO_CLOCK": CLOCK, "NBO_LOG_LEVEL": "info"}
    log = tmp_path / "server.log"
    with running_server(models_dir, tmp_path / "store.db", log, settings) as server:
        answer = httpx.get(
            f"{server.base}/v1/customers/a00/offers?k=2", headers={"X-Request-ID": "served-1"}
        )
        assert answer.headers["x-request-id"] == "served-1"
        assert "nbo_http_requests_total" in httpx.get(f"{server.base}/metrics").text
        server.terminate()
    err = log.read_bytes()
    lines = [json.loads(line) for line in err.decode().splitlines() if line.strip()]
    loggers = {line["logger"] for line in lines}
    assert "uvicorn.error" in loggers and "uvicorn.access" not in loggers
    served = [line for line in lines if line.get("request_id") == "served-1"]
    assert [(line["logger"], line["route"]) for line in served] == [("nbo.access", OFFERS)]
    assert "?k=2" not in err.decode()
