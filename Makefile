# nbo: two commands set everything up on a fresh machine.
#   make demo   install, train on the bundled sample, serve on 127.0.0.1:8000
#   make test   install, lint and run the whole test suite (the store's PostgreSQL tests
#               too when NBO_TEST_POSTGRES_URL names a server; make test-postgres starts one)
#   make lock   refresh the lock files in requirements/ (docs/operations.md: "Dependencies and upgrades")

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODELS_DIR ?= models
SAMPLE := data/online_retail_sample.parquet
# The sample ends on 2011-12-09; pinning the clock there makes suppression visible.
DEMO_CLOCK ?= 2011-12-09T13:00:00Z
PORT ?= 8000
# The demo's offer catalogue: products, a win-back, a loyalty reward and a welcome offer.
CATALOG ?= data/catalog.yaml

.PHONY: demo test test-postgres install lock lint format bench train serve clean campaign

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Exactly what the locks say, then nbo itself, editable, without resolving anything: nothing
# unlocked is fetched. pip comes first, from its own lock: a venv's bundled pip (23.2.1 with
# Python 3.11.7) took 43 s over the dev lock here, pip 26.3 35 s (plus 2 s to install it).
$(VENV)/.installed: requirements/pip.txt requirements/dev.txt pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/pip.txt
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.installed

# Universal locks (one file each for Linux x86_64 and aarch64 and macOS, Python 3.11 and
# newer), resolved from PyPI by the uv that the dev lock installs. `make lock` upgrades every
# package within pyproject.toml's ranges; LOCK_UPGRADE="--upgrade-package lightgbm" bumps one,
# LOCK_UPGRADE= keeps every pin that still fits (after adding a dependency). The dev lock is
# constrained by the runtime lock, so the two agree on every package they share.
LOCK_UPGRADE ?= --upgrade
UV_COMPILE = $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command "make lock" $(LOCK_UPGRADE)

lock: install
	$(UV_COMPILE) requirements/pip.in -o requirements/pip.txt
	$(UV_COMPILE) pyproject.toml requirements/runtime.in -o requirements/runtime.txt
	$(UV_COMPILE) pyproject.toml requirements/dev.in --extra dev -c requirements/runtime.txt \
		-o requirements/dev.txt

train: install
	$(BIN)/nbo train --data $(SAMPLE) --mapping online-retail --models-dir $(MODELS_DIR)

serve: install
	NBO_CLOCK=$(DEMO_CLOCK) NBO_CATALOG=$(CATALOG) NBO_LOG_FORMAT=text $(BIN)/nbo serve --models-dir $(MODELS_DIR) --port $(PORT)

demo: train
	@echo ""
	@echo "nbo is starting on http://127.0.0.1:$(PORT) (clock pinned to $(DEMO_CLOCK)). Try:"
	@echo "  curl -s 'http://127.0.0.1:$(PORT)/v1/customers/12347/offers?k=5&channel=email'"
	@echo "  curl -s 'http://127.0.0.1:$(PORT)/v1/customers/12347'                  # stage, churn risk, best send time"
	@echo "  curl -s 'http://127.0.0.1:$(PORT)/v1/customers/new-customer-1/offers?k=3'   # cold start"
	@echo "  curl -s 'http://127.0.0.1:$(PORT)/v1/catalog'                         # the live offer catalogue"
	@echo "  curl -s 'http://127.0.0.1:$(PORT)/v1/items/85123A/similar?k=5'"
	@echo "  curl -s 'http://127.0.0.1:$(PORT)/v1/model'"
	@echo "  curl -s 'http://127.0.0.1:$(PORT)/health/ready'"
	@echo "  curl -s 'http://127.0.0.1:$(PORT)/v1/customers/12347/data'            # everything nbo holds on a customer"
	@echo "  curl -s 'http://127.0.0.1:$(PORT)/metrics'                            # Prometheus metrics"
	@echo "  (no API keys configured: the service answers on 127.0.0.1 only; see docs/service.md, Access control)"
	@echo "  open http://127.0.0.1:$(PORT)/docs for the API; Ctrl-C stops the service."
	@echo ""
	NBO_CLOCK=$(DEMO_CLOCK) NBO_CATALOG=$(CATALOG) NBO_LOG_FORMAT=text $(BIN)/nbo serve --models-dir $(MODELS_DIR) --port $(PORT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest -q
	@[ -n "$$NBO_TEST_POSTGRES_URL" ] || echo "The store's PostgreSQL tests were skipped: \
	run make test-postgres (a throwaway server; needs PostgreSQL's initdb and pg_ctl, \
	Debian's postgresql package) or set NBO_TEST_POSTGRES_URL=postgresql://..."

# make test beside a throwaway PostgreSQL server on loopback (.ci/with-postgres), as CI runs it.
test-postgres:
	.ci/with-postgres $(MAKE) test

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# A campaign for every customer of the demo model, as of the demo clock.
campaign: install
	mkdir -p reports
	NBO_CLOCK=$(DEMO_CLOCK) NBO_CATALOG=$(CATALOG) $(BIN)/nbo batch --models-dir $(MODELS_DIR) \
		--customers all --k 10 --channel email --out reports/campaign.parquet
