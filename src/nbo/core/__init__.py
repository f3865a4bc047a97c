"""The vocabulary every other part of nbo shares: stages, channels, offer kinds,
errors, column names, ids, documents, checksums, API keys and log pseudonyms.

Imports nothing of nbo.
"""
