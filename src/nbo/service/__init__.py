"""The HTTP service: FastAPI app, routes, schemas. Ranking logic lives in ``nbo.ranking``."""
