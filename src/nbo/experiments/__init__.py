"""Model experiments: A/B assignment outcomes and their statistics."""
