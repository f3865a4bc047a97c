"""Errors that cross processes (a campaign worker's, pickled to its parent) keep what
they say."""

from __future__ import annotations

import pickle

from nbo.core.errors import StoreUrlError
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
