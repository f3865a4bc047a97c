"""Training configuration: defaults that work on retail data, overridable from a TOML file."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from nbo.core.documents import read_text
from nbo.core.errors import ConfigError
from nbo.models.candidates import HALF_LIFE_DAYS
from nbo.models.cf import AlsParams
from nbo.models.cycles import DEAD_TIME_QUANTILE, FLOOR_DAYS, MIN_REPEAT_RATE
from nbo.offers.suppression import SuppressionWindow

# Every table of the config: unknown keys refused (a typo is not a silent default), and
# values taken in their TOML types only (``strict``): ``k = true`` is not k = 1, nor
# ``enabled = 0`` false, nor ``k = "10"`` ten. An integer is still a number where a
# float is wanted (pydantic's strict mode allows int -> float), as TOML writes ``2``.
STRICT = ConfigDict(extra="forbid", strict=True)


class AlsConfig(BaseModel):
    """ALS hyperparameters; see ``nbo.models.cf.AlsParams``.

    Defaults: raw order counts (log and BM25 weighting are options) measured best or
    equal on the Online Retail time split and, by our earlier measurements, on most
    retail sets; 64 factors and 15 iterations are implicit's well-trodden ground.
    """

    model_config = STRICT

    factors: int = Field(64, ge=1, le=1024)
    iterations: int = Field(15, ge=1, le=200)
    regularization: float = Field(0.05, ge=0)
    alpha: float = Field(1.0, gt=0)
    weighting: str = Field("none", pattern="^(none|log|bm25)$")
    bm25_k1: float = Field(100.0, gt=0)
    bm25_b: float = Field(0.8, ge=0, le=1)
    random_state: int = 42
    # The refit on all data after evaluation starts from the evaluated factors and runs
    # this many iterations instead of starting over (0 = refit from scratch). The first
    # half-iteration already solves every newcomer exactly against the learned items;
    # a few more let the items absorb the holdout's purchases.
    refit_iterations: int = Field(3, ge=0, le=200)

    def params(self) -> AlsParams:
        return AlsParams.from_dict(self.model_dump())


class CyclesConfig(BaseModel):
    """Repurchase cycles and dead times (``nbo.models.cycles``): per item, the typical
    days between two purchases by the same customer, and the dead time after a purchase
    before which few repeats happen.

    A rebought item stays suppressed for its dead time after a purchase (never longer
    than the suppression window, never shorter than ``floor_days``), then competes in
    the ranker. An item that is not rebought keeps the window, unless the customer
    bought it in two or more orders.
    """

    model_config = STRICT

    # Learn cycles at all (off: no cycles in the artifact, no ``als_cycles`` evaluation).
    enabled: bool = True
    # Customers who bought the item on at least two distinct days needed for a cycle;
    # fewer and the item keeps the default window. Five keeps one or two odd buyers from
    # setting an item's window while still covering a retailer's regular lines.
    min_repeat_buyers: int = Field(5, ge=1)
    # Upper bound on a learned cycle in days (None = no bound): a gap of more than a
    # year says little about when an item is due again.
    max_days: int | None = Field(365, ge=1)
    # The dead time is this quantile of the item's gaps between purchases, each repeat
    # buyer counting once: the share of repeats that happen sooner, and are given up.
    dead_time_quantile: float = Field(DEAD_TIME_QUANTILE, ge=0, le=1)
    # Below this share of its buyers buying it on two or more days an item is one-off:
    # it keeps the window for a customer who bought it once.
    min_repeat_rate: float = Field(MIN_REPEAT_RATE, ge=0, le=1)
    # Nothing bought in the last ``floor_days`` is ever offered, whatever the data says.
    floor_days: float = Field(FLOOR_DAYS, ge=0)
    # How long after an offer a purchase counts as taking it up, in days (None: the
    # holdout, over which the evaluation judges offers): the dead time is the quantile
    # of the gaps minus this, so an item the customer will likely buy again within it is
    # offered (``nbo.models.cycles``).
    horizon_days: int | None = Field(None, ge=0)


class ChurnConfig(BaseModel):
    """The churn model (``nbo.models.churn``) and the cutoffs it is trained and judged on.

    With data ending at T: evaluation cutoff ``T - horizon``, training cutoffs
    ``T - 2 * horizon`` and ``snapshots - 1`` more, each ``spacing_days`` earlier, so the
    training labels end where the evaluation starts. The published model is refitted on
    the latest fully labelled cutoffs (the evaluation cutoff and as many before it).
    """

    model_config = STRICT

    enabled: bool = True
    # Days without an order after which a customer counts as churned (and as lapsed).
    # Ninety days is a season: long enough for occasional buyers of a gift shop to come
    # back, short enough to act on.
    horizon_days: int = Field(90, ge=7, le=730)
    # Cutoffs stacked for training: more customers per fit, and a model that has seen
    # more than one season's mood. Cutoffs without customers are skipped.
    snapshots: int = Field(3, ge=1, le=12)
    spacing_days: int = Field(30, ge=1)
    # History needed before the earliest training cutoff for features to mean anything;
    # with less data (span < 2 * horizon + this) the trainer skips the churn model.
    min_history_days: int = Field(30, ge=0)


class LifecycleConfig(BaseModel):
    """Lifecycle stages (``nbo.models.lifecycle``); lapsed uses the churn horizon.

    The loyal thresholds default to data: the ``loyal_percentile`` of orders and of total
    value among the customers not lapsed at the end of the data (so "loyal" means the top
    fifth of the live base whatever the currency or the shop's rhythm); set them to fix
    absolute values instead. Both are recorded in the manifest.
    """

    model_config = STRICT

    # A customer whose first order is at most this many days old is new.
    new_days: int = Field(30, ge=0)
    # Churn risk at or above which a customer is at risk: more likely gone than not.
    at_risk_threshold: float = Field(0.5, gt=0, le=1)
    # Churn risk a loyal customer stays below.
    loyal_max_risk: float = Field(0.3, gt=0, le=1)
    loyal_min_orders: float | None = Field(None, ge=1)
    loyal_min_monetary: float | None = Field(None, ge=0)
    loyal_percentile: float = Field(0.8, gt=0, lt=1)
    # Orders of prior (the shop's hour-of-week pattern) added to each customer's own
    # when choosing their best send hour: with five, one purchase barely moves it.
    send_time_pseudo_orders: float = Field(5.0, ge=0)


# ``ranker.search_seconds``'s default.
SEARCH_SECONDS = 0.0


class RankerConfig(BaseModel):
    """The ranker and its candidate sources (``nbo.models.candidates``, ``training.ranker``).

    ``per_source`` and ``max_rounds`` bound what every offers call costs: the ranker
    scores up to five sources x ``per_source`` candidates through up to ``max_rounds``
    trees (early stopping usually stops sooner). ``enabled = false`` publishes an
    ALS-ranked model, the cheapest to serve.
    """

    model_config = STRICT

    enabled: bool = True
    # Candidates each source proposes per customer.
    per_source: int = Field(25, ge=1, le=500)
    # Boosting rounds at most (trees the service evaluates per candidate).
    max_rounds: int = Field(100, ge=1, le=2000)
    # Neighbours kept per item by ItemKNN.
    neighbours: int = Field(100, ge=1, le=1000)
    # Past windows the ranker learns from, each a holdout before the one after it (as
    # many as the data holds, up to this): more labels, and habits seen at several dates.
    windows: int = Field(3, ge=1, le=12)
    # Purchase history (days) a training window needs before its cutoff to be stacked,
    # and for the validation window's ranker to stand for the served one: its customers
    # must have bought before the suppression window for a while to show a reorder after
    # it. None: the window and half as much again (45 days for 30), or one and a half
    # holdouts where the window is "all" or 0.
    min_history_days: int | None = Field(None, ge=0, le=3650)
    # Half-life (days) of the recency-weighted order counts among the ranker's features:
    # an order weighs half as much this many days after it was placed.
    half_life_days: float = Field(HALF_LIFE_DAYS, gt=0, le=3650)
    # Seconds the trainer may spend searching the booster's settings on the validation
    # window (``training.search``): no trial starts past it, the default settings are
    # always tried first. 0 (the default): no search, the default settings; on the bench's
    # regimes the search picked noise (docs/training.md).
    search_seconds: float = Field(SEARCH_SECONDS, ge=0, le=86_400)
    # Settings tried at most, the default first (``training.search.CANDIDATES``).
    search_trials: int = Field(6, ge=1, le=6)


# The quality gate's default ``gate_tolerance``: how much worse (relative) a new model's
# served NDCG@10 may be than the figure the current model's manifest records for its own
# holdout, another window (``training.gate``). Measured by replaying nightly retrains
# (``bench/gate_noise.py``: the file cut to end D-3, D-2, D-1, D, default config, each
# gated against the night before): the 9 healthy night-to-night changes on Online
# Retail, the bundled sample and the grocery regime ran from -0.8% to +2.8% (largest
# drop 0.8%); a broken config (one ALS factor and iteration, no ranker: buy-again
# served) fell 16.9% on Online Retail and 14.4% on the sample. 5% is 1.8x the largest
# healthy change and a third of the smaller broken drop.
RECORDED_TOLERANCE = 0.05


class TrainingConfig(BaseModel):
    """Everything that shapes a model, recorded in its manifest."""

    model_config = STRICT

    holdout_days: int = Field(30, ge=1)
    k: int = Field(10, ge=1, le=100)
    suppression_days: str = "30"
    popularity_days: int | None = Field(90, ge=1)
    eval_max_customers: int | None = Field(10_000, ge=1)
    # The quality gate's tolerance against a recorded figure on another window (0: every
    # night must be at least as good as the last).
    gate_tolerance: float = Field(RECORDED_TOLERANCE, ge=0, lt=1)
    als: AlsConfig = AlsConfig()
    cycles: CyclesConfig = CyclesConfig()
    churn: ChurnConfig = ChurnConfig()
    lifecycle: LifecycleConfig = LifecycleConfig()
    ranker: RankerConfig = RankerConfig()

    @field_validator("suppression_days", mode="before")
    @classmethod
    def _check_window(cls, value: Any) -> str:
        # A whole number of days or "all", as strictly as every other field: not
        # ``true`` (one day) nor 7.9 (seven).
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(f"expected a whole number of days or 'all', got {json.dumps(value)}")
        return str(SuppressionWindow.parse(value))

    @property
    def suppression(self) -> SuppressionWindow:
        return SuppressionWindow.parse(self.suppression_days)


def config_warnings(config: TrainingConfig) -> list[str]:
    """Settings each valid alone that undo one another, named with their values: the
    trainer goes on (the stages stay well defined) and says so in its summary."""
    lifecycle, horizon = config.lifecycle, config.churn.horizon_days
    warnings = []
    if lifecycle.loyal_max_risk > lifecycle.at_risk_threshold:
        warnings.append(
            f"config field 'lifecycle.loyal_max_risk' ({lifecycle.loyal_max_risk:g}) is above "
            f"'lifecycle.at_risk_threshold' ({lifecycle.at_risk_threshold:g}): at_risk "
            f"comes first, so no customer with a risk of {lifecycle.at_risk_threshold:g} or "
            "more is loyal and the higher limit has no effect"
        )
    if lifecycle.new_days > horizon:
        warnings.append(
            f"config field 'lifecycle.new_days' ({lifecycle.new_days}) is above "
            f"'churn.horizon_days' ({horizon}): new comes before at_risk and loyal, so a "
            f"customer stays new for {lifecycle.new_days} days, longer than the churn "
            "horizon, and is never at_risk nor loyal in that time"
        )
    return warnings


def load_training_config(path: str | Path | None, **overrides: Any) -> TrainingConfig:
    """Defaults, then the TOML file, then command-line overrides (None = not given)."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        text, _ = read_text(path, "a training config (TOML)", _config_error)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    data.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return TrainingConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(str(part) for part in first["loc"])
        given = {key for key, value in overrides.items() if value is not None}
        if len(loc) == 1 and loc[0] in given:
            # A command-line option's value: the option is what the user typed.
            raise ConfigError(f"--{loc[0].replace('_', '-')}: {first['msg']}") from None
        origin = f"{path}: " if path else ""
        field = ".".join(loc)
        if first["type"] == "extra_forbidden":
            known = ", ".join(_table(loc[:-1]).model_fields)
            where = f" in [{'.'.join(loc[:-1])}]" if len(loc) > 1 else ""
            raise ConfigError(
                f"{origin}unknown config field '{field}' (known{where}: {known})"
            ) from None
        raise ConfigError(
            f"{origin}config field '{field}': {first['msg']}{_given(first['input'])}"
        ) from None


def _table(loc: tuple[str, ...]) -> type[BaseModel]:
    """The config table at ``loc`` (() is the top level)."""
    table: type[BaseModel] = TrainingConfig
    for name in loc:
        annotation = table.model_fields[name].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        table = annotation
    return table


def _given(value: Any) -> str:
    """The value refused, as TOML writes it (``true``, ``"10"``), when it is one value."""
    if isinstance(value, Mapping | list):
        return ""
    try:
        return f" (got {json.dumps(value)})"
    except (TypeError, ValueError):
        return f" (got {value!r})"


def _config_error(source: str, problem: str) -> ConfigError:
    return ConfigError(f"{source}: {problem}")
