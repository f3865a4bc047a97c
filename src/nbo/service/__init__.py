"""The HTTP service: FastAPI app, routes, schemas, access control, logs and metrics.

The decision lives in ``nbo.offers``; read -> assign -> decide in ``nbo.runtime``.
"""
