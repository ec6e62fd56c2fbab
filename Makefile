# make setup | run | test | lint | bench | stack
# Everything runs from a virtualenv in .venv that `make setup` creates (idempotent).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run simulate test lint bench readme clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

# The reference service on 127.0.0.1:8080 with /metrics on :9091 (see README).
run: setup
	$(PY) -m service

simulate: setup
	$(PY) -m telemetry simulate

lint: setup
	$(PY) -m ruff check telemetry tests bench scripts
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
