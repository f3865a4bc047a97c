"""What is served, evaluated (training/served.py): the service's decision run at the
cutoff by a model assembled there, scored like every method; and the current model
served at the same cutoff for the quality gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support import GROUP_ITEMS, small_training_config
from threadpoolctl import threadpool_limits

from nbo.catalog.loading import default_catalog, load_catalog
from nbo.data.mapping import load_mapping
from nbo.offers.suppression import SuppressionWindow
from training.config import TrainingConfig
from training.evaluate import Evaluation, evaluate
from training.fit import fit_before_cutoff
from training.load import load_data
from training.pipeline import train
from training.progress import Steps
from training.served import (
    SERVED,
    SERVED_DEPTH,
    below_best_rule,
    posted_since,
    score,
    serve,
    served_depth,
    served_metrics,
    served_model,
    with_rule_curves,
)
from training.split import TimeSplit, time_split


def _evaluated(data_path: Path, config: TrainingConfig) -> tuple[TimeSplit, Evaluation]:
    steps = Steps(None)
    with threadpool_limits(limits=1, user_api="blas"):
        data = load_data(data_path, load_mapping("canonical"), (), steps)
        split = time_split(data.encoded, config.holdout_days, config.suppression.days)
        fitted = fit_before_cutoff(data, split, config, steps)
        return split, evaluate(data, split, fitted, config, steps)


@pytest.fixture(scope="module")
def unsuppressed(planted_csv: Path) -> tuple[TimeSplit, Evaluation]:
    """The planted data evaluated with nothing suppressed."""
    config = small_training_config().model_copy(update={"suppression_days": "0"})
    return _evaluated(planted_csv, config)


@pytest.mark.learned
@pytest.mark.parametrize("policy", ["als", "buy_again", "itemknn", "popularity"])
def test_served_with_nothing_suppressed_is_the_method_itself(
    unsuppressed: tuple[TimeSplit, Evaluation], policy: str
) -> None:
    """Served through the whole decision (candidates, the default catalogue's
    arbitration, the popular fill), a rule or ALS gives exactly the method's lists when
    nothing is suppressed: one definition of each, and arbitration keeps its order."""
    _, evaluation = unsuppressed
    config = small_training_config().model_copy(update={"suppression_days": "0"})
    at = evaluation.cutoff
    model = served_model(at, config, evaluation.propensity)

    metrics = served_metrics(model, at, policy, config, default_catalog())

    for truth in ("all", "new"):
        assert metrics[truth][SERVED] == evaluation.metrics[truth][policy], (truth, policy)


@pytest.mark.parametrize("policy", ["buy_again", "itemknn"])
def test_a_served_rule_gets_curves_of_its_score_with_their_held_out_quality(
    unsuppressed: tuple[TimeSplit, Evaluation], policy: str
) -> None:
    """The curves a served rule publishes: its own items' on the basis of lower held-out
    Brier score and the fill's (no position curve), with the report's held-out Brier
    score of each basis beside the position curve's, and the propensities of its lists
    never rising down them."""
    _, evaluation = unsuppressed
    config = small_training_config().model_copy(update={"suppression_days": "0"})
    propensity, report = with_rule_curves(
        evaluation.propensity, evaluation.propensity_report, evaluation.cutoff, policy, config
    )
    section = report["rule"]
    assert propensity.rule_basis == section["basis"] and propensity.rule is None
    assert section["policy"] == policy
    assert section["brier"] == min(section["brier_score"], section["brier_place"])
    assert section["pairs"] > 0 and 0 <= section["brier"] <= 1
    assert {"brier_position", "brier_constant", "mean_predicted", "observed"} <= set(section)
    lists = np.array([[3.0, 2.0, 1.0, 5.0]])
    chances = propensity.of_rule_lists(lists, np.array([[False, False, False, True]]))
    assert np.all(np.diff(chances) <= 0) and np.all((chances >= 0) & (chances <= 1))


def test_the_model_served_at_the_cutoff_knows_nothing_after_it(
    unsuppressed: tuple[TimeSplit, Evaluation],
) -> None:
    split, evaluation = unsuppressed
    config = small_training_config()
    model = served_model(evaluation.cutoff, config, evaluation.propensity)

    cutoff_s = int(split.cutoff.timestamp())
    assert model.trained_until_s == cutoff_s
    assert model.history_last_purchase.max() < cutoff_s
    assert model.customers.ids.tolist() == split.train.customers.ids.tolist()
    assert int(model.history_counts.sum()) == int(split.train.counts.sum())
    assert model.policy == "ranker" and model.ranker is not None


def test_served_offers_never_hold_what_was_just_bought(
    unsuppressed: tuple[TimeSplit, Evaluation],
) -> None:
    split, evaluation = unsuppressed
    at = evaluation.cutoff
    model = served_model(at, small_training_config(), evaluation.propensity)

    served = serve(model, at, at.customers, SuppressionWindow(30), default_catalog())

    assert served.shape == (len(at.customers), SERVED_DEPTH)
    cutoff_s = int(split.cutoff.timestamp())
    last = split.train.last_purchase[at.customers].tocsr()
    checked = 0
    for row in range(len(at.customers)):
        recent = last.indices[last.indptr[row] : last.indptr[row + 1]][
            last.data[last.indptr[row] : last.indptr[row + 1]] >= cutoff_s - 30 * 86_400
        ]
        assert not set(served[row].tolist()) & set(recent.tolist())
        checked += len(recent) > 0
    assert checked > 10


def test_new_truth_scores_the_lists_without_the_window_items(
    unsuppressed: tuple[TimeSplit, Evaluation],
) -> None:
    """On ``new`` the items bought in the window are taken out of the served list and
    the rest moves up, as every method's list is scored there."""
    split, evaluation = unsuppressed
    rows = evaluation.cutoff.customers[:1]
    window = split.suppressed[rows].indices
    truth_new = split.truth_new[rows].indices
    served = np.full((1, SERVED_DEPTH), -1, np.int64)
    # The window's items first, then what was bought new in the holdout.
    picked = np.concatenate([window, truth_new])[:SERVED_DEPTH]
    served[0, : len(picked)] = picked

    metrics = score(split, served, rows, 10)

    assert metrics["new"][SERVED]["precision@10"] == min(len(truth_new), 10) / 10
    if len(window):
        assert metrics["all"][SERVED]["precision@10"] < 1.0


def test_the_purchases_since_a_model_are_posted_to_it() -> None:
    purchases = pd.DataFrame(
        {
            "customer_id": ["c1", "c1", "c2", "c3"],
            "item_id": ["A", "B", "C", "D"],
            "timestamp": pd.to_datetime(["2026-01-01", "2026-01-10", "2026-01-11", "2026-01-12"]),
            "quantity": [1, 2, 1, 1],
            "order_id": ["o1", "o2", "o3", "o4"],
        }
    )
    since = int(pd.Timestamp("2026-01-05").timestamp())
    until = int(pd.Timestamp("2026-01-12").timestamp())

    posted = posted_since(purchases, ["c1", "c2"], since, until)

    assert {c: [(p.item_id, p.quantity, p.order_key) for p in v] for c, v in posted.items()} == {
        "c1": [("B", 2.0, "o2")],
        "c2": [("C", 1.0, "o3")],
    }


def test_a_current_model_that_saw_the_holdout_is_not_scored_on_it(
    tmp_path: Path, planted_csv: Path
) -> None:
    models = tmp_path / "models"
    first = train(planted_csv, load_mapping("canonical"), models, small_training_config())

    # The same data again (forced: unchanged, it would publish nothing): the current
    # model learned this holdout, so it is compared by the figure it records for it.
    second = train(
        planted_csv, load_mapping("canonical"), models, small_training_config(), force=True
    )

    assert first.manifest["quality_gate"]["note"].startswith("no model is published")
    gate = second.manifest["quality_gate"]
    # The same training: the same figure, compared exactly, so not worse.
    assert gate["passed"] is True and gate["recorded"] is True and gate["tolerance"] == 0.0
    assert gate["current_version"] == first.version
    assert gate["current"] == first.metrics["all"]["served"]["ndcg@10"] == gate["served"]
    assert "past the cutoff" in gate["note"] and "saw the holdout" in gate["note"]
    assert (models / "CURRENT").read_text(encoding="utf-8").strip() == second.version


def test_served_figures_are_the_same_on_a_second_run(planted_csv: Path) -> None:
    config = small_training_config()
    first = _evaluated(planted_csv, config)[1].metrics
    second = _evaluated(planted_csv, config)[1].metrics
    for truth in ("all", "new"):
        assert first[truth][SERVED] == second[truth][SERVED]


def test_the_catalogue_decides_what_may_be_served(
    unsuppressed: tuple[TimeSplit, Evaluation], tmp_path: Path
) -> None:
    """A catalogue that excludes group a's items: no customer is served one, so group
    a's customers, who buy only those, are served nothing they buy."""
    split, evaluation = unsuppressed
    config = small_training_config().model_copy(update={"suppression_days": "0"})
    at = evaluation.cutoff
    model = served_model(at, config, evaluation.propensity)
    path = tmp_path / "catalog.yaml"
    excluded = "\n".join(f'  - item_id: "{item}"\n    exclude: true' for item in GROUP_ITEMS["a"])
    path.write_text(f"version: 1\nitems:\n{excluded}\n", encoding="utf-8")
    catalog = load_catalog(path)

    served = serve(model, at, at.customers, config.suppression, catalog)
    metrics = served_metrics(model, at, "ranker", config, catalog)

    a_items = {split.train.items.index[item] for item in GROUP_ITEMS["a"]}
    assert not set(served.ravel().tolist()) & a_items
    everything = served_metrics(model, at, "ranker", config, default_catalog())
    assert metrics["all"][SERVED]["ndcg@10"] < everything["all"][SERVED]["ndcg@10"] * 0.7


@pytest.mark.parametrize("k", [51, 100])
def test_every_k_the_config_allows_is_served_and_scored(
    unsuppressed: tuple[TimeSplit, Evaluation], k: int
) -> None:
    """k above the 50 offers the evaluation used to ask for crashed (shapes (n, 50)
    against k): the decision is asked for k and the same room for the "new" truth."""
    _, evaluation = unsuppressed
    config = small_training_config().model_copy(update={"k": k})
    at = evaluation.cutoff
    model = served_model(at, config, evaluation.propensity)

    metrics = served_metrics(model, at, "als", config, default_catalog())

    assert served_depth(k) == k + 40
    for truth in ("all", "new"):
        assert 0.0 < metrics[truth][SERVED][f"ndcg@{k}"] <= 1.0, truth
    served = serve(model, at, at.customers, config.suppression, default_catalog(), depth=k + 40)
    assert served.shape == (len(at.customers), k + 40)


def test_a_served_rule_below_its_own_raw_ranking_is_not_called_a_wrong_policy() -> None:
    """When the policy is the best rule itself, what served lost is what the decision's
    rules cost it: the warning said the policy "lost to a simple rule" (itself)."""
    section = {
        "metric": "ndcg@10",
        "policy": "buy_again",
        "against_best_rule": {
            "all": {
                "served": 0.3,
                "best_rule": "buy_again",
                "best_rule_score": 0.4,
                "change": -0.25,
            },
            "new": {"served": 0.2, "best_rule": "itemknn", "best_rule_score": 0.25, "change": -0.2},
        },
    }

    own, other = below_best_rule(section)

    assert own.startswith("served ndcg@10 0.3000 is below buy_again 0.4000 (-25.0%)")
    assert "lost to a simple rule" not in own
    assert "buy_again is what is served, and the serving decision's rules" in own
    assert "the policy chosen on the validation window (buy_again) lost to a simple rule" in other
