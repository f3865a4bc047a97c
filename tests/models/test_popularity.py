"""Popularity: the served popularity is the planted data's distinct recent buyers, and a
group's popularity is the share of its customers who bought."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from support import expected_popularity

from nbo.data.history import build_history, to_unix_seconds
from nbo.models.popularity import group_popularity, popularity_scores
from nbo.models.served import ServingModel


def test_group_popularity_is_the_share_of_each_groups_customers_who_bought() -> None:
    counts = sp.csr_matrix(
        np.array(
            [
                [1, 0, 2],  # group 0
                [0, 0, 1],  # group 0
                [3, 1, 0],  # group 1
                [5, 5, 5],  # no group
            ],
            dtype=np.float64,
        )
    )
    shares = group_popularity(counts, np.array([0, 0, 1, -1]), 3)
    np.testing.assert_allclose(shares[0], [0.5, 0.0, 1.0])
    np.testing.assert_allclose(shares[1], [1.0, 1.0, 0.0])
    np.testing.assert_allclose(shares[2], [0.0, 0.0, 0.0])  # an empty group


def test_served_popularity_matches_the_planted_data(
    served: ServingModel, planted_purchases: pd.DataFrame
) -> None:
    days = served.manifest["config"]["popularity_days"]
    expected = expected_popularity(planted_purchases, days)
    np.testing.assert_array_equal(np.asarray(served.popularity), expected.to_numpy())

    history = build_history(planted_purchases)
    as_of = int(to_unix_seconds(planted_purchases["timestamp"]).max())
    scores = popularity_scores(history.counts, history.last_purchase, as_of, days)
    np.testing.assert_array_equal(scores, expected.to_numpy())
