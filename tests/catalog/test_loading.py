"""Loading the offer catalogue: the demo file, and files refused in one line that names
the file, the offer and the field, in YAML and JSON alike."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from support import DATA, DEMO_CATALOG, at, write

from nbo.catalog.loading import load_catalog
from nbo.catalog.terms import Catalog
from nbo.core.errors import MAX_LISTED_PROBLEMS, CatalogError
from nbo.core.vocabulary import KIND_INCENTIVE, KIND_PRODUCT, STAGES

SAMPLE = DATA / "online_retail_sample.parquet"
DEMO_NOW = int(datetime(2011, 12, 9, 13, tzinfo=UTC).timestamp())


def catalog_of(tmp_path: Path, text: str, name: str = "catalog.yaml") -> Catalog:
    return load_catalog(write(tmp_path / name, text))


def refusal(tmp_path: Path, text: str, name: str = "catalog.yaml") -> str:
    with pytest.raises(CatalogError) as caught:
        catalog_of(tmp_path, text, name)
    message = str(caught.value)
    # One line per problem, each naming the file.
    assert all(line.startswith(str(tmp_path / name)) for line in message.split("\n"))
    return message


# --- the demo catalogue ---------------------------------------------------------------


def test_the_demo_catalogue_loads_with_an_offer_per_stage() -> None:
    catalog = load_catalog(DEMO_CATALOG)
    assert catalog.source == DEMO_CATALOG and len(catalog.fingerprint) == 64
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
    # One incentive per stage and channel: the default limit of one per answer drops none.
    assert catalog.max_incentives == 1 and catalog.incentive_overlaps() == []
    # Stage new holds prospects (no order) and customers with one or several orders in
    # their first weeks: a new customer's incentive cannot promise a "first" or "second"
    # order, which would be untrue of some of them.
    for offer in catalog.incentives_for("new", "email", DEMO_NOW):
        words = set(re.findall(r"[a-z0-9]+", (offer.title or "").lower()))
        assert not words & {"first", "second", "1st", "2nd", "third", "3rd"}, offer.title
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
    catalog = load_catalog(DEMO_CATALOG)
    named = {item.item_id for item in catalog.document.items}
    named |= {item for items in catalog.categories.values() for item in items}
    assert named and named <= known


def test_incentives_compete_with_products_on_one_money_scale() -> None:
    """Each incentive's expected value (response rate x value) sits within the range of a
    product's (propensity x a ~10 GBP line) rather than swamping it."""
    catalog = load_catalog(DEMO_CATALOG)
    for offer in catalog.offers:
        if offer.kind == KIND_INCENTIVE:
            assert offer.value is not None and 10 <= offer.value <= 60
            assert 0.01 <= offer.response_rate <= 0.2
            assert 0.5 <= offer.response_rate * offer.value <= 5


OFFER = "  - {id: winback-15, kind: incentive, incentive: percent_off, amount: 15, value: 12"


# --- refusals -------------------------------------------------------------------------


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
        # A value is taken as is: a margin or price weighting beside it would be ignored.
        (
            "version: 1\nproducts: {value: 10, margin: 0.25}\n",
            "products field 'margin': value 10 is taken as is (the business's money per "
            "sale), so margin 0.25 would be ignored",
        ),
        (
            "version: 1\nproducts: {value: 10, price_weighted: true}\n",
            "products field 'price_weighted': value 10 is taken as is, so price weighting",
        ),
        (
            "version: 1\nitems:\n  - {item_id: X, value: 4, margin: 0.5}\n",
            "item override 'X' field 'margin': value 4 is taken as is",
        ),
        (
            "version: 1\noffers:\n  - {id: p, kind: product, item_id: X, value: 4, "
            "price_weighted: true}\n",
            "offer 'p' field 'price_weighted': value 4 is taken as is",
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
        # A share is 0 to 1: 25 (meant 25%) would make every value 100x.
        (
            "version: 1\nproducts: {margin: 25}\n",
            "products field 'margin': Input should be less than or equal to 1 (got 25)",
        ),
        (
            "version: 1\nitems:\n  - {item_id: A, margin: 1.5}\n",
            "item override 'A' field 'margin': Input should be less than or equal to 1",
        ),
        (
            "version: 1\noffers:\n  - {id: p, kind: product, item_id: X, margin: 30}\n",
            "offer 'p' field 'margin': Input should be less than or equal to 1",
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
        # An impossible date is the offer's and field's problem, not a YAML traceback.
        (
            "version: 1\noffers:\n  - {id: p, kind: product, item_id: X, valid_to: 2012-02-30}\n",
            "catalog.yaml: offer 'p' field 'valid_to': must be an ISO 8601 time such as "
            "2026-12-01T00:00:00Z (got '2012-02-30': day is out of range for month)",
        ),
        (
            "version: 1\noffers:\n  - {id: p, kind: product, item_id: X, valid_to: 2011-13-01}\n",
            "offer 'p' field 'valid_to': must be an ISO 8601 time such as 2026-12-01T00:00:00Z "
            "(got '2011-13-01': month must be in 1..12)",
        ),
        # A number is not read as unix seconds (20111215 would be 1970-08-21).
        (
            "version: 1\noffers:\n  - {id: p, kind: product, item_id: X, valid_from: 20111215}\n",
            "offer 'p' field 'valid_from': must be an ISO 8601 time such as "
            "2026-12-01T00:00:00Z (got 20111215)",
        ),
        (
            "version: 1\noffers:\n  - {id: p, kind: product, item_id: X, "
            "valid_from: 2011-12-15, valid_to: 20111224}\n",
            "offer 'p' field 'valid_to': must be an ISO 8601 time such as "
            "2026-12-01T00:00:00Z (got 20111224)",
        ),
        # Ids follow the API's rules: a recorded answer stores them.
        (
            "version: 1\noffers:\n  - {id: 'new-welcome ', kind: incentive, "
            "incentive: free_shipping, value: 5}\n",
            "offer 'new-welcome ' field 'id': must not start or end with a space "
            "(got 'new-welcome ')",
        ),
        (
            'version: 1\noffers:\n  - {id: "w\\tx", kind: incentive, '
            "incentive: free_shipping, value: 5}\n",
            "field 'id': holds the unprintable character U+0009 at position 1",
        ),
        (
            "version: 1\noffers:\n  - {id: p, kind: product, item_id: ' 22423'}\n",
            "offer 'p' field 'item_id': must not start or end with a space",
        ),
        (
            "version: 1\nitems:\n  - {item_id: '85123A/similar', lever: 2}\n",
            "item override '85123A/similar' field 'item_id': must not end with '/similar'",
        ),
        (
            "version: 1\nitems:\n  - {item_id: '" + "x" * 257 + "'}\n",
            "field 'item_id': must be at most 256 characters, got 257",
        ),
        (
            "version: 1\ncategories: {christmas: ['22086', '22910 ']}\n",
            "category 'christmas': must not start or end with a space (got '22910 ')",
        ),
        (
            "version: 1\ncategories: {'christmas ': ['22086']}\n",
            "category 'christmas ': must not start or end with a space",
        ),
        # A key written twice is refused, never "the last one wins".
        (
            "version: 1\noffers:\n  - id: p\n    kind: product\n    item_id: X\n"
            "    lever: 1.3\n    lever: 0.0\n",
            "catalog.yaml: not valid YAML (line 7, column 5): duplicate key 'lever' "
            "(first at line 6)",
        ),
        (
            "version: 1\ncategories:\n  christmas: [A]\n  christmas: [B]\n",
            "(line 4, column 3): duplicate key 'christmas' (first at line 3)",
        ),
        (
            "version: 1\nstage_weights:\n  loyal: {product: 2}\n  loyal: {product: 0}\n",
            "(line 4, column 3): duplicate key 'loyal' (first at line 3)",
        ),
        ("version: 1\nn: !!int abc\n", "catalog.yaml: not valid YAML (line 2, column 4): 'abc'"),
    ],
)
def test_a_bad_catalogue_is_refused_naming_the_offer_and_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert expected in refusal(tmp_path, text)


def test_every_problem_is_listed_one_line_each(tmp_path: Path) -> None:
    """A file with five mistakes said the first "(and 4 more problems)": a round of
    edits per mistake. Each is listed, one line each, in the file's order; the rules
    that span fields (a value beside a margin, an unknown category) likewise."""
    text = (
        "version: 1\ncategories:\n  xmas: [A]\noffers:\n"
        "  - {id: a, kind: product, item_id: A, value: -1}\n"
        "  - {id: b, kind: prodct, item_id: B}\n"
        "  - {id: c, kind: product, item_id: C, stages: [loyl]}\n"
        "  - {id: d, kind: product, item_id: D, lever: y}\n"
        "  - {id: e, kind: product, item_id: E, chanels: [email]}\n"
    )
    lines = refusal(tmp_path, text).split("\n")
    assert [line.split(": ")[1] for line in lines] == [
        f"offer '{o}' field '{f}'"
        for o, f in (
            ("a", "value"),
            ("b", "kind"),
            ("c", "stages"),
            ("d", "lever"),
            ("e", "chanels"),
        )
    ]
    assert "(got 'loyl')" in lines[2] and "more problem" not in "".join(lines)
    spanning = (
        "version: 1\ncategories:\n  xmas: [A]\noffers:\n"
        "  - {id: a, kind: product, category: toys}\n"
        "  - {id: b, kind: product, item_id: B, value: 5, margin: 0.2}\n"
        "  - {id: a, kind: product, item_id: C}\n"
    )
    lines = refusal(tmp_path, spanning).split("\n")
    assert [line.split(": ")[1] for line in lines] == [
        "offer 'a' field 'category'",
        "offer 'b' field 'margin'",
        "offer 'a' field 'id'",
    ]


def test_a_long_list_of_problems_is_capped(tmp_path: Path) -> None:
    offers = "".join(f"  - {{id: o{n}, kind: product, item_id: X, lever: y}}\n" for n in range(30))
    lines = refusal(tmp_path, "version: 1\noffers:\n" + offers).split("\n")
    assert len(lines) == MAX_LISTED_PROBLEMS + 1
    assert lines[-1].endswith(f"and {30 - MAX_LISTED_PROBLEMS} more problems")


def test_an_id_with_a_leading_zero_is_the_text_written_not_yaml_octal(tmp_path: Path) -> None:
    """``- 0123`` unquoted in a category was read by YAML as octal 83: the item '83'."""
    catalog = catalog_of(
        tmp_path,
        "version: 1\ncategories:\n  xmas: [0123, '0456', 22423]\noffers:\n"
        "  - {id: 0017, kind: product, item_id: 0089}\n"
        "  - {id: x, kind: product, category: xmas}\n",
    )
    assert catalog.document.categories["xmas"] == ("0123", "0456", "22423")
    first = catalog.document.offers[0]
    assert (first.id, first.item_id) == ("0017", "0089")


def test_a_number_with_a_leading_zero_is_refused_not_read_as_yaml_octal(tmp_path: Path) -> None:
    """``value: 010`` was YAML 1.1's octal 8, silently: a number field refuses an integer
    YAML did not read as written in decimal (octal, hex, base 60), naming the field."""
    message = refusal(
        tmp_path,
        "version: 1\nmax_incentives: 02\noffers:\n"
        "  - {id: w, kind: incentive, incentive: free_shipping, value: 010, "
        "cap_per_customer: 0x3, cap_days: 1:30}\n",
    )
    source = tmp_path / "catalog.yaml"
    assert message.split("\n") == [
        f"{source}: offer 'w' field 'value': '010' is 8 to YAML (octal, as it starts with "
        "0): write the number in plain decimal digits, without a leading 0",
        f"{source}: offer 'w' field 'cap_per_customer': '0x3' is 3 to YAML (hexadecimal): "
        "write the number in plain decimal digits, without a leading 0",
        f"{source}: offer 'w' field 'cap_days': '1:30' is 90 to YAML (base 60, as a time): "
        "write the number in plain decimal digits, without a leading 0",
        f"{source}: field 'max_incentives': '02' is 2 to YAML (octal, as it starts with 0): "
        "write the number in plain decimal digits, without a leading 0",
    ]
    # Decimal digits (grouped with _ or not), 0 and a decimal fraction read as written.
    catalog = catalog_of(
        tmp_path,
        "version: 1\noffers:\n"
        "  - {id: w, kind: incentive, incentive: free_shipping, value: 1_000, "
        "cap_days: 010.5}\n",
    )
    offer = catalog.document.offers[0]
    assert (offer.value, offer.cap_days) == (1000.0, 10.5)


def test_a_fraction_in_base_60_is_refused_as_an_integer_in_base_60_is(tmp_path: Path) -> None:
    """``cap_days: 1:30`` was refused, ``1:30.5`` (YAML 1.1's 90.5) still taken as 90.5
    days: refused too, with the same words."""
    message = refusal(
        tmp_path,
        "version: 1\nstage_weights:\n  new: {incentive: 1:30.5}\noffers:\n"
        "  - {id: w, kind: incentive, incentive: free_shipping, value: 5, cap_days: 1:30.5}\n",
    )
    source = tmp_path / "catalog.yaml"
    same = "(base 60, as a time): write the number in plain decimal digits, without a leading 0"
    assert message.split("\n") == [
        f"{source}: offer 'w' field 'cap_days': '1:30.5' is 90.5 to YAML {same}",
        f"{source}: stage_weights 'new' field 'incentive': '1:30.5' is 90.5 to YAML {same}",
    ]


def test_a_missing_file_or_an_unknown_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="no such file") as caught:
        load_catalog(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in str(caught.value)
    # The service's setting by default; a command names its own flag.
    assert "(set NBO_CATALOG to a catalogue file, or unset it)" in str(caught.value)
    with pytest.raises(CatalogError) as caught:
        load_catalog(tmp_path / "nope.yaml", "give --catalog a catalogue file")
    assert str(caught.value).endswith("no such file (give --catalog a catalogue file)")
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
    document["offers"][0].pop("amount")
    document["offers"][0]["title"] = True
    message = refusal(tmp_path, json.dumps(document), name="catalog.json")
    assert "field 'title': must be text, not the boolean true: write it in quotes" in message
    twice = '{"version": 1,\n "products": {"margin": 0.2, "margin": 0.3}}'
    assert "not valid JSON (line 2, column 14): duplicate key 'margin'" in refusal(
        tmp_path, twice, name="catalog.json"
    )


def test_the_error_names_the_path_as_configured(tmp_path: Path) -> None:
    path = write(tmp_path / "offers.yml", "version: 1\nx: 1\n")
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert str(caught.value) == f"{path}: field 'x': not a known field (a typo?)"
    assert (caught.value.source, caught.value.field) == (str(path), "x")


# --- incentives beyond the limit --------------------------------------------------------

OVERLAPPING = """
version: 1
{limit}offers:
  - id: winback-20
    kind: incentive
    incentive: percent_off
    amount: 20
    value: 30.0
    stages: [lapsed]
    channels: [email]
  - id: winback-10
    kind: incentive
    incentive: percent_off
    amount: 10
    value: 40.0
    stages: [lapsed, at_risk]
  - id: summer-shipping
    kind: incentive
    incentive: free_shipping
    value: 20.0
    stages: [lapsed]
    channels: [email]
    valid_from: 2011-06-01
    valid_to: 2011-09-01
  - id: winter-shipping
    kind: incentive
    incentive: free_shipping
    value: 20.0
    stages: [lapsed]
    channels: [email]
    valid_from: 2011-12-01
"""


def test_incentives_eligible_together_beyond_the_limit_are_warned_of_at_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A marketer who writes three incentives for lapsed customers on email would see one
    go out: the load names each group the limit cuts, and where (the two free shipping
    offers never run at once: two groups, equally large, both named, where only the
    first was)."""
    with caplog.at_level(logging.WARNING, logger="nbo.catalog"):
        catalog = catalog_of(tmp_path, OVERLAPPING.format(limit=""))
    cut = "max_incentives is 1: an answer carries only the 1 of highest priority (expected value)"
    expected = [
        f"incentives winback-20, winback-10, summer-shipping are eligible together (lapsed on "
        f"email) and {cut}",
        f"incentives winback-20, winback-10, winter-shipping are eligible together (lapsed on "
        f"email) and {cut}",
    ]
    assert catalog.incentive_overlaps() == expected
    assert [r.getMessage() for r in caplog.records] == [
        f"catalogue {tmp_path / 'catalog.yaml'}: {line}" for line in expected
    ]
    # Within the limit, or without one, nothing is said.
    assert (
        catalog_of(tmp_path, OVERLAPPING.format(limit="max_incentives: 3\n")).incentive_overlaps()
        == []
    )
    assert (
        catalog_of(
            tmp_path, OVERLAPPING.format(limit="max_incentives: null\n")
        ).incentive_overlaps()
        == []
    )


def test_the_groups_of_incentives_named_are_capped(tmp_path: Path) -> None:
    """An always-on incentive beside 22 monthly ones: 22 groups of two, the first 20
    named and the rest counted, as a file's problems are."""
    monthly = "".join(
        f"  - {{id: month-{n:02d}, kind: incentive, incentive: free_shipping, value: 5.0, "
        f"stages: [lapsed], channels: [email], valid_from: {2000 + n}-01-01, "
        f"valid_to: {2000 + n}-02-01}}\n"
        for n in range(22)
    )
    text = (
        "version: 1\noffers:\n  - {id: always, kind: incentive, incentive: free_shipping, "
        f"value: 5.0, stages: [lapsed], channels: [email]}}\n{monthly}"
    )
    lines = catalog_of(tmp_path, text).incentive_overlaps()
    assert len(lines) == 21
    assert lines[0].startswith("incentives always, month-00 are eligible together")
    assert lines[19].startswith("incentives always, month-19 are eligible together")
    assert lines[20] == (
        "and 2 more groups of incentives eligible together beyond max_incentives (1)"
    )


def test_max_incentives_is_a_count(tmp_path: Path) -> None:
    message = refusal(tmp_path, "version: 1\nmax_incentives: -1\n")
    assert "max_incentives" in message and "greater than or equal to 0" in message


def test_a_text_field_yaml_read_as_a_boolean_or_a_fraction_is_refused_saying_so(
    tmp_path: Path,
) -> None:
    """An integer id keeps its text (above); a boolean or a fraction has lost it (``on``
    is true, ``1.50`` is 1.5): refused, saying what YAML read and to quote it, never
    turned into the id 'True' or '1.5'."""
    message = refusal(
        tmp_path,
        "version: 1\ncategories:\n  xmas: [on]\noffers:\n"
        "  - {id: w, kind: product, item_id: 1.50, title: yes}\n",
    )
    source = tmp_path / "catalog.yaml"
    assert message.split("\n") == [
        f"{source}: category 'xmas': must be text, and YAML read it as the boolean true "
        "(unquoted yes/no, on/off, true/false are YAML's booleans): quote it",
        f"{source}: offer 'w' field 'title': must be text, and YAML read it as the boolean "
        "true (unquoted yes/no, on/off, true/false are YAML's booleans): quote it",
        f"{source}: offer 'w' field 'item_id': must be text, and YAML read it as the number "
        "1.5: quote it",
    ]
    quoted = catalog_of(
        tmp_path,
        "version: 1\ncategories:\n  xmas: ['on']\noffers:\n"
        "  - {id: w, kind: product, item_id: '1.50', title: 'yes'}\n",
    )
    assert quoted.document.categories["xmas"] == ("on",)
    assert (quoted.document.offers[0].item_id, quoted.document.offers[0].title) == ("1.50", "yes")
