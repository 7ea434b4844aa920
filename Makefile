# Quick start: `make demo` and `make test`. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev
STAMP_BENCH := $(VENV)/.installed-bench
STORE ?= .lmdbstate
BENCH_ARGS ?=

.PHONY: demo test lint tests bench clean postgres-binaries

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python >= 3.11 is needed")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(STAMP_RUN)

$(STAMP_BENCH): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@ $(STAMP_DEV) $(STAMP_RUN)

demo: $(STAMP_RUN)
	$(BIN)/lmdbstate --store $(STORE) demo
	$(BIN)/lmdbstate --store $(STORE) stats

lint: $(STAMP_DEV)
	$(BIN)/ruff check lmdbstate tests benchmarks examples
	$(BIN)/ruff format --check lmdbstate tests benchmarks examples
	$(BIN)/mypy

# The tests start a throwaway PostgreSQL server (tests/pgserver.py): install its binaries
# (Debian's postgresql package) when the machine has none.
postgres-binaries:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; \
	then echo "PostgreSQL server binaries: found"; \
	else echo "PostgreSQL server binaries: installing Debian's postgresql"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends postgresql; \
	fi

tests: $(STAMP_DEV) postgres-binaries
	$(BIN)/pytest --cov --cov-report=term

test: lint tests

# Writes docs/benchmarks.md, docs/benchmarks.png and docs/benchmarks-backends.md (under 10
# minutes; the last starts a PostgreSQL server of its own), then docs/benchmarks-dedup.md
# (record format 2 on a growing history, about 2 minutes more); BENCH_ARGS=--quick
# for a smoke run, BENCH_ARGS=overhead for lmdbstate against bare py-lmdb alone.
bench: $(STAMP_BENCH) postgres-binaries
	$(BIN)/python -m benchmarks $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.langgraph_saver
	$(BIN)/python -m benchmarks.backends
	$(BIN)/python -m benchmarks.growing_history

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage $(STORE)
