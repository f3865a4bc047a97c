"""GET /v1/catalog through the real app: what is live, a refused file reported while the
last good one serves, and the default catalogue without a setting."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support import BAD_CATALOG, CLOCK, DEMO_CATALOG, GOOD_CATALOG_2, rewrite, write

from nbo.catalog.loading import load_catalog
from nbo.service.app import create_app
from nbo.settings import Settings


@pytest.fixture
def catalog_file(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_bytes(DEMO_CATALOG.read_bytes())
    return path


@pytest.fixture
def client(models_dir: Path, catalog_file: Path) -> Iterator[TestClient]:
    settings = Settings(models_dir=models_dir, clock="2011-12-09T13:00:00Z", catalog=catalog_file)
    with TestClient(create_app(settings)) as client:
        yield client


def test_get_catalog_shows_what_is_live(client: TestClient, catalog_file: Path) -> None:
    response = client.get("/v1/catalog")
    assert response.status_code == 200
    body = response.json()
    assert body["source"] == str(catalog_file)
    assert body["fingerprint"] == load_catalog(catalog_file).fingerprint
    assert body["last_error"] is None and body["as_of"].startswith("2011-12-09T13:00:00")
    offers = {offer["id"]: offer for offer in body["offers"]}
    assert list(offers) == [
        "christmas-2011",
        "winback-15",
        "loyalty-double-points",
        "welcome-free-delivery",
    ]
    winback = offers["winback-15"]
    assert winback["kind"] == "incentive" and winback["incentive"] == "percent_off"
    assert winback["stages"] == ["at_risk", "lapsed"] and winback["channels"] == ["email", "app"]
    assert winback["value"] == 30.0 and winback["lever"] == 1.0 and winback["live"] is True
    christmas = offers["christmas-2011"]
    assert christmas["category"] == "christmas" and christmas["response_rate"] is None
    assert christmas["valid_to"] == "2011-12-24T00:00:00+00:00" and christmas["live"] is True
    assert body["products"]["value"] is None and body["products"]["lever"] == 1.0
    assert {"item_id": "85123A", "exclude": False, "terms": {"lever": 1.2}} in body["items"]
    assert "22086" in body["categories"]["christmas"]
    assert body["stage_weights"]["lapsed"] == {"incentive": 2.0, "product": 0.8}


def test_get_catalog_reports_a_refused_file_and_keeps_serving(
    client: TestClient, catalog_file: Path
) -> None:
    before = client.get("/v1/catalog").json()
    rewrite(catalog_file, BAD_CATALOG)
    client.app.state.catalog.refresh()
    body = client.get("/v1/catalog").json()
    assert body["fingerprint"] == before["fingerprint"]
    assert len(body["offers"]) == 4
    assert "offer 'two' field 'value'" in body["last_error"]
    rewrite(catalog_file, GOOD_CATALOG_2)
    client.app.state.catalog.refresh()
    body = client.get("/v1/catalog").json()
    assert [offer["id"] for offer in body["offers"]] == ["two"] and body["last_error"] is None


def test_a_refusal_with_several_problems_is_one_line_and_a_list(
    client: TestClient, catalog_file: Path
) -> None:
    """A file with two problems put a line break in ``last_error``, which a client shows
    as it is: it is one line now, and the problems are listed one by one beside it."""
    rewrite(
        catalog_file,
        "version: 1\noffers:\n"
        "  - {id: one, kind: incentive, incentive: free_shipping, value: -5}\n"
        "  - {id: two, kind: incentive, incentive: free_shipping, value: -6}\n",
    )
    client.app.state.catalog.refresh()  # type: ignore[attr-defined]
    body = client.get("/v1/catalog").json()
    problems = body["last_error_problems"]
    assert len(problems) == 2
    assert problems[0].startswith(f"{catalog_file}: offer 'one' field 'value': ")
    assert problems[1].startswith(f"{catalog_file}: offer 'two' field 'value': ")
    assert "\n" not in body["last_error"]
    assert body["last_error"] == (
        f"{catalog_file}: 2 problems: "
        + "; ".join(p.removeprefix(f"{catalog_file}: ") for p in problems)
    )
    reloaded = client.post("/v1/admin/reload").json()["catalog"]
    assert reloaded["last_error"] == body["last_error"]
    assert reloaded["last_error_problems"] == problems
    rewrite(catalog_file, GOOD_CATALOG_2)
    client.app.state.catalog.refresh()  # type: ignore[attr-defined]
    body = client.get("/v1/catalog").json()
    assert body["last_error"] is None and body["last_error_problems"] is None


def test_an_impossible_date_is_refused_while_the_last_good_catalogue_serves(
    client: TestClient, catalog_file: Path
) -> None:
    """``valid_to: 2012-02-30`` was a 500 (PyYAML's ValueError) on the first call, then
    200s on the old catalogue with ``last_error`` null."""
    before = client.get("/v1/catalog").json()
    good = catalog_file.read_text()
    rewrite(catalog_file, good.replace("valid_to: 2011-12-24", "valid_to: 2012-02-30"))
    holder = client.app.state.catalog
    holder.check_every_s = holder._next_check = 0  # look at the file on every call
    assert client.get("/v1/customers/12347/offers", params={"k": 3}).status_code == 200
    assert client.get("/v1/customers/12347/offers", params={"k": 3}).status_code == 200
    body = client.get("/v1/catalog").json()
    assert body["fingerprint"] == before["fingerprint"]
    assert body["last_error"] == (
        f"{catalog_file}: offer 'christmas-2011' field 'valid_to': must be an ISO 8601 time "
        "such as 2026-12-01T00:00:00Z (got '2012-02-30': day is out of range for month)"
    )
    rewrite(catalog_file, good.replace("valid_to: 2011-12-24", "valid_to: 2012-01-01"))
    body = client.get("/v1/catalog").json()
    assert body["last_error"] is None and body["fingerprint"] != before["fingerprint"]
    christmas = next(offer for offer in body["offers"] if offer["id"] == "christmas-2011")
    assert christmas["valid_to"] == "2012-01-01T00:00:00+00:00"


def test_get_catalog_names_items_the_model_does_not_know(
    models_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A mistyped id (a01 for A01) is accepted, since the catalogue is loaded without a
    model, but named in a warning: when the model is loaded, when the catalogue is, and
    in GET /v1/catalog."""
    path = write(
        tmp_path / "catalog.yaml",
        "version: 1\nitems:\n  - {item_id: a01, exclude: true}\ncategories: {c: [A02, Z1]}\n",
    )
    settings = Settings(models_dir=models_dir, clock=CLOCK, catalog=path)
    with caplog.at_level(logging.WARNING), TestClient(create_app(settings)) as client:
        version = client.get("/v1/model").json()["version"]
        body = client.get("/v1/catalog").json()
        assert body["unknown_items"] == {
            "model_version": version,
            "count": 2,
            "first": ["Z1", "a01"],
            "message": f"the catalogue names 2 items model {version} does not know ('Z1', "
            "'a01'): their terms, exclusions and offers apply to nothing until a model "
            "knows them; the model knows 'A01', not 'a01'",
        }
        warned = [r.getMessage() for r in caplog.records if r.name == "nbo.runtime.pairing"]
        assert warned == [body["unknown_items"]["message"]]
        rewrite(path, "version: 1\nitems:\n  - {item_id: A01, exclude: true}\n")
        client.app.state.catalog.refresh()
        assert client.get("/v1/catalog").json()["unknown_items"] is None
        rewrite(path, "version: 1\nitems:\n  - {item_id: Z5}\n")
        client.app.state.catalog.refresh()
        warned = [r.getMessage() for r in caplog.records if r.name == "nbo.runtime.pairing"]
        assert len(warned) == 2 and "('Z5')" in warned[1]


def test_without_a_setting_the_service_serves_the_default_catalogue(models_dir: Path) -> None:
    with TestClient(create_app(Settings(models_dir=models_dir, clock=CLOCK))) as client:
        body = client.get("/v1/catalog").json()
    assert (body["source"], body["fingerprint"], body["offers"]) == (None, "default", [])
    assert body["unknown_items"] is None
