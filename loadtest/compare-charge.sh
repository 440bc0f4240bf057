#!/usr/bin/env bash
# Charge through the service against the same transaction done raw, side by side in one run
# (docs/performance.md): the issue's bar is the service at >= 0.68 of raw.
#
#   DATABASE_URL=mysql://user:pw@host:port REDIS_URL=redis://host:port \
#       loadtest/compare-charge.sh <stampede binary> <sql_baseline bench binary>
#
# For ROUNDS rounds, alternating: the raw transaction (`benches/sql_baseline.rs`, group sql_baseline_charge:
# 64 callers, 20,000 users with balance rows) for MEASURE seconds, then the service on PORT with wrk
# (`loadtest/wrk/charge.lua`, 64 connections, the same 20,000 users, each with a balance row) for DURATION.
# The service gets a fresh database `bench_charge` (dropped and created again) seeded by the binary itself, and
# each request its user's HS256 token (minted by the binary: `stampede token --count`).
# Prints one line per run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source loadtest/wrk/report.sh

(($# == 2)) || { sed -n 2,12p "$0"; exit 2; }
server="$1" baseline="$2"
: "${DATABASE_URL:?a MySQL server URL without database}" "${REDIS_URL:?}"
ROUNDS="${ROUNDS:-2}" DURATION="${DURATION:-10s}" MEASURE="${MEASURE:-10}" PORT="${PORT:-7380}"
server_url="${DATABASE_URL%/}/bench_charge"
tokens="$(mktemp)"
trap 'rm -f "$tokens"; [[ -n "${pid:-}" ]] && kill "$pid" 2>/dev/null || true' EXIT

sql() { # runs SQL on the server of DATABASE_URL, in database $1 (may be empty)
    python3 - "$server_url" "$1" "$2" <<'PY'
import subprocess, sys, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
subprocess.run(["mariadb", "--no-defaults", "--protocol=tcp", "-h", u.hostname, "-P", str(u.port), "-u", u.username,
                f"-p{u.password}", *([sys.argv[2]] if sys.argv[2] else []), "-e", sys.argv[3]], check=True)
PY
}
sql "" "DROP DATABASE IF EXISTS bench_charge; CREATE DATABASE bench_charge CHARACTER SET utf8mb4"
export DATABASE_URL="$server_url" REDIS_PREFIX="bench-charge-$$:" RUST_LOG=warn
export AUTH_JWT_SECRET=bench-jwt-secret-of-at-least-32-bytes
"$server" token --user 1 --count 20000 --ttl 1h >"$tokens" 2>/dev/null || : >"$tokens"
"$server" seed --users 20000 >/dev/null 2>&1 || { echo "seeding failed" >&2; exit 1; }
# A balance row per user, as after each user's first charge (the raw side starts the same way).
sql bench_charge "INSERT IGNORE INTO balances (user_id, amount) SELECT id, 0 FROM users"

for round in $(seq 1 "$ROUNDS"); do
    raw=$(DATABASE_URL="${server_url%/*}" "$baseline" --bench charge --warm-up-time 2 --measurement-time "$MEASURE" 2>/dev/null |
        awk '/thrpt:/ && !seen { gsub(/\[|\]/, ""); print $(NF-3), $(NF-2); seen = 1 }')
    echo "round $round raw transaction: $raw"
    BIND_ADDR="127.0.0.1:$PORT" ADMIN_TOKEN=bench "$server" serve >/dev/null 2>&1 &
    pid=$!
    until curl -sf "http://127.0.0.1:$PORT/health/ready" >/dev/null; do sleep 0.2; done
    out=$(FIRST_USER=1 USERS=20000 AMOUNT=1 THREADS=2 TOKENS="$tokens" wrk -t2 -c64 -d"$DURATION" --latency \
        -s loadtest/wrk/charge.lua "http://127.0.0.1:$PORT")
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
    echo "round $round service: $(requests_per_second <<<"$out") req/s p99 $(p99 <<<"$out")" \
        "$(grep '^status' <<<"$out" | paste -sd' ' || true)"
done
