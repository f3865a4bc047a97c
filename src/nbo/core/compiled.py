"""numba's ``njit`` as nbo compiles its per-customer kernels (below every layer, so the
data, models and offers layers each keep their kernels beside the code they replace).

Why compiled: a decision is some nine hundred numpy calls of a microsecond each on a few
dozen numbers; a kernel does one customer's loop in one call. The kernels are the only
implementation of what they compute (``NUMBA_DISABLE_JIT=1`` runs them as Python, for
debugging).

Machine code is cached on disk by numba (``cache=True``) beside the module, else in
``NUMBA_CACHE_DIR``; where no folder is writable (a read-only install), numba refuses
``cache=True`` when the module is imported: nbo then compiles in memory at every model
load (seconds) and says so once, rather than failing to start. ``error_model`` "numpy":
a division by zero gives inf or NaN, as numpy's does, not an exception.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import numba

log = logging.getLogger(__name__)

Function = TypeVar("Function", bound=Callable[..., Any])
_OPTIONS: dict[str, Any] = {"nogil": True, "error_model": "numpy"}
# The kernels that could not be cached (compiled in memory at each load).
uncached: list[str] = []


def kernel(function: Function) -> Function:
    """``function`` compiled in nopython mode, cached on disk where numba can write."""
    try:
        return numba.njit(cache=True, **_OPTIONS)(function)
    except RuntimeError as exc:
        if not uncached:
            log.warning(
                "numba cannot cache the compiled kernels (%s): they are compiled at every "
                "model load; set NUMBA_CACHE_DIR to a writable folder to keep them",
                exc,
            )
        uncached.append(function.__name__)
        return numba.njit(cache=False, **_OPTIONS)(function)
