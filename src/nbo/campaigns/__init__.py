"""Campaigns: ``nbo batch``, the files it writes and their erasure."""
