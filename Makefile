# make setup | run | test | lint | bench | stack
# Everything runs from a virtualenv in .venv that `make setup` creates (idempotent).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run simulate test lint bench readme clean stack dashboard-deps

# npm projects the tests use: the dashboards' type check and posthog-js for the browser test.
NPM_DIRS := collector/typecheck tests/browser
NPM_STAMPS := $(addsuffix /node_modules/.installed,$(NPM_DIRS))

setup: $(STAMP) $(NPM_STAMPS)

# pyproject.toml holds compatible ranges; constraints.txt the exact set a fresh machine gets.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

%/node_modules/.installed: %/package-lock.json %/package.json
	@if command -v npm >/dev/null 2>&1; then \
	  (cd $* && npm ci --silent --no-audit --no-fund) && touch $@; \
	else echo "npm not found: $* not installed (its tests will skip)"; fi

# The reference service on 127.0.0.1:8080 with /metrics on :9091 (see README); `make run WORKERS=4` runs four
# uvicorn workers in multi-process mode behind the one /metrics.
run: setup
	$(PY) -m service $(if $(WORKERS),--workers $(WORKERS))

simulate: setup
	$(PY) -m telemetry simulate

# Prometheus and Alertmanager (Debian packages) on loopback with collector/ configs, scraping the service of
# `make run` (run it in another terminal); prints the URLs; Ctrl-C stops both by PID. See docs/deployment.md.
stack: setup
	$(PY) collector/stack.py

# The dashboards' type-check project only (@grafana/schema + typescript, from its package-lock.json).
dashboard-deps: collector/typecheck/node_modules/.installed

lint: setup
	$(PY) -m ruff check telemetry service tests bench scripts collector
	$(PY) -m mypy
	$(PY) scripts/update_readme.py --check

readme: setup
	$(PY) scripts/update_readme.py

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
