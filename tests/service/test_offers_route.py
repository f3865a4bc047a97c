"""The HTTP service through the real app: contract, suppression, validation, errors,
readiness, refusing bad models at start, and settings.

The model is the planted-answer one from conftest; expectations about purchases are
computed from the planted DataFrame, never read back from the service.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from support import END, GROUP_ITEMS, write

from nbo.core.errors import ArtifactError, ConfigError
from nbo.models.artifacts import CURRENT, MANIFEST
from nbo.service.app import create_app
from nbo.settings import Settings, load_settings
from nbo.store.sqlite import SQLiteStore

CLOCK = "2026-06-30T12:00:00Z"
ALL_ITEMS = sorted(GROUP_ITEMS["a"] + GROUP_ITEMS["b"])


@pytest.fixture(scope="module")
def client(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    store = tmp_path_factory.mktemp("store") / "nbo.db"
    settings = Settings(models_dir=models_dir, clock=CLOCK, store_url=f"sqlite:///{store}")
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def current(models_dir: Path) -> str:
    return (models_dir / CURRENT).read_text(encoding="utf-8").strip()


@pytest.fixture(scope="module")
def manifest(models_dir: Path, current: str) -> dict:
    return json.loads((models_dir / current / MANIFEST).read_text(encoding="utf-8"))


def bought(purchases: pd.DataFrame, customer: str, days: int | None) -> set[str]:
    """Items the customer bought at or after ``END - days`` (ever when None)."""
    mine = purchases[purchases["customer_id"] == customer]
    if days is not None:
        mine = mine[mine["timestamp"] >= END - pd.Timedelta(days=days)]
    return set(mine["item_id"])


def offered(body: dict) -> list[str]:
    return [offer["item_id"] for offer in body["offers"]]


def assert_json_error(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) >= {"error", "message", "details"}
    assert body["message"]
    return body


def test_offers_contract(client: TestClient, current: str) -> None:
    response = client.get("/v1/customers/a00/offers", params={"k": 5})
    assert response.status_code == 200
    body = response.json()
    assert body["customer_id"] == "a00"
    assert body["model_version"] == current
    assert body["channel"] == "email"
    assert body["personalized"] is True
    assert body["suppressed_items"] == 2
    assert [offer["rank"] for offer in body["offers"]] == [1, 2, 3, 4, 5]
    for offer in body["offers"]:
        assert set(offer) >= {"item_id", "score", "rank", "reason"}
        assert offer["item_id"] in ALL_ITEMS
        assert isinstance(offer["score"], float)
        # The two-stage ranker credits each offer to the source that proposed it.
        assert offer["reason"]["source"] in ("cf", "buy_again", "also_bought", "popular")
        assert offer["reason"]["text"]
    scores = [offer["score"] for offer in body["offers"]]
    assert scores == sorted(scores, reverse=True)

    app_channel = client.get("/v1/customers/a00/offers", params={"k": 5, "channel": "app"})
    assert app_channel.status_code == 200
    assert app_channel.json()["channel"] == "app"
    assert offered(app_channel.json()) == offered(body)


def test_offers_for_every_customer(
    client: TestClient, planted_purchases: pd.DataFrame, current: str
) -> None:
    for customer in sorted(planted_purchases["customer_id"].unique()):
        response = client.get(f"/v1/customers/{customer}/offers", params={"k": 10})
        assert response.status_code == 200
        body = response.json()
        assert body["model_version"] == current
        ids = offered(body)
        assert len(ids) == 10
        assert len(set(ids)) == 10
        assert [offer["rank"] for offer in body["offers"]] == list(range(1, 11))
        window = bought(planted_purchases, customer, 30)
        assert body["suppressed_items"] == len(window)
        assert not set(ids) & window, (customer, set(ids) & window)
        cf_scores = [o["score"] for o in body["offers"] if o["reason"]["source"] == "cf"]
        assert cf_scores == sorted(cf_scores, reverse=True)
        # The planted answer: the top 3 come from the customer's own group.
        assert all(item[0].lower() == customer[0] for item in ids[:3]), (customer, ids)
        ever = bought(planted_purchases, customer, None)
        for offer in body["offers"]:
            if offer["reason"]["source"] == "cf":
                assert set(offer["reason"]["because"]) <= ever


def test_offers_never_include_suppressed_items_even_for_large_k(
    client: TestClient, planted_purchases: pd.DataFrame
) -> None:
    response = client.get("/v1/customers/a00/offers", params={"k": 20})
    assert response.status_code == 200
    ids = offered(response.json())
    assert not set(ids) & bought(planted_purchases, "a00", 30)
    assert len(ids) == len(set(ids))


def test_unknown_customer_gets_popular_items(client: TestClient, current: str) -> None:
    response = client.get("/v1/customers/never-seen-42/offers", params={"k": 4})
    assert response.status_code == 200
    body = response.json()
    assert body["customer_id"] == "never-seen-42"
    assert body["model_version"] == current
    assert body["personalized"] is False
    assert body["suppressed_items"] == 0
    assert [offer["rank"] for offer in body["offers"]] == [1, 2, 3, 4]
    for offer in body["offers"]:
        assert offer["reason"]["source"] == "popular"
        assert offer["reason"]["because"] == []
    scores = [offer["score"] for offer in body["offers"]]
    assert scores == sorted(scores, reverse=True)
    # The same list for any unknown customer.
    other = client.get("/v1/customers/someone-else/offers", params={"k": 4}).json()
    assert offered(other) == offered(body)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"k": 0}, "k"),
        ({"k": 101}, "k"),
        ({"k": "abc"}, "k"),
        ({"k": -3}, "k"),
        ({"channel": "sms"}, "channel"),
    ],
)
def test_offers_validation(client: TestClient, query: dict, field: str) -> None:
    body = assert_json_error(client.get("/v1/customers/a00/offers", params=query), 422)
    assert body["error"] == "validation_error"
    assert [detail["field"] for detail in body["details"]] == [field]
    assert field in body["message"]


def test_k_limits_are_inclusive(client: TestClient) -> None:
    assert len(offered(client.get("/v1/customers/a00/offers", params={"k": 1}).json())) == 1
    response = client.get("/v1/customers/never-seen/offers", params={"k": 100})
    assert response.status_code == 200
    # An unknown customer gets the whole (20-item) catalogue, each item once.
    assert sorted(offered(response.json())) == ALL_ITEMS


def test_similar_items_are_from_the_same_group(client: TestClient, current: str) -> None:
    for item in ALL_ITEMS:
        response = client.get(f"/v1/items/{item}/similar", params={"k": 5})
        assert response.status_code == 200
        body = response.json()
        assert body["item_id"] == item
        assert body["model_version"] == current
        similar = [s["item_id"] for s in body["similar"]]
        assert len(similar) == 5
        assert item not in similar
        assert all(s[0] == item[0] for s in similar), (item, similar)
        assert [s["rank"] for s in body["similar"]] == [1, 2, 3, 4, 5]
        scores = [s["score"] for s in body["similar"]]
        assert scores == sorted(scores, reverse=True)


def test_similar_items_never_include_the_item_itself(client: TestClient) -> None:
    for item in ("A00", "B07"):
        body = client.get(f"/v1/items/{item}/similar", params={"k": 100}).json()
        similar = [s["item_id"] for s in body["similar"]]
        assert sorted(similar) == sorted(set(ALL_ITEMS) - {item})


def test_similar_items_of_an_unknown_item(client: TestClient) -> None:
    body = assert_json_error(client.get("/v1/items/NOPE/similar"), 404)
    assert body["error"] == "not_found"
    assert [detail["field"] for detail in body["details"]] == ["item_id"]
    assert "NOPE" in body["message"]


def test_model_endpoint_matches_the_manifest(
    client: TestClient, current: str, manifest: dict
) -> None:
    response = client.get("/v1/model")
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == current == manifest["version"]
    assert body["metrics"] == manifest["metrics"]
    assert body["schema_version"] == manifest["schema_version"]
    assert body["created_at"] == manifest["created_at"]
    assert body["config"] == manifest["config"]
    assert body["quality_gate"] == manifest["quality_gate"]
    assert body["customers"] == 60
    assert body["items"] == 20


def test_health(client: TestClient, current: str) -> None:
    live = client.get("/health/live")
    assert live.status_code == 200
    assert live.json()["status"] == "ok"
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["model_version"] == current


def test_unknown_route_and_method_are_json(client: TestClient) -> None:
    body = assert_json_error(client.get("/no/such/route"), 404)
    assert body["error"] == "not_found"
    assert "<html" not in client.get("/no/such/route").text.lower()
    assert_json_error(client.post("/v1/customers/a00/offers"), 405)


def test_starts_unready_without_a_model_when_allowed(tmp_path: Path) -> None:
    settings = Settings(models_dir=tmp_path / "empty", require_model=False, clock=CLOCK)
    with TestClient(create_app(settings)) as client:
        assert client.get("/health/live").status_code == 200
        ready = client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.headers["content-type"].startswith("application/json")
        assert ready.json()["status"] == "not ready"
        assert ready.json()["reason"]
        body = assert_json_error(client.get("/v1/customers/a00/offers"), 503)
        assert body["error"] == "not_ready"
        assert_json_error(client.get("/v1/items/A00/similar"), 503)
        assert_json_error(client.get("/v1/model"), 503)


def start(models_dir: Path) -> None:
    with TestClient(create_app(Settings(models_dir=models_dir, require_model=True))):
        pass


def test_refuses_to_start_without_a_model(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no model") as caught:
        start(tmp_path)
    assert str(tmp_path) in str(caught.value)


def test_refuses_to_start_with_a_corrupt_file(
    tmp_path: Path, models_dir: Path, current: str
) -> None:
    copy = tmp_path / "models"
    shutil.copytree(models_dir, copy)
    target = copy / current / "item_factors.npy"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"item_factors\.npy is corrupt") as caught:
        start(copy)
    assert current in str(caught.value)
    # The shared fixture is untouched and still serves.
    start(models_dir)


def test_refuses_to_start_with_an_incompatible_schema(
    tmp_path: Path, models_dir: Path, current: str
) -> None:
    copy = tmp_path / "models"
    shutil.copytree(models_dir, copy)
    manifest_path = copy / current / MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["schema_version"] = 999
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ArtifactError, match="schema version 999 is not supported"):
        start(copy)


@pytest.mark.parametrize(
    "value", ["2026-07-04T09:15:00Z", "2026-07-04T11:15:00+02:00", "2026-07-04T09:15:00"]
)
def test_clock_from_the_environment_pins_as_of(
    monkeypatch: pytest.MonkeyPatch, models_dir: Path, value: str
) -> None:
    # A naive clock is taken as UTC; an offset is converted to UTC.
    monkeypatch.setenv("NBO_CLOCK", value)
    settings = load_settings(models_dir=models_dir)
    pinned = datetime(2026, 7, 4, 9, 15, tzinfo=UTC)
    assert settings.now() == pinned
    with TestClient(create_app(settings)) as client:
        for customer in ("a00", "unknown-customer"):
            body = client.get(f"/v1/customers/{customer}/offers").json()
            assert datetime.fromisoformat(body["as_of"]) == pinned


def test_settings_clock_is_the_answer_as_of(client: TestClient) -> None:
    body = client.get("/v1/customers/b05/offers").json()
    assert datetime.fromisoformat(body["as_of"]) == datetime(2026, 6, 30, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("setting", "days"), [("0", 0), ("10", 10), ("30", 30), ("60", 60), ("all", None)]
)
def test_suppression_setting_changes_what_is_suppressed(
    models_dir: Path, planted_purchases: pd.DataFrame, setting: str, days: int | None
) -> None:
    settings = Settings(models_dir=models_dir, clock=CLOCK, suppression_days=setting)
    with TestClient(create_app(settings)) as client:
        for customer in ("a00", "a17", "b03", "b21"):
            window = set() if days == 0 else bought(planted_purchases, customer, days)
            # Ask for exactly what is left, so the answer is every unsuppressed item.
            k = len(ALL_ITEMS) - len(window)
            response = client.get(f"/v1/customers/{customer}/offers", params={"k": k})
            assert response.status_code == 200
            body = response.json()
            assert body["suppressed_items"] == len(window)
            assert set(offered(body)) == set(ALL_ITEMS) - window


def test_suppression_setting_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, models_dir: Path
) -> None:
    monkeypatch.setenv("NBO_SUPPRESSION_DAYS", "all")
    settings = load_settings(models_dir=models_dir, clock=CLOCK)
    assert settings.suppression.days is None
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/customers/a00/offers").json()["suppressed_items"] == 7


@pytest.mark.parametrize("bad", ["abc", "-1", "3.5"])
def test_bad_suppression_setting_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="NBO_SUPPRESSION_DAYS"):
        load_settings(suppression_days=bad)


def test_bad_suppression_setting_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBO_SUPPRESSION_DAYS", "abc")
    with pytest.raises(ConfigError, match="NBO_SUPPRESSION_DAYS"):
        load_settings()


CATEGORY_OFFER = """
version: 1
categories:
  group-a: [A00, A01, A02, A03, A04, A05, A06, A07, A08, A09]
offers:
  - id: a-week
    kind: product
    category: group-a
    lever: 5.0
    cap_per_customer: 1
    cap_days: 30
"""


def test_each_item_of_a_category_offer_is_its_own_offer_in_answers(
    models_dir: Path, tmp_path: Path, isolated_store: Path
) -> None:
    """Two items of one category offer in one answer carry two ids (``a-week:A03``),
    their impressions are the items, and the offer's cap counts each item apart."""
    catalog = write(tmp_path / "catalog.yaml", CATEGORY_OFFER)
    settings = Settings(models_dir=models_dir, clock="2026-06-30T12:00:00Z", catalog=catalog)
    with TestClient(create_app(settings)) as client:
        url = "/v1/customers/a00/offers"
        first = client.get(url, params={"k": 4, "record": True}).json()
        ids = [offer["offer_id"] for offer in first["offers"]]
        assert len(ids) == 4 and len(set(ids)) == 4
        assert all(o["offer_id"] == f"a-week:{o['item_id']}" for o in first["offers"])
        shown = [o["item_id"] for o in first["offers"]]
        # The next answer: each shown item reached the offer's cap of 1; the others not.
        again = client.get(url, params={"k": 4}).json()
        assert again["removed"]["offer_cap"] == 4
        assert not set(shown) & {o["item_id"] for o in again["offers"]}
    store = SQLiteStore(isolated_store)
    try:
        impressions = [e for e in store.events_of("a00") if e["type"] == "offer_impression"]
    finally:
        store.close()
    assert sorted(e["item_id"] for e in impressions) == sorted(shown)


NOW = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)  # CLOCK as a time


@contextmanager
def app_at(models_dir: Path, clock: datetime, **settings: object) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(models_dir=models_dir, clock=clock, **settings))) as c:
        yield c


def deliver(client: TestClient, customer: str, channel: str, k: int = 3) -> dict:
    params = {"k": k, "channel": channel, "record": "true"}
    answer = client.get(f"/v1/customers/{customer}/offers", params=params)
    assert answer.status_code == 200
    return answer.json()


def test_email_cap_holds_for_seven_days_then_lifts(models_dir: Path) -> None:
    with app_at(models_dir, NOW) as client:
        first = deliver(client, "a00", "email")
        assert first["recorded"] is True and len(first["offers"]) == 3
        second = deliver(client, "a00", "email")
        assert second["offers"] == [] and second["suppressed_reason"] == "frequency_cap"
        assert second["removed"] == dict.fromkeys(first["removed"], 0)
        assert set(first["removed"]) == {"just_bought", "fatigue", "ineligible", "offer_cap"}
        assert second["next_allowed_at"] == (NOW + timedelta(days=7)).isoformat()
        # A preview (not recorded) is not a delivery and is not capped.
        preview = client.get("/v1/customers/a00/offers", params={"k": 3}).json()
        assert len(preview["offers"]) == 3 and preview["recorded"] is False
        # Another customer, and another channel, have their own counts.
        assert deliver(client, "a01", "email")["suppressed_reason"] is None
        assert deliver(client, "a00", "app")["suppressed_reason"] is None
    with app_at(models_dir, NOW + timedelta(days=7) - timedelta(seconds=1)) as client:
        assert deliver(client, "a00", "email")["suppressed_reason"] == "frequency_cap"
    with app_at(models_dir, NOW + timedelta(days=7)) as client:
        assert deliver(client, "a00", "email")["recorded"] is True


def test_items_shown_three_times_without_response_rest(models_dir: Path) -> None:
    caps = {"app": {"max_deliveries": 10, "days": 1}}
    with app_at(models_dir, NOW, frequency_caps=caps) as client:
        shown_items = [o["item_id"] for o in deliver(client, "b00", "app")["offers"]]
        for _ in range(2):
            assert [o["item_id"] for o in deliver(client, "b00", "app")["offers"]] == shown_items
        rested = deliver(client, "b00", "app")
        assert not set(shown_items) & {o["item_id"] for o in rested["offers"]}
        assert rested["removed"]["fatigue"] == 3
        # A click brings the item back.
        client.post(
            "/v1/events",
            json={
                "event_id": "click-1",
                "type": "offer_click",
                "customer_id": "b00",
                "item_id": shown_items[0],
                "timestamp": NOW.isoformat(),
            },
        )
        after_click = client.get("/v1/customers/b00/offers", params={"k": 3}).json()
        assert after_click["removed"]["fatigue"] == 2
        assert shown_items[0] in [o["item_id"] for o in after_click["offers"]]


@pytest.mark.parametrize("fatigue", [None])
def test_fatigue_can_be_turned_off(models_dir: Path, fatigue: None) -> None:
    caps = {"app": {"max_deliveries": 10, "days": 1}}
    with app_at(models_dir, NOW, frequency_caps=caps, fatigue=fatigue) as client:
        first = [o["item_id"] for o in deliver(client, "b01", "app")["offers"]]
        for _ in range(3):
            deliver(client, "b01", "app")
        again = deliver(client, "b01", "app")
        assert [o["item_id"] for o in again["offers"]] == first
        assert again["removed"]["fatigue"] == 0
