"""The offline trainer: load -> split -> fit -> evaluate -> gate -> refit -> publish,
a module per step, run in order by ``training.pipeline.train``.

Imports nbo; nbo never imports it.
"""
