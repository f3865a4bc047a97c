"""Prometheus metrics at /metrics, through the real app: read back with prometheus-client's
own parser and compared with what the answers said (requests by route template, offers
and suppressions, events, store timings, the model being served)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support import access_lines, app_for, scrape, value

from nbo.offers.ranking import REMOVAL_RULES
from nbo.service.prometheus import ModelCollector, TimedStore

TODAY = "2026-06-30T11:00:00Z"
OFFERS = "/v1/customers/{customer_id}/offers"


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


def test_a_body_over_the_limit_counts_under_the_route_it_was_sent_to(
    models_dir: Path, logs: io.StringIO
) -> None:
    """The body limit refuses before the router runs, and its 413s were all counted as
    ``unmatched``: they name the route the path and method would have reached."""
    big = b"x" * 2000
    json_body = {"content-type": "application/json"}
    with app_for(models_dir, max_body_bytes=1024) as client:
        assert client.post("/v1/events", content=big, headers=json_body).status_code == 413
        chunked = client.post("/v1/events", content=iter([big[:1000], big[1000:]]))
        assert chunked.status_code == 413
        consent = "/v1/customers/obs-9/consent"
        assert client.put(consent, content=big, headers=json_body).status_code == 413
        assert client.post("/v1/nothing", content=big).status_code == 413
        assert client.post("/health/live", content=big).status_code == 413
        samples = scrape(client)
    requests = "nbo_http_requests_total"
    assert value(samples, requests, route="/v1/events", method="POST", status="413") == 2
    consent_route = "/v1/customers/{customer_id}/consent"
    assert value(samples, requests, route=consent_route, method="PUT", status="413") == 1
    # No route at the path: unmatched as before; a route without the method: its route,
    # as the router's 405 would have been counted.
    assert value(samples, requests, route="unmatched", status="413") == 1
    assert value(samples, requests, route="/health/live", method="POST", status="413") == 1
    refused = [line for line in access_lines(logs) if line["status"] == 413]
    assert [line["route"] for line in refused] == [
        "/v1/events",
        "/v1/events",
        consent_route,
        "unmatched",
        "/health/live",
    ]
    assert "customer" in refused[2] and "obs-9" not in json.dumps(refused)


def test_offers_without_reasons_are_counted_by_source_all_the_same(client: TestClient) -> None:
    sources = Counter(offer["reason"]["source"] for offer in offers(client, "a00")["offers"])
    before = scrape(client)
    assert all(o["reason"] is None for o in offers(client, "a00", reasons=False)["offers"])
    after = scrape(client)
    metric = "nbo_offers_served_total"
    for source, count in sources.items():
        got = value(after, metric, source=source, channel="email")
        assert got - value(before, metric, source=source, channel="email") == count
    assert value(after, metric) - value(before, metric) == sum(sources.values()) == 5


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


def test_every_removal_rule_is_a_series_from_the_first_answer_zero_or_not(
    models_dir: Path,
) -> None:
    """A rule that removed nothing still shows, at 0, once an answer has been counted (a
    dashboard's rate of it then starts at 0, not at its first removal); the counts add
    up over answers whatever their zeros."""
    with app_for(models_dir) as client:
        answers = [offers(client, "a00"), offers(client, "b03", k=3)]
        samples = scrape(client)
    metric = "nbo_suppressions_total"
    series = {labels["rule"]: v for name, labels, v in samples if name == metric}
    assert set(series) >= set(REMOVAL_RULES)
    assert any(answers[0]["removed"][rule] == 0 for rule in REMOVAL_RULES)
    for rule in REMOVAL_RULES:
        assert series[rule] == sum(answer["removed"][rule] for answer in answers), rule


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


def test_purchases_of_items_the_model_does_not_know_are_counted_and_a_case_slip_named(
    client: TestClient, logs: io.StringIO
) -> None:
    """A till writing 85123a for the model's 85123A was taken silently, and its purchases
    held back nothing. They are still stored (a purchase is real), but counted, and each
    item that matches a known one only by case is named once in the log."""
    before = scrape(client)
    batch = {
        "events": [
            purchase("slip-p1", "slip-c1", "a01", "slip-o1"),  # the model knows A01
            purchase("slip-p2", "slip-c2", "a01", "slip-o2"),
            purchase("slip-p3", "slip-c3", "NOT-AN-ITEM-9", "slip-o3"),
            purchase("slip-p4", "slip-c4", "A02", "slip-o4"),
        ]
    }
    answer = client.post("/v1/events", json=batch)
    assert answer.status_code == 200 and len(answer.json()["accepted"]) == 4
    again = client.post("/v1/events", json=purchase("slip-p1", "slip-c1", "a01", "slip-o1"))
    assert again.json()["duplicates"] == ["slip-p1"]  # a duplicate is not counted again
    client.post("/v1/events", json=purchase("slip-p5", "slip-c5", "a01", "slip-o5"))
    after = scrape(client)
    unknown = "nbo_events_unknown_items_total"
    assert value(after, unknown, match="case") - value(before, unknown, match="case") == 3
    assert value(after, unknown, match="none") - value(before, unknown, match="none") == 1
    warnings = [
        line
        for line in map(json.loads, logs.getvalue().splitlines())
        if line["level"] == "WARNING" and "posted purchase" in line["message"]
    ]
    assert len(warnings) == 1
    assert "'a01'" in warnings[0]["message"] and "'A01'" in warnings[0]["message"]
    assert "slip-c" not in logs.getvalue()


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


# A parent counts, forks, and both count again, in multiprocess mode, as ``nbo serve``'s
# workers do; the scrape adds up both processes' files.
FORKED_COUNTS = """
import os, sys
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
import nbo.service.prometheus  # noqa: F401  (chooses the value class)
from prometheus_client import CollectorRegistry, Counter, multiprocess
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client import generate_latest
counter = Counter("nbo_test_calls", "calls", registry=CollectorRegistry())
counter.inc()
child = os.fork()
if child == 0:
    counter.inc(10)
    os._exit(0)
os.waitpid(child, 0)
counter.inc(100)
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry, path=sys.argv[1])
total = sum(
    sample.value
    for family in text_string_to_metric_families(generate_latest(registry).decode())
    for sample in family.samples
    if sample.name == "nbo_test_calls_total"
)
files = sorted(name for name in os.listdir(sys.argv[1]))
print(total, os.getpid(), child, *files)
"""


def test_a_forked_worker_counts_in_files_of_its_own(tmp_path: Path) -> None:
    """The process id the metrics read is kept, not asked for on every increment; after a
    fork the child must still write its own file, or the two processes' counts would
    overwrite each other in one."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", FORKED_COUNTS, str(folder)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    total, parent, child, *files = done.stdout.split()
    # After the fork the child's values restart from a file of its own, empty: it holds
    # the child's 10; the parent's file holds its 1 + 100.
    assert float(total) == 111.0
    assert files == sorted([f"counter_{parent}.db", f"counter_{child}.db"])
