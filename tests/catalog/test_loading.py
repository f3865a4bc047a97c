"""The offer catalogue: loading and refusing files, eligibility, terms, hot reload, and
the catalogue through the real app and the real ``nbo serve``."""

from __future__ import annotations

import json
import logging
import os
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from support import DATA

from nbo.catalog.holder import CatalogHolder
from nbo.catalog.loading import default_catalog, load_catalog
from nbo.catalog.schema import DEFAULT_FINGERPRINT, FALLBACK_VALUE
from nbo.catalog.terms import Catalog, ProductTerms, resolve_value, resolve_values
from nbo.cli import EXIT_USER_ERROR, main
from nbo.core.errors import CatalogError
from nbo.core.vocabulary import CHANNELS, KIND_INCENTIVE, KIND_PRODUCT, STAGES
from nbo.service.app import create_app
from nbo.service.schemas import Channel
from nbo.settings import Settings, load_settings
from nbo.store.sqlite import SQLiteStore

DEMO = DATA / "catalog.yaml"
SAMPLE = DATA / "online_retail_sample.parquet"
DEMO_NOW = int(datetime(2011, 12, 9, 13, tzinfo=UTC).timestamp())
CLOCK = "2026-06-30T12:00:00Z"
DAY = 86_400


def at(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def catalog_of(tmp_path: Path, text: str, name: str = "catalog.yaml") -> Catalog:
    return load_catalog(write(tmp_path / name, text))


def refusal(tmp_path: Path, text: str, name: str = "catalog.yaml") -> str:
    with pytest.raises(CatalogError) as caught:
        catalog_of(tmp_path, text, name)
    message = str(caught.value)
    assert "\n" not in message
    return message


# A small catalogue with one of each thing, used by the eligibility tests.
SMALL = """\
version: 1
products:
  stages: [new, active, at_risk, lapsed]
  channels: [email, app]
items:
  - item_id: A00
    lever: 1.5
  - item_id: A01
    exclude: true
  - item_id: 22423
    channels: [email]
    cap_per_customer: 3
    cap_days: 45
categories:
  candles: [C1, C2, A01]
offers:
  - id: candles-week
    kind: product
    category: candles
    lever: 2.0
    value: 8.5
    stages: [active, loyal]
    valid_from: 2026-06-01T00:00:00Z
    valid_to: 2026-06-08T00:00:00Z
  - id: c1-feature
    kind: product
    item_id: C1
    lever: 3.0
    valid_from: 2026-06-05T00:00:00
  - id: winback-15
    kind: incentive
    incentive: percent_off
    amount: 15
    title: "15% off"
    value: 12.0
    response_rate: 0.08
    stages: [at_risk, lapsed]
    channels: [email]
    valid_from: 2026-06-01T00:00:00Z
    valid_to: 2026-07-01T00:00:00Z
    cap_per_customer: 2
    cap_days: 30
  - id: loyal-points
    kind: incentive
    incentive: points_multiplier
    amount: 2
    value: 9.0
    stages: [loyal]
stage_weights:
  lapsed: {incentive: 2.0, product: 0.8}
  loyal: {incentive: 1.2}
"""


# --- the demo catalogue -------------------------------------------------------------


def test_the_demo_catalogue_loads_with_an_offer_per_stage() -> None:
    catalog = load_catalog(DEMO)
    assert catalog.source == DEMO and len(catalog.fingerprint) == 64
    incentives = {
        stage: [(o.id, o.incentive) for o in catalog.incentives_for(stage, "email", DEMO_NOW)]
        for stage in STAGES
    }
    assert incentives == {
        "new": [("welcome-free-delivery", "free_shipping")],
        "active": [],
        "at_risk": [("winback-15", "percent_off")],
        "lapsed": [("winback-15", "percent_off")],
        "loyal": [("loyalty-double-points", "points_multiplier")],
    }
    # Products keep the default terms (ranked by propensity), bar the overrides.
    terms = catalog.product_terms("85099B", "active", "email", DEMO_NOW)
    assert terms is not None and terms.value is None and not terms.price_weighted
    assert terms.lever == 1.0 and terms.offer_id == "product:85099B"
    assert catalog.product_terms("85123A", "active", "app", DEMO_NOW).lever == 1.2
    assert catalog.product_terms("22827", "active", "email", DEMO_NOW) is None
    # The Christmas offer is live at the demo clock and over by the new year.
    christmas = catalog.product_terms("22086", "loyal", "app", DEMO_NOW)
    assert christmas.offer_id == "christmas-2011:22086"  # one offer per item of the category
    new_year = at("2012-01-02T00:00:00")
    assert catalog.product_terms("22086", "loyal", "app", new_year).offer_id == "product:22086"
    assert catalog.stage_weight("lapsed", KIND_INCENTIVE) > catalog.stage_weight(
        "lapsed", KIND_PRODUCT
    )
    assert catalog.stage_weight("active", KIND_INCENTIVE) == 1.0
    assert catalog.max_cap_days == 30


def test_the_demo_catalogue_names_real_items_of_the_sample() -> None:
    known = set(pd.read_parquet(SAMPLE, columns=["StockCode"])["StockCode"].astype(str))
    catalog = load_catalog(DEMO)
    named = {item.item_id for item in catalog.document.items}
    named |= {item for items in catalog.categories.values() for item in items}
    assert named and named <= known


def test_incentives_compete_with_products_on_one_money_scale() -> None:
    """Each incentive's expected value (response rate x value) sits within the range of a
    product's (propensity x a ~10 GBP line) rather than swamping it."""
    catalog = load_catalog(DEMO)
    for offer in catalog.offers:
        if offer.kind == KIND_INCENTIVE:
            assert offer.value is not None and 10 <= offer.value <= 60
            assert 0.01 <= offer.response_rate <= 0.2
            assert 0.5 <= offer.response_rate * offer.value <= 5


def test_stage_and_channel_names_match_the_api() -> None:
    assert set(CHANNELS) == {channel.value for channel in Channel}
    assert STAGES == ("new", "active", "at_risk", "lapsed", "loyal")


# --- refusals -----------------------------------------------------------------------

OFFER = "  - {id: winback-15, kind: incentive, incentive: percent_off, amount: 15, value: 12"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"version: 1\noffers:\n{OFFER}, response_rate: 1.5}}\n",
            "catalog.yaml: offer 'winback-15' field 'response_rate': "
            "Input should be less than or equal to 1",
        ),
        (
            f"version: 1\noffers:\n{OFFER}, respons_rate: 0.5}}\n",
            "offer 'winback-15' field 'respons_rate': not a known field",
        ),
        (
            f"version: 1\noffers:\n{OFFER}}}\n{OFFER}}}\n",
            "offer 'winback-15' field 'id': duplicate id",
        ),
        (
            f"version: 1\noffers:\n{OFFER}, stages: [new, lost]}}\n",
            "offer 'winback-15' field 'stages': Input should be 'new', 'active', 'at_risk', "
            "'lapsed' or 'loyal' (got 'lost')",
        ),
        (
            f"version: 1\noffers:\n{OFFER}, channels: [sms]}}\n",
            "offer 'winback-15' field 'channels': Input should be 'email' or 'app' (got 'sms')",
        ),
        (
            "version: 1\noffers:\n  - {id: w, kind: incentive, value: 3}\n",
            "offer 'w' field 'incentive': an incentive needs 'incentive'",
        ),
        (
            "version: 1\noffers:\n  - {id: w, kind: incentive, incentive: free_shipping}\n",
            "offer 'w' field 'value': an incentive needs its value",
        ),
        (
            "version: 1\noffers:\n  - {id: w, kind: incentive, incentive: percent_off, value: 3}\n",
            "offer 'w' field 'amount': percent_off needs amount",
        ),
        (
            f"version: 1\noffers:\n{OFFER}, category: x}}\n",
            "offer 'winback-15' field 'category': only for product offers",
        ),
        (
            "version: 1\noffers:\n  - {id: p, kind: product, lever: 2}\n",
            "offer 'p' field 'item_id': a product offer needs item_id (one item) or category",
        ),
        (
            "version: 1\noffers:\n  - {id: p, kind: product, item_id: X, category: c}\n"
            "categories: {c: [X]}\n",
            "offer 'p' field 'category': give item_id or category, not both",
        ),
        (
            "version: 1\ncategories: {candles: [X]}\n"
            "offers:\n  - {id: p, kind: product, category: candlez}\n",
            "offer 'p' field 'category': 'candlez' is not in categories (known: candles)",
        ),
        (
            "version: 1\noffers:\n  - {id: 'p:1', kind: product, item_id: X}\n",
            "offer 'p:1' field 'id': ':' is reserved",
        ),
        (
            "version: 1\noffers:\n  - {id: p, kind: product, item_id: X, response_rate: 0.1}\n",
            "offer 'p' field 'response_rate': only for incentives",
        ),
        (
            "version: 1\noffers:\n  - {id: p, kind: product, item_id: X, "
            "valid_from: 2026-02-01, valid_to: 2026-01-01}\n",
            "offer 'p' field 'valid_to': must be after valid_from",
        ),
        (
            "version: 1\noffers:\n  - {id: p, kind: product, item_id: X, "
            "valid_from: 2026-02-01, valid_to: 2026-02-01}\n",
            "offer 'p' field 'valid_to': must be after valid_from",
        ),
        (
            "version: 1\noffers:\n  - {id: p, kind: product, item_id: X, value: -1}\n",
            "offer 'p' field 'value': Input should be greater than or equal to 0",
        ),
        (
            "version: 1\noffers:\n  - {id: p, kind: product, item_id: X, lever: -0.5}\n",
            "offer 'p' field 'lever': Input should be greater than or equal to 0",
        ),
        (
            "version: 1\noffers:\n  - {id: 'product:X', kind: product, item_id: X}\n",
            "offer 'product:X' field 'id': ids starting 'product:'",
        ),
        (
            "version: 1\noffers:\n  - {kind: product, item_id: X}\n",
            "offer #1 field 'id': Field required",
        ),
        (
            "version: 1\noffers:\n  - {id: p, kind: produkt, item_id: X}\n",
            "offer 'p' field 'kind': Input should be 'product' or 'incentive' (got 'produkt')",
        ),
        (
            "version: 1\nitems:\n  - {item_id: 85123A, lever: -1}\n",
            "item override '85123A' field 'lever': Input should be greater than or equal to 0",
        ),
        (
            "version: 1\nitems:\n  - {item_id: A}\n  - {item_id: A, lever: 2}\n",
            "item override 'A' field 'item_id': listed twice",
        ),
        (
            "version: 1\nproducts: {margin: -0.1}\n",
            "catalog.yaml: products field 'margin': Input should be greater than or equal to 0",
        ),
        (
            "version: 1\nproducts: {value: .nan}\n",
            "products field 'value': Input should be a finite number",
        ),
        (
            "version: 1\nstage_weights: {lost: {incentive: 2}}\n",
            "stage_weights 'lost': Input should be 'new', 'active'",
        ),
        (
            "version: 1\nstage_weights: {new: {incentiv: 2}}\n",
            "stage_weights 'new' field 'incentiv': not a known field",
        ),
        (
            "version: 1\nstage_weights: {new: {incentive: -2}}\n",
            "stage_weights 'new' field 'incentive': Input should be greater than or equal to 0",
        ),
        ("version: 1\ncategories: {c: 12}\n", "category 'c': Input should be a valid list"),
        ("version: 1\nofers: []\n", "catalog.yaml: field 'ofers': not a known field"),
        ("version: 2\n", "catalog.yaml: field 'version': Input should be 1"),
        ("offers: []\n", "catalog.yaml: field 'version': Field required"),
        ("", "catalog.yaml: the file is empty"),
        ("# only a comment\n", "catalog.yaml: the file is empty"),
        ("- version: 1\n", "catalog.yaml: a catalogue is a mapping of sections"),
        ("version: 1\noffers: [\n", "catalog.yaml: not valid YAML (line 3, column 1)"),
    ],
)
def test_a_bad_catalogue_is_refused_naming_the_offer_and_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert expected in refusal(tmp_path, text)


def test_the_first_problem_is_named_and_the_others_counted(tmp_path: Path) -> None:
    message = refusal(tmp_path, "version: 1\noffers:\n  - {id: w, kind: x, value: -1, lever: y}")
    assert "catalog.yaml: offer 'w' field 'kind': Input should be" in message
    assert message.endswith("(and 2 more problems)")


def test_a_missing_file_or_an_unknown_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="no such file") as caught:
        load_catalog(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in str(caught.value)
    with pytest.raises(CatalogError, match=r"\.yaml, \.yml or \.json"):
        catalog_of(tmp_path, "version: 1\n", name="catalog.txt")


def test_json_has_the_same_schema_and_the_same_messages(tmp_path: Path) -> None:
    document = {
        "version": 1,
        "offers": [
            {
                "id": "welcome",
                "kind": "incentive",
                "incentive": "free_shipping",
                "value": 20,
                "valid_from": "2026-01-01T00:00:00Z",
            }
        ],
    }
    catalog = catalog_of(tmp_path, json.dumps(document), name="catalog.json")
    assert [o.id for o in catalog.incentives_for("new", "app", at("2026-02-01T00:00:00"))] == [
        "welcome"
    ]
    document["offers"][0]["amount"] = 5
    message = refusal(tmp_path, json.dumps(document), name="catalog.json")
    assert "catalog.json: offer 'welcome' field 'amount': free_shipping takes no amount" in message
    assert "not valid JSON (line 1" in refusal(tmp_path, '{"version": 1,}', name="catalog.json")


def test_the_error_names_the_path_as_configured(tmp_path: Path) -> None:
    path = write(tmp_path / "offers.yml", "version: 1\nx: 1\n")
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert str(caught.value) == f"{path}: field 'x': not a known field (a typo?)"
    assert (caught.value.source, caught.value.field) == (str(path), "x")


# --- eligibility and terms ------------------------------------------------------------


def test_incentives_by_stage_and_channel(tmp_path: Path) -> None:
    catalog = catalog_of(tmp_path, SMALL)
    now = at("2026-06-15T00:00:00")
    assert [o.id for o in catalog.incentives_for("lapsed", "email", now)] == ["winback-15"]
    assert [o.id for o in catalog.incentives_for("at_risk", "email", now)] == ["winback-15"]
    assert catalog.incentives_for("lapsed", "app", now) == []  # email only
    assert catalog.incentives_for("active", "email", now) == []
    loyal = catalog.incentives_for("loyal", "app", now)
    assert [o.id for o in loyal] == ["loyal-points"]
    # Unwritten terms take the defaults: every channel, no dates, response rate 0.05.
    assert loyal[0].response_rate == 0.05 and loyal[0].cap_per_customer is None
    winback = catalog.incentives_for("lapsed", "email", now)[0]
    assert (winback.value, winback.response_rate, winback.amount) == (12.0, 0.08, 15)
    assert (winback.cap_per_customer, winback.cap_days, winback.title) == (2, 30, "15% off")


def test_validity_includes_valid_from_and_excludes_valid_to(tmp_path: Path) -> None:
    catalog = catalog_of(tmp_path, SMALL)
    start, end = at("2026-06-01T00:00:00"), at("2026-07-01T00:00:00")

    def live(now_s: int) -> bool:
        return bool(catalog.incentives_for("lapsed", "email", now_s))

    assert [live(start - 1), live(start), live(end - 1), live(end)] == [False, True, True, False]


def test_naive_times_are_utc(tmp_path: Path) -> None:
    catalog = catalog_of(tmp_path, SMALL)
    feature = next(o for o in catalog.offers if o.id == "c1-feature")
    assert feature.valid_from == datetime(2026, 6, 5, tzinfo=UTC)
    dated = catalog_of(
        tmp_path,
        "version: 1\noffers:\n  - {id: d, kind: incentive, incentive: free_shipping, value: 1, "
        "valid_from: 2026-06-05, valid_to: '2026-06-06T02:00:00+02:00'}\n",
    ).offers[0]
    assert dated.valid_from == datetime(2026, 6, 5, tzinfo=UTC)
    assert dated.valid_to == datetime(2026, 6, 6, tzinfo=UTC)


def test_products_follow_their_own_terms_and_overrides(tmp_path: Path) -> None:
    catalog = catalog_of(tmp_path, SMALL)
    now = at("2026-06-15T00:00:00")
    plain = catalog.product_terms("B07", "active", "email", now)
    assert plain == ProductTerms("product:B07", None, False, 1.0, 1.0, None, 30.0)
    # loyal is not among the products' stages: plain items are not offered to loyal customers.
    assert catalog.product_terms("B07", "loyal", "email", now) is None
    # An override changes only what it writes.
    assert catalog.product_terms("A00", "active", "app", now) == ProductTerms(
        "product:A00", None, False, 1.0, 1.5, None, 30.0
    )
    # YAML's number 22423 is the item id "22423"; its override limits it to email.
    cakestand = catalog.product_terms("22423", "new", "email", now)
    assert cakestand is not None and (cakestand.cap_per_customer, cakestand.cap_days) == (3, 45)
    assert catalog.product_terms("22423", "new", "app", now) is None
    # Excluded: never, even when a live category offer covers it.
    assert catalog.product_terms("A01", "active", "email", at("2026-06-02T00:00:00")) is None
    assert catalog.max_cap_days == 45


def test_category_offers_apply_to_their_items_while_live(tmp_path: Path) -> None:
    catalog = catalog_of(tmp_path, SMALL)
    during, after = at("2026-06-02T00:00:00"), at("2026-06-08T00:00:00")
    during_c2 = catalog.product_terms("C2", "active", "email", during)
    assert during_c2 == ProductTerms("candles-week:C2", 8.5, False, 1.0, 2.0, None, 30.0)
    # The offer's own stages: loyal gets the candles offer though plain products skip loyal.
    assert catalog.product_terms("C2", "loyal", "app", during).offer_id == "candles-week:C2"
    # While it runs, the offer's stages and channels decide: lapsed customers are not
    # offered the candles, though plain products include lapsed.
    assert catalog.product_terms("C2", "lapsed", "email", during) is None
    # Over: the item's own terms hold again (it is not dropped; loyal is not among them).
    assert catalog.product_terms("C2", "lapsed", "email", after).offer_id == "product:C2"
    assert catalog.product_terms("C2", "active", "email", after).offer_id == "product:C2"
    assert catalog.product_terms("C2", "loyal", "email", after) is None
    # Not started yet: the same.
    before = at("2026-05-31T23:59:59")
    assert catalog.product_terms("C2", "active", "email", before).offer_id == "product:C2"


def test_an_offer_for_the_item_beats_its_category_offer(tmp_path: Path) -> None:
    catalog = catalog_of(tmp_path, SMALL)
    before, both = at("2026-06-04T00:00:00"), at("2026-06-06T00:00:00")
    assert catalog.product_terms("C1", "active", "email", before).offer_id == "candles-week:C1"
    featured = catalog.product_terms("C1", "active", "email", both)
    # Its unwritten terms are the products' (value null, lever from the offer).
    assert featured == ProductTerms("c1-feature", None, False, 1.0, 3.0, None, 30.0)


def test_stage_weights_default_to_one(tmp_path: Path) -> None:
    catalog = catalog_of(tmp_path, SMALL)
    assert catalog.stage_weight("lapsed", KIND_INCENTIVE) == 2.0
    assert catalog.stage_weight("lapsed", KIND_PRODUCT) == 0.8
    assert catalog.stage_weight("loyal", KIND_INCENTIVE) == 1.2
    assert catalog.stage_weight("loyal", KIND_PRODUCT) == 1.0
    assert catalog.stage_weight("active", KIND_INCENTIVE) == 1.0
    assert default_catalog().stage_weight("new", KIND_PRODUCT) == 1.0


def test_the_default_catalogue_offers_every_item_and_no_incentive() -> None:
    catalog = default_catalog()
    assert (catalog.fingerprint, catalog.source) == (DEFAULT_FINGERPRINT, None)
    assert catalog.max_cap_days == 0
    for stage in STAGES:
        for channel in CHANNELS:
            assert catalog.incentives_for(stage, channel, 0) == []
            terms = catalog.product_terms("X1", stage, channel, 0)
            assert terms == ProductTerms("product:X1", None, False, 1.0, 1.0, None, 30.0)


def terms(**changes: object) -> ProductTerms:
    base = {"offer_id": "product:X", "value": None, "price_weighted": False, "margin": 1.0}
    base |= {"lever": 1.0, "cap_per_customer": None, "cap_days": 30.0}
    return ProductTerms(**(base | changes))


@pytest.mark.parametrize(
    ("changes", "price", "typical", "expected"),
    [
        ({}, 4.0, 10.5, 10.5),  # the model's typical line value
        ({"margin": 0.3}, 4.0, 10.0, 3.0),  # its share the business keeps
        ({"value": 7.0, "margin": 0.3}, 4.0, 10.5, 7.0),  # an explicit value is taken as is
        ({"price_weighted": True, "margin": 0.5}, 4.0, 10.5, 2.0),  # margin x price
        ({"price_weighted": True, "margin": 0.5}, None, 10.0, 5.0),  # no price: line value
        ({"price_weighted": True}, float("nan"), 10.0, 10.0),  # nan price is unknown
        ({"price_weighted": True}, 0.0, 10.0, 10.0),  # so is a zero price
        ({}, None, None, FALLBACK_VALUE),  # nothing known
        ({"margin": 0.5}, None, None, 0.5 * FALLBACK_VALUE),
    ],
)
def test_resolve_value(
    changes: dict[str, object],
    price: float | None,
    typical: float | None,
    expected: float,
) -> None:
    assert resolve_value(terms(**changes), price, typical) == pytest.approx(expected)


# --- the holder: reloading without a restart -----------------------------------------

GOOD = "version: 1\noffers:\n  - {id: one, kind: incentive, incentive: free_shipping, value: 5}\n"
GOOD_2 = "version: 1\noffers:\n  - {id: two, kind: incentive, incentive: free_shipping, value: 6}\n"
BAD = "version: 1\noffers:\n  - {id: two, kind: incentive, incentive: free_shipping, value: -6}\n"


def rewrite(path: Path, text: str) -> None:
    """Write in place and move mtime on, as an editor's save a second later would."""
    before = path.stat().st_mtime_ns
    path.write_text(text, encoding="utf-8")
    later = before + 2_000_000_000
    os.utime(path, ns=(later, later))


def offer_ids(holder: CatalogHolder) -> list[str]:
    return [offer.id for offer in holder.current().offers]


def test_the_holder_reloads_a_changed_file(tmp_path: Path) -> None:
    path = write(tmp_path / "catalog.yaml", GOOD)
    holder = CatalogHolder(path, check_every_s=0)
    first = holder.current()
    assert offer_ids(holder) == ["one"] and holder.current() is first  # unchanged: same object
    rewrite(path, GOOD_2)
    assert offer_ids(holder) == ["two"]
    status = holder.status()
    assert status["fingerprint"] == holder.current().fingerprint != first.fingerprint
    assert (status["source"], status["offers"], status["last_error"]) == (str(path), 1, None)


def test_a_bad_new_file_is_refused_and_the_old_one_serves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "catalog.yaml", GOOD)
    holder = CatalogHolder(path, check_every_s=0)
    good = holder.current()
    rewrite(path, BAD)
    with caplog.at_level(logging.ERROR, logger="nbo.catalog"):
        assert holder.current() is good
        assert holder.current() is good
    assert len(caplog.records) == 1  # logged once, not on every check
    status = holder.status()
    assert status["fingerprint"] == good.fingerprint
    assert status["last_error"].startswith(f"{path}: offer 'two' field 'value': ")
    assert datetime.fromisoformat(status["last_error_at"]).tzinfo is not None
    # A later fixed file is picked up and the error cleared.
    rewrite(path, GOOD_2)
    assert offer_ids(holder) == ["two"]
    assert holder.status()["last_error"] is None


def test_a_deleted_file_keeps_the_catalogue(tmp_path: Path) -> None:
    path = write(tmp_path / "catalog.yaml", GOOD)
    holder = CatalogHolder(path, check_every_s=0)
    path.unlink()
    assert offer_ids(holder) == ["one"]
    assert "the file is gone" in holder.status()["last_error"]
    write(path, GOOD_2)
    assert offer_ids(holder) == ["two"]


def test_a_file_swapped_in_by_rename_is_seen(tmp_path: Path) -> None:
    path = write(tmp_path / "catalog.yaml", GOOD)
    holder = CatalogHolder(path, check_every_s=0)
    fresh = write(tmp_path / "new.yaml", GOOD_2)
    mtime = path.stat().st_mtime_ns
    os.utime(fresh, ns=(mtime, mtime))  # same mtime; a new inode tells it apart
    fresh.replace(path)
    assert offer_ids(holder) == ["two"]


def test_the_holder_looks_at_the_file_at_most_once_per_interval(tmp_path: Path) -> None:
    path = write(tmp_path / "catalog.yaml", GOOD)
    holder = CatalogHolder(path, check_every_s=3600)
    rewrite(path, GOOD_2)
    assert offer_ids(holder) == ["one"]  # not yet looked at
    holder.refresh()
    assert offer_ids(holder) == ["two"]


def test_readers_in_threads_always_see_a_whole_catalogue(tmp_path: Path) -> None:
    path = write(tmp_path / "catalog.yaml", GOOD)
    holder = CatalogHolder(path, check_every_s=0)
    seen: set[tuple[str, ...]] = set()

    def read() -> None:
        for _ in range(200):
            seen.add(tuple(offer.id for offer in holder.current().offers))

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for text in (GOOD_2, BAD, GOOD, GOOD_2):
        rewrite(path, text)
    for thread in threads:
        thread.join()
    assert seen <= {("one",), ("two",)}
    assert offer_ids(holder) == ["two"]


def test_the_holder_refuses_to_start_on_a_missing_or_bad_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="no such file"):
        CatalogHolder(tmp_path / "missing.yaml")
    with pytest.raises(CatalogError, match="offer 'two' field 'value'"):
        CatalogHolder(write(tmp_path / "catalog.yaml", BAD))


def test_without_a_file_the_holder_serves_the_default() -> None:
    holder = CatalogHolder(None, check_every_s=0)
    assert holder.current().fingerprint == DEFAULT_FINGERPRINT
    assert holder.status() | {"loaded_at": None} == {
        "source": None,
        "fingerprint": DEFAULT_FINGERPRINT,
        "loaded_at": None,
        "offers": 0,
        "last_error": None,
        "last_error_at": None,
    }


# --- the setting, the app and the command ---------------------------------------------


def test_the_setting_comes_from_nbo_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().catalog is None
    monkeypatch.setenv("NBO_CATALOG", str(DEMO))
    assert load_settings().catalog == DEMO
    monkeypatch.setenv("NBO_CATALOG", "")
    assert load_settings().catalog is None


@pytest.fixture
def catalog_file(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_bytes(DEMO.read_bytes())
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
    rewrite(catalog_file, BAD)
    client.app.state.catalog.refresh()
    body = client.get("/v1/catalog").json()
    assert body["fingerprint"] == before["fingerprint"]
    assert len(body["offers"]) == 4
    assert "offer 'two' field 'value'" in body["last_error"]
    rewrite(catalog_file, GOOD_2)
    client.app.state.catalog.refresh()
    body = client.get("/v1/catalog").json()
    assert [offer["id"] for offer in body["offers"]] == ["two"] and body["last_error"] is None


def test_without_a_setting_the_service_serves_the_default_catalogue(models_dir: Path) -> None:
    with TestClient(create_app(Settings(models_dir=models_dir, clock=CLOCK))) as client:
        body = client.get("/v1/catalog").json()
    assert (body["source"], body["fingerprint"], body["offers"]) == (None, "default", [])


def test_the_app_refuses_to_start_with_a_bad_catalogue(models_dir: Path, tmp_path: Path) -> None:
    bad = write(tmp_path / "catalog.yaml", BAD)
    with pytest.raises(CatalogError, match="offer 'two' field 'value'"):
        create_app(Settings(models_dir=models_dir, catalog=bad))


@pytest.mark.parametrize("broken", ["missing", "bad"])
def test_serve_refuses_a_broken_catalogue_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
    models_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    broken: str,
) -> None:
    path = tmp_path / "catalog.yaml"
    if broken == "bad":
        write(path, BAD)
    monkeypatch.setenv("NBO_CATALOG", str(path))
    code = main(["serve", "--models-dir", str(models_dir)])
    assert code == EXIT_USER_ERROR
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"nbo serve: error: {path}: ")
    expected = "no such file" if broken == "missing" else "offer 'two' field 'value'"
    assert expected in lines[0]


@pytest.mark.parametrize(
    ("value", "price_weighted", "typical"),
    [(None, True, 4.0), (None, True, None), (None, False, 4.0), (7.5, True, 4.0)],
)
def test_values_of_many_items_are_each_items_value(
    value: float | None, price_weighted: bool, typical: float | None
) -> None:
    terms = ProductTerms("product:x", value, price_weighted, 0.25, 1.0, None, 30.0)
    prices = np.array([2.0, np.nan, 0.0, -1.0, np.inf, 10.0])
    expected = [
        resolve_value(terms, None if not np.isfinite(p) else float(p), typical) for p in prices
    ]
    np.testing.assert_allclose(resolve_values(terms, prices, typical), expected)


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
