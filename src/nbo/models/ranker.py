"""The two-stage ranker in an artifact: saved as LightGBM's own text format, checked at load.

What ``nbo.two_stage`` needs at serving besides the ALS model: the ItemKNN similarity
(three CSR arrays), popularity in the window before the recent one (for the trend), the
popularity within each lifecycle stage, and the booster. The booster file is LightGBM's
documented text model (no pickle); loading checks its checksum (the artifact does),
LightGBM's major version and the feature names.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from typing import Any

import lightgbm as lgb
import numpy as np
import scipy.sparse as sp

from nbo.artifacts import Artifact
from nbo.errors import ArtifactError
from nbo.lifecycle import STAGES
from nbo.two_stage import FEATURES

RANKER_FILE = "ranker.txt"
KNN_ARRAYS = ("knn_indptr", "knn_indices", "knn_data")
POPULARITY_BEFORE = "popularity_before"
STAGE_POPULARITY = "stage_popularity"


@dataclass(frozen=True)
class LoadedRanker:
    booster: lgb.Booster
    similarity: sp.csr_matrix
    popularity_before: np.ndarray
    stage_popularity: np.ndarray  # len(STAGES) x items


def ranker_arrays(
    similarity: sp.csr_matrix, popularity_before: np.ndarray, stage_popularity: np.ndarray
) -> dict[str, Any]:
    similarity = similarity.tocsr()
    return {
        "knn_indptr": similarity.indptr.astype(np.int64),
        "knn_indices": similarity.indices.astype(np.int32),
        "knn_data": similarity.data.astype(np.float32),
        POPULARITY_BEFORE: np.asarray(popularity_before, dtype=np.float32),
        STAGE_POPULARITY: np.asarray(stage_popularity, dtype=np.float32),
    }


def ranker_file(booster: lgb.Booster) -> dict[str, bytes]:
    return {RANKER_FILE: booster.model_to_string().encode("utf-8")}


def lightgbm_version() -> str:
    return metadata.version("lightgbm")


def load_ranker(artifact: Artifact, n_items: int) -> LoadedRanker | None:
    """The booster and its item-side arrays of an artifact with a ranker; None for one
    without (older, or trained on data too short for a ranker)."""
    section = artifact.manifest.get("ranker") or {}
    if not section.get("enabled"):
        return None
    where = f"model {artifact.version}: ranker"
    path = artifact.files.get(RANKER_FILE)
    wanted = (*KNN_ARRAYS, POPULARITY_BEFORE, STAGE_POPULARITY)
    missing = [name for name in wanted if name not in artifact.arrays]
    if path is None or missing:
        raise ArtifactError(
            f"{where}: missing {[RANKER_FILE, *missing] if path is None else missing}"
        )
    trained = str(section.get("lightgbm_version", ""))
    if trained.split(".")[:1] != lightgbm_version().split(".")[:1]:
        raise ArtifactError(
            f"{where}: trained with LightGBM {trained or 'unknown'}, this is "
            f"{lightgbm_version()}; retrain with this version"
        )
    try:
        booster = lgb.Booster(model_str=path.read_text(encoding="utf-8"))
    except (lgb.basic.LightGBMError, OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{where}: {RANKER_FILE} cannot be read ({exc})") from None
    if list(booster.feature_name()) != list(FEATURES):
        raise ArtifactError(
            f"{where}: expects features {booster.feature_name()}, this nbo computes "
            f"{list(FEATURES)}; retrain with this version of nbo"
        )
    indptr, indices, data = (np.asarray(artifact.arrays[name]) for name in KNN_ARRAYS)
    before = np.asarray(artifact.arrays[POPULARITY_BEFORE], dtype=np.float64)
    by_stage = np.asarray(artifact.arrays[STAGE_POPULARITY], dtype=np.float64)
    if (
        len(indptr) != n_items + 1
        or len(before) != n_items
        or len(indices) != len(data)
        or by_stage.shape != (len(STAGES), n_items)
    ):
        raise ArtifactError(f"{where}: similarity or popularity arrays do not fit {n_items} items")
    similarity = sp.csr_matrix((data, indices, indptr), shape=(n_items, n_items))
    return LoadedRanker(booster, similarity, before, by_stage)
