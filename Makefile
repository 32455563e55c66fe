# The two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
export PATH := $(HOME)/.local/bin:$(PATH)
UV := uv

# The test stack has its own ports and data folder, so `make test` runs
# beside a `make run` without touching its data.
TEST_ENV := PARKING_STACK_DIR=.parking/test PARKING_PG_PORT=55442 \
	PARKING_REDIS_PORT=56389 PARKING_MQTT_PORT=51893 PARKING_API_PORT=8010

.PHONY: bootstrap run test lint format bench stop schema

bootstrap:
	@scripts/bootstrap.sh

run: bootstrap
	$(UV) run parking run

test: bootstrap
	$(TEST_ENV) $(UV) run parking stack up
	$(TEST_ENV) $(UV) run pytest $(PYTEST_ARGS)

lint: bootstrap
	$(UV) run ruff format --check src gateways tests bench loadtests
	$(UV) run ruff check src gateways tests bench loadtests
	$(UV) run mypy

format: bootstrap
	$(UV) run ruff format src gateways tests bench loadtests
	$(UV) run ruff check --fix src gateways tests bench loadtests

bench: bootstrap
	$(TEST_ENV) $(UV) run parking stack up
	$(TEST_ENV) $(UV) run python bench/run.py

# Regenerate migrations/schema.sql from a freshly migrated test database.
schema: bootstrap
	$(TEST_ENV) $(UV) run parking stack up
	$(TEST_ENV) $(UV) run parking db schema --write

stop:
	-$(UV) run parking stack down
	-$(TEST_ENV) $(UV) run parking stack down
