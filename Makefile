# smartsvc — the two commands a fresh Debian machine needs:
#
#   make run    install what is needed, start API + worker + scheduler on :8080
#   make test   install what is needed (Python packages and the Debian servers
#               the integration tests start for themselves), run every test
#
# Other targets: make openapi (regenerate api_spec/openapi.json), make clean,
# make bench / make bench-smoke (benchmarks: bench/, BENCHMARKS.md).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# Written after a successful install; redone when the packaging files change.
STAMP := $(VENV)/.smartsvc-installed
PORT ?= 8080
PYTEST_ARGS ?=

# Debian packages the integration tests start throwaway servers from.
SYSDEPS ?= postgresql postgresql-15-postgis-3 redis-server
# Debian packages the benchmarks add as references (ogr2ogr) and load generators (wrk), on top of SYSDEPS.
BENCH_SYSDEPS ?= gdal-bin wrk
# Extra options for `python -m bench`, e.g. BENCH_ARGS="--only search --sizes 10000,100000".
BENCH_ARGS ?=
# root runs apt-get directly, everyone else through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help run test venv sysdeps openapi clean bench bench-smoke bench-sysdeps

help:
	@echo "make run      install and start smartsvc on http://127.0.0.1:$(PORT) (embedded defaults)"
	@echo "make test     install everything the tests need and run them all"
	@echo "make openapi  regenerate api_spec/openapi.json from the code"
	@echo "make bench    run the benchmarks (<= 15 min on 2 cores); JSON in bench/results/"
	@echo "make bench-smoke  the same benchmarks on tiny sizes (< 1 min)"
	@echo "make clean    remove the virtualenv, ./var and caches"

run: venv
	@echo "==> starting smartsvc on http://127.0.0.1:$(PORT)  (Ctrl-C stops it)"
	$(BIN)/smartsvc run --port $(PORT)

# bench-sysdeps (a superset of sysdeps): tests/integration/test_bench_smoke.py runs ogr2ogr and wrk.
test: venv bench-sysdeps
	@echo "==> running the test suite"
	$(BIN)/python -m pytest $(PYTEST_ARGS)

openapi: venv
	@echo "==> writing api_spec/openapi.json"
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	SMARTSVC_VAR_DIR="$$tmp" $(BIN)/smartsvc openapi write api_spec/openapi.json

venv: $(STAMP)

$(BIN)/python:
	@echo "==> creating $(VENV) with $(PYTHON)"
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 (Debian: apt-get install python3.11)" >&2; exit 1; }
	@if ! $(PYTHON) -m venv $(VENV); then \
	  echo "==> venv failed (Debian ships it separately): installing python3.11-venv"; \
	  rm -rf $(VENV); \
	  $(SUDO) apt-get update; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3.11-venv; \
	  $(PYTHON) -m venv $(VENV); \
	fi

$(STAMP): setup.cfg pyproject.toml | $(BIN)/python
	@echo "==> installing smartsvc and its dev dependencies into $(VENV) (setup.cfg or pyproject.toml changed)"
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# Installs only what is missing. The package scripts would start Debian's own
# postgresql and redis services: a temporary policy-rc.d (the Debian way to
# say "do not start services now") keeps them stopped. The tests never use
# them anyway: they start their own servers on free ports.
sysdeps:
	@missing=""; \
	for pkg in $(SYSDEPS); do \
	  status=$$(dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null || true); \
	  [ "$$status" = "install ok installed" ] || missing="$$missing $$pkg"; \
	done; \
	if [ -z "$$missing" ]; then \
	  echo "==> Debian packages present: $(SYSDEPS)"; \
	  exit 0; \
	fi; \
	if [ -n "$(SUDO)" ] && ! command -v sudo >/dev/null; then \
	  echo "need root or sudo to install:$$missing" >&2; exit 1; \
	fi; \
	echo "==> installing Debian packages:$$missing"; \
	policy=/usr/sbin/policy-rc.d; own_policy=""; \
	if [ ! -e "$$policy" ]; then \
	  printf '#!/bin/sh\nexit 101\n' | $(SUDO) tee "$$policy" >/dev/null; \
	  $(SUDO) chmod 755 "$$policy"; own_policy=1; \
	fi; \
	trap '[ -z "$$own_policy" ] || $(SUDO) rm -f "$$policy"' EXIT; \
	$(SUDO) apt-get update; \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing

# The sysdeps recipe with the benchmark references added to the list.
bench-sysdeps:
	@$(MAKE) --no-print-directory sysdeps SYSDEPS="$(SYSDEPS) $(BENCH_SYSDEPS)"

bench: venv bench-sysdeps
	@echo "==> running the benchmarks (JSON in bench/results/; summarise in BENCHMARKS.md)"
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-smoke: venv bench-sysdeps
	@echo "==> running the benchmarks on tiny sizes"
	$(BIN)/python -m bench --smoke $(BENCH_ARGS)

clean:
	@echo "==> removing $(VENV), var/, build output and caches"
	rm -rf $(VENV) var build dist *.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
