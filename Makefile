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
# The sample ends on 2011-12-09; pinning the clock there serves its customers as it last saw them
DEMO_CLOCK ?= 2011-12-09T13:00:00Z
PORT ?= 8000
# The demo's offer catalogue: products, a win-back, a loyalty reward and a welcome offer.
CATALOG ?= data/catalog.yaml

.PHONY: demo test test-postgres install install-spark lock lint format bench train serve clean campaign api-docs-assets dashboard-screenshots

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

# The spark extra (`nbo batch --engine spark`, its tests and bench) on top of the dev install,
# from a lock of its own: PySpark is a 450 MB source package built on install, which would
# more than double every plain install (docs/operations.md, "Dependencies and upgrades").
$(VENV)/.installed-spark: requirements/spark.txt $(VENV)/.installed
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/spark.txt
	touch $@

install-spark: $(VENV)/.installed-spark

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
	$(UV_COMPILE) requirements/spark.in -c requirements/dev.txt -o requirements/spark.txt

train: install
	$(BIN)/nbo train --data $(SAMPLE) --mapping online-retail --models-dir $(MODELS_DIR)

serve: install
	NBO_CLOCK=$(DEMO_CLOCK) NBO_CATALOG=$(CATALOG) NBO_LOG_FORMAT=text $(BIN)/nbo serve --models-dir $(MODELS_DIR) --port $(PORT)

demo: train
	@echo ""
	@echo "nbo is starting on http://127.0.0.1:$(PORT) (clock pinned to $(DEMO_CLOCK))."
	@echo "  The dashboard: http://127.0.0.1:$(PORT)/dashboard   (in a browser: the model, offers going out, a customer, experiments, models)"
	@echo "Try:"
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
	@[ -n "$$NBO_TEST_CHROMIUM" ] || command -v chromium >/dev/null || echo "The dashboard's \
	browser tests were skipped: no chromium (apt-get install chromium, Debian's package)"

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

# The README's screenshots of the dashboard (docs/dashboard/*.png) on the bundled sample:
# the published model of $(MODELS_DIR) (trained first when there is none) served at the demo
# clock, with an offer history the script posts through the API; needs Debian's chromium.
dashboard-screenshots: install
	[ -f $(MODELS_DIR)/CURRENT ] || $(MAKE) train
	$(BIN)/python docs/dashboard/screenshots.py --models-dir $(MODELS_DIR)

# The interactive API docs' scripts, served by nbo itself (deployments may have no internet):
# Swagger UI and ReDoc from their official npm packages, at the versions FastAPI's defaults
# follow (swagger-ui-dist 5, redoc 2), with their licences, into the package's static
# folder. Needs npm; the files are committed, so only a version bump runs this. ReDoc's
# sidebar shows Redocly's logo from their CDN (no option turns it off): the bundle's one
# address on the internet becomes an empty inline image, so /redoc requests nothing from
# elsewhere (tests/service/dashboard/test_browser.py checks it in Chromium).
REDOC_LOGO := https://cdn.redoc.ly/redoc/logo-mini.svg
EMPTY_SVG := data:image/svg+xml,%3Csvg xmlns=%27http://www.w3.org/2000/svg%27/%3E
SWAGGER_UI_VERSION ?= 5.35.0
REDOC_VERSION ?= 2.5.4
API_DOCS_ASSETS := src/nbo/service/static/apidocs

api-docs-assets:
	rm -rf $(API_DOCS_ASSETS).tmp && mkdir -p $(API_DOCS_ASSETS).tmp
	cd $(API_DOCS_ASSETS).tmp && npm pack --silent swagger-ui-dist@$(SWAGGER_UI_VERSION) redoc@$(REDOC_VERSION) \
		&& mkdir swagger redoc && tar xzf swagger-ui-dist-*.tgz -C swagger && tar xzf redoc-*.tgz -C redoc
	mkdir -p $(API_DOCS_ASSETS)
	cd $(API_DOCS_ASSETS).tmp/swagger/package && cp swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt \
		swagger-ui.css favicon-32x32.png NOTICE ../../../apidocs/ && cp LICENSE ../../../apidocs/swagger-ui-dist.LICENSE
	cd $(API_DOCS_ASSETS).tmp/redoc/package && cp bundles/redoc.standalone.js \
		bundles/redoc.standalone.js.LICENSE.txt ../../../apidocs/ && cp LICENSE ../../../apidocs/redoc.LICENSE
	sed -i 's|$(REDOC_LOGO)|$(EMPTY_SVG)|' $(API_DOCS_ASSETS)/redoc.standalone.js
	printf 'swagger-ui-dist %s\nredoc %s (its Redocly logo URL made an empty inline image)\n' \
		$(SWAGGER_UI_VERSION) $(REDOC_VERSION) > $(API_DOCS_ASSETS)/VERSIONS
	rm -rf $(API_DOCS_ASSETS).tmp
