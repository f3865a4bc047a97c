"""The just-bought suppression window, parsed one way for the trainer and the service."""

from __future__ import annotations

from dataclasses import dataclass

from nbo.core.vocabulary import DAY

ALL = "all"


@dataclass(frozen=True)
class SuppressionWindow:
    """Items bought within ``days`` before now are not offered.

    ``days=None`` means anything ever bought; ``days=0`` means never suppress.
    """

    days: int | None = 30

    @classmethod
    def parse(cls, value: str | int | None) -> SuppressionWindow:
        if value is None or (isinstance(value, str) and value.strip().lower() == ALL):
            return cls(days=None)
        try:
            days = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number of days or '{ALL}', got '{value}'") from None
        if days < 0:
            raise ValueError(f"expected 0 or more days, got {days}")
        return cls(days=days)

    def earliest_suppressed(self, now_s: int) -> int | None:
        """Purchases at or after this unix second are suppressed; None = nothing is."""
        if self.days is None:
            return -(2**62)
        if self.days == 0:
            return None
        return now_s - self.days * DAY

    def __str__(self) -> str:
        return ALL if self.days is None else str(self.days)
