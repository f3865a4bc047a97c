"""The vocabulary every other part of nbo shares: stages, channels, offer kinds,
errors, column names, ids, documents, checksums, API keys and log pseudonyms; and what
every process that forks workers needs (OpenMP's threads, workers that die with it).

Imports nothing of nbo.
"""
