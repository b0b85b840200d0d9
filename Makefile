# One-command set-up: `make demo` and `make test` create .venv, install the pinned CPU torch
# and the project, and do nothing more when that is already done (a stamp keyed on pyproject.toml).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml scripts/setup-venv.sh | sha1sum | cut -c1-12)
PYTEST_ARGS ?=
# pytest-xdist: one worker per core and one more — much of the suite waits on servers, Rays and
# subprocesses it started, so a worker per core leaves the cores idle (docs/benchmarks.md, "Test
# time"); tests on the session Ray share one worker (their xdist group, tests/conftest.py), so
# --dist loadgroup; the longest units start first (tests/durations.json, refreshed by
# scripts/test-durations.py). TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))
PARALLEL := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup)

.PHONY: setup system demo test test-fast lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup-venv.sh
	@bash scripts/setup-venv.sh "$(PY)" "$(VENV)"
	@rm -f $(VENV)/.installed-* && touch $@

# Test-only system parts: Debian's Chromium for the dashboard test, PostgreSQL 15 started.
system:
	@bash scripts/setup-system.sh

demo: setup
	$(BIN)/autoprune demo

# Everything, slow tests included: what CI runs (.ci/run).
test: setup system
	@. scripts/test-env.sh && $(BIN)/python -m pytest $(PARALLEL) $(PYTEST_ARGS)

# The default lane while working: everything not marked slow, same set-up.
test-fast: setup system
	@. scripts/test-env.sh && $(BIN)/python -m pytest -m "not slow" $(PARALLEL) $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check search_spaces agents workers service tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
