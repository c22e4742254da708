# Two commands do all their own set-up on a fresh machine:
#   make up    — the whole stack (Envoy + xds + model simulators), embedded default config
#   make test  — lint, type-check and the full test suite (real Envoy, real Redis)
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up test lint unit integration bench clean redis

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@# xds-protos ships an older copy of the opentelemetry/proto modules; whichever package
	@# pip installs last wins. The OTLP exporter needs opentelemetry-proto's own files.
	$(BIN)/pip install -q --force-reinstall --no-deps \
	  "opentelemetry-proto==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')"
	@touch $(STAMP)

up: $(STAMP)
	$(BIN)/smesh up $(if $(CONFIG),--config $(CONFIG))

lint: $(STAMP)
	$(BIN)/ruff check smesh tests bench
	$(BIN)/ruff format --check smesh
	$(BIN)/mypy

redis:
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server; \
	  else echo "redis-server is missing: the Redis tests will be skipped"; fi; }

test: $(STAMP) redis lint
	$(BIN)/pytest tests

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	$(BIN)/pytest tests/integration

bench: $(STAMP)
	@command -v wrk >/dev/null && command -v nginx >/dev/null || \
	  echo "bench.extproc_overhead needs wrk and nginx: apt-get install -y wrk nginx"
	$(BIN)/python -m bench.xds_convergence
	$(BIN)/python -m bench.sim_throughput
	$(BIN)/python -m bench.extproc_overhead
	@command -v valgrind >/dev/null || echo "bench.extproc_instructions needs valgrind: apt-get install -y valgrind"
	$(BIN)/python -m bench.extproc_instructions

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
