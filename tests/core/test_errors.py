"""Errors that cross processes (a campaign worker's, pickled to its parent) keep what
they say."""

from __future__ import annotations

import pickle

import pytest

from nbo.core.errors import StoreUrlError, during, noted_step
from nbo.store.base import StoreUnreachable


def test_a_store_url_error_said_of_a_flag_survives_pickling() -> None:
    error = StoreUrlError("unsupported store 'x'").named("--store-url")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is StoreUrlError
    assert str(again) == str(error) == "--store-url: unsupported store 'x'"
    assert again.setting == "--store-url"


def test_an_unreachable_store_survives_pickling_with_its_reason() -> None:
    error = StoreUnreachable("cannot connect to db (refused)", "refused").named("--store-url")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is StoreUnreachable
    assert str(again) == "--store-url: cannot connect to db (refused)"
    assert again.reason == "refused"


def test_out_of_memory_is_said_of_the_innermost_step() -> None:
    with pytest.raises(MemoryError) as caught, during("refit"), during("policy"):
        raise MemoryError

    assert noted_step(caught.value) == "policy"


def test_other_errors_are_not_given_a_step() -> None:
    with pytest.raises(ValueError) as caught, during("refit"):
        raise ValueError("a bug")

    assert noted_step(caught.value) is None
