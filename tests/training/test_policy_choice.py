"""The candidate policy (training/policy.py): chosen on the window before the test
window among the model and the simple rules, each served by the one decision; a shop
whose best offers come from a rule gets a model that serves that rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support import END, rank_one, small_training_config

from nbo.data.mapping import load_mapping
from nbo.models.served import load_serving_model
from nbo.offers.ranking import SOURCE_BUY_AGAIN
from nbo.offers.suppression import SuppressionWindow
from training.config import RankerConfig, TrainingConfig
from training.pipeline import TrainResult, train


@pytest.mark.learned
def test_the_ranker_serves_where_it_beats_every_rule_on_the_window_before(
    trained: TrainResult,
) -> None:
    policy = trained.manifest["policy"]

    assert policy["name"] == policy["model"] == "ranker" and policy["validated"] is True
    # The window before the test window: cut one holdout before the last purchase
    # before the test's cutoff.
    cutoff = pd.Timestamp(trained.manifest["split"]["cutoff"])
    validation = pd.Timestamp(policy["validation_cutoff"])
    assert cutoff - pd.Timedelta(days=60) < validation <= cutoff - pd.Timedelta(days=30)
    figures = policy["validation"]
    assert set(figures) == {"ranker", "buy_again", "itemknn", "popularity"}
    assert all(set(by_truth) == {"all", "new"} for by_truth in figures.values())

    # Judged on both truths: each figure as a share of the best candidate's, averaged.
    def score(name: str) -> float:
        return float(
            np.mean(
                [figures[name][t] / max(f[t] for f in figures.values()) for t in ("all", "new")]
            )
        )

    assert policy["scores"] == pytest.approx({name: score(name) for name in figures})
    best_rule = max(("buy_again", "itemknn", "popularity"), key=score)
    assert policy["best_rule"] == best_rule
    assert score("ranker") >= score(best_rule)
    for truth in ("all", "new"):
        assert policy["margins"][truth] == pytest.approx(
            figures["ranker"][truth] / figures[best_rule][truth] - 1
        )
    assert policy["margin"] == policy["margins"]["all"]
    assert "beats the best simple rule" in policy["reason"]
    # The test window only measures it: what is served there, against the best rule.
    served = trained.manifest["served"]
    assert served["policy"] == "ranker"
    assert (
        served["against_best_rule"]["all"]["served"] == trained.metrics["all"]["served"]["ndcg@10"]
    )


def _weekly_rebuys(seed: int = 3) -> pd.DataFrame:
    """Forty customers each rebuy five of thirty items about every week for 150 days:
    their own items are what they buy next."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(40):
        for item in rng.choice(30, size=5, replace=False):
            day = float(rng.uniform(0, 7))
            while day < 150:
                at = END - pd.Timedelta(days=day, hours=int(rng.integers(0, 12)))
                rows.append(
                    {"customer_id": f"c{c:02d}", "item_id": f"I{item:02d}", "timestamp": at}
                )
                day += float(rng.uniform(6, 8))
    return pd.DataFrame(rows).sort_values("timestamp")


@pytest.fixture(scope="module")
def rebuying(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """Weekly rebuys, without a ranker and with a one-factor ALS (no better than
    popularity): buy-again is the best offer nbo can make."""
    folder = tmp_path_factory.mktemp("rebuys")
    data = folder / "rebuys.csv"
    _weekly_rebuys().to_csv(data, index=False)
    base = small_training_config().model_dump()
    config = TrainingConfig.model_validate(
        {**base, "als": {**base["als"], "factors": 1}, "ranker": RankerConfig(enabled=False)}
    )
    return train(data, load_mapping("canonical"), folder / "models", config)


def test_a_rule_that_serves_better_is_served_and_published(rebuying: TrainResult) -> None:
    policy = rebuying.manifest["policy"]

    assert policy["model"] == "als" and policy["name"] == "buy_again"
    assert policy["validation"]["buy_again"]["all"] > policy["validation"]["als"]["all"]
    assert policy["scores"]["buy_again"] > policy["scores"]["als"]
    assert "does not beat the best simple rule" in policy["reason"]
    assert "buy_again is served" in policy["reason"]
    assert "disabled in the training config" in policy["reason"]
    # Published without --force: the gate judges what is served.
    assert rebuying.published and rebuying.manifest["quality_gate"]["passed"] is not False
    assert rebuying.manifest["quality_gate"]["policy"] == "buy_again"


def test_the_artifact_of_a_rule_holds_what_the_rule_needs(rebuying: TrainResult) -> None:
    assert rebuying.path is not None
    names = {p.name for p in rebuying.path.iterdir()}
    assert "ranker.txt" not in names and "knn_indptr.npy" not in names
    document = json.loads((rebuying.path / "propensity.json").read_text(encoding="utf-8"))
    # The rule's curves: its score for its own items, the place for the popular fill
    # (no single curve over the place), with their held-out quality in the report.
    assert {"rule_score", "rule_fill"} <= set(document) and "rule" not in document
    quality = rebuying.manifest["propensity"]["rule"]
    assert quality["policy"] == "buy_again" and quality["basis"] == "score"
    assert {"brier", "brier_position", "brier_constant"} <= set(quality)

    model = load_serving_model(rebuying.path.parent)

    assert model.policy == "buy_again" and model.ranker is None
    assert model.propensity.rule_basis == "score"
    # A fortnight after the data ends every weekly item is due again: the customer's
    # own five come first, as buy again.
    now = model.trained_until_s + 14 * 86_400
    ranking = rank_one(model, "c00", 5, now, SuppressionWindow(30))
    own = {model.item_ids[i] for i in model.history_of(model.customers.index["c00"])[0]}
    assert {o.item_id for o in ranking.offers} == own
    assert {o.reason.source for o in ranking.offers} == {SOURCE_BUY_AGAIN}


def test_the_served_figures_are_in_the_summary_of_both_commands(
    rebuying: TrainResult, capsys: pytest.CaptureFixture[str]
) -> None:
    from nbo.console.tables import output_console
    from training.cli import print_summary

    print_summary(output_console(), rebuying)

    out, _ = capsys.readouterr()
    assert "served: policy buy_again: als ndcg@10" in out
    assert "served against the best simple rule (ndcg@10, holdout): all " in out
    assert "│ served " in out


def test_a_ranker_whose_window_before_is_too_young_to_stand_for_it_serves_unvalidated(
    tmp_path: Path,
) -> None:
    """Short data (a few months of a grocery chain): the served ranker learns at a cutoff
    with the history a training window needs, the one a window earlier still would not
    (judged on it, it would stand for the served ranker no better than a guess). The
    ranker serves, unvalidated, and says why."""
    data = tmp_path / "rebuys.csv"
    _weekly_rebuys().to_csv(data, index=False)
    base = small_training_config().model_dump()
    # 150 days: the served ranker's window is cut about 90 days in, the one before it 60.
    young = {**base, "ranker": {**base["ranker"], "min_history_days": 75}}
    result = train(
        data, load_mapping("canonical"), tmp_path / "models", TrainingConfig.model_validate(young)
    )

    policy = result.manifest["policy"]
    assert policy["name"] == policy["model"] == "ranker" and policy["validated"] is False
    assert "ranker served unvalidated" in policy["reason"]
    assert "fewer than the 75 a training window needs" in policy["reason"]
    assert policy["validation"] == {}
    # Nor is a window that young stacked into the served ranker's training.
    assert result.manifest["ranker"]["training_windows"] == 1
    assert result.published
