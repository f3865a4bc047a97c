"""nbo: next-best-offer recommendations from first-party purchase history."""

__version__ = "0.1.0"
