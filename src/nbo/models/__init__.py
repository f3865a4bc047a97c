"""Models: collaborative filtering and baselines. They know nothing of HTTP or storage."""
