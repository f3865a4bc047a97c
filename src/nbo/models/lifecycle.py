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
from nbo.core.compiled import kernel
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
    no_loyal = thresholds.loyal_min_orders is None or thresholds.loyal_min_monetary is None
    codes = _stage_codes(
        np.ascontiguousarray(features, dtype=np.float64),
        filled(len(features), np.nan)
        if churn_risk is None
        else np.asarray(churn_risk, dtype=np.float64),
        float(thresholds.horizon_days),
        float(thresholds.new_days),
        float(thresholds.at_risk_threshold),
        np.inf if no_loyal else float(thresholds.loyal_min_orders),  # type: ignore[arg-type]
        np.inf if no_loyal else float(thresholds.loyal_min_monetary),  # type: ignore[arg-type]
        float(thresholds.loyal_max_risk),
        not no_loyal,
    )
    return _STAGE_NAMES[codes]


# The stages by code, as ``_stage_codes`` numbers them.
_STAGE_NAMES = np.array(["active", "loyal", "at_risk", "new", "lapsed"], dtype=_STAGE_DTYPE)
_ACTIVE, _LOYAL, _AT_RISK, _NEW, _LAPSED = range(len(_STAGE_NAMES))
_FREQUENCY, _RECENCY = FEATURE_INDEX["frequency"], FEATURE_INDEX["recency_days"]
_TENURE, _MONETARY = FEATURE_INDEX["tenure_days"], FEATURE_INDEX["monetary"]


@kernel
def _stage_codes(  # pragma: no cover - compiled
    features: np.ndarray,
    risk: np.ndarray,
    horizon_days: float,
    new_days: float,
    at_risk_threshold: float,
    loyal_min_orders: float,
    loyal_min_monetary: float,
    loyal_max_risk: float,
    any_loyal: bool,
) -> np.ndarray:
    """Each row's stage code, by the first rule that holds (the module docstring).

    Compiled: one customer's stage was a dozen numpy calls (a mask per rule) per request.
    NaN compares False, as it did in numpy: an unknown recency is not lapsed, an unknown
    tenure not new, an unknown risk neither at risk nor too high to be loyal."""
    codes = np.empty(len(features), np.int64)
    for row in range(len(features)):
        frequency = features[row, _FREQUENCY]
        known_risk = not np.isnan(risk[row])
        if frequency <= 0:
            code = _NEW
        elif features[row, _RECENCY] > horizon_days:
            code = _LAPSED
        elif features[row, _TENURE] <= new_days:
            code = _NEW
        elif known_risk and risk[row] >= at_risk_threshold:
            code = _AT_RISK
        elif (
            any_loyal
            and frequency >= loyal_min_orders
            and features[row, _MONETARY] >= loyal_min_monetary
            and (not known_risk or risk[row] < loyal_max_risk)
        ):
            code = _LOYAL
        else:
            code = _ACTIVE
        codes[row] = code
    return codes
