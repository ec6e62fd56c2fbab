# make run | test | deps | setup | lint | bench | stack | simulate
# Everything runs from a virtualenv in .venv (created on first use, idempotent). `make run` installs only what the
# reference service needs; `make test` adds the development tools and the npm packages the tests use; `make deps`
# installs the Debian packages the end-to-end tests need (the tests that need them skip, naming it, without them).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --disable-pip-version-check -c constraints.txt
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev

# The Debian packages of the end-to-end tests: Prometheus (with promtool), Alertmanager (with amtool), Chromium
# for the browser test, Node.js and npm for the dashboards' type check and posthog-js. `.ci/run` runs `make deps`.
DEBIAN_PACKAGES := prometheus prometheus-alertmanager chromium nodejs npm
# The command each package provides, to see what is missing.
DEBIAN_COMMANDS := prometheus:prometheus promtool:prometheus prometheus-alertmanager:prometheus-alertmanager \
                   amtool:prometheus-alertmanager chromium:chromium node:nodejs npm:npm
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: setup run simulate test lint bench readme clean stack deps dashboard-deps

# npm projects the tests use: the dashboards' type check and posthog-js for the browser test.
NPM_DIRS := collector/typecheck tests/browser
NPM_STAMPS := $(addsuffix /node_modules/.installed,$(NPM_DIRS))

# Everything the test suite installs: the development set and the npm packages.
setup: $(DEV_STAMP) $(NPM_STAMPS)

$(VENV)/bin/python:
	@echo "==> creating $(VENV) (Python: $$($(PYTHON) --version))"
	$(PYTHON) -m venv $(VENV)

# pyproject.toml holds compatible ranges; constraints.txt the exact set a fresh machine gets.
$(RUN_STAMP): pyproject.toml constraints.txt | $(VENV)/bin/python
	@echo "==> installing what the reference service needs: tuist-telemetry[service] (no development tools)"
	$(PIP) -e '.[service]'
	@touch $@

$(DEV_STAMP): pyproject.toml constraints.txt | $(VENV)/bin/python
	@echo "==> installing the development set: tuist-telemetry[dev] (pytest, ruff, mypy, hypothesis, ...)"
	$(PIP) -e '.[dev]'
	@touch $@ $(RUN_STAMP)

%/node_modules/.installed: %/package-lock.json %/package.json
	@if command -v npm >/dev/null 2>&1; then \
	  echo "==> npm ci in $*"; \
	  (cd $* && npm ci --no-audit --no-fund) && touch $@; \
	else echo "npm not found: $* not installed (its tests will skip; \`make deps\` installs npm)"; fi

# The Debian packages above, those missing only (apt-get; sudo unless root).
deps:
	@missing=""; for pair in $(DEBIAN_COMMANDS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	missing=$$(printf '%s\n' $$missing | sort -u | xargs); \
	if [ -z "$$missing" ]; then echo "deps: all installed ($(DEBIAN_PACKAGES))"; exit 0; fi; \
	echo "==> apt-get install $$missing"; \
	$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing

# The reference service on 127.0.0.1:8080 with /metrics on :9091 (see README); `make run WORKERS=4` runs four
# uvicorn workers in multi-process mode behind the one /metrics. It runs from this checkout (service/ is not
# part of the installed package).
run: $(RUN_STAMP)
	$(PY) -m service $(if $(WORKERS),--workers $(WORKERS))

simulate: $(RUN_STAMP)
	$(PY) -m telemetry simulate

# Prometheus and Alertmanager (Debian packages) on loopback with collector/ configs, scraping the service of
# `make run` (run it in another terminal); prints the URLs; Ctrl-C stops both by PID. See docs/deployment.md.
stack: $(DEV_STAMP)
	$(PY) collector/stack.py

# The dashboards' type-check project only (@grafana/schema + typescript, from its package-lock.json).
dashboard-deps: collector/typecheck/node_modules/.installed

lint: $(DEV_STAMP)
	$(PY) -m ruff check telemetry service tests bench scripts collector
	$(PY) -m mypy
	$(PY) scripts/update_readme.py --check

readme: $(DEV_STAMP)
	$(PY) scripts/update_readme.py

# Ends with what was skipped and the command that enables it (tests/conftest.py).
test: setup lint
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(DEV_STAMP)
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
