"""The search of the ranker's settings (training/search.py): tried on the validation
window in order, the default first, until the budget is spent; the best there trains
the published ranker, and the manifest and the summary say what was tried."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import small_training_config

from nbo.data.mapping import load_mapping
from training import search
from training.config import RankerConfig
from training.pipeline import TrainResult, train
from training.ranker import DEFAULT_BOOSTER, BoosterSettings
from training.search import CANDIDATES, search_line, search_settings

# Served NDCG@10 per truth on the validation window, per setting tried.
FIGURES = {
    CANDIDATES[0]: {"all": 0.30, "new": 0.20},
    CANDIDATES[1]: {"all": 0.31, "new": 0.22},  # the best on both truths
    CANDIDATES[2]: {"all": 0.33, "new": 0.10},  # best on "all", far worse on "new"
    CANDIDATES[3]: {"all": 0.29, "new": 0.21},
}


class Judge:
    """A judge that reads ``FIGURES`` and advances a fake clock by ``seconds`` a trial."""

    def __init__(self, seconds: float = 1.0) -> None:
        self.now = 0.0
        self.seconds = seconds
        self.tried: list[BoosterSettings] = []

    def __call__(self, settings: BoosterSettings) -> tuple[str, dict[str, float]]:
        self.tried.append(settings)
        self.now += self.seconds
        return f"ranker {len(self.tried)}", FIGURES[settings]

    def clock(self) -> float:
        return self.now


def test_the_winner_is_the_best_on_the_validation_window_among_those_tried() -> None:
    judge = Judge()
    config = RankerConfig(search_seconds=60, search_trials=4)

    found, result = search_settings(judge, config, 1_000, "ndcg@10", judge.clock)

    assert judge.tried == list(CANDIDATES[:4]) and judge.tried[0] == DEFAULT_BOOSTER
    # Judged as the policy is: each truth's figure as a share of the best trial's.
    assert found.score(1) == pytest.approx((0.31 / 0.33 + 0.22 / 0.22) / 2)
    assert found.best == 1 and found.winner == CANDIDATES[1]
    assert max(range(4), key=found.score) == 1 and result == "ranker 2"
    assert found.note == ""


def test_the_default_wins_a_tie() -> None:
    judge = Judge()
    tied = {key: {"all": 0.3, "new": 0.2} for key in CANDIDATES}

    found, _ = search_settings(
        lambda s: (judge(s)[0], tied[s]),
        RankerConfig(search_seconds=60, search_trials=3),
        1_000,
        "ndcg@10",
    )

    assert len(found.trials) == 3 and found.winner == DEFAULT_BOOSTER


def test_no_trial_starts_once_the_budget_is_spent() -> None:
    judge = Judge(seconds=25.0)
    config = RankerConfig(search_seconds=60, search_trials=6)

    found, _ = search_settings(judge, config, 1_000, "ndcg@10", judge.clock)

    # Started at 0, 25 and 50 s; at 75 s the 60-second budget is spent.
    assert judge.tried == list(CANDIDATES[:3])
    assert found.winner == CANDIDATES[1]
    assert "stopped by the 60-second budget (ranker.search_seconds) after 3 of 6" in found.note

    # A budget spent by the first trial: the default alone, as without a search.
    judge = Judge(seconds=100.0)
    found, _ = search_settings(judge, config, 1_000, "ndcg@10", judge.clock)
    assert judge.tried == [DEFAULT_BOOSTER] and found.winner == DEFAULT_BOOSTER


@pytest.mark.parametrize(
    ("seconds", "customers", "note"),
    [
        (0.0, 1_000, "ranker.search_seconds is 0"),
        (60.0, 499, "499 customers on the validation window, fewer than the 500"),
    ],
)
def test_no_search_when_off_or_too_few_customers_to_tell_settings_apart(
    seconds: float, customers: int, note: str
) -> None:
    judge = Judge()
    config = RankerConfig(search_seconds=seconds)

    found, _ = search_settings(judge, config, customers, "ndcg@10", judge.clock)

    assert judge.tried == [DEFAULT_BOOSTER] and found.winner == DEFAULT_BOOSTER
    assert note in found.note
    assert search_line(found.section()).startswith(
        "ranker settings: num_leaves 15, learning_rate 0.1, min_data_in_leaf 20, the "
        "default, not searched ("
    )


def test_the_search_is_off_by_default_and_the_manifest_says_so(trained: TrainResult) -> None:
    # Off by default: on the bench's regimes it picked noise (docs/training.md).
    assert RankerConfig().search_seconds == 0
    section = trained.manifest["ranker"]["settings_search"]

    assert [trial["settings"] for trial in section["trials"]] == [DEFAULT_BOOSTER.__dict__]
    assert section["note"] == "ranker.search_seconds is 0"


def _train_searching(
    tmp_path: Path, planted_csv: Path, monkeypatch: pytest.MonkeyPatch, trials: int
) -> TrainResult:
    monkeypatch.setattr(search, "SEARCH_MIN_CUSTOMERS", 0)
    base = small_training_config()
    config = base.model_copy(
        update={"ranker": RankerConfig(search_seconds=600, search_trials=trials)}
    )
    return train(planted_csv, load_mapping("canonical"), tmp_path / "models", config)


def test_the_manifest_and_the_summary_record_the_settings_tried(
    tmp_path: Path,
    planted_csv: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from nbo.console.tables import output_console
    from training.cli import print_summary

    result = _train_searching(tmp_path, planted_csv, monkeypatch, trials=3)

    section = result.manifest["ranker"]["settings_search"]
    trials = section["trials"]
    assert [t["settings"] for t in trials] == [c.__dict__ for c in CANDIDATES[:3]]
    assert all(set(t["validation"]) == {"all", "new"} for t in trials)
    best = max(range(3), key=lambda i: trials[i]["score"])
    assert section["winner"] == trials[best]["settings"]
    # The winner's figures are the ones the ranker competes with the rules on.
    assert result.manifest["policy"]["validation"]["ranker"] == trials[best]["validation"]
    print_summary(output_console(), result)
    out, _ = capsys.readouterr()
    assert "ranker settings: " in out and " chosen among 3 tried on the validation window" in out
    assert "ranker ranker" not in out  # the line's own words name it, once


def test_the_winner_trains_the_published_ranker(
    tmp_path: Path, planted_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = BoosterSettings(learning_rate=0.2, num_leaves=4, min_data_in_leaf=5)
    monkeypatch.setattr(search, "CANDIDATES", (chosen,))

    result = _train_searching(tmp_path, planted_csv, monkeypatch, trials=1)

    assert result.manifest["ranker"]["settings_search"]["winner"] == chosen.__dict__
    assert result.path is not None
    text = (result.path / "ranker.txt").read_text(encoding="utf-8")
    assert "[num_leaves: 4]" in text and "[min_data_in_leaf: 5]" in text
