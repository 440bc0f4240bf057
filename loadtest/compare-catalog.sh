#!/usr/bin/env bash
# Compares stampede builds on the catalogue and checkout paths, side by side in one run, each beside its own
# /health/live, since this machine's speed drifts between runs (docs/performance.md).
#
#   loadtest/compare-catalog.sh <label>=<stampede binary>[:<options per product>] ...
#
# e.g. the build before product options against the current one with 3 options per product:
#          loadtest/compare-catalog.sh before=/tmp/before/release/stampede after=target/release/stampede:3
#
# For each run, in turn and for ROUNDS rounds: a fresh database `catalog_<label>_<round>` and Redis prefix on
# the services SERVICES_PROFILE names (default dev; `test` while another engineer uses dev), USERS users and
# PRODUCTS products seeded by that build (with the options per product when given: a build that takes
# --options-per-product), every balance and stock raised in SQL so no request fails for money or stock, the
# server started on PORT, then wrk (CONNECTIONS connections) against /health/live, a product's detail
# (loadtest/wrk/product.lua), the first listing page of 20, create+pay of one unit round robin over the
# catalogue (every option when the build has options), and create+pay on one hot product's option
# (loadtest/wrk/order.lua). Prints one line per run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SERVICES="${SERVICES:-scripts/services.sh}"
SERVICES_PROFILE="${SERVICES_PROFILE:-dev}"
ROUNDS="${ROUNDS:-2}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
USERS="${USERS:-20000}"
PRODUCTS="${PRODUCTS:-1000}"
PORT="${PORT:-18081}"
TOKEN=bench-admin-token
JWT_SECRET=bench-jwt-secret-of-at-least-32-bytes
HOST="http://127.0.0.1:$PORT"

(($# > 0)) || { sed -n 2,17p "$0"; exit 2; }
"$SERVICES" start "$SERVICES_PROFILE" single >/dev/null
eval "$("$SERVICES" env "$SERVICES_PROFILE" single)"
server_url="${DATABASE_URL%/*}"
lines="$(mktemp)"
tokens="$(mktemp)"
trap '[[ -n "${pid:-}" ]] && kill "$pid" 2>/dev/null; rm -f "$lines" "$tokens"' EXIT

sql() { mariadb --no-defaults -h127.0.0.1 -P"${server_url##*:}" -ustampede -pstampede -N -B "$@"; }
source loadtest/wrk/report.sh
run_wrk() { wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$@"; }
# SIGTERM, then SIGKILL if the graceful stop (draining the relay's backlog of this run's events) takes over 30 s.
stop_server() {
    kill "$pid"
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=
}

for round in $(seq "$ROUNDS"); do
    for spec in "$@"; do
        label="${spec%%=*}"
        rest="${spec#*=}"
        binary="${rest%%:*}"
        options=
        [[ "$rest" == *:* ]] && options="${rest##*:}"
        database="catalog_${label}_${round}"
        export DATABASE_URL="$server_url/$database" REDIS_PREFIX="catalog:$$:${label}:${round}:" ADMIN_TOKEN="$TOKEN"
        export BIND_ADDR="127.0.0.1:$PORT" RUST_LOG=warn AUTH_JWT_SECRET="$JWT_SECRET"
        # The buyers' tokens, minted by the build under test (loadtest/wrk/tokens.lua); a build from before
        # authentication has no `token` command and ignores the header.
        "$binary" token --user 1 --count "$USERS" --ttl 1h >"$tokens" 2>/dev/null || : >"$tokens"
        export TOKENS="$tokens"
        sql -e "DROP DATABASE IF EXISTS $database; CREATE DATABASE $database CHARACTER SET utf8mb4"
        "$binary" migrate >/dev/null
        "$binary" seed --users "$USERS" --products "$PRODUCTS" ${options:+--options-per-product "$options"} >/dev/null
        sql "$database" -e "INSERT INTO balances (user_id, amount) SELECT id, 1000000000 FROM users"
        if [[ -n "$options" ]]; then
            sql "$database" -e "UPDATE product_options SET stock = 2000000000"
            sql "$database" -e "SELECT product_id, id FROM product_options ORDER BY id" >"$lines"
            hot="$(head -n1 "$lines")"
        else
            sql "$database" -e "UPDATE products SET stock = 2000000000"
        fi
        first_product="$(sql "$database" -e "SELECT MIN(id) FROM products")"
        "$binary" serve >/dev/null 2>&1 &
        pid=$!
        until curl -fs "$HOST/health/ready" >/dev/null; do sleep 0.2; done
        live="$(run_wrk "$HOST/health/live")"
        detail="$(FIRST_PRODUCT="$first_product" PRODUCTS="$PRODUCTS" THREADS=2 run_wrk -s loadtest/wrk/product.lua "$HOST")"
        list="$(run_wrk "$HOST/api/v1/products?page=0&size=20")"
        if [[ -n "$options" ]]; then
            catalog="$(LINES="$lines" FIRST_USER=1 USERS="$USERS" THREADS=2 run_wrk -s loadtest/wrk/order.lua "$HOST")"
            echo "$hot" >"$lines"
            hot_pay="$(LINES="$lines" FIRST_USER=1 USERS="$USERS" THREADS=2 run_wrk -s loadtest/wrk/order.lua "$HOST")"
        else
            catalog="$(FIRST_USER=1 USERS="$USERS" FIRST_PRODUCT="$first_product" PRODUCTS="$PRODUCTS" THREADS=2 \
                run_wrk -s loadtest/wrk/order.lua "$HOST")"
            hot_pay="$(FIRST_USER=1 USERS="$USERS" FIRST_PRODUCT="$first_product" PRODUCTS=1 THREADS=2 \
                run_wrk -s loadtest/wrk/order.lua "$HOST")"
        fi
        live_rps="$(requests_per_second <<<"$live")"
        ratio() { echo "$(requests_per_second <<<"$1") / $live_rps" | bc -l; }
        printf '%-8s round %s live %6d | detail %6d (%.2f) p99 %-8s | list %6d (%.2f) p99 %-8s | pay %5d p99 %-8s | hot pay %5d p99 %-8s | non-2xx: %s\n' \
            "$label" "$round" "$live_rps" \
            "$(requests_per_second <<<"$detail")" "$(ratio "$detail")" "$(p99 <<<"$detail")" \
            "$(requests_per_second <<<"$list")" "$(ratio "$list")" "$(p99 <<<"$list")" \
            "$(requests_per_second <<<"$catalog")" "$(p99 <<<"$catalog")" \
            "$(requests_per_second <<<"$hot_pay")" "$(p99 <<<"$hot_pay")" \
            "$(grep -E '^status [^2]|Non-2xx' <<<"$detail$list$catalog$hot_pay" | tr '\n' ' ' || true)"
        stop_server
    done
done
