#!/usr/bin/env bash
# The product listing with filters and sorts against the plain listing, side by side in one run, each beside
# its own /health/live, since this machine's speed drifts between runs (docs/performance.md).
#
#   loadtest/compare-listing.sh [stampede binary, default target/release/stampede]
#
# For ROUNDS rounds: a fresh database `listing_<round>` and Redis prefix, PRODUCTS products (OPTIONS options
# each) seeded, every fifth product sold out and units sold spread over 0..499 in SQL, the server started on
# PORT, then wrk (CONNECTIONS connections, DURATION) against /health/live, the first page of the plain list,
# the first page of `status=ON_SALE&maxPrice=30000&sort=-sold`, a search `q=product-12&sort=price`, and
# loadtest/wrk/list_ranges.lua (a different price range on nearly every request: pages computed anew). Prints
# one line per round.
#
# Services: DATABASE_URL (a server URL; the script appends the database) and REDIS_URL when set, else the
# SERVICES_PROFILE (default dev) services of scripts/services.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

binary="${1:-target/release/stampede}"
SERVICES="${SERVICES:-scripts/services.sh}"
SERVICES_PROFILE="${SERVICES_PROFILE:-dev}"
ROUNDS="${ROUNDS:-2}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
PRODUCTS="${PRODUCTS:-10000}"
OPTIONS="${OPTIONS:-3}"
PORT="${PORT:-18082}"
HOST="http://127.0.0.1:$PORT"

if [[ -z "${DATABASE_URL:-}" || -z "${REDIS_URL:-}" ]]; then
    "$SERVICES" start "$SERVICES_PROFILE" single >/dev/null
    eval "$("$SERVICES" env "$SERVICES_PROFILE" single)"
    DATABASE_URL="${DATABASE_URL%/*}"
fi
server_url="$DATABASE_URL"
trap '[[ -n "${pid:-}" ]] && kill "$pid" 2>/dev/null' EXIT

sql() { mariadb --no-defaults -h127.0.0.1 -P"${server_url##*:}" -u"$(sed -E 's#mysql://([^:@/]+).*#\1#' <<<"$server_url")" -N -B "$@"; }
source loadtest/wrk/report.sh
run_wrk() { wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$@"; }

for round in $(seq "$ROUNDS"); do
    database="listing_$round"
    export DATABASE_URL="$server_url/$database" REDIS_URL REDIS_PREFIX="listing:$$:$round:" ADMIN_TOKEN=bench-admin-token
    export BIND_ADDR="127.0.0.1:$PORT" RUST_LOG=warn
    sql -e "DROP DATABASE IF EXISTS $database; CREATE DATABASE $database CHARACTER SET utf8mb4"
    "$binary" migrate >/dev/null
    "$binary" seed --users 10 --products "$PRODUCTS" --options-per-product "$OPTIONS" >/dev/null 2>&1
    sql "$database" -e "UPDATE product_options SET stock = 0, status = 'SOLD_OUT' WHERE product_id % 5 = 0"
    sql "$database" -e "UPDATE product_options SET sold = (id * 7919) % 500"
    "$binary" serve >/dev/null 2>&1 &
    pid=$!
    until curl -fs "$HOST/health/ready" >/dev/null; do sleep 0.2; done
    curl -fs "$HOST/api/v1/products" >/dev/null
    live="$(run_wrk "$HOST/health/live")"
    plain="$(run_wrk "$HOST/api/v1/products?page=0&size=20")"
    filtered="$(run_wrk "$HOST/api/v1/products?status=ON_SALE&maxPrice=30000&sort=-sold&page=0&size=20")"
    search="$(run_wrk "$HOST/api/v1/products?q=product-12&sort=price")"
    ranges="$(THREADS=2 run_wrk -s loadtest/wrk/list_ranges.lua "$HOST")"
    live_rps="$(requests_per_second <<<"$live")"
    plain_rps="$(requests_per_second <<<"$plain")"
    of_plain() { echo "$(requests_per_second <<<"$1") / $plain_rps" | bc -l; }
    printf 'round %s live %6d | plain %6d p99 %-8s | filtered %6d (%.2f of plain) p99 %-8s | search %6d (%.2f) p99 %-8s | ranges %6d (%.2f) p99 %-8s | non-2xx: %s\n' \
        "$round" "$live_rps" "$plain_rps" "$(p99 <<<"$plain")" \
        "$(requests_per_second <<<"$filtered")" "$(of_plain "$filtered")" "$(p99 <<<"$filtered")" \
        "$(requests_per_second <<<"$search")" "$(of_plain "$search")" "$(p99 <<<"$search")" \
        "$(requests_per_second <<<"$ranges")" "$(of_plain "$ranges")" "$(p99 <<<"$ranges")" \
        "$(grep -E '^status [^2]|Non-2xx' <<<"$plain$filtered$search$ranges" | tr '\n' ' ' || true)"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=
done
