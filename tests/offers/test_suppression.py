"""The suppression window: the setting parsed, and its edges."""

from __future__ import annotations

import pytest
from support import END

from nbo.offers.suppression import SuppressionWindow

NOW = END
NOW_S = int(NOW.timestamp())


def test_suppression_window_parse() -> None:
    assert SuppressionWindow.parse("all").days is None
    assert SuppressionWindow.parse(" ALL ").days is None
    assert SuppressionWindow.parse("0").days == 0
    assert SuppressionWindow.parse(30).days == 30
    assert SuppressionWindow.parse("30") == SuppressionWindow(30)
    assert str(SuppressionWindow.parse("all")) == "all"
    assert str(SuppressionWindow.parse(7)) == "7"
    for bad in ("-1", "abc", "", "3.5"):
        with pytest.raises(ValueError):
            SuppressionWindow.parse(bad)


def test_suppression_window_edges() -> None:
    assert SuppressionWindow(0).earliest_suppressed(NOW_S) is None
    assert SuppressionWindow(30).earliest_suppressed(NOW_S) == NOW_S - 30 * 86_400
    earliest_all = SuppressionWindow(None).earliest_suppressed(NOW_S)
    assert earliest_all is not None
    assert earliest_all <= 0
