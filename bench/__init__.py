"""Speed benchmarks for the trainer and the offers path: ``python -m bench``."""
