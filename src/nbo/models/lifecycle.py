"""Lifecycle stages, churn risk and best send time of a customer, as of a moment.

Every customer is in exactly one stage, decided by the first rule that holds:

1. **lapsed**: no order for longer than the churn horizon (default 90 days);
2. **new**: first order within ``new_days`` (default 30), or no order at all;
3. **at_risk**: churn risk at or above ``at_risk_threshold`` (default 0.5);
4. **loyal**: orders and total value at or above the loyal thresholds (by default the
   80th percentiles of the non-lapsed customers at training, stored in the manifest)
   and churn risk below ``loyal_max_risk`` (default 0.3);
5. **active**: everyone else.

Lapsed comes first because a risk score means little for someone already gone; new
before at-risk because a first-time buyer has no habit to lose yet. Without a churn model
the risk is unknown: nobody is at risk, and loyal rests on orders and value alone.

The trainer (``stages_of`` for every customer) and the service (``customer_profile`` for
one, with the purchases posted since training) share the rules and the feature code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nbo.core.arrays import filled
from nbo.core.vocabulary import STAGES
from nbo.data.features import FEATURE_INDEX
from nbo.models.send_time import PSEUDO_ORDERS

if TYPE_CHECKING:
    pass

_STAGE_DTYPE = f"<U{max(map(len, STAGES))}"


@dataclass(frozen=True)
class LifecycleThresholds:
    """The stage rules' thresholds, as the trainer resolved and recorded them.

    ``loyal_min_orders``/``loyal_min_monetary`` None: no customer is loyal (artifacts
    trained before loyal thresholds existed).
    """

    horizon_days: float = 90.0
    new_days: float = 30.0
    at_risk_threshold: float = 0.5
    loyal_max_risk: float = 0.3
    loyal_min_orders: float | None = None
    loyal_min_monetary: float | None = None
    send_time_pseudo_orders: float = PSEUDO_ORDERS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_manifest(cls, section: Mapping[str, Any] | None) -> LifecycleThresholds:
        """From the manifest's ``lifecycle`` section (defaults for what it lacks)."""
        section = section or {}
        known = {name: section[name] for name in cls.__dataclass_fields__ if name in section}
        return cls(**known)


def stages_of(
    features: np.ndarray, churn_risk: np.ndarray | None, thresholds: LifecycleThresholds
) -> np.ndarray:
    """The stage of each row of ``customer_features`` output (an array of stage names).

    ``churn_risk``: per row, NaN where unknown; None when there is no churn model.
    """
    features = np.atleast_2d(features)
    frequency = features[:, FEATURE_INDEX["frequency"]]
    recency = features[:, FEATURE_INDEX["recency_days"]]
    tenure = features[:, FEATURE_INDEX["tenure_days"]]
    monetary = features[:, FEATURE_INDEX["monetary"]]
    risk = filled(len(features), np.nan) if churn_risk is None else np.asarray(churn_risk)
    known_risk = ~np.isnan(risk)
    none = frequency <= 0
    # (Comparisons with NaN are False without raising numpy's invalid flag: no errstate.)
    lapsed = recency > thresholds.horizon_days
    new = tenure <= thresholds.new_days
    at_risk = known_risk & (risk >= thresholds.at_risk_threshold)
    if thresholds.loyal_min_orders is None or thresholds.loyal_min_monetary is None:
        loyal = np.zeros(len(features), dtype=bool)
    else:
        loyal = (
            (frequency >= thresholds.loyal_min_orders)
            & (monetary >= thresholds.loyal_min_monetary)
            & (~known_risk | (risk < thresholds.loyal_max_risk))
        )
    # The rules from the last to the first, so the first that holds is the one left.
    stages = filled(len(features), "active", _STAGE_DTYPE)
    stages[loyal] = "loyal"
    stages[at_risk] = "at_risk"
    stages[new] = "new"
    stages[lapsed] = "lapsed"
    stages[none] = "new"
    return stages
