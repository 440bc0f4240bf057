# stampede developer tasks. `make` (or `make help`) lists them.
#
# Local Redis/MariaDB are plain processes managed by scripts/services.sh (dev profile:
# redis 127.0.0.1:6390, mariadb 127.0.0.1:3390, data in .data/dev/). `REDIS=cluster` (for run, load, seed,
# bench) puts the service on a 3-master Redis Cluster on 127.0.0.1:6392-6394 instead (docs/scaling.md).

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

CARGO ?= cargo
SERVICES := scripts/services.sh
DEV_DATA := .data/dev
REPORTS := .data/reports
# Where cargo puts binaries: it honours CARGO_TARGET_DIR and .cargo/config.toml, so ask it.
TARGET_DIR := $(shell $(CARGO) metadata --format-version 1 --no-deps 2>/dev/null | sed -E 's/.*"target_directory":"([^"]*)".*/\1/')
STAMPEDE := $(TARGET_DIR)/release/stampede
LOADTEST := $(TARGET_DIR)/release/loadtest
DEV_ADMIN_TOKEN := dev-admin-token
# The development JWT secret (DEV_JWT_SECRET in src/identity/config.rs): `serve` refuses it off loopback.
DEV_JWT_SECRET := stampede-development-secret-do-not-deploy

# Criterion benches run once each in smoke mode (`-- --test`) by `make test`, against the test-profile services.
# Add the names of benches/<name>.rs here as they appear.
BENCHES := coupon identity pay ranking sql_baseline

# `make seed USERS=... PRODUCTS=...`
USERS ?= 100000
PRODUCTS ?= 1000

# `make load LOAD_USERS=... LOAD_RUN_TIME=...`; scenarios: flash-sale checkout checkout-hot browse mixed.
# The load test's own knobs are environment variables (FLASH_QUANTITY, FLASH_USERS, ...; see docs/load-tests.md),
# given on the make command line or exported.
LOAD_SCENARIOS ?= flash-sale mixed
LOAD_USERS ?= 200
LOAD_HATCH_RATE ?= 200
LOAD_RUN_TIME ?= 30s
# Instances of the service `make load` runs on 127.0.0.1:8080, 8081, ... (at most 10), sharing the dev Redis and
# MariaDB; goose's virtual users are spread over them, the checks read the counts through the first.
LOAD_INSTANCES ?= 1

# Which Redis the dev targets use: `single` (one redis-server) or `cluster` (three masters).
REDIS ?= single

# The integration-test modules `make test` runs a second time on the test-profile Redis Cluster
# (TEST_REDIS_URL=redis-cluster://...): every module whose tests reach Redis through the shared server. Their
# tests that start a redis-server of their own (to kill, flush or restart it) still run on it there.
CLUSTER_TESTS := coupons:: orders:: options:: balance:: products:: users:: journey:: outbox:: ranking::

# Exports DATABASE_URL and REDIS_URL of the dev services into the recipe's shell.
DEV_ENV = eval "$$($(SERVICES) env dev $(REDIS))"

.PHONY: help run stop status test bench load seed lint fmt

help: ## List the targets
	@echo "usage: make <target>"
	@echo
	@awk 'BEGIN { FS = ":.*## " } /^[a-z][a-z-]*:.*## / { printf "  %-8s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

run: ## Start dev Redis/MariaDB, build release, run the server in the foreground (REDIS=cluster: on a cluster)
	$(SERVICES) start dev $(REDIS)
	$(CARGO) build --release --bin stampede
	@$(DEV_ENV); \
	export ADMIN_TOKEN="$${ADMIN_TOKEN:-$(DEV_ADMIN_TOKEN)}"; \
	export AUTH_JWT_SECRET="$${AUTH_JWT_SECRET:-$(DEV_JWT_SECRET)}"; \
	echo "admin token: $$ADMIN_TOKEN   (Authorization: Bearer $$ADMIN_TOKEN)"; \
	echo "a user's token: AUTH_JWT_SECRET='$$AUTH_JWT_SECRET' $(STAMPEDE) token --user <id>   (Authorization: Bearer <token>)"; \
	exec $(STAMPEDE) serve

stop: ## Stop the servers started by `make load`, then the dev Redis/MariaDB
	scripts/instances.sh stop
	$(SERVICES) stop dev

status: ## Show whether the dev services are running
	@$(SERVICES) status dev || true

test: ## What CI runs: fmt check, clippy, all tests, OpenAPI fuzzing, bench smoke runs
	$(SERVICES) install
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace
	@# The OpenAPI fuzzing, the benches and the cluster run need the test-profile services (MariaDB 3391,
	@# Redis 6391, cluster 6395-6397), stopped afterwards. The fuzzing serves the debug binary `cargo test` built.
	@trap '$(SERVICES) stop test' EXIT; \
	$(SERVICES) start test; \
	$(SERVICES) start test cluster; \
	(eval "$$($(SERVICES) env test)"; \
	echo "loadtest/openapi-fuzz.sh $(TARGET_DIR)/debug/stampede"; \
	loadtest/openapi-fuzz.sh $(TARGET_DIR)/debug/stampede; \
	for bench in $(BENCHES); do \
	    echo "$(CARGO) bench --bench $$bench -- --test"; \
	    $(CARGO) bench --bench "$$bench" -- --test; \
	done); \
	eval "$$($(SERVICES) env test cluster)"; \
	echo "TEST_REDIS_URL=$$REDIS_URL $(CARGO) test --workspace --test api -- $(CLUSTER_TESTS)"; \
	TEST_DATABASE_URL="$${DATABASE_URL%/*}" TEST_REDIS_URL="$$REDIS_URL" \
	    $(CARGO) test --workspace --test api -- $(CLUSTER_TESTS)

bench: ## Run the criterion benchmarks against the dev services
	$(SERVICES) start dev $(REDIS)
	$(DEV_ENV); $(CARGO) bench

load: ## Load-test LOAD_INSTANCES local servers on 8080.. (starts those not answering); reports in .data/reports/
	$(SERVICES) start dev $(REDIS)
	$(CARGO) build --release --bin stampede
	$(CARGO) build --release -p loadtest
	@mkdir -p $(REPORTS)
	@instances="$$(scripts/instances.sh start $(STAMPEDE) $(LOAD_INSTANCES) $(REDIS))"; \
	host="$${instances%%,*}"; \
	if (( $(LOAD_INSTANCES) > 1 )); then export INSTANCES="$$instances"; echo "load: users spread over $$instances"; fi; \
	failed=(); \
	for scenario in $(LOAD_SCENARIOS); do \
	    echo "load: scenario $$scenario"; \
	    ADMIN_TOKEN="$${ADMIN_TOKEN:-$(DEV_ADMIN_TOKEN)}" AUTH_JWT_SECRET="$${AUTH_JWT_SECRET:-$(DEV_JWT_SECRET)}" $(LOADTEST) \
	        --host "$$host" \
	        --scenarios $$scenario \
	        --users $(LOAD_USERS) \
	        --increase-rate $(LOAD_HATCH_RATE) \
	        --run-time $(LOAD_RUN_TIME) \
	        --no-reset-metrics \
	        --report-file $(REPORTS)/$$scenario.html \
	        || failed+=("$$scenario"); \
	done; \
	echo "load: reports:"; for scenario in $(LOAD_SCENARIOS); do echo "  $(REPORTS)/$$scenario.html"; done; \
	if (( $${#failed[@]} > 0 )); then echo "load: FAILED (verification or run): $${failed[*]}" >&2; exit 1; fi

seed: ## Fill the dev database with test data (USERS=100000 PRODUCTS=1000)
	$(SERVICES) start dev $(REDIS)
	$(DEV_ENV); $(CARGO) run --release --bin stampede -- seed --users $(USERS) --products $(PRODUCTS)

lint: ## cargo fmt --check and clippy -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all
