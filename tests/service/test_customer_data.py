"""The data export (GET /v1/customers/{id}/data) through the real app: exactly the
customer's events, consent, profile, what each model learned and their assignment;
empty for a stranger, erased after erasure, and without a model; the log names a
pseudonym and counts only."""

from __future__ import annotations

import logging
import shutil
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from nbo.cli import main
from nbo.models.served import load_serving_model
from nbo.service.app import create_app
from nbo.settings import Settings
from nbo.store.sqlite import SQLiteStore
from training.lifecycle import CUSTOMERS_FILE, read_customers

TODAY = "2026-06-30T11:00:00Z"


def erase(client: TestClient, customer_id: str) -> dict:
    answer = client.delete(f"/v1/customers/{customer_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def export(client: TestClient, customer_id: str) -> dict:
    answer = client.get(f"/v1/customers/{customer_id}/data")
    assert answer.status_code == 200, answer.text
    return answer.json()


def post(client: TestClient, events: list[dict]) -> None:
    answer = client.post("/v1/events", json={"events": events})
    assert answer.status_code == 200 and not answer.json()["rejected"], answer.text


def purchase(event_id: str, customer: str, items: list[str]) -> dict:
    return {
        "event_id": event_id,
        "type": "purchase",
        "customer_id": customer,
        "timestamp": TODAY,
        "order_id": f"o-{event_id}",
        "items": [{"item_id": item, "quantity": 2, "price": 3.5} for item in items],
    }


def offer_event(event_id: str, customer: str, kind: str, **extra: object) -> dict:
    return {
        "event_id": event_id,
        "type": kind,
        "customer_id": customer,
        "timestamp": TODAY,
        "item_id": "A01",
        "channel": "email",
        **extra,
    }


def test_the_export_lists_exactly_the_customers_events_and_consent(
    client: TestClient, models_dir: Path
) -> None:
    mine = [
        purchase("p1", "a00", ["A01", "A02"]),
        purchase("p2", "a00", ["A03"]),
        offer_event("i1", "a00", "offer_impression", request_id="r1"),
        offer_event("c1", "a00", "offer_click"),
        offer_event("v1", "a00", "offer_conversion", revenue=12.5),
    ]
    post(client, [*mine, purchase("p3", "b00", ["B01"]), offer_event("i2", "a01", "offer_click")])
    consent = {"personalization": True, "channels": {"app": False}}
    assert client.put("/v1/customers/a00/consent", json=consent).status_code == 200

    body = export(client, "a00")

    assert body["customer_id"] == "a00" and body["erased"] is False and body["erased_at"] is None
    assert datetime.fromisoformat(body["exported_at"]).tzinfo is not None
    assert sorted((e["event_id"], e["type"]) for e in body["events"]) == sorted(
        (e["event_id"], e["type"]) for e in mine
    )
    by_id = {e["event_id"]: e for e in body["events"]}
    # The payload as stored: what was posted (validated, times in UTC).
    assert by_id["p1"]["payload"]["items"] == mine[0]["items"]
    assert by_id["p1"]["payload"]["order_id"] == "o-p1"
    assert by_id["v1"]["payload"]["revenue"] == 12.5
    assert by_id["i1"]["payload"]["request_id"] == "r1"
    assert by_id["p1"]["occurred_at"] == "2026-06-30T11:00:00+00:00"
    assert body["consent"] == client.get("/v1/customers/a00/consent").json()
    assert body["consent"]["stored"] is True and body["consent"]["channels"]["app"] is False
    # The profile is the profile route's answer, not a second computation of it.
    assert body["profile"] == client.get("/v1/customers/a00").json()
    assert body["profile"]["known"] is True and body["profile"]["profiled"] is True

    model = load_serving_model(models_dir)
    assert body["served_model"] == model.version
    [trained] = body["models"]
    row = model.customers.get("a00")
    assert row is not None
    items, _confidence, _last = model.history_of(row)
    assert trained["known"] is True and trained["model_version"] == model.version
    assert [i["item_id"] for i in trained["items"]] == model.items.external(items)
    assert [i["orders"] for i in trained["items"]] == model.counts_of(row).tolist()
    assert all(i["orders"] >= 1 and i["last_purchase"] for i in trained["items"])
    assert body["assignment"] == {
        "model_version": model.version,
        "experiment": None,
        "variant": None,
        "personalized": True,
    }
    assert body["batch_files"] == [] and body["batch_files_unread"] == []


def test_the_export_is_never_cached(client: TestClient) -> None:
    """Everything held on a person: no browser or proxy keeps a copy, as for the
    dashboard's pages."""
    answer = client.get("/v1/customers/a00/data")
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"


def test_an_unknown_customer_gets_an_empty_export_not_a_404(client: TestClient) -> None:
    body = export(client, "never-seen")
    assert body["erased"] is False and body["events"] == []
    assert body["consent"]["stored"] is False and body["consent"]["personalization"] is True
    assert body["profile"]["known"] is False
    assert [m["known"] for m in body["models"]] == [False]
    assert all(m["items"] == [] for m in body["models"])
    assert body["batch_files"] == []


def test_without_personalization_consent_the_export_holds_the_neutral_profile(
    client: TestClient, models_dir: Path
) -> None:
    with_consent = export(client, "a00")["models"][0]
    assert client.put("/v1/customers/a00/consent", json={"personalization": False}).is_success
    body = export(client, "a00")
    assert body["profile"] == client.get("/v1/customers/a00").json()
    assert body["profile"]["profiled"] is False and body["profile"]["churn_risk"] is None
    # Out of every experiment, and answered with popular offers: not personalized.
    assert body["assignment"]["personalized"] is False and body["assignment"]["variant"] is None
    offers = client.get("/v1/customers/a00/offers?k=3").json()
    assert offers["personalized"] is False
    # What the model trained before the withdrawal holds of them is shown, as held and
    # not used: its profile row as in the artifact's customers table, and the history.
    [model] = body["models"]
    assert model["known"] is True and model["used"] is False and model["items"]
    row = (
        read_customers(str(models_dir / model["model_version"] / CUSTOMERS_FILE))
        .set_index("customer_id")
        .loc["a00"]
    )
    held = model["held_profile"]
    assert set(held) == {
        "stage",
        "churn_risk",
        "recency_days",
        "frequency",
        "monetary",
        "best_send_hour",
    }
    assert held["stage"] == row["stage"] and held["frequency"] == row["frequency"]
    assert held["best_send_hour"] == row["best_send_hour"]
    assert held["monetary"] == pytest.approx(row["monetary"])
    # With consent, the same row, used.
    assert with_consent["used"] is True and with_consent["held_profile"] == held


def test_after_erasure_the_export_says_erased_and_holds_nothing(client: TestClient) -> None:
    post(client, [purchase("p1", "a00", ["A01"]), offer_event("i1", "a00", "offer_impression")])
    assert client.put("/v1/customers/a00/consent", json={"personalization": True}).is_success
    receipt = erase(client, "a00")

    body = export(client, "a00")
    assert body["erased"] is True and body["erased_at"] == receipt["erased_at"]
    assert body["events"] == [] and body["consent"] is None and body["profile"] is None
    assert body["models"] == [] and body["assignment"] is None
    assert body["batch_files"] == [] and body["batch_files_unread"] == []
    assert export(client, "a01")["models"][0]["known"] is True  # nobody else affected

    # A returning customer's new events are theirs: exported, the id still erased, and
    # the model's old row stays unknown.
    post(client, [purchase("p9", "a00", ["B01"])])
    back = export(client, "a00")
    assert back["erased"] is True and [e["event_id"] for e in back["events"]] == ["p9"]
    assert back["models"][0]["known"] is False and back["models"][0]["items"] == []
    assert back["profile"]["known"] is True  # from the posted purchase alone


def test_the_export_works_without_a_model(tmp_path: Path, isolated_store: Path) -> None:
    settings = Settings(models_dir=tmp_path / "no-models", require_model=False)
    with TestClient(create_app(settings)) as client:
        post(client, [purchase("p1", "a00", ["A01"])])
        body = export(client, "a00")
        assert client.get("/v1/customers/a00").status_code == 503  # the profile route
    assert body["served_model"] is None and body["profile"] is None
    assert body["models"] == [] and body["assignment"] is None
    assert [e["event_id"] for e in body["events"]] == ["p1"]
    assert body["consent"]["stored"] is False


def test_the_export_logs_the_id_and_counts_only(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    post(client, [purchase("EVT-PRIVATE-1", "log-1", ["ITEM-PRIVATE-2"])])
    caplog.set_level(logging.DEBUG)
    export(client, "log-1")
    # The test client's own log of its URLs (httpx) is not the service's.
    logged = [f"{r.getMessage()} {r.args!r}" for r in caplog.records if r.name != "httpx"]
    pseudonym = client.app.state.pseudonyms.of("log-1")
    assert any(pseudonym in line and "exported" in line for line in logged)
    assert not any("PRIVATE" in line or "log-1" in line for line in logged)


def test_a_customer_erased_by_another_replica_is_unknown_to_every_model_of_the_export(
    experiment_client: TestClient, two_models: tuple[Path, str, str], isolated_store: Path
) -> None:
    """Erased through a replica on the same store, then back with a purchase: the export
    this one answers shows no model's old row, the experiment's model included (only the
    current one, which the profile reads, had forgotten them)."""
    assert all(m["known"] for m in export(experiment_client, "a00")["models"])
    replica = Settings(models_dir=two_models[0], store_url=f"sqlite:///{isolated_store}")
    with TestClient(create_app(replica)) as other:
        erase(other, "a00")
    post(experiment_client, [purchase("p9", "a00", ["B01"])])

    back = export(experiment_client, "a00")

    assert back["erased"] is True and [e["event_id"] for e in back["events"]] == ["p9"]
    assert len(back["models"]) == 2
    assert [(m["known"], m["items"]) for m in back["models"]] == [(False, []), (False, [])]


def test_erasure_and_export_name_the_model_versions_whose_files_hold_the_customer(
    client: TestClient, models_dir: Path
) -> None:
    """A model's files are read-only: after an erasure (and a training without the
    customer) every version trained on them keeps their rows until it is pruned. The
    receipt and the export name those versions, served or not."""
    version = load_serving_model(models_dir).version
    assert export(client, "a00")["model_files"] == [{"model_version": version, "served": True}]
    assert export(client, "never-seen")["model_files"] == []

    receipt = erase(client, "a00")
    assert receipt["model_row_removed"] is True
    assert receipt["model_versions_holding"] == [version]
    body = export(client, "a00")  # erased: nothing else, but the files still hold them
    assert body["models"] == [] and body["model_files"] == [
        {"model_version": version, "served": True}
    ]
    assert erase(client, "never-seen")["model_versions_holding"] == []


def test_the_command_line_erasure_names_versions_not_served(
    models_dir: Path, tmp_path: Path, isolated_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    version = load_serving_model(models_dir).version
    unserved = tmp_path / "models"
    shutil.copytree(models_dir / version, unserved / version)  # no CURRENT: served by none
    SQLiteStore(isolated_store).close()
    assert main(["customers", "erase", "a00", "--models-dir", str(unserved)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == (
        f"nbo customers: the files of 1 model version in {unserved} still hold them "
        f"({version}): no service serves their rows again; they stay until those versions "
        "are pruned (nbo models --prune) once a training without them has replaced them"
    )


def test_erasing_an_id_nbo_never_knew_says_so_and_names_a_near_match(
    client: TestClient, models_dir: Path, isolated_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped id used to be erased in silence ("deleted 0 events", exit 0) while the
    real customer stayed. It is still recorded (an id not trained on yet must stay out of
    training), but the receipt and the command say nobody knew it, with the customer a
    spreadsheet's '.0' would have come from."""
    typo = erase(client, "a00.0")
    assert typo["known"] is False and typo["near_match"] == "a00"
    assert sum(typo["deleted"]["events"].values()) == 0
    nobody = erase(client, "zz-nobody")
    assert nobody["known"] is False and nobody["near_match"] is None
    assert export(client, "a00")["models"][0]["known"] is True  # the real one untouched

    post(client, [purchase("p1", "posted-only", ["A01"])])
    posted = erase(client, "posted-only")  # known to the store alone
    assert posted["known"] is True and posted["near_match"] is None
    real = erase(client, "a00")
    assert real["known"] is True and real["near_match"] is None

    capsys.readouterr()
    assert main(["customers", "erase", "a01.0", "--models-dir", str(models_dir)]) == 0
    captured = capsys.readouterr()
    assert captured.err == (
        "nbo customers: warning: neither the store nor any model knows customer 'a01.0': "
        "nothing of theirs was held (a mistyped id?); the id is on the erased list all the "
        "same, so no later training learns it; did you mean 'a01'? ('a01.0' looks like a "
        "spreadsheet's writing of it; 'a01' is untouched)\n"
    )
    assert main(["customers", "erase", "a01", "--models-dir", str(models_dir)]) == 0
    assert capsys.readouterr().err == ""
