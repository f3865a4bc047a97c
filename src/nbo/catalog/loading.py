"""Reading a catalogue file: validated whole, refused with one line naming the file, the
offer and the field.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

from pydantic import ValidationError

from nbo.catalog.schema import (
    FREE_SHIPPING,
    OFFER_ITEM_SEPARATOR,
    PERCENT_OFF,
    POINTS_MULTIPLIER,
    PRODUCT_OFFER_PREFIX,
    CatalogFile,
    CatalogOffer,
    IncentiveKind,
    ProductDefaults,
)
from nbo.catalog.terms import Catalog
from nbo.core.documents import document_context, read_document
from nbo.core.errors import CatalogError
from nbo.core.vocabulary import KIND_INCENTIVE

log = logging.getLogger(__name__)

# --- loading ------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def default_catalog() -> Catalog:
    """Every item a product offer on the default terms, no incentives: the behaviour
    without ``NBO_CATALOG``."""
    return Catalog(CatalogFile(version=1))


# What to do about a missing catalogue file, where the service's setting named it.
SETTING_HINT = "set NBO_CATALOG to a catalogue file, or unset it"


def load_catalog(path: Path, missing_hint: str = SETTING_HINT) -> Catalog:
    """Read, validate and index a catalogue file; CatalogError names what to fix.
    ``missing_hint`` names what gave the path (the setting, or a command's flag)."""
    source = str(path)
    raw, content = read_document(
        path,
        "a catalogue",
        "version, products, offers, ...",
        CatalogError,
        missing_hint=missing_hint,
    )
    try:
        document = CatalogFile.model_validate(raw, context=document_context(path))
    except ValidationError as exc:
        raise _explain(source, exc, raw) from None
    _check(source, document)
    catalog = Catalog(document, source=path, fingerprint=hashlib.sha256(content).hexdigest())
    for overlap in catalog.incentive_overlaps():
        log.warning("catalogue %s: %s", source, overlap)
    return catalog


def _explain(source: str, exc: ValidationError, raw: Any) -> CatalogError:
    """Every validation error, each naming the entry and field in the file's words, so a
    marketer fixes them all in one round."""
    errors = exc.errors()
    # A bad list element also fails its list (and a union each of its branches): that
    # is the same problem, not another one.
    locations = [tuple(e["loc"]) for e in errors]
    kept = [
        e
        for e, loc in zip(errors, locations, strict=True)
        if not any(other[: len(loc)] == loc and other != loc for other in locations)
    ]
    problems: list[tuple[str | None, str | None, str]] = []
    for error in kept:
        found = (*_locate(error["loc"], raw), " ".join(_problem_of(error).split()))
        if found not in problems:
            problems.append(found)
    (entry, field, problem), *more = problems
    return CatalogError(source, problem, entry, field, more)


def _problem_of(error: Any) -> str:
    """One pydantic error in the marketer's words."""
    # Tuples are how the schema stores lists; the marketer wrote a list.
    problem = str(error["msg"]).replace("valid tuple", "valid list").replace("Tuple", "List")
    if error["type"] == "extra_forbidden":
        return "not a known field (a typo?)"
    if error["type"] == "value_error":
        # The schema's own rules (times, ids) say what they got: no "Value error, ".
        return str(error.get("ctx", {}).get("error", problem))
    if error["type"] != "missing" and isinstance(error.get("input"), str | int | float):
        problem += f" (got {error['input']!r})"
    return problem


def _locate(loc: tuple[int | str, ...], raw: Any) -> tuple[str | None, str | None]:
    """(entry, field) for a pydantic error location, in the file's own words."""
    section = str(loc[0]) if loc else ""
    rest = [str(part) for part in loc[2:] if not isinstance(part, int)]
    field = ".".join(rest) or None
    if section in ("offers", "items") and len(loc) > 1 and isinstance(loc[1], int):
        noun, key = ("offer", "id") if section == "offers" else ("item override", "item_id")
        entries = raw.get(section) if isinstance(raw, dict) else None
        entry = entries[loc[1]] if isinstance(entries, list) and loc[1] < len(entries) else None
        name = entry.get(key) if isinstance(entry, dict) else None
        if isinstance(name, str | int) and not isinstance(name, bool):
            return f"{noun} '{name}'", field
        return f"{noun} #{loc[1] + 1}", field
    if section == "categories" and len(loc) > 1:
        return f"category '{loc[1]}'", None
    if section == "stage_weights" and len(loc) > 1:
        if field == "[key]":
            return f"stage_weights '{loc[1]}'", None
        return f"stage_weights '{loc[1]}'", field
    if section == "products" and len(loc) > 1:
        return "products", ".".join(str(p) for p in loc[1:] if not isinstance(p, int))
    return None, ".".join(str(p) for p in loc if not isinstance(p, int)) or None


_PRODUCT_ONLY = ("item_id", "category", "price_weighted", "margin")
_INCENTIVE_ONLY = ("incentive", "amount", "response_rate")


def _check(source: str, document: CatalogFile) -> None:
    """The rules that span fields or sections, which field types cannot say; every
    problem found is listed (``CatalogError.problems``)."""
    problems: list[tuple[str | None, str | None, str]] = []
    found_value = _value_problem(document.products)
    if found_value is not None:
        problems.append(("products", found_value[0], found_value[1]))
    seen_items: set[str] = set()
    for item in document.items:
        entry = f"item override '{item.item_id}'"
        if item.item_id in seen_items:
            problems.append((entry, "item_id", "listed twice; one override per item"))
            continue
        found_value = _value_problem(item)
        if found_value is not None:
            problems.append((entry, found_value[0], found_value[1]))
        seen_items.add(item.item_id)
    seen_offers: set[str] = set()
    for offer in document.offers:
        if offer.id in seen_offers:
            found: tuple[str, str] | None = ("id", "duplicate id; every offer needs its own")
        elif offer.kind == KIND_INCENTIVE:
            found = _incentive_problem(offer)
        else:
            found = _product_problem(offer, document.categories)
        found = found or _common_problem(offer)
        if found is not None:
            problems.append((f"offer '{offer.id}'", *found))
        seen_offers.add(offer.id)
    if problems:
        (where, field, problem), *more = problems
        raise CatalogError(source, problem, where, field, more)


def _common_problem(offer: CatalogOffer) -> tuple[str, str] | None:
    if offer.id.startswith(PRODUCT_OFFER_PREFIX):
        return "id", f"ids starting '{PRODUCT_OFFER_PREFIX}' name the default product terms"
    if OFFER_ITEM_SEPARATOR in offer.id:
        return "id", (
            f"'{OFFER_ITEM_SEPARATOR}' is reserved: it joins a category offer's id and an "
            "item in the offers nbo answers"
        )
    if offer.valid_from and offer.valid_to and offer.valid_to <= offer.valid_from:
        return "valid_to", f"must be after valid_from ({offer.valid_from.isoformat()})"
    return None


def _incentive_problem(offer: CatalogOffer) -> tuple[str, str] | None:
    for name in _PRODUCT_ONLY:
        if name in offer.model_fields_set:
            return name, "only for product offers (kind: product)"
    if offer.incentive is None:
        return "incentive", "an incentive needs 'incentive': " + ", ".join(get_args(IncentiveKind))
    if offer.value is None:
        return "value", "an incentive needs its value to the business (money per redemption)"
    if offer.incentive == FREE_SHIPPING:
        return ("amount", "free_shipping takes no amount") if offer.amount is not None else None
    if offer.amount is None:
        what = "the percent off" if offer.incentive == PERCENT_OFF else "the points multiplier"
        return "amount", f"{offer.incentive} needs amount ({what})"
    if offer.incentive == PERCENT_OFF and offer.amount > 100:
        return "amount", "a percent off is at most 100"
    if offer.incentive == POINTS_MULTIPLIER and offer.amount <= 1:
        return "amount", "a points multiplier must be above 1 to reward anything"
    return None


def _value_problem(terms: ProductDefaults | CatalogOffer) -> tuple[str, str] | None:
    """Product terms that set ``value`` beside ``margin`` or ``price_weighted: true`` in
    the same block: a value is taken as is, so the margin or price weighting written
    with it would be ignored without a word (``products.value: 10`` with ``margin: 0.25``
    meant 2.5 and served 10)."""
    if terms.value is None:
        return None
    if terms.price_weighted:
        return "price_weighted", (
            f"value {terms.value:g} is taken as is, so price weighting would be ignored: "
            "remove value to weigh by the item's price, or price_weighted"
        )
    if "margin" in terms.model_fields_set:
        return "margin", (
            f"value {terms.value:g} is taken as is (the business's money per sale), so "
            f"margin {terms.margin:g} would be ignored: remove one of them"
        )
    return None


def _product_problem(
    offer: CatalogOffer, categories: Mapping[str, tuple[str, ...]]
) -> tuple[str, str] | None:
    for name in _INCENTIVE_ONLY:
        if name in offer.model_fields_set:
            return name, "only for incentives (kind: incentive)"
    if offer.item_id is None and offer.category is None:
        return "item_id", "a product offer needs item_id (one item) or category (a group)"
    found = _value_problem(offer)
    if found is not None:
        return found
    if offer.item_id is not None and offer.category is not None:
        return "category", "give item_id or category, not both"
    if offer.category is not None and offer.category not in categories:
        known = ", ".join(sorted(categories)) or "none defined"
        return "category", f"'{offer.category}' is not in categories (known: {known})"
    return None
