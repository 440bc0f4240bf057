#!/usr/bin/env bash
# Compares the goose flash sale on 1 and on several stampede instances, side by side in one run, each count
# in turn for ROUNDS rounds (docs/performance.md#one-instance-against-three).
#
#   loadtest/compare-instances.sh [<count> ...]        (default: 1 3)
#
# Each run is `make load LOAD_SCENARIOS=flash-sale LOAD_INSTANCES=<count>` with fresh instances (those of the
# previous run are stopped first; the dev Redis and MariaDB stay up), so every run sells a new coupon to a new
# pool of FLASH_USERS (default 50000) with FLASH_QUANTITY (default 10000) and checks it (exactly Q, nobody
# twice, persisted == issued). REDIS=cluster runs on the dev cluster. Prints one line per run: goose's issue
# throughput and percentiles, how the requests were spread over the instances, and whether the checks passed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROUNDS="${ROUNDS:-2}"
export FLASH_USERS="${FLASH_USERS:-50000}" FLASH_QUANTITY="${FLASH_QUANTITY:-10000}"
LOAD_USERS="${LOAD_USERS:-200}"
REDIS="${REDIS:-single}"
if (($# > 0)); then counts=("$@"); else counts=(1 3); fi
LOGS=.data/reports/compare-instances
mkdir -p "$LOGS"
trap 'scripts/instances.sh stop >/dev/null 2>&1' EXIT

# The issue route's requests per instance, from each one's /metrics.
spread() {
    local count="$1" port parts=()
    for ((port = 8080; port < 8080 + count; port++)); do
        parts+=("$(curl -fs "127.0.0.1:$port/metrics" | awk '/^http_requests_total.*\/issue"/ { s += $2 } END { print s + 0 }')")
    done
    local IFS=/
    echo "${parts[*]}"
}

for round in $(seq "$ROUNDS"); do
    for count in "${counts[@]}"; do
        scripts/instances.sh stop >/dev/null 2>&1
        log="$LOGS/round$round-$count.log"
        status=passed
        make load LOAD_SCENARIOS=flash-sale LOAD_INSTANCES="$count" LOAD_USERS="$LOAD_USERS" REDIS="$REDIS" \
            >"$log" 2>&1 || status=FAILED
        # goose's per-request table: "POST /coupons/{id}/issue | # reqs | # fails | req/s | fail/s" (the first
        # row of five fields; the averages' row that follows has five too), then the percentiles "| 50% | 75% | 98% | 99% | 99.9% | 99.99%" (ms).
        rps="$(awk -F'|' '/^ POST \/coupons\/\{id\}\/issue/ && NF == 5 && v == "" { gsub(/ /, "", $4); v = $4 } END { print v }' "$log")"
        pct="$(awk -F'|' '/^ POST \/coupons\/\{id\}\/issue/ && NF == 7 { gsub(/ /, ""); v = "p50 " $2 " ms  p99 " $5 " ms" } END { print v }' "$log")"
        printf '%d instance(s) round %s  %-6s  issue %6s req/s  %s  per instance %s  checks %s (%s)\n' \
            "$count" "$round" "$REDIS" "$rps" "$pct" "$(spread "$count")" "$status" "$log"
    done
done
