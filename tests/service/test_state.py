"""The model holder: erased customers stay erased on every load."""

from __future__ import annotations

import weakref
from pathlib import Path

import pytest

from nbo.core.erased import ErasedList
from nbo.service import state
from nbo.service.state import ModelHolder


def test_the_holder_applies_erased_ids_on_every_load(models_dir: Path) -> None:
    """The store's erased list keeps keyed hashes: the holder tests the model's ids."""
    erased = ["a00"]
    holder = ModelHolder(erased_list=lambda: ErasedList.of_ids(b"k" * 32, erased))
    assert holder.forget("a01") is False  # no model yet
    first = holder.load(models_dir)
    assert first.customers.get("a00") is None and first.customers.get("a01") is not None

    assert holder.forget("a01") is True
    erased.append("a01")  # as the store records it
    second = holder.load(models_dir)  # a reload: a fresh model, the erasures applied again
    assert second is not first
    assert second.customers.get("a00") is None and second.customers.get("a01") is None
    assert second.customers.get("a02") is not None


def test_a_load_hands_the_memory_it_freed_back_once_the_old_model_is_gone(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """glibc keeps what a process frees for its next allocations: a reload's working
    memory (LLVM's compilation of the ranker included, some 35 MB at 90 trees) stayed
    with the worker until the next reload. The holder asks for it back after the swap,
    when the replaced model is already gone."""
    holder = ModelHolder()
    replaced = weakref.ref(holder.load(models_dir))
    seen: list[bool] = []
    monkeypatch.setattr(state, "give_back_freed_heap", lambda: seen.append(replaced() is None))
    holder.load(models_dir)
    assert seen == [True]
