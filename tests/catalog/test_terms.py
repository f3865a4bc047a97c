"""The catalogue's terms: which incentives a stage and channel get and when, each
product's terms and overrides, category offers, stage weights, and an offer's value."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from support import at, write

from nbo.catalog.loading import default_catalog, load_catalog
from nbo.catalog.schema import DEFAULT_FINGERPRINT, FALLBACK_VALUE
from nbo.catalog.terms import Catalog, ProductTerms, resolve_value, resolve_values
from nbo.core.vocabulary import CHANNELS, KIND_INCENTIVE, KIND_PRODUCT, STAGES


def catalog_of(tmp_path: Path, text: str, name: str = "catalog.yaml") -> Catalog:
    return load_catalog(write(tmp_path / name, text))


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


def test_an_offer_id_names_the_item_its_impressions_store(tmp_path: Path) -> None:
    """A click posted with an answer's ``offer_id`` is matched to the impressions, which
    store the item id (an incentive's own id)."""
    catalog = catalog_of(tmp_path, SMALL)
    assert catalog.item_of_offer("product:22423") == "22423"
    assert catalog.item_of_offer("candles-week:C2") == "C2"
    assert catalog.item_of_offer("c1-feature") == "C1"
    # Item ids and incentives' ids stay as they are, and so does what names no offer.
    for same in ("22423", "winback-15", "other-offer:C2", "product:", "C1:x"):
        assert catalog.item_of_offer(same) == same
    assert default_catalog().item_of_offer("product:85123A") == "85123A"


def test_of_two_category_offers_the_first_in_the_file_applies(tmp_path: Path) -> None:
    """The documented order when offers overlap: an offer naming the item, then category
    offers, each in file order; the first live one sets the terms, whatever its lever
    or value (no maximum is taken); an excluded item is never offered."""
    text = """\
version: 1
items:
  - {item_id: X, exclude: true}
  - {item_id: B, lever: 5}
categories:
  first: [A, B, X]
  second: [A, B]
offers:
  - {id: one, kind: product, category: first, lever: 1.1, valid_to: 2026-06-10}
  - {id: two, kind: product, category: second, lever: 9.0}
"""
    catalog = catalog_of(tmp_path, text)
    during, after = at("2026-06-05T00:00:00"), at("2026-06-10T00:00:00")
    assert catalog.product_terms("A", "active", "email", during).offer_id == "one:A"
    assert catalog.product_terms("A", "active", "email", after).offer_id == "two:A"
    # An override is the item's own terms: a live offer's terms replace it.
    assert catalog.product_terms("B", "active", "email", during).lever == 1.1
    assert catalog.product_terms("X", "active", "email", during) is None


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
