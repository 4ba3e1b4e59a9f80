# hrnb: two commands for a fresh machine (Debian/Ubuntu, Python 3.11+, Java 17):
#   make demo   the main job on the embedded local stack with a simulated athlete
#   make test   make lint, then the whole test suite against real local servers
# Both are idempotent and safe to re-run.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HRNB := $(PY) -m hrnb
STAMP := $(VENV)/.installed
STARTED := $(VENV)/.stack-started-by-make
PYTEST_ARGS ?=

.PHONY: help install system-deps lambda test soak demo lab bench lint stack-up stack-down clean

help:
	@echo "make demo   - local stack up, set-up, a live session with a simulated athlete, queries"
	@echo "make test   - install into $(VENV), make lint, start the local stack, run pytest, stop what it started"
	@echo "make lint   - architecture contracts (import-linter), types (mypy) and ruff"
	@echo "make lab    - JupyterLab on notebooks/ with the local stack up"
	@echo "make bench  - benchmarks (docs/benchmarks.md)"
	@echo "make soak   - the operator invariant over many random histories (docs/benchmarks.md)"

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "hrnb needs Python 3.11+")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[notebooks,dev]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages the tests drive for real: chromium (browser test, PNG export), Java and Maven
# (the OpenSearch node). Installed only when missing and only as root, as on CI.
system-deps:
	@bash infra_scripts/system_deps.sh

lambda: install
	$(PY) infra_scripts/build_lambda.py --out build/lambda

stack-up: install
	$(HRNB) local up --started-file $(STARTED)

stack-down:
	@if [ -s $(STARTED) ]; then $(HRNB) local down --only "$$(cat $(STARTED))"; fi
	@rm -f $(STARTED)

# The tests' stack keeps every strict AWS behaviour, with a shorter IAM propagation delay (2 s
# instead of 5 s): each set-up waits for it once.
test: lint system-deps lambda
	@HRNB_STRICT_IAM_PROPAGATION_S=$${HRNB_STRICT_IAM_PROPAGATION_S:-2} $(HRNB) local up --started-file $(STARTED) || { $(MAKE) --no-print-directory stack-down; exit 1; }
	@rc=0; $(PY) -m pytest $(PYTEST_ARGS) || rc=$$?; \
	$(MAKE) --no-print-directory stack-down; exit $$rc

# The stateful operator test of `make test`, longer: SOAK_HISTORIES histories (report in out/).
SOAK_HISTORIES ?= 200
SOAK_BUDGET_S ?=
soak: install system-deps lambda
	@mkdir -p out
	@$(HRNB) local up --started-file $(STARTED) || { $(MAKE) --no-print-directory stack-down; exit 1; }
	@rc=0; HRNB_INVARIANT_HISTORIES=$(SOAK_HISTORIES) HRNB_INVARIANT_BUDGET_S=$(SOAK_BUDGET_S) \
	  HRNB_INVARIANT_TIMEOUT_S=0 \
	  HRNB_INVARIANT_OPENSEARCH_RESTARTS=$${SOAK_OPENSEARCH_RESTARTS:-5} \
	  HRNB_INVARIANT_REPORT=out/soak.json $(PY) -m pytest -q -p no:cacheprovider \
	  tests/e2e/test_operator_invariant.py || rc=$$?; \
	$(MAKE) --no-print-directory stack-down; cat out/soak.json; exit $$rc

demo: install system-deps lambda
	$(HRNB) demo

lab: install lambda
	$(HRNB) local up
	$(PY) -m jupyter lab --notebook-dir=notebooks

bench: install lambda
	$(HRNB) local up
	$(PY) bench/run_all.py

# The architecture contracts (import-linter), types (mypy) and style (ruff); all configured in
# pyproject.toml.
lint: install
	$(VENV)/bin/lint-imports --no-logo
	$(PY) -m mypy
	$(PY) -m ruff check hrnb lambda infra_scripts tests bench

clean:
	rm -rf build out .pytest_cache
