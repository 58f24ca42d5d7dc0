# Two commands for a new user: `make run` (the main job) and `make test` (the tests).
# Both create/update .venv, install the package, and make sure redis-server exists.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: run test check lint typecheck faults cluster bench setup redis-server clean

setup: $(STAMP) redis-server

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(STAMP)

# redis-server is a system binary, not a Python package: install it with the OS package
# manager when we are root, otherwise say exactly what to do.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "redis-server not found: installing it with apt-get"; \
	    (apt-get install -y -qq redis-server >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null)); \
	  else \
	    echo "redis-server not found on PATH: install it (sudo apt-get install redis-server," \
	         "or brew install redis) or pass --redis URL to use an existing server" >&2; exit 1; \
	  fi; }

run: setup
	$(BIN)/framestream run $(ARGS)

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(ARGS)

# The inner loop: lint, types, and the unit, integration and manifest tests not marked slow (no Ray,
# no fault injection). `make test` stays the whole suite, and is what CI runs.
check: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy stream deployments loadtest
	$(BIN)/python -m pytest -q tests/unit tests/integration tests/k8s -m "not slow and not ray and not faults" $(ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy stream deployments loadtest

faults: setup
	$(BIN)/python -m tests.faults.report

# A head, worker hosts and Redis as network namespaces on this machine (needs root; docs/cluster.md).
cluster: setup
	FRAMESTREAM_FAULTS_OUT=$${FRAMESTREAM_FAULTS_OUT:-out/cluster} \
	  $(BIN)/python -m tests.faults.report --suite tests/cluster $(ARGS)

bench: setup
	@mkdir -p out
	FRAMESTREAM_WEIGHTS_DIR=$${FRAMESTREAM_WEIGHTS_DIR:-../shared/models} \
	  $(BIN)/loadtest bench --repeat 2 --json out/bench.json --markdown out/bench.md $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
