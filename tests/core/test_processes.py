"""``nbo.core.processes``: the heap frozen while a campaign runs, and given back after."""

from __future__ import annotations

import gc

from nbo.core.processes import frozen_heap


def test_the_heap_is_frozen_inside_the_block_and_given_back_after() -> None:
    before = {"a": [1, 2]}  # a container the collector tracks
    assert gc.is_tracked(before)
    with frozen_heap():
        assert gc.get_freeze_count() > 0
        assert not any(obj is before for obj in gc.get_objects())
        during = {"b": [3]}
        assert any(obj is during for obj in gc.get_objects())
    assert gc.get_freeze_count() == 0
    assert any(obj is before for obj in gc.get_objects())


def test_the_heap_is_given_back_when_the_block_fails() -> None:
    try:
        with frozen_heap():
            raise RuntimeError("a campaign that fails")
    except RuntimeError:
        pass
    assert gc.get_freeze_count() == 0
