"""Step 1, load: read and clean the purchase file, drop the erased customers and those
who withdrew consent to personalization, encode the ids as integers and group the lines
into each customer's orders.

Everything later reads the purchases from here, so an erased customer, or one whose
consent withdraws personalization, is gone from every model, feature and report the
moment the file is read: nothing of them is profiled (stage, churn risk, RFM, send hour)
or learned (factors, shortlists, histories) while the withdrawal stands.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nbo.core import columns as col
from nbo.core.erased import ErasedList, erased_among
from nbo.core.errors import PurchaseDataError
from nbo.data.features import OrderTable, build_order_table, has_prices, line_values
from nbo.data.history import EncodedPurchases, encode_purchases
from nbo.data.mapping import ColumnMapping
from nbo.data.purchases import CleaningReport, describe_kept, fingerprint, read_purchases
from training.progress import Steps

# The cleaning report's reason for the rows of customers erased in the service's store.
DROP_ERASED = "erased customer"
# ... and for those whose consent record in the store withdraws personalization.
DROP_WITHDRAWN = "personalization withdrawn"


@dataclass
class TrainingData:
    """The purchases the trainer learns from, in the shapes its steps use."""

    path: Path
    mapping: ColumnMapping  # as given, with its command-line overrides
    # Of the file (or the dataset's files) as read: the data fingerprint in the manifest
    # and version.
    sha256: str
    # Canonical columns, cleaned, without erased customers nor those who withdrew
    # consent to personalization.
    purchases: pd.DataFrame
    cleaning: CleaningReport
    erased_customers: int  # customers dropped because the store erased them
    # Customers dropped because their consent in the store withdraws personalization.
    withdrawn_customers: int
    encoded: EncodedPurchases  # the purchase lines as integer positions
    orders: OrderTable  # per customer of ``encoded``, their orders and returns
    priced: bool  # whether the lines carry prices
    # The median value of a purchase line (None without prices): the money scale the
    # catalogue's incentives are read against.
    typical_line_value: float | None
    # ``ids_digest`` of the customers dropped as erased and as withdrawn: the same count
    # of other customers is other data (a rerun is not "unchanged", ``training.gate``).
    erased_digest: str = ""
    withdrawn_digest: str = ""

    @property
    def last_s(self) -> int:
        """Unix seconds of the last purchase."""
        return int(self.encoded.time.max())

    @property
    def end_s(self) -> int:
        """The end of the data: features "as of" a moment count orders strictly before
        it, so the end is one second after the last purchase."""
        return self.last_s + 1

    def section(self) -> dict[str, Any]:
        """The manifest's ``data`` section."""
        return {
            "file": self.path.name,
            "sha256": self.sha256,
            # How the file was read, for whoever reads the model without the mapping file
            # or the command line: the mapping's name or path with the flags on top of it,
            # then what they came to (canonical column -> the file's, for the columns
            # read; the cleaning rules, with the timestamps' format as applied).
            "mapping": self.mapping.described,
            "columns": dict(self.cleaning.columns),
            "rules": {
                **self.mapping.cleaning.to_dict(),
                "timestamp_format": self.cleaning.timestamp_format,
            },
            **self.cleaning.to_dict(),
            "erased_customers": self.erased_customers,
            "erased_digest": self.erased_digest,
            "withdrawn_customers": self.withdrawn_customers,
            "withdrawn_digest": self.withdrawn_digest,
            "typical_line_value": self.typical_line_value,
        }


def load_data(
    path: Path,
    mapping: ColumnMapping,
    erased: ErasedList | Collection[str],
    steps: Steps,
    withdrawn: Collection[str] = (),
) -> TrainingData:
    """Read ``path`` through ``mapping``, without the ``erased`` customer ids (counted
    in the cleaning report as ``DROP_ERASED``) and the ``withdrawn`` ones, whose consent
    withdraws personalization (``DROP_WITHDRAWN``)."""
    with steps.step("read purchases"):
        purchases, cleaning = read_purchases(path, mapping)
        purchases, erased_ids = drop_customers(purchases, cleaning, erased, DROP_ERASED)
        purchases, withdrawn_ids = drop_customers(purchases, cleaning, withdrawn, DROP_WITHDRAWN)
        sha256 = fingerprint(path)
        encoded = encode_purchases(purchases)
    with steps.step("customer orders"):
        values = line_values(purchases)
        orders = build_order_table(purchases, encoded.customers, cleaning.returns, values)
        priced = has_prices(purchases)
    return TrainingData(
        path=path,
        mapping=mapping,
        sha256=sha256,
        purchases=purchases,
        cleaning=cleaning,
        erased_customers=len(erased_ids),
        withdrawn_customers=len(withdrawn_ids),
        encoded=encoded,
        orders=orders,
        priced=priced,
        typical_line_value=float(np.median(values)) if priced else None,
        erased_digest=ids_digest(erased_ids),
        withdrawn_digest=ids_digest(withdrawn_ids),
    )


def ids_digest(ids: Collection[str]) -> str:
    """SHA-256 of the sorted customer ids, one a line: which customers were left out,
    recorded without naming them (the manifest outlives an erasure)."""
    return hashlib.sha256("\n".join(sorted(ids)).encode("utf-8")).hexdigest()


def drop_customers(
    purchases: pd.DataFrame,
    report: CleaningReport,
    erased: ErasedList | Collection[str],
    reason: str,
) -> tuple[pd.DataFrame, list[str]]:
    """Drop every row of the ``erased`` customers (erased, or without consent to
    personalization), updating the cleaning report as the cleaning itself would, under
    ``reason``; answers the purchases left and the ids of the customers dropped (those of
    ``erased`` the file has).

    ``erased`` may be the store's erased list, which keeps keyed hashes, not ids: the
    file's distinct ids (its categories, when the column is categorical) are hashed once
    each and tested, then the rows matched by id as before."""
    ids = purchases[col.CUSTOMER_ID]
    if len(erased):
        distinct = (
            ids.cat.categories if isinstance(ids.dtype, pd.CategoricalDtype) else ids.unique()
        )
        erased = sorted(erased_among(erased, (str(c) for c in distinct)))
    mask = ids.isin(erased).to_numpy(dtype=bool) if erased else np.zeros(len(ids), bool)
    rows = int(mask.sum())
    report.dropped[reason] = rows
    if not rows:
        return purchases, []
    customers = sorted({str(customer) for customer in ids[mask].unique()})
    purchases = purchases[~mask].reset_index(drop=True)
    if report.returns is not None:
        erased_returns = report.returns[col.CUSTOMER_ID].isin(erased).to_numpy(dtype=bool)
        report.returns = report.returns[~erased_returns].reset_index(drop=True)
    if purchases.empty:
        raise PurchaseDataError(report.path, f"no purchases left after cleaning ({rows} {reason})")
    if isinstance(purchases[col.CUSTOMER_ID].dtype, pd.CategoricalDtype):
        # Not even the dropped ids as unused categories.
        purchases[col.CUSTOMER_ID] = purchases[col.CUSTOMER_ID].cat.remove_unused_categories()
    describe_kept(report, purchases)
    return purchases, customers
