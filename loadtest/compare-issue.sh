#!/usr/bin/env bash
# Compares stampede runs on the coupon issue endpoint, side by side in one run, each beside its own
# /health/live, since this machine's speed drifts between runs (docs/performance.md).
#
#   loadtest/compare-issue.sh <label>=<stampede binary>[:<appendfsync>][@cluster][+none] ...
#
# e.g. two builds and a persistence setting:
#          loadtest/compare-issue.sh before=/tmp/before-target/release/stampede after=target/release/stampede \
#              always=target/release/stampede:always
#      one build on one Redis against the 3-master cluster (docs/scaling.md):
#          loadtest/compare-issue.sh single=target/release/stampede cluster=target/release/stampede@cluster
#      the price of authentication, HS256 tokens against AUTH_MODE=none:
#          loadtest/compare-issue.sh jwt=target/release/stampede none=target/release/stampede+none
#
# For each run, in turn and for ROUNDS rounds: a fresh database `bench_<label>_<round>` and Redis prefix on
# the dev services (`scripts/services.sh start dev`, and `... dev cluster` for `@cluster`; SERVICES names
# another copy of that script, e.g. one with other ports), USERS seeded by that build, the server started on
# PORT, a coupon of 2,000,000,000 created (so every request is a 201), then wrk against /health/live and
# against the issue endpoint (loadtest/wrk/issue.lua). The server runs in AUTH_MODE=jwt, each request with its
# user's HS256 token (TOKEN_USERS of them, default 300,000, minted by the build with `stampede token --count`:
# the users wrap after those), or in AUTH_MODE=none with `+none`. The single dev Redis's appendfsync is set per
# run (default everysec; not on the cluster) and put back to everysec at the end. Prints one line per run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SERVICES="${SERVICES:-scripts/services.sh}"
ROUNDS="${ROUNDS:-2}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-128}"
USERS="${USERS:-1000000}"
PORT="${PORT:-18080}"
TOKEN_USERS="${TOKEN_USERS:-300000}"
TOKEN=bench-admin-token
JWT_SECRET=bench-jwt-secret-of-at-least-32-bytes
HOST="http://127.0.0.1:$PORT"
tokens="$(mktemp)"

(($# > 0)) || { sed -n 2,23p "$0"; exit 2; }
"$SERVICES" start dev single >/dev/null
[[ "$*" == *@cluster* ]] && "$SERVICES" start dev cluster >/dev/null
eval "$("$SERVICES" env dev single)"
single_redis_port="${REDIS_URL##*:}"
trap 'redis-cli -p "$single_redis_port" CONFIG SET appendfsync everysec >/dev/null; rm -f "$tokens"; [[ -n "${pid:-}" ]] && kill "$pid" 2>/dev/null || true' EXIT

source loadtest/wrk/report.sh

for round in $(seq "$ROUNDS"); do
    for spec in "$@"; do
        label="${spec%%=*}"
        rest="${spec#*=}"
        auth=jwt
        [[ "$rest" == *+none ]] && auth=none && rest="${rest%+none}"
        kind=single
        [[ "$rest" == *@cluster ]] && kind=cluster && rest="${rest%@cluster}"
        binary="${rest%%:*}"
        fsync=everysec
        [[ "$rest" == *:* ]] && fsync="${rest##*:}"
        eval "$("$SERVICES" env dev "$kind")"
        server_url="${DATABASE_URL%/*}"
        database="bench_${label}_${round}"
        # The prefix names this invocation too: a fresh database beside a previous run's Redis state of the same
        # label would find its coupon already sold to its users.
        export DATABASE_URL="$server_url/$database" REDIS_PREFIX="bench:$$:${label}:${round}:" ADMIN_TOKEN="$TOKEN"
        export BIND_ADDR="127.0.0.1:$PORT" RUST_LOG=warn AUTH_MODE="$auth" AUTH_JWT_SECRET="$JWT_SECRET"
        if [[ "$auth" == jwt ]]; then
            "$binary" token --user 1 --count "$((TOKEN_USERS < USERS ? TOKEN_USERS : USERS))" --ttl 1h >"$tokens" 2>/dev/null || : >"$tokens"
            token_file="$tokens"
        else
            token_file=
        fi
        [[ "$kind" == single ]] && redis-cli -p "$single_redis_port" CONFIG SET appendfsync "$fsync" >/dev/null
        mariadb --no-defaults -h127.0.0.1 -P"${server_url##*:}" -ustampede -pstampede \
            -e "DROP DATABASE IF EXISTS $database; CREATE DATABASE $database CHARACTER SET utf8mb4"
        "$binary" migrate >/dev/null
        "$binary" seed --users "$USERS" >/dev/null
        "$binary" serve >/dev/null 2>&1 &
        pid=$!
        until curl -fs "$HOST/health/ready" >/dev/null; do sleep 0.2; done
        coupon="$(curl -fs -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
            -d '{"name":"bench","discountType":"FIXED","discountValue":1,"totalQuantity":2000000000}' \
            "$HOST/api/v1/admin/coupons" | sed -E 's/.*"id":([0-9]+).*/\1/')"
        live="$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$HOST/health/live")"
        issue="$(COUPON="$coupon" FIRST_USER=1 USERS="$USERS" THREADS=2 TOKENS="$token_file" \
            wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s loadtest/wrk/issue.lua "$HOST")"
        live_rps="$(requests_per_second <<<"$live")"
        issue_rps="$(requests_per_second <<<"$issue")"
        statuses="$(grep -E '^status' <<<"$issue" | tr '\n' ' ' || true)"
        printf '%-10s round %s %-7s auth %-4s appendfsync %-8s live %6d req/s  issue %6d req/s (%.2f of live) p99 %s  [%s]\n' \
            "$label" "$round" "$kind" "$auth" "$fsync" "$live_rps" "$issue_rps" "$(echo "$issue_rps / $live_rps" | bc -l)" \
            "$(p99 <<<"$issue")" "$statuses"
        kill "$pid"
        wait "$pid" 2>/dev/null || true
        pid=
    done
done
