# The two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
export PATH := $(HOME)/.local/bin:$(PATH)
UV := uv

# The test stack has its own ports and data folder, so `make test` runs
# beside a `make run` without touching its data.
# The ports can be moved (e.g. TEST_PORT_BASE=1 make test) to run two test stacks at
# once, in one checkout or two: a moved stack keeps its data in .parking/test-<base>.
# Every port sits below Linux's ephemeral range (32768-60999): a port in it can be
# taken for a moment by any outgoing connection's local end, and a server restarted
# in a test then fails to bind ("Address already in use").
TEST_PORT_BASE ?= 0
TEST_STACK_DIR := .parking/test$(if $(filter 0,$(TEST_PORT_BASE)),,-$(TEST_PORT_BASE))
TEST_ENV := PARKING_STACK_DIR=$(TEST_STACK_DIR) \
	PARKING_PG_PORT=$(shell echo $$((25442 + $(TEST_PORT_BASE)))) \
	PARKING_REDIS_PORT=$(shell echo $$((26389 + $(TEST_PORT_BASE)))) \
	PARKING_MQTT_PORT=$(shell echo $$((21893 + $(TEST_PORT_BASE)))) \
	PARKING_API_PORT=$(shell echo $$((8010 + $(TEST_PORT_BASE)))) \
	PARKING_SANDBOX_PORT=$(shell echo $$((8020 + $(TEST_PORT_BASE))))

.PHONY: bootstrap run test lint format bench stop schema chaos

bootstrap:
	@scripts/bootstrap.sh

run: bootstrap
	$(UV) run parking run

test: bootstrap
	$(TEST_ENV) $(UV) run parking stack up --redis-cluster
	$(TEST_ENV) $(UV) run pytest $(PYTEST_ARGS)

lint: bootstrap
	$(UV) run ruff format --check src counterparts gateways tests bench loadtests
	$(UV) run ruff check src counterparts gateways tests bench loadtests
	$(UV) run mypy
	$(UV) run lint-imports --no-cache

format: bootstrap
	$(UV) run ruff format src counterparts gateways tests bench loadtests
	$(UV) run ruff check --fix src counterparts gateways tests bench loadtests

# BENCH_ARGS: some benchmarks only (BENCH_ARGS="bench_api ingest"), or --smoke (seconds each).
bench: bootstrap
	$(TEST_ENV) $(UV) run parking stack up --redis-cluster
	$(TEST_ENV) $(UV) run python bench/run.py $(BENCH_ARGS)

# The reliability matrix's faults under city load (tests/chaos_rows.py, docs/operations.md):
# every row's tests with 4x the devices, events and rates of `make test`; prints the
# chaos table (also in .parking/chaos/) and fails unless every row passed and lost nothing.
chaos: bootstrap
	$(TEST_ENV) $(UV) run parking stack up --redis-cluster
	$(TEST_ENV) CHAOS_LOAD=city $(UV) run pytest --chaos -p no:cacheprovider $(PYTEST_ARGS)

# Regenerate migrations/schema.sql from a freshly migrated test database.
schema: bootstrap
	$(TEST_ENV) $(UV) run parking stack up
	$(TEST_ENV) $(UV) run parking db schema --write

# The bounded city scenario (loadtests/) against `make run`'s stack, which must be
# running (start it in another terminal): drivers, lanes over MQTT and HTTP, unplated
# cars, operators and the city dashboard, for LOADTEST_TIME. Fails on any failed
# request; locust's CSV and HTML reports go to .parking/loadtests/locust-<time>/.
LOADTEST_TIME ?= 2m
LOADTEST_USERS ?= 60
LOADTEST_SPAWN_RATE ?= 10
LOADTEST_HOST ?= http://127.0.0.1:8000
.PHONY: loadtest
loadtest: bootstrap
	@curl -sf -m 5 $(LOADTEST_HOST)/readyz > /dev/null || { echo "make loadtest drives the stack of make run: start it first (in another terminal)"; exit 1; }
	@dir=$$(dirname $${PARKING_STACK_DIR:-.parking/dev})/loadtests/locust-$$(date +%Y%m%d-%H%M%S); mkdir -p $$dir; \
	$(UV) run --group load locust -f loadtests/locustfile.py --host $(LOADTEST_HOST) --headless \
		-u $(LOADTEST_USERS) -r $(LOADTEST_SPAWN_RATE) -t $(LOADTEST_TIME) --stop-timeout 90 \
		--csv $$dir/locust --html $$dir/locust.html --only-summary; \
	status=$$?; echo "locust reports: $$dir (locust.html, locust_stats.csv, locust_failures.csv)"; exit $$status

stop:
	-$(UV) run parking stack down
	-$(TEST_ENV) $(UV) run parking stack down
