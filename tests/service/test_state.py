"""The model holder: erased customers stay erased on every load."""

from __future__ import annotations

from pathlib import Path

from nbo.service.state import ModelHolder


def test_the_holder_applies_erased_ids_on_every_load(models_dir: Path) -> None:
    erased = ["a00"]
    holder = ModelHolder(erased_ids=lambda: list(erased))
    assert holder.forget("a01") is False  # no model yet
    first = holder.load(models_dir)
    assert first.customers.get("a00") is None and first.customers.get("a01") is not None

    assert holder.forget("a01") is True
    erased.append("a01")  # as the store records it
    second = holder.load(models_dir)  # a reload: a fresh model, the erasures applied again
    assert second is not first
    assert second.customers.get("a00") is None and second.customers.get("a01") is None
    assert second.customers.get("a02") is not None
