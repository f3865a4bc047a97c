"""The HTTP service: FastAPI app, routes, schemas. The decision lives in ``nbo.offers``, read -> assign -> decide in ``nbo.runtime``."""
