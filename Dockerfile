# The nbo service. Build: docker build -t nbo .
# Run:   docker run -p 8000:8000 -v "$PWD/models:/models:ro" -v nbo-data:/data \
#          -e NBO_API_KEYS='[...]' nbo
# (it listens on 0.0.0.0, so it refuses to start without API keys: `nbo keys create`).
# (train first with `nbo train ... --models-dir models`, or mount a models folder).
# Workers: one per core the container may run on, or its CPU quota rounded up
# (--cpus 1.5: 2); -e NBO_WORKERS=N sets another number.
FROM python:3.11-slim

# implicit's wheel links the system OpenMP runtime.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    OPENBLAS_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    NBO_MODELS_DIR=/models \
    NBO_STORE_URL=sqlite:////data/nbo.db \
    NBO_HOST=0.0.0.0 \
    NBO_PORT=8000

WORKDIR /app
# Exactly what the locks say (pip first, then nbo's dependencies and its build backend), in a
# layer of its own that only a change of the locks rebuilds; then nbo itself, resolving nothing.
COPY requirements/pip.txt requirements/runtime.txt ./requirements/
RUN pip install --require-hashes -r requirements/pip.txt \
    && pip install --require-hashes -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY src ./src
COPY training ./training
RUN pip install --no-deps --no-build-isolation .

# Every folder the container writes to, made and owned by its user: a new named volume
# mounted there takes the folder's owner (deploy/compose.yaml's campaigns volume at
# /campaigns, where `nbo batch --out /campaigns/...` writes; root's, it could not).
RUN useradd --create-home --uid 10001 nbo \
    && mkdir -p /models /data /campaigns && chown nbo /models /data /campaigns
USER nbo

# Models are read; the event store (events, consent, erasures) must outlive the container.
VOLUME ["/models", "/data"]
EXPOSE 8000
# The shell expands NBO_PORT when the check runs, so `-e NBO_PORT=...` moves the check too.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD python -c "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:${NBO_PORT:-8000}/health/ready', timeout=2).status == 200 else 1)"

CMD ["nbo", "serve"]
