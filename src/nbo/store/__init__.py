"""The store contract (``base``) and its SQLite implementation: events, consent,
erasure, campaign files and deployment keys, kept on disk.
"""
