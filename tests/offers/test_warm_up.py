"""The decision's compiled kernels are ready once the model is loaded: no customer's
request compiles one (seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nbo.catalog.loading import load_catalog
from nbo.data import features
from nbo.models import churn, lifecycle
from nbo.models.served import load_serving_model
from nbo.offers import arbitration
from nbo.offers.decision import ContactPolicy, DecisionRequest, Occasion, decide
from nbo.offers.state import CustomerState, PostedPurchase
from nbo.offers.suppression import SuppressionWindow
from training.pipeline import TrainResult

KERNELS = (
    features._features_pass,
    arbitration._plain_terms,
    arbitration._choose,
    churn._raw_scores,
    churn._interpolate,
    churn._bounded,
    lifecycle._stage_codes,
)


def test_after_the_warm_up_no_request_compiles_a_kernel(churn_trained: TrainResult) -> None:
    # (The churn data's model: it has a churn model, so every kernel runs.)
    assert churn_trained.path is not None
    served = load_serving_model(churn_trained.path.parent)
    assert served.churn is not None
    compiled = [list(kernel.signatures) for kernel in KERNELS]
    assert all(compiled)
    catalog = load_catalog(Path(__file__).parents[2] / "data" / "catalog.yaml")
    policy = ContactPolicy(SuppressionWindow(30))
    now = served.trained_until_s + 86400
    customers = [str(c) for c in served.customers.ids[:3]]
    item = str(served.items.ids[int(np.argmax(served.item_price))])
    posted = (PostedPurchase(item, 2.0, now - 3600, "o1", "e1", 4.5),)
    requests = [
        DecisionRequest(customers[0]),
        DecisionRequest(customers[1], CustomerState(posted=posted)),
        DecisionRequest("someone-new", CustomerState(posted=posted)),
        DecisionRequest(customers[2]),
    ]
    for chunk in ([requests[0]], [requests[1]], [requests[2]], requests):
        decide(served, catalog, policy, chunk, Occasion("email", 5, now))
    assert [list(kernel.signatures) for kernel in KERNELS] == compiled
