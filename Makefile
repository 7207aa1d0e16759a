# Secondline: `make demo` runs the product, `make test` installs and runs the whole check.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SRC := broker agent tests bench
PYTEST_WORKERS ?= 3

.PHONY: demo test check install fmt lint types unit bench bench-storm web clean agent-deb

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP) web

web: web/dist/.built

web/dist/.built: web/package.json web/package-lock.json web/build.mjs $(wildcard web/src/*)
	cd web && npm ci --no-audit --no-fund --loglevel=error && node build.mjs
	touch $@

test: install
	$(MAKE) check

check:
	$(BIN)/ruff format --check $(SRC)
	$(BIN)/ruff check $(SRC)
	$(BIN)/mypy
	# The session rules decide who gets a shell: every branch of them must be tested.
	$(BIN)/pytest -q -p no:cacheprovider tests/unit/test_rules_*.py \
		--cov=broker.rules --cov-branch --cov-report=term-missing:skip-covered --cov-fail-under=100
	# Every broker, agent and CLI process of the suite would compile our sources again where
	# PYTHONDONTWRITEBYTECODE is set (this machine's environment sets it): compile them once.
	$(BIN)/python -m compileall -q broker agent > /dev/null
	# The suite on PYTEST_WORKERS processes, each taking the next test as it frees up
	# (worksteal: the long end-to-end tests do not queue behind one worker); then the tests
	# marked serial, alone, since they hold timing promises that a busy machine would
	# break (none selected, as with PYTEST_ARGS naming one module, is no failure). Both
	# parts always run; either failing fails the check. The 25 slowest tests
	# are listed, so that a test that grows shows in the log before CI time runs out.
	status=0; \
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist worksteal -m "not serial" --durations=25 $(PYTEST_ARGS) || status=$$?; \
	$(BIN)/pytest -m serial $(PYTEST_ARGS) || { rc=$$?; [ $$rc -eq 5 ] || status=$$rc; }; \
	exit $$status

fmt: $(STAMP)
	$(BIN)/ruff format $(SRC)
	$(BIN)/ruff check --fix $(SRC)

demo: install
	$(BIN)/python -m broker.demo --data-dir ./demo-data

# Then what a session across nodes costs against a same-node one (bench/cluster_hop.py):
# it needs PostgreSQL and NATS, as the cluster targets of the table do.
BENCH_PG ?= $(or $(SECONDLINE_BENCH_PG),$(SECONDLINE_TEST_PG),postgresql://postgres@127.0.0.1:5432/test)
bench: install
	$(BIN)/python -m bench.kb_eval
	$(BIN)/python -m bench $(if $(QUICK),--quick,) $(if $(PROFILE),--profile,)
	SECONDLINE_TEST_PG=$(BENCH_PG) $(BIN)/python -m bench.cluster_hop $(if $(QUICK),--runs 1 --mb 10,--mb 30)

# The restart storm of a three-node cluster (docs/benchmarks.md): 10,000 agents, 300 quick.
bench-storm: install
	$(BIN)/python -m bench.cluster_storm $(if $(QUICK),--quick,) $(if $(PROFILE),--profile,)

# The agent as a Debian package (packaging/deb, tools/build_agent_deb.py): dist/*.deb.
agent-deb: $(STAMP)
	$(BIN)/python tools/build_agent_deb.py --out dist

clean:
	rm -rf dist $(VENV) web/node_modules web/dist .mypy_cache .pytest_cache .ruff_cache
