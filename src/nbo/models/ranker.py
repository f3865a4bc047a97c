"""The ranker in an artifact: saved as LightGBM's own text format, checked at load.

What the candidate sources (``nbo.models.candidates``) need at serving besides the ALS
model: the ItemKNN similarity (three CSR arrays, and two views of it derived in the
trainer: by column, and its rows padded to one width), popularity in the window before the
recent one (for the trend) and in the last fortnight, the popularity within each
lifecycle stage, the half-life of the recency-weighted counts (the manifest's ``ranker``
section) and the booster.
The booster file is LightGBM's documented text model (no pickle); loading checks its
checksum (the artifact does), LightGBM's major version and the feature names.
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import scipy.sparse as sp

from nbo.core.errors import ArtifactError
from nbo.core.vocabulary import STAGES
from nbo.data.sparse import padded_rows
from nbo.models.artifacts import Artifact
from nbo.models.candidates import FEATURES, HALF_LIFE_DAYS
from nbo.models.compiled import Predict, compile_trees

RANKER_FILE = "ranker.txt"
KNN_ARRAYS = ("knn_indptr", "knn_indices", "knn_data")
# Derived from the similarity, saved beside it so that every serving process maps them
# from the file rather than building its own copy: at 20,000 items x 100 neighbours,
# 32 MB of each worker's own memory (half of what a worker held beyond the libraries).
# Artifacts from before them still load: the service then builds them.
BY_COLUMN_ARRAYS = ("knn_by_column_indptr", "knn_by_column_indices", "knn_by_column_data")
PADDED_ARRAYS = ("knn_padded_ids", "knn_padded_weights")
POPULARITY_BEFORE = "popularity_before"
STAGE_POPULARITY = "stage_popularity"
POPULARITY_RECENT = "popularity_recent"


class RankerScorer:
    """The booster's scores for one request's candidates, through LightGBM's C API.

    ``Booster.predict`` spends about 90 µs per call before predicting anything (it builds
    a predictor object, inspects the data, formats parameters): a third of the ranker's
    share of an offers call, measured on Online Retail. Here the booster is loaded once
    into its own C handle (``LGBM_BoosterLoadModelFromString``) and each call is one
    ``LGBM_BoosterPredictForMat`` on the features as they lie in memory (row- or
    column-major float32), one thread, the same numbers as ``Booster.predict``.

    With ``compiled`` (the default) the trees are also compiled to machine code
    (``nbo.models.compiled``), about five times faster on a request's rows, and score
    every call when they agree with the C API at load; the C API stays the reference.
    """

    _PARAMETERS = b"num_threads=1"

    def __init__(self, booster: lgb.Booster, compiled: bool = True) -> None:
        self.booster = booster
        self._lib = lgb.basic._LIB
        handle = ctypes.c_void_p()
        iterations = ctypes.c_int(0)
        text = booster.model_to_string()
        self._check(
            self._lib.LGBM_BoosterLoadModelFromString(
                ctypes.c_char_p(text.encode("utf-8")),
                ctypes.byref(iterations),
                ctypes.byref(handle),
            )
        )
        self._handle = handle
        self.n_features = booster.num_feature()
        self._compiled = (
            compile_trees(text, self.predict_lightgbm, self.n_features) if compiled else None
        )

    @property
    def compiled(self) -> bool:
        """Whether calls are scored by the compiled trees."""
        return self._compiled is not None

    @property
    def compiled_trees(self) -> Predict | None:
        """The compiled trees' scoring function, None when not compiled: whoever holds it
        keeps the trees compiled in this process (``nbo.models.compiled``)."""
        return self._compiled

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None and handle.value:
            self._lib.LGBM_BoosterFree(handle)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Scores (float64), one per row of ``features`` (rows x ``n_features``)."""
        rows, columns = features.shape
        if columns != self.n_features:
            raise ValueError(f"expected {self.n_features} features, got {columns}")
        if rows == 0:
            return np.empty(0)
        if self._compiled is not None:
            return self._compiled(features)
        return self.predict_lightgbm(features)

    def predict_lightgbm(self, features: np.ndarray) -> np.ndarray:
        """``predict`` through LightGBM's C API (the reference of the compiled trees)."""
        rows, columns = features.shape
        data = np.asarray(features, dtype=np.float32)
        row_major = not data.flags.f_contiguous
        if row_major and not data.flags.c_contiguous:
            data = np.ascontiguousarray(data)
        out = np.empty(rows, dtype=np.float64)
        written = ctypes.c_int64(0)
        self._check(
            self._lib.LGBM_BoosterPredictForMat(
                self._handle,
                data.ctypes.data_as(ctypes.c_void_p),
                ctypes.c_int(_FLOAT32),
                ctypes.c_int32(rows),
                ctypes.c_int32(columns),
                ctypes.c_int(1 if row_major else 0),
                ctypes.c_int(_PREDICT_NORMAL),
                ctypes.c_int(0),  # from the first iteration
                ctypes.c_int(-1),  # through all of them
                ctypes.c_char_p(self._PARAMETERS),
                ctypes.byref(written),
                out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
            )
        )
        if written.value != rows:
            raise ValueError(f"LightGBM wrote {written.value} scores for {rows} rows")
        return out

    def _check(self, code: int) -> None:
        if code != 0:
            # lightgbm declares LGBM_GetLastError's result as a C string (bytes).
            message = self._lib.LGBM_GetLastError()
            raise lgb.basic.LightGBMError(bytes(message).decode("utf-8", "replace"))


# LightGBM's C API constants (c_api.h): float32 data, plain (not raw/leaf) predictions.
_FLOAT32 = 0
_PREDICT_NORMAL = 0


@dataclass(frozen=True)
class LoadedRanker:
    """The booster (None when the model serves only its sources' ItemKNN, see
    ``nbo.models.policy``) and the item-side arrays of its sources."""

    scorer: RankerScorer | None
    similarity: sp.csr_matrix
    popularity_before: np.ndarray
    stage_popularity: np.ndarray  # len(STAGES) x items
    # Distinct buyers per item in the last fortnight; None in artifacts from before it
    # (which serve no booster that reads it: their feature names differ).
    popularity_recent: np.ndarray | None = None
    half_life_days: float = HALF_LIFE_DAYS
    # The derived views (``BY_COLUMN_ARRAYS``, ``PADDED_ARRAYS``); None in artifacts
    # from before them.
    similar_to: sp.csr_matrix | None = None
    neighbours: tuple[np.ndarray, np.ndarray] | None = None


def ranker_arrays(
    similarity: sp.csr_matrix,
    popularity_before: np.ndarray,
    stage_popularity: np.ndarray,
    popularity_recent: np.ndarray,
) -> dict[str, Any]:
    similarity = similarity.tocsr()
    # The similarity as the service reads it back (float32 weights, int32 ids), so that
    # the derived views hold exactly what it would build from it.
    saved = sp.csr_matrix(
        (
            similarity.data.astype(np.float32),
            similarity.indices.astype(np.int32),
            similarity.indptr.astype(np.int64),
        ),
        shape=similarity.shape,
    )
    by_column = saved.T.tocsr()
    ids, weights = padded_rows(saved)
    return {
        "knn_indptr": saved.indptr.astype(np.int64),
        "knn_indices": saved.indices.astype(np.int32),
        "knn_data": saved.data,
        "knn_by_column_indptr": by_column.indptr.astype(np.int64),
        "knn_by_column_indices": by_column.indices.astype(np.int32),
        "knn_by_column_data": by_column.data.astype(np.float32),
        "knn_padded_ids": ids,
        "knn_padded_weights": weights,
        POPULARITY_BEFORE: np.asarray(popularity_before, dtype=np.float32),
        STAGE_POPULARITY: np.asarray(stage_popularity, dtype=np.float32),
        POPULARITY_RECENT: np.asarray(popularity_recent, dtype=np.float32),
    }


def ranker_file(booster: lgb.Booster) -> dict[str, bytes]:
    return {RANKER_FILE: booster.model_to_string().encode("utf-8")}


def lightgbm_version() -> str:
    return metadata.version("lightgbm")


def load_ranker(
    artifact: Artifact, n_items: int, booster: bool, compiled: bool = True
) -> LoadedRanker | None:
    """The item-side arrays of the ranker's sources and, when ``booster``, the booster
    (its file must then be there, its trees compiled when ``compiled``); None for an
    artifact without them (older, trained on data too short for a ranker, or serving a
    policy that needs neither)."""
    section = artifact.manifest.get("ranker") or {}
    where = f"model {artifact.version}: ranker"
    path = artifact.files.get(RANKER_FILE)
    wanted = (*KNN_ARRAYS, POPULARITY_BEFORE, STAGE_POPULARITY)
    missing = [name for name in wanted if name not in artifact.arrays]
    if not booster and len(missing) == len(wanted):
        return None
    if booster and not section.get("enabled"):
        raise ArtifactError(f"{where}: the manifest declares none to serve")
    if (booster and path is None) or missing:
        raise ArtifactError(
            f"{where}: missing {[RANKER_FILE, *missing] if booster and path is None else missing}"
        )
    scorer = None
    recent = artifact.arrays.get(POPULARITY_RECENT)
    if booster:
        assert path is not None
        scorer = _load_scorer(section, path, where, compiled)
        # (Checked after the features: an older booster is refused by their names.)
        if recent is None:
            raise ArtifactError(f"{where}: missing {[POPULARITY_RECENT]}")
    half_life = float(section.get("half_life_days", HALF_LIFE_DAYS))
    if not half_life > 0:
        raise ArtifactError(f"{where}: half_life_days must be positive, got {half_life}")
    indptr, indices, data = (np.asarray(artifact.arrays[name]) for name in KNN_ARRAYS)
    before = np.asarray(artifact.arrays[POPULARITY_BEFORE], dtype=np.float64)
    by_stage = np.asarray(artifact.arrays[STAGE_POPULARITY], dtype=np.float64)
    if (
        len(indptr) != n_items + 1
        or len(before) != n_items
        or len(indices) != len(data)
        or by_stage.shape != (len(STAGES), n_items)
        or (recent is not None and len(recent) != n_items)
    ):
        raise ArtifactError(f"{where}: similarity or popularity arrays do not fit {n_items} items")
    similarity = sp.csr_matrix((data, indices, indptr), shape=(n_items, n_items))
    return LoadedRanker(
        scorer,
        similarity,
        before,
        by_stage,
        None if recent is None else np.asarray(recent, dtype=np.float64),
        half_life,
        *_derived(artifact, n_items, len(data), where),
    )


def _derived(
    artifact: Artifact, n_items: int, n_pairs: int, where: str
) -> tuple[sp.csr_matrix | None, tuple[np.ndarray, np.ndarray] | None]:
    """The similarity by column and its padded rows as saved (None, None in an artifact
    from before them), checked against the similarity's size."""
    names = (*BY_COLUMN_ARRAYS, *PADDED_ARRAYS)
    present = [name for name in names if name in artifact.arrays]
    if not present:
        return None, None
    if len(present) != len(names):
        missing = [name for name in names if name not in artifact.arrays]
        raise ArtifactError(f"{where}: missing {missing}")
    indptr, indices, data = (np.asarray(artifact.arrays[name]) for name in BY_COLUMN_ARRAYS)
    ids, weights = (np.asarray(artifact.arrays[name]) for name in PADDED_ARRAYS)
    if (
        len(indptr) != n_items + 1
        or not len(indices) == len(data) == n_pairs
        or ids.ndim != 2
        or ids.shape[0] != n_items
        or ids.shape != weights.shape
    ):
        raise ArtifactError(f"{where}: the similarity's derived arrays do not fit it")
    return sp.csr_matrix((data, indices, indptr), shape=(n_items, n_items)), (ids, weights)


def tree_layout_problem(text: str) -> str | None:
    """Why LightGBM's model text does not hold its trees where its header says, or None.

    LightGBM cuts the text into trees by the byte sizes of ``tree_sizes=`` and parses them
    on its OpenMP threads, where a parse error is not an exception but ``std::terminate``:
    a file whose checksum was made after a wrong edit would abort the worker that loads
    it instead of being refused. Each tree must start where the sizes put it."""
    data = text.encode("utf-8")
    sizes = re.search(rb"^tree_sizes=([0-9 ]*)$", data, re.MULTILINE)
    first = re.search(rb"^Tree=0$", data, re.MULTILINE)
    if sizes is None or first is None:
        return None  # no sizes: LightGBM parses tree by tree, and raises
    position = first.start()
    for number, size in enumerate(int(s) for s in sizes.group(1).split()):
        if not data.startswith(b"Tree=%d\n" % number, position):
            return f"tree {number} is not where tree_sizes puts it"
        position += size
    if not data[position:].lstrip().startswith(b"end of trees"):
        return "the trees do not end where tree_sizes says"
    return None


def _load_scorer(
    section: dict[str, Any], path: Path, where: str, compiled: bool = True
) -> RankerScorer:
    """The booster of ``path``, checked against this LightGBM and these features."""
    trained = str(section.get("lightgbm_version", ""))
    if trained.split(".")[:1] != lightgbm_version().split(".")[:1]:
        raise ArtifactError(
            f"{where}: trained with LightGBM {trained or 'unknown'}, this is "
            f"{lightgbm_version()}; retrain with this version"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{where}: {RANKER_FILE} cannot be read ({exc})") from None
    problem = tree_layout_problem(text)
    if problem is not None:
        raise ArtifactError(f"{where}: {RANKER_FILE} cannot be read ({problem})")
    try:
        booster = lgb.Booster(model_str=text)
    except lgb.basic.LightGBMError as exc:
        raise ArtifactError(f"{where}: {RANKER_FILE} cannot be read ({exc})") from None
    if list(booster.feature_name()) != list(FEATURES):
        raise ArtifactError(
            f"{where}: expects features {booster.feature_name()}, this nbo computes "
            f"{list(FEATURES)}; retrain with this version of nbo"
        )
    try:
        return RankerScorer(booster, compiled)
    except (lgb.basic.LightGBMError, AttributeError) as exc:
        raise ArtifactError(f"{where}: {RANKER_FILE} cannot be served ({exc})") from None
