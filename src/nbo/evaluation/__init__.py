"""Judging rankings: top-k metrics and the offline comparison of two models."""
