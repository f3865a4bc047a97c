"""The served model: an artifact turned into what ranking needs, checked for consistency.

What is named here is the artifact's contract: the trainer writes these arrays with
``model_arrays`` and the service reads them with ``load_serving_model``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares

from nbo.artifacts import Artifact, load_artifact
from nbo.errors import ArtifactError
from nbo.history import PurchaseHistory
from nbo.ids import IdMap
from nbo.models.cf import AlsExplainer, AlsParams, als_from_factors

REQUIRED_ARRAYS = (
    "user_factors",
    "item_factors",
    "customer_ids",
    "item_ids",
    "history_indptr",
    "history_indices",
    "history_counts",
    "history_confidence",
    "history_last_purchase",
    "popularity",
)


@dataclass
class ServingModel:
    """Everything ranking reads; immutable once loaded (swaps replace the whole object)."""

    version: str
    manifest: dict[str, Any]
    als: AlternatingLeastSquares
    customers: IdMap
    items: IdMap
    indptr: np.ndarray
    history_items: np.ndarray
    history_confidence: np.ndarray
    history_last_purchase: np.ndarray
    popularity: np.ndarray
    popular_order: np.ndarray
    item_names: dict[str, str] = field(default_factory=dict)
    loaded_at: float = field(default_factory=time.time)
    explainer: AlsExplainer = field(init=False)
    # External item ids as a Python list: indexing it per offer is cheaper than numpy's.
    item_ids: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.explainer = AlsExplainer(self.als)
        self.item_ids = self.items.ids.tolist()

    def history_of(self, customer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(items, confidences, last purchase seconds) of a known customer."""
        start, end = self.indptr[customer], self.indptr[customer + 1]
        return (
            self.history_items[start:end],
            self.history_confidence[start:end],
            self.history_last_purchase[start:end],
        )


def model_arrays(
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    history: PurchaseHistory,
    confidence: sp.csr_matrix,
    popularity: np.ndarray,
) -> dict[str, np.ndarray]:
    """The arrays of an artifact, in the shape ``load_serving_model`` expects."""
    counts, last = history.counts, history.last_purchase
    if not (
        np.array_equal(counts.indptr, last.indptr)
        and np.array_equal(counts.indices, last.indices)
        and np.array_equal(counts.indptr, confidence.indptr)
        and np.array_equal(counts.indices, confidence.indices)
    ):
        raise ValueError("history matrices must share one sparsity pattern")
    return {
        "user_factors": np.asarray(user_factors, dtype=np.float32),
        "item_factors": np.asarray(item_factors, dtype=np.float32),
        "customer_ids": history.customers.ids,
        "item_ids": history.items.ids,
        "history_indptr": counts.indptr.astype(np.int64),
        "history_indices": counts.indices.astype(np.int32),
        "history_counts": counts.data.astype(np.float32),
        "history_confidence": confidence.data.astype(np.float32),
        "history_last_purchase": last.data.astype(np.int64),
        "popularity": popularity.astype(np.float32),
    }


def load_serving_model(models_dir: Path, version: str | None = None) -> ServingModel:
    """Load, verify and assemble a model; ArtifactError when it must not serve."""
    artifact = load_artifact(models_dir, version)
    return serving_model_from_artifact(artifact)


def serving_model_from_artifact(artifact: Artifact) -> ServingModel:
    # Plain ndarray views of the memory maps: same pages, no np.memmap overhead on every
    # slice taken per request.
    arrays = {name: np.asarray(array) for name, array in artifact.arrays.items()}
    missing = [name for name in REQUIRED_ARRAYS if name not in arrays]
    if missing:
        raise ArtifactError(f"model {artifact.version}: missing arrays {missing}")
    user_factors = arrays["user_factors"]
    item_factors = arrays["item_factors"]
    customers = IdMap(np.asarray(arrays["customer_ids"]))
    items = IdMap(np.asarray(arrays["item_ids"]))
    indptr = np.asarray(arrays["history_indptr"])
    checks = {
        "user_factors rows = customers": user_factors.shape[0] == len(customers),
        "item_factors rows = items": item_factors.shape[0] == len(items),
        "factor widths agree": user_factors.shape[1] == item_factors.shape[1],
        "history rows = customers": len(indptr) == len(customers) + 1,
        "popularity per item": len(arrays["popularity"]) == len(items),
        "history lengths agree": len(arrays["history_indices"])
        == len(arrays["history_confidence"])
        == len(arrays["history_last_purchase"])
        == int(indptr[-1]),
    }
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        raise ArtifactError(f"model {artifact.version}: inconsistent arrays ({', '.join(failed)})")
    params = AlsParams.from_dict(artifact.manifest.get("config", {}).get("als", {}))
    if params.factors != item_factors.shape[1]:
        params = AlsParams.from_dict({**params.to_dict(), "factors": item_factors.shape[1]})
    als = als_from_factors(user_factors, item_factors, params)
    popularity = np.asarray(arrays["popularity"])
    return ServingModel(
        version=artifact.version,
        manifest=artifact.manifest,
        als=als,
        customers=customers,
        items=items,
        indptr=indptr,
        history_items=np.asarray(arrays["history_indices"]),
        history_confidence=np.asarray(arrays["history_confidence"]),
        history_last_purchase=np.asarray(arrays["history_last_purchase"]),
        popularity=popularity,
        popular_order=np.lexsort((np.arange(len(popularity)), -popularity)),
        item_names=dict(artifact.documents.get("item_names", {})),
    )
