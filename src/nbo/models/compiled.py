"""The ranker's trees compiled to machine code (lleaves), used only where they give
LightGBM's own scores.

Why: LightGBM predicts by walking its trees as data. On a served request's rows (about 56
candidates a customer, 77-92 trees) that took 2.4 µs a row, about a fifth of ``decide``
at 100k customers x 20k items and the largest single part of a campaign's time. lleaves
turns each tree into native branches through LLVM: 0.45 µs a row on the same rows.
Compiling costs about 0.7 s for 77 trees, once per process and model while the model
serves (a server's workers start on the trees their master compiled before forking
them); trees no model uses any more are freed, all but the last one retired.

The compiled trees must earn their place at load: on probe rows that fall on, just above
and just below every threshold of every split (and on NaN, LightGBM's missing value) they
must give LightGBM's scores, within float rounding (the two sum the trees in a different
order: 2e-15 apart at most, measured). Otherwise, or where lleaves is not installed
(it needs llvmlite < 0.45, whose wheels stop at Python 3.13), the ranker is scored
through LightGBM's C API, with a warning saying why.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# Imported with the module (21 ms beyond what nbo imports anyway), so that a server's
# master imports it before forking its workers: LLVM's library (133 MB) is then relocated
# once and its pages shared, about 5 MB of each worker's own memory saved (smaps_rollup,
# 100k x 20k). The other 20 MB, LLVM's heap for the compiled trees, is shared when the
# master compiles the model too (``nbo.service.cli``).
try:
    import lleaves
    import llvmlite.binding as llvm
    from lleaves.compiler import tree_compiler
except ImportError as _exc:  # Python 3.14: no llvmlite that lleaves can use
    lleaves = None
    _MISSING = str(_exc)
else:
    _MISSING = "lleaves is not installed"

Predict = Callable[[np.ndarray], np.ndarray]

# How far the compiled scores may be from LightGBM's: the same leaves summed in another
# order differ in the last bits only.
TOLERANCE = 1e-9
PROBE_ROWS = 4096
# LightGBM's kZeroThreshold (a C++ float, 1e-35f): the bounds of what it takes for zero.
LIGHTGBM_ZERO = float(np.float32(1e-35))


# The compiled trees in this process, by their model text's digest: those some caller
# holds (the served model, every experiment arm, the model a reload is replacing) and the
# last ``KEEP_RETIRED`` that no caller holds any more (a rollback), nothing else. Each
# caller gets a handle of its own; when the last handle of some trees is gone, they are
# retired, and the oldest retired ones freed (lleaves' model, with it LLVM's engine and
# its code). They were the last four compiled, held or not: a service serving one model
# kept three it no longer served (6-8 MB each at 90 trees of 31 leaves, measured), and
# one serving five (a current model, four arms) compiled all five again on every reload,
# each compilation evicting the next one it needed.
KEEP_RETIRED = 1
_ENTRIES: dict[bytes, _Trees] = {}
_RETIRED: OrderedDict[bytes, None] = OrderedDict()
# Re-entrant: a handle's finalizer takes it, and the cyclic garbage collector may run one
# on a thread that holds it.
_LOCK = threading.RLock()


class _Trees:
    """One compiled model and how many handles to it are alive."""

    __slots__ = ("handles", "predict")

    def __init__(self, predict: Predict) -> None:
        self.predict = predict
        self.handles = 0


def compile_trees(model_text: str, reference: Predict, n_features: int) -> Predict | None:
    """A function scoring float rows like ``reference`` (LightGBM on ``model_text``),
    compiled; None, with a warning, when lleaves is missing, fails or disagrees. Trees
    compiled before from the same text and still held, or just retired, are shared, not
    compiled again; they stay in memory as long as the function returned is."""
    if lleaves is None:
        log.warning("ranker: not compiled (%s); scoring through LightGBM", _MISSING)
        return None
    key = hashlib.sha256(model_text.encode("utf-8")).digest()
    with _LOCK:
        trees = _ENTRIES.get(key)
        if trees is not None:
            return _handle(key, trees)
    predict = _compile(model_text, reference, n_features)
    if predict is None:
        return None
    with _LOCK:
        # (Another thread may have compiled the same text meanwhile: one copy is kept.)
        trees = _ENTRIES.setdefault(key, _Trees(predict))
        return _handle(key, trees)


def compiled_in_process() -> int:
    """How many compiled models this process keeps (held or retired)."""
    with _LOCK:
        return len(_ENTRIES)


def _handle(key: bytes, trees: _Trees) -> Predict:
    """A new handle to ``trees`` (the caller holds ``_LOCK``)."""
    trees.handles += 1
    _RETIRED.pop(key, None)
    compiled = trees.predict

    def predict(features: np.ndarray) -> np.ndarray:
        return compiled(features)

    finalizer = weakref.finalize(predict, _release, key)
    finalizer.atexit = False
    return predict


def _release(key: bytes) -> None:
    """A handle is gone: when it was the last of its trees, retire them, and free the
    retired ones beyond ``KEEP_RETIRED``, oldest first."""
    freed = []
    with _LOCK:
        trees = _ENTRIES.get(key)
        if trees is None:
            return
        trees.handles -= 1
        if trees.handles > 0:
            return
        _RETIRED[key] = None
        while len(_RETIRED) > KEEP_RETIRED:
            oldest, _ = _RETIRED.popitem(last=False)
            freed.append(_ENTRIES.pop(oldest))
    # Freed here, outside the lock: LLVM's engine is disposed of as the last reference goes.
    del freed


def _compile(model_text: str, reference: Predict, n_features: int) -> Predict | None:
    started = time.perf_counter()
    context: Any = None
    try:
        with (
            tempfile.TemporaryDirectory(prefix="nbo-ranker-") as folder,
            _parsing_into_own_context() as context,
        ):
            path = Path(folder) / "ranker.txt"
            path.write_text(model_text, encoding="utf-8")
            model = lleaves.Model(model_file=str(path))
            # The trees are cache-blocked for batches of rows; a request's few dozen rows
            # are a batch too (measured: the default block size is as fast as none here).
            model.compile()
    except Exception as exc:
        if context is not None:
            # Left, not disposed of: what lleaves parsed into it may outlive this call.
            context.detach()
        log.warning(
            "ranker: not compiled (%s: %s); scoring through LightGBM", type(exc).__name__, exc
        )
        return None
    if context is not None:
        weakref.finalize(model, _dispose, model._execution_engine, context).atexit = False
    if model.num_feature() != n_features:
        log.warning(
            "ranker: compiled with %d features, not %d; scoring through LightGBM",
            model.num_feature(),
            n_features,
        )
        return None

    def predict(features: np.ndarray) -> np.ndarray:
        data = np.array(features, dtype=np.float64, order="C")
        # LightGBM counts |x| <= 1e-35 as zero where a split sends zeros (its missing
        # value "Zero") one way; lleaves only x == 0. Flushed, the two agree, and
        # LightGBM's own scores do not move (its zero-bin thresholds are at +-1e-35).
        data[np.abs(data) <= LIGHTGBM_ZERO] = 0.0
        return model.predict(data, n_jobs=1)

    rows = probe_rows(model_text, n_features)
    expected = reference(rows)
    got = predict(rows)
    if not np.allclose(got, expected, rtol=TOLERANCE, atol=TOLERANCE):
        worst = float(np.max(np.abs(got - expected)))
        log.warning("ranker: compiled trees disagree with LightGBM (by up to %g); not used", worst)
        return None
    log.info(
        "ranker: %d trees compiled and checked in %.2f s (lleaves)",
        model.num_trees(),
        time.perf_counter() - started,
    )
    return predict


# LLVM keeps a model's constants (each leaf value and threshold) in the context its code
# was parsed into, until the context goes, not when the model's engine does. lleaves
# parses into the process's global context, which never goes: each new model grew a
# process by 0.16 MB at 30 trees of 31 leaves (measured after malloc_trim, over 25
# models), 0.3-0.5 MB at 90, for as long as it ran. Each model gets a context of its
# own, disposed of right after its engine.
# One compilation at a time: the compiler's module is shared, and a compilation started
# while another has it swapped would parse into the other's context (freed with the
# other's model, under this one's).
_COMPILING = threading.Lock()
# Whether this lleaves parses through ``llvmlite.binding`` as 1.3 does (read once, from
# the module as imported; otherwise its models use the global context).
_PARSES_THROUGH_BINDING = lleaves is not None and getattr(tree_compiler, "llvm", None) is llvm


@contextmanager
def _parsing_into_own_context() -> Iterator[Any]:
    """While the block runs (one compilation at a time), lleaves' compiler parses into a
    context of its own, which the block is given; None when it cannot."""
    with _COMPILING:
        if not _PARSES_THROUGH_BINDING:
            yield None
            return
        context = llvm.create_context()
        tree_compiler.llvm = _BindingInto(context)
        try:
            yield context
        finally:
            tree_compiler.llvm = llvm


class _BindingInto:
    """``llvmlite.binding`` as lleaves' compiler uses it, parsing into one context."""

    def __init__(self, context: Any) -> None:
        self._context = context

    def __getattr__(self, name: str) -> Any:
        return getattr(llvm, name)

    def parse_assembly(self, text: str) -> Any:
        return llvm.parse_assembly(text, self._context)


def _dispose(engine: Any, context: Any) -> None:
    """A compiled model is gone: its engine (the code, and the module, which it owns),
    then the context the module's constants live in."""
    engine.close()
    context.close()


def probe_rows(model_text: str, n_features: int, n: int = PROBE_ROWS) -> np.ndarray:
    """``n`` float32 rows whose every feature takes, at random (seeded), one of: each
    threshold it is split on, the floats just above and below it, every category of a
    categorical feature and one it never had, NaN, 0 and far out on either side; so that
    both branches of the splits and the missing values are met (at 4,096 rows, 98% of
    the leaves of a 77-tree ranker at 100k customers x 20k items were reached)."""
    values: list[list[float]] = [[np.nan, 0.0, -1e30, 1e30] for _ in range(n_features)]
    for feature, threshold in _splits(model_text):
        if 0 <= feature < n_features:
            at = np.float32(threshold)
            # (float32 values held as Python floats: exact both ways.)
            values[feature] += [
                float(at),
                float(np.nextafter(at, np.float32(np.inf))),
                float(np.nextafter(at, np.float32(-np.inf))),
            ]
    for feature, categories in _categories(model_text).items():
        if 0 <= feature < n_features:
            values[feature] += [*categories, max(categories, default=0) + 1]
    rng = np.random.default_rng(0)
    rows = np.empty((n, n_features), dtype=np.float32)
    for feature, seen in enumerate(values):
        rows[:, feature] = rng.choice(np.asarray(seen, dtype=np.float32), size=n)
    return rows


def _splits(model_text: str) -> list[tuple[int, float]]:
    """(feature, threshold) of every split in LightGBM's text model: each tree's
    ``split_feature=`` and ``threshold=`` lines, in the same order (a categorical
    split's threshold is an index into its category sets: a harmless probe value)."""
    splits: list[tuple[int, float]] = []
    features: list[str] = []
    for line in model_text.splitlines():
        if line.startswith("split_feature="):
            features = line.split("=", 1)[1].split()
        elif line.startswith("threshold="):
            thresholds = line.split("=", 1)[1].split()
            splits.extend((int(f), float(t)) for f, t in zip(features, thresholds, strict=False))
    return splits


def _categories(model_text: str) -> dict[int, list[float]]:
    """The categories of each categorical feature, from the model's ``feature_infos=``
    line (a numerical feature's entry is ``[min:max]``, a categorical one's
    ``c1:c2:...``, an unused one's ``none``)."""
    for line in model_text.splitlines():
        if line.startswith("feature_infos="):
            infos = line.split("=", 1)[1].split()
            return {
                feature: [float(c) for c in info.split(":")]
                for feature, info in enumerate(infos)
                if info != "none" and not info.startswith("[")
            }
    return {}
