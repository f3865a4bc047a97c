"""The offline trainer: load -> split -> fit -> evaluate -> publish.

Imports nbo; nbo never imports it.
"""
