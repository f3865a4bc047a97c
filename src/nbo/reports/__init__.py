"""``nbo report`` and ``nbo models``: reports on experiments and models."""
