"""What the published model files on disk hold of one customer, served or not.

A model's files are read-only once published: an erasure makes every served model
forget the customer (``ServingModel.forget``), and a withdrawal of consent to
personalization stops their use, but the customer's rows stay in the files of every
version trained on them until that version is pruned (``nbo models --prune``). The
erasure receipt and the data export name those versions, and the export shows the
profile row a served model holds (``customers.parquet``), so what is said of the
customer's data is what is on disk.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from nbo.models.artifacts import list_versions

log = logging.getLogger(__name__)

# The artifact's side file of every trained customer's profile: stage, churn risk, RFM
# and best send hour as of the end of the training data (written by the trainer).
CUSTOMERS_FILE = "customers.parquet"
# The artifact's array of trained customer ids, in row order.
CUSTOMER_IDS_FILE = "customer_ids.npy"


def holds_customer(version_dir: Path, customer_id: str) -> bool:
    """Whether the version's files hold the customer (its customer ids name them).
    A version whose ids cannot be read is taken to hold them: it may, and a receipt
    that leaves it out would say less than is on disk."""
    try:
        ids = np.load(version_dir / CUSTOMER_IDS_FILE, mmap_mode="r", allow_pickle=False)
        return bool(np.any(ids == customer_id))
    except (OSError, ValueError) as exc:
        log.warning("model %s: customer ids not read (%s)", version_dir.name, exc)
        return True


def versions_holding(models_dir: Path, customer_id: str) -> list[str]:
    """Every published version on disk (served or not) whose files hold the customer,
    oldest first."""
    return [v for v in list_versions(models_dir) if holds_customer(models_dir / v, customer_id)]


def held_profile(models_dir: Path, version: str, customer_id: str) -> dict[str, Any] | None:
    """The customer's row of the version's ``customers.parquet`` (every column but the
    id), or None when the version has none (an older artifact) or it cannot be read."""
    path = models_dir / version / CUSTOMERS_FILE
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path, filters=[("customer_id", "==", customer_id)])
    except (OSError, pa.ArrowException) as exc:
        log.warning("model %s: %s not read (%s)", version, CUSTOMERS_FILE, exc)
        return None
    if table.num_rows == 0:
        return None
    row = table.slice(0, 1).to_pylist()[0]
    row.pop("customer_id", None)
    return row
