from __future__ import annotations

import logging
from typing import Any

import numba
import numpy as np
import pytest

from nbo.core import compiled


def test_a_kernel_without_a_writable_cache_is_compiled_in_memory_and_said_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # numba refuses cache=True when no folder is writable (a read-only install, a user
    # without a home): nbo must still start, compiling at each load, and say why.
    real = numba.njit

    def refusing(*args: Any, **options: Any) -> Any:
        if options.get("cache"):
            raise RuntimeError("cannot cache function 'f': no locator available")
        return real(*args, **options)

    monkeypatch.setattr(numba, "njit", refusing)
    monkeypatch.setattr(compiled, "uncached", [])

    def twice(values: np.ndarray) -> np.ndarray:
        return values * 2.0

    def thrice(values: np.ndarray) -> np.ndarray:
        return values * 3.0

    with caplog.at_level(logging.WARNING, logger="nbo.core.compiled"):
        doubled, tripled = compiled.kernel(twice), compiled.kernel(thrice)
    assert doubled(np.array([1.0, 2.5])).tolist() == [2.0, 5.0]
    assert tripled(np.array([1.0])).tolist() == [3.0]
    assert compiled.uncached == ["twice", "thrice"]
    assert len(caplog.records) == 1 and "NUMBA_CACHE_DIR" in caplog.records[0].getMessage()


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="NUMBA_DISABLE_JIT: plain Python")
def test_a_kernel_divides_by_zero_as_numpy_does() -> None:
    # error_model "numpy": inf and NaN, as the numpy code the kernels replace gave,
    # never a ZeroDivisionError on a customer's request.
    @compiled.kernel
    def ratio(a: float, b: float) -> float:
        return a / b

    assert ratio(1.0, 0.0) == np.inf and np.isnan(ratio(0.0, 0.0))
