"""Training configuration: defaults that work on retail data, overridable from a TOML file."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from nbo.errors import ConfigError
from nbo.models.cf import AlsParams
from nbo.suppression import SuppressionWindow


class AlsConfig(BaseModel):
    """ALS hyperparameters; see ``nbo.models.cf.AlsParams``.

    Defaults: raw order counts (log and BM25 weighting are options) measured best or
    equal on the Online Retail time split and, by our earlier measurements, on most
    retail sets; 64 factors and 15 iterations are implicit's well-trodden ground.
    """

    model_config = ConfigDict(extra="forbid")

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
    """Repurchase cycles (``nbo.cycles``): per item, the typical days between two
    purchases by the same customer, learned where enough customers bought it again.

    An item with a learned cycle stays suppressed that long after a purchase; items
    without one use the default suppression window.
    """

    model_config = ConfigDict(extra="forbid")

    # Learn cycles at all (off: no cycles in the artifact, no ``als_cycles`` evaluation).
    enabled: bool = True
    # Customers who bought the item on at least two distinct days needed for a cycle;
    # fewer and the item keeps the default window. Five keeps one or two odd buyers from
    # setting an item's window while still covering a retailer's regular lines.
    min_repeat_buyers: int = Field(5, ge=1)
    # Upper bound on a learned cycle in days (None = no bound): a gap of more than a
    # year says little about when an item is due again.
    max_days: int | None = Field(365, ge=1)


class TrainingConfig(BaseModel):
    """Everything that shapes a model, recorded in its manifest."""

    model_config = ConfigDict(extra="forbid")

    holdout_days: int = Field(30, ge=1)
    k: int = Field(10, ge=1, le=100)
    suppression_days: str = "30"
    popularity_days: int | None = Field(90, ge=1)
    eval_max_customers: int | None = Field(10_000, ge=1)
    als: AlsConfig = AlsConfig()
    cycles: CyclesConfig = CyclesConfig()

    @field_validator("suppression_days", mode="before")
    @classmethod
    def _check_window(cls, value: Any) -> str:
        return str(SuppressionWindow.parse(value))

    @property
    def suppression(self) -> SuppressionWindow:
        return SuppressionWindow.parse(self.suppression_days)


def load_training_config(path: str | Path | None, **overrides: Any) -> TrainingConfig:
    """Defaults, then the TOML file, then command-line overrides (None = not given)."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    data.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return TrainingConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        origin = f"{path}: " if path else ""
        raise ConfigError(f"{origin}config field '{field}': {first['msg']}") from None
