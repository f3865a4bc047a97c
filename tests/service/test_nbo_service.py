"""Next-best offers through the real service: stage, churn risk and arbitrated offers.

Planted answers on the churn data (``support.make_churn_purchases``): customers the
published model calls at risk, lapsed, loyal or new get the catalogue's offers for their
stage and never the others; expired offers and offers for another channel never appear;
a lever change in a live catalogue file reorders offers as the formula says; a broken
catalogue file is refused while the old one keeps serving.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from nbo.catalog.holder import CatalogHolder
from nbo.service.app import create_app
from nbo.settings import Settings
from training.pipeline import TrainResult

CLOCK = "2026-07-01T00:00:00Z"  # the day after the churn data ends

CATALOG = """
version: 1
products:
  value: 4.0
offers:
  - id: winback
    kind: incentive
    incentive: percent_off
    amount: 15
    title: 15% off
    value: 30.0
    response_rate: 0.1
    stages: [at_risk, lapsed]
    cap_per_customer: 1
    cap_days: 30
  - id: double-points
    kind: incentive
    incentive: points_multiplier
    amount: 2
    value: 30.0
    response_rate: 0.1
    stages: [loyal]
  - id: welcome
    kind: incentive
    incentive: free_shipping
    value: 30.0
    response_rate: 0.1
    stages: [new]
  - id: app-only
    kind: incentive
    incentive: percent_off
    amount: 5
    value: 30.0
    response_rate: 0.1
    channels: [app]
  - id: expired
    kind: incentive
    incentive: percent_off
    amount: 50
    value: 1000.0
    response_rate: 0.9
    valid_to: 2026-06-01T00:00:00Z
stage_weights:
  at_risk: {incentive: 2.0}
"""


@pytest.fixture(scope="module")
def catalog_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "catalog.yaml"
    path.write_text(textwrap.dedent(CATALOG), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def client(
    churn_trained: TrainResult,
    catalog_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TestClient]:
    assert churn_trained.path is not None
    store = tmp_path_factory.mktemp("store") / "nbo.db"
    settings = Settings(
        models_dir=churn_trained.path.parent,
        clock=CLOCK,
        store_url=f"sqlite:///{store}",
        catalog=catalog_file,
    )
    with TestClient(create_app(settings)) as client:
        # The service's own holder, looking at the file on every call instead of once a
        # second, so the test sees a change at once.
        client.app.state.catalog = CatalogHolder(catalog_file, check_every_s=0.0)
        yield client


@pytest.fixture(scope="module")
def stages(churn_trained: TrainResult) -> pd.DataFrame:
    assert churn_trained.path is not None
    return pd.read_parquet(churn_trained.path / "customers.parquet")


def customers_in(stages: pd.DataFrame, stage: str, n: int = 5) -> list[str]:
    ids = stages.loc[stages["stage"] == stage, "customer_id"].astype(str).tolist()
    assert ids, f"the planted data has no {stage} customer"
    return ids[:n]


def offer_ids(body: dict) -> list[str]:
    return [offer["offer_id"] for offer in body["offers"]]


def test_the_planted_data_has_every_stage(stages: pd.DataFrame) -> None:
    assert {"at_risk", "lapsed", "loyal", "active"} <= set(stages["stage"])


@pytest.mark.parametrize(
    ("stage", "wanted", "never"),
    [
        ("at_risk", "winback", {"double-points", "welcome"}),
        ("lapsed", "winback", {"double-points", "welcome"}),
        ("loyal", "double-points", {"winback", "welcome"}),
        ("active", None, {"winback", "double-points", "welcome"}),
    ],
)
def test_each_stage_gets_its_incentive_and_never_the_others(
    client: TestClient, stages: pd.DataFrame, stage: str, wanted: str | None, never: set[str]
) -> None:
    for customer in customers_in(stages, stage):
        body = client.get(f"/v1/customers/{customer}/offers", params={"k": 5}).json()
        assert body["stage"] == stage
        ids = offer_ids(body)
        if wanted is not None:
            assert wanted in ids
        assert not never & set(ids)
        assert "expired" not in ids and "app-only" not in ids  # email call
        profile = client.get(f"/v1/customers/{customer}").json()
        assert profile["stage"] == stage and profile["churn_risk"] == body["churn_risk"]


def test_at_risk_customers_get_the_reactivation_incentive_first(
    client: TestClient, stages: pd.DataFrame
) -> None:
    """0.1 x 30 x stage weight 2 = 6: above any product (propensity <= 1 x value 4)."""
    for customer in customers_in(stages, "at_risk"):
        body = client.get(f"/v1/customers/{customer}/offers", params={"k": 3}).json()
        first = body["offers"][0]
        assert first["offer_id"] == "winback" and first["kind"] == "incentive"
        assert first["item_id"] is None and first["incentive"] == "percent_off"
        assert first["components"] == {
            "propensity": 0.1,
            "value": 30.0,
            "stage_weight": 2.0,
            "lever": 1.0,
        }
        assert first["priority"] == pytest.approx(6.0)
        assert first["reason"]["source"] == "catalog"


def test_an_unknown_customer_is_new_and_gets_the_welcome_offer(client: TestClient) -> None:
    body = client.get("/v1/customers/never-seen/offers", params={"k": 3}).json()
    assert body["stage"] == "new" and body["churn_risk"] is None
    assert "welcome" in offer_ids(body)
    profile = client.get("/v1/customers/never-seen").json()
    assert profile["known"] is False and profile["stage"] == "new"
    assert 0 <= profile["best_send_time"]["hour_of_week"] < 168


def test_app_offers_appear_on_app_only(client: TestClient, stages: pd.DataFrame) -> None:
    customer = customers_in(stages, "active")[0]
    app = client.get(f"/v1/customers/{customer}/offers", params={"channel": "app"}).json()
    assert "app-only" in offer_ids(app)


def test_products_carry_their_components_and_rank_by_priority(
    client: TestClient, stages: pd.DataFrame
) -> None:
    customer = customers_in(stages, "active")[0]
    body = client.get(f"/v1/customers/{customer}/offers", params={"k": 10}).json()
    products = [o for o in body["offers"] if o["kind"] == "product"]
    assert products
    for offer in products:
        c = offer["components"]
        assert offer["item_id"] and offer["offer_id"] == f"product:{offer['item_id']}"
        assert 0.0 <= c["propensity"] <= 1.0 and c["value"] == 4.0
        assert offer["priority"] == pytest.approx(
            c["propensity"] * c["value"] * c["stage_weight"] * c["lever"]
        )
    priorities = [o["priority"] for o in body["offers"]]
    assert priorities == sorted(priorities, reverse=True)


def test_a_recorded_incentive_respects_its_cap(client: TestClient, stages: pd.DataFrame) -> None:
    customer = customers_in(stages, "lapsed")[-1]
    first = client.get(f"/v1/customers/{customer}/offers", params={"record": "true"}).json()
    assert first["recorded"] and "winback" in offer_ids(first)
    # Shown once, cap 1 in 30 days: gone from the next answer (an app call: the email
    # frequency cap would refuse a second email delivery altogether).
    again = client.get(f"/v1/customers/{customer}/offers", params={"channel": "app"}).json()
    assert "winback" not in offer_ids(again)
    assert again["removed"]["offer_cap"] == 1


def test_a_lever_change_in_the_live_file_reorders_and_a_broken_file_is_refused(
    client: TestClient, stages: pd.DataFrame, catalog_file: Path
) -> None:
    customer = customers_in(stages, "active")[1]

    def products() -> list[dict]:
        body = client.get(f"/v1/customers/{customer}/offers", params={"k": 10}).json()
        return [o for o in body["offers"] if o["kind"] == "product"]

    before = products()
    assert len(before) >= 3
    third = before[2]
    # A lever on the third item that lifts its priority just above the first's.
    lever = round(before[0]["priority"] / third["priority"] * 1.1, 3) + 0.001
    original = catalog_file.read_text(encoding="utf-8")
    try:
        _write(
            catalog_file,
            original.replace(
                "offers:",
                f'items:\n  - item_id: "{third["item_id"]}"\n    lever: {lever}\noffers:',
                1,
            ),
        )
        after = products()
        assert after[0]["item_id"] == third["item_id"]
        assert after[0]["components"]["lever"] == lever
        assert after[0]["priority"] == pytest.approx(third["priority"] * lever)

        _write(catalog_file, original.replace("response_rate: 0.1", "response_rate: 7", 1))
        kept = products()
        assert kept[0]["item_id"] == third["item_id"]  # the last good file still serves
        status = client.get("/v1/catalog").json()
        assert "winback" in status["last_error"] and "response_rate" in status["last_error"]
    finally:
        _write(catalog_file, original)
    assert [o["item_id"] for o in products()] == [o["item_id"] for o in before]


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    stat = path.stat()
    # Whole seconds apart: a change within the file system's time resolution is still seen.
    os.utime(path, (stat.st_atime + 2, stat.st_mtime + 2))


def test_without_personalization_consent_nothing_is_profiled(
    client: TestClient, stages: pd.DataFrame
) -> None:
    customer = customers_in(stages, "at_risk")[-1]
    assert client.get(f"/v1/customers/{customer}").json()["profiled"] is True
    answer = client.put(f"/v1/customers/{customer}/consent", json={"personalization": False})
    assert answer.status_code == 200
    profile = client.get(f"/v1/customers/{customer}").json()
    assert profile["profiled"] is False
    assert profile["stage"] == "active" and profile["churn_risk"] is None
    body = client.get(f"/v1/customers/{customer}/offers").json()
    assert body["personalized"] is False and body["stage"] == "active"
    assert "winback" not in offer_ids(body)  # no stage-targeted incentive from profiling


def test_a_posted_purchase_brings_a_lapsed_customer_back(
    client: TestClient, stages: pd.DataFrame
) -> None:
    customer = customers_in(stages, "lapsed")[0]
    event = {
        "event_id": f"back-{customer}",
        "type": "purchase",
        "customer_id": customer,
        "timestamp": "2026-06-30T18:00:00Z",
        "order_id": f"back-{customer}",
        "items": [{"item_id": "I01", "quantity": 1, "price": 4.0}],
    }
    assert client.post("/v1/events", json=event).status_code == 200
    profile = client.get(f"/v1/customers/{customer}").json()
    assert profile["stage"] != "lapsed" and profile["recency_days"] < 1
    body = client.get(f"/v1/customers/{customer}/offers").json()
    assert body["stage"] == profile["stage"]
    # The win-back offer is for at-risk and lapsed customers only.
    assert ("winback" in offer_ids(body)) == (body["stage"] == "at_risk")
