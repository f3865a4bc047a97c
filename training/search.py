"""A small, time-bounded search of the ranker's booster settings on the validation window.

Each candidate setting trains the validation window's ranker (on the windows before it,
as ``training.policy`` trains it) and is served there through the service's decision,
judged on NDCG@k against both truths as the policy choice judges it: the mean, over the
truths, of its figure as a share of the best trial's. The winner trains the ranker of
the test window, which is the one published. The default settings are tried first and
win ties, so the search never does worse on the validation window than no search; no
trial starts once ``ranker.search_seconds`` have passed, and on a validation window with
fewer than ``SEARCH_MIN_CUSTOMERS`` customers (whose NDCG cannot tell settings apart)
there is no search.

Off by default (``ranker.search_seconds`` 0): on the bench's regimes the settings' validation
figures differed by about a percent, and the winners served no better on the test window
(docs/training.md has the figures).

The candidates bound what an offers call costs: at most 31 leaves (five levels the
service walks per tree) and ``ranker.max_rounds`` trees, as without a search.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from training.config import RankerConfig
from training.ranker import DEFAULT_BOOSTER, BoosterSettings

# The settings tried, in order (the default first); ``ranker.search_trials`` cuts the list.
CANDIDATES = (
    DEFAULT_BOOSTER,
    BoosterSettings(learning_rate=0.1, num_leaves=7, min_data_in_leaf=20),
    BoosterSettings(learning_rate=0.1, num_leaves=31, min_data_in_leaf=20),
    BoosterSettings(learning_rate=0.05, num_leaves=15, min_data_in_leaf=20),
    BoosterSettings(learning_rate=0.1, num_leaves=15, min_data_in_leaf=50),
    BoosterSettings(learning_rate=0.05, num_leaves=31, min_data_in_leaf=50),
)
# Below this many customers evaluated on the validation window, no search: one
# customer's NDCG@10 swings by up to 1, so a few hundred customers' mean moves by a few
# percent between settings by chance alone.
SEARCH_MIN_CUSTOMERS = 500

T = TypeVar("T")


def share_of_best(
    figures: Mapping[str, float], everyone: Collection[Mapping[str, float]], truths: Iterable[str]
) -> float:
    """The mean, over ``truths``, of ``figures`` as a share of the best of ``everyone``'s
    on that truth (0 where nobody scored anything; a missing figure counts 0): how the
    policy choice (``training.policy``) and the settings search judge a candidate."""
    shares = []
    for truth in truths:
        best = max(other.get(truth, 0.0) for other in everyone)
        shares.append(figures.get(truth, 0.0) / best if best > 0 else 0.0)
    return float(np.mean(shares)) if shares else 0.0


@dataclass(frozen=True)
class Trial:
    """One setting tried: its served figure per truth on the validation window."""

    settings: BoosterSettings
    figures: dict[str, float]
    seconds: float


@dataclass(frozen=True)
class SettingsSearch:
    """The settings tried, in order, and the one chosen (``trials[best]``)."""

    trials: tuple[Trial, ...]
    best: int
    note: str  # why the search was skipped or stopped ("" when every candidate ran)
    budget_seconds: float
    metric: str

    @property
    def winner(self) -> BoosterSettings:
        return self.trials[self.best].settings

    def score(self, index: int) -> float:
        """The mean, over the truths, of trial ``index``'s figure as a share of the best
        trial's (0 where no trial scored anything)."""
        figures = self.trials[index].figures
        return share_of_best(figures, [trial.figures for trial in self.trials], figures)

    def section(self) -> dict[str, Any]:
        """The manifest's ``ranker.settings_search``."""
        return {
            "budget_seconds": self.budget_seconds,
            "metric": self.metric,
            "criterion": "mean over the truths of the served figure on the validation "
            "window as a share of the best trial's",
            "note": self.note,
            "winner": self.winner.__dict__,
            "trials": [
                {
                    "settings": trial.settings.__dict__,
                    "validation": trial.figures,
                    "score": self.score(index),
                    "seconds": round(trial.seconds, 1),
                }
                for index, trial in enumerate(self.trials)
            ],
        }


def search_line(section: dict[str, Any]) -> str:
    """``nbo train``'s line about the search (``SettingsSearch.section``)."""
    trials = section.get("trials", [])
    winner = BoosterSettings(**section["winner"]).label()
    note = f" ({section['note']})" if section.get("note") else ""
    if len(trials) <= 1:
        return f"ranker settings: {winner}, the default, not searched{note}"
    best = max(trials, key=lambda trial: trial["score"])
    figures = ", ".join(f"{v:.4f} on {t}" for t, v in best["validation"].items())
    return (
        f"ranker settings: {winner} chosen among {len(trials)} tried on the validation "
        f"window ({section['metric']} served {figures}){note}"
    )


def search_settings(
    judge: Callable[[BoosterSettings], tuple[T, dict[str, float]]],
    config: RankerConfig,
    customers: int,
    metric: str,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[SettingsSearch, T]:
    """Judge the candidate settings in order until the budget is spent and return the
    search and the best one's judged result (``judge``: a setting's result and its
    figure per truth on the validation window; ``customers``: how many it judges)."""
    budget = config.search_seconds
    candidates: tuple[BoosterSettings, ...] = (DEFAULT_BOOSTER,)
    note = ""
    if budget <= 0:
        note = "ranker.search_seconds is 0"
    elif customers < SEARCH_MIN_CUSTOMERS:
        note = (
            f"{customers} customers on the validation window, fewer than the "
            f"{SEARCH_MIN_CUSTOMERS} that tell settings apart"
        )
    else:
        candidates = CANDIDATES[: config.search_trials]
    start = clock()
    trials: list[Trial] = []
    results: list[T] = []
    for settings in candidates:
        if trials and clock() - start >= budget:
            note = (
                f"stopped by the {budget:g}-second budget (ranker.search_seconds) after "
                f"{len(trials)} of {len(candidates)} settings"
            )
            break
        began = clock()
        result, figures = judge(settings)
        trials.append(Trial(settings, figures, clock() - began))
        results.append(result)
    search = SettingsSearch(tuple(trials), 0, note, budget, metric)
    # The first best wins: the default on a tie.
    best = max(range(len(trials)), key=search.score)
    return SettingsSearch(tuple(trials), best, note, budget, metric), results[best]
