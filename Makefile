# Two commands for a new user: `make run` (the main job) and `make test` (the tests).
# Both create/update .venv, install the package, and make sure redis-server exists.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: run test check lint typecheck faults cluster cluster-bench bench setup system-packages clean

setup: $(STAMP) system-packages

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(STAMP)

# System programs the tests use, from the OS packages (not Python packages): installed with apt-get
# when one is missing and we are root, otherwise we say exactly what to install. redis-server is the
# one `make run` needs; the rest are for the tests (docs/dependencies.md says what each is for).
APT_PACKAGES ?= redis-server iproute2 gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi \
	gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-libav chromium \
	mosquitto postgresql openssl

system-packages:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing system packages:$$missing"; \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null 2>&1 || \
	     (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null)); \
	  elif ! command -v redis-server >/dev/null 2>&1; then \
	    echo "redis-server not found on PATH: install it (sudo apt-get install redis-server," \
	         "or brew install redis) or pass --redis URL to use an existing server" >&2; exit 1; \
	  else \
	    echo "note: missing system packages$$missing (tests that need them skip with a reason)" >&2; \
	  fi; \
	fi

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
	  $(BIN)/python -m tests.faults.report --suite tests/hosts $(ARGS)

# Frames/s and CPU per frame over the cluster's hosts (needs root; benchmarks/cluster_throughput.py).
cluster-bench: setup
	FRAMESTREAM_FAULTS_OUT=$${FRAMESTREAM_FAULTS_OUT:-out/cluster} \
	  $(BIN)/python -m tests.faults.report --suite benchmarks/cluster_throughput.py -- -p tests.hosts.conftest $(ARGS)

bench: setup
	@mkdir -p out
	FRAMESTREAM_MODELS__WEIGHTS_DIR=$${FRAMESTREAM_MODELS__WEIGHTS_DIR:-../shared/models} \
	  $(BIN)/loadtest bench --repeat 2 --json out/bench.json --markdown out/bench.md $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
