# tickstream — run `make help` for the targets.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The per-tick stage modules compiled with mypyc (stages/native.py); rebuilt when any stage
# source changes. A module whose source changed since its build runs from source.
NATIVE := stages/.native.json

.DEFAULT_GOAL := help
.PHONY: docs help venv native clean-native demo stunnel clickhouse test test-unit test-integration lint typecheck fmt bench reliability broker worker describe smoke clean

help: ## list every target
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[local,dev]"
	@touch $@

venv: $(STAMP) ## create .venv and install the project with the local broker and dev tools

$(NATIVE): $(STAMP) $(wildcard stages/*.py) tools/build_native.py
	$(BIN)/python tools/build_native.py

native: $(NATIVE) ## compile the per-tick stages with mypyc (same code, ~1.5x faster; needs a C compiler)

clean-native: ## remove the compiled stage modules (the stages then run from source)
	rm -rf stages/*.so stages/_compiled $(NATIVE)

demo: $(STAMP) $(NATIVE) ## the whole system on a private broker: history, training, worker, sink, live collectors, summary (DURATION=60 make demo)
	$(BIN)/tickstream demo --duration $(or $(DURATION),120)

stunnel: ## install stunnel4 (and openssl), the TLS terminator tests/test_tls.py puts before the broker
	@{ command -v stunnel4 || command -v stunnel; } >/dev/null && command -v openssl >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq stunnel4 openssl)

clickhouse: ## install Debian's clickhouse-server (18.16), which the storage tests start on a private port
	@command -v clickhouse-server >/dev/null || [ -x /usr/sbin/clickhouse-server ] || \
		(apt-get update -qq && apt-get install -y -qq clickhouse-server)

test: $(STAMP) $(NATIVE) stunnel clickhouse lint typecheck ## lint, type-check and run every test (starts its own broker)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

test-unit: $(STAMP) $(NATIVE) ## tests that need no broker
	$(BIN)/python -m pytest -q -m "not integration"

test-integration: $(STAMP) $(NATIVE) stunnel clickhouse ## tests on the real local broker only
	$(BIN)/python -m pytest -q -m integration

bench: $(STAMP) $(NATIVE) clickhouse ## benchmarks on a private local broker; one JSON object on the last line
	$(BIN)/python -m bench

reliability: $(STAMP) $(NATIVE) ## fault suite on real Lean ticks (kills, stall, restart, bad input, soak; ~15 min); writes docs/reliability.md, JSON on the last line
	$(BIN)/python -m bench.reliability

lint: $(STAMP) ## ruff, and the import-linter contracts (one-way layers; see README Layout)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP) ## mypy --strict on the packages
	$(BIN)/mypy

fmt: $(STAMP) ## ruff format + autofix
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

broker: $(STAMP) ## run the local Kafka-protocol broker on 127.0.0.1:9092 (foreground)
	$(BIN)/tickstream broker --port 9092

worker: $(STAMP) $(NATIVE) ## run a Faust worker against TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS (default 127.0.0.1:9092)
	$(BIN)/tickstream worker

describe: $(STAMP) ## print the topology (text + Mermaid)
	$(BIN)/tickstream describe

docs: $(STAMP) ## regenerate docs/topology.md from tickstream describe
	$(BIN)/python docs/gen_topology.py

clean: ## remove the virtualenv, caches and local state
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache *.egg-info stages/*.so stages/_compiled $(NATIVE)
