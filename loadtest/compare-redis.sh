#!/usr/bin/env bash
# Issue throughput of one stampede build on one Redis against the 3-master Redis Cluster, side by side in one
# run, each beside its own /health/live (docs/scaling.md#measured).
#
#   loadtest/compare-redis.sh [stampede binary]      (default: target/release/stampede)
#
# Both Redis setups of the dev profile are started (`scripts/services.sh start dev` and `... dev cluster`;
# SERVICES names another copy of that script, e.g. one with other ports). Then, for ROUNDS rounds, `single`
# and `cluster` in turn: a fresh database `bench_redis_<kind>_<round>` and Redis prefix, USERS seeded, the
# server started on PORT, a coupon of 2,000,000,000 created (every request a 201), wrk against
# /health/live and against the issue endpoint (loadtest/wrk/issue.lua). One line per run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BINARY="${1:-target/release/stampede}"
SERVICES="${SERVICES:-scripts/services.sh}"
ROUNDS="${ROUNDS:-2}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-128}"
USERS="${USERS:-1000000}"
PORT="${PORT:-18080}"
TOKEN=bench-admin-token
HOST="http://127.0.0.1:$PORT"

"$SERVICES" start dev single >/dev/null
"$SERVICES" start dev cluster >/dev/null
trap '[[ -n "${pid:-}" ]] && kill "$pid" 2>/dev/null || true' EXIT

requests_per_second() { awk '/^Requests\/sec:/ { printf "%d", $2 }'; }
p99() { awk '$1 == "99%" { print $2 }'; }

for round in $(seq "$ROUNDS"); do
    for kind in single cluster; do
        eval "$("$SERVICES" env dev "$kind")"
        server_url="${DATABASE_URL%/*}"
        database="bench_redis_${kind}_${round}"
        export DATABASE_URL="$server_url/$database" REDIS_PREFIX="bench:${kind}:${round}:" ADMIN_TOKEN="$TOKEN"
        export BIND_ADDR="127.0.0.1:$PORT" RUST_LOG=warn
        mariadb --no-defaults -h127.0.0.1 -P"${server_url##*:}" -ustampede -pstampede \
            -e "DROP DATABASE IF EXISTS $database; CREATE DATABASE $database CHARACTER SET utf8mb4"
        "$BINARY" migrate >/dev/null
        "$BINARY" seed --users "$USERS" >/dev/null
        "$BINARY" serve >/dev/null 2>&1 &
        pid=$!
        until curl -fs "$HOST/health/ready" >/dev/null; do sleep 0.2; done
        coupon="$(curl -fs -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
            -d '{"name":"bench","discountType":"FIXED","discountValue":1,"totalQuantity":2000000000}' \
            "$HOST/api/v1/admin/coupons" | sed -E 's/.*"id":([0-9]+).*/\1/')"
        live="$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$HOST/health/live")"
        issue="$(COUPON="$coupon" FIRST_USER=1 USERS="$USERS" THREADS=2 \
            wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s loadtest/wrk/issue.lua "$HOST")"
        live_rps="$(requests_per_second <<<"$live")"
        issue_rps="$(requests_per_second <<<"$issue")"
        statuses="$(grep -E '^status' <<<"$issue" | tr '\n' ' ' || true)"
        printf '%-8s round %s  live %6d req/s  issue %6d req/s (%.2f of live) p99 %s  [%s]\n' \
            "$kind" "$round" "$live_rps" "$issue_rps" "$(echo "$issue_rps / $live_rps" | bc -l)" \
            "$(p99 <<<"$issue")" "$statuses"
        kill "$pid"
        wait "$pid" 2>/dev/null || true
        pid=
    done
done
