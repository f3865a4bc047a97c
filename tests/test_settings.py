"""The settings (``nbo.settings``): each ``NBO_*`` variable read and checked at start, a
bad value refused naming its variable."""

from __future__ import annotations

import pytest
from support import DEMO_CATALOG

from nbo.settings import Settings, load_settings


def test_the_setting_comes_from_nbo_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().catalog is None
    monkeypatch.setenv("NBO_CATALOG", str(DEMO_CATALOG))
    assert load_settings().catalog == DEMO_CATALOG
    monkeypatch.setenv("NBO_CATALOG", "")
    assert load_settings().catalog is None
