#!/usr/bin/env bash
# stampede instances in the background for `make load`, on the dev services (docs/load-tests.md).
#
#   scripts/instances.sh start <binary> <count> [single|cluster]
#   scripts/instances.sh stop
#
#   start  makes <count> instances answer on 127.0.0.1:8080 .. 8080+<count>-1: a port that already answers
#          /health/live is used as it is, any other gets `<binary> serve` (pid in .data/dev/stampede-<port>.pid,
#          log in .data/dev/stampede-<port>.log), started one after the other so that only the first runs
#          the migrations. They share the dev Redis (single or cluster) and MariaDB. Prints the base URLs,
#          comma separated, on stdout.
#   stop   stops every instance this script started (by pid file, SIGTERM, then waits), and nothing else.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
DEV_DATA="$REPO_ROOT/.data/dev"
FIRST_PORT=8080
# The dev profile owns 8080-8089.
MAX_INSTANCES=10
READY_TIMEOUT=60
STOP_TIMEOUT=30
DEV_ADMIN_TOKEN=dev-admin-token
# The development JWT secret (stampede's DEV_JWT_SECRET): `serve` accepts it on loopback only.
DEV_JWT_SECRET=stampede-development-secret-do-not-deploy

log() { echo "instances: $*" >&2; }
die() {
    echo "instances: error: $*" >&2
    exit 1
}

# Whether the pid is a live (not zombie) stampede process.
alive() { ps -p "$1" -o stat= 2>/dev/null | grep -qv '^Z' && [[ "$(ps -p "$1" -o comm=)" == stampede* ]]; }

answers() { curl -fs "http://127.0.0.1:$1/health/${2:-live}" >/dev/null 2>&1; }

cmd_start() {
    local binary="$1" count="$2" redis="${3:-single}" urls=()
    [[ -x "$binary" ]] || die "$binary is not an executable"
    [[ "$count" =~ ^[0-9]+$ ]] && ((count >= 1 && count <= MAX_INSTANCES)) || die "count must be 1..$MAX_INSTANCES"
    eval "$("$REPO_ROOT/scripts/services.sh" env dev "$redis")"
    export DATABASE_URL REDIS_URL
    export ADMIN_TOKEN="${ADMIN_TOKEN:-$DEV_ADMIN_TOKEN}"
    export AUTH_JWT_SECRET="${AUTH_JWT_SECRET:-$DEV_JWT_SECRET}"
    mkdir -p "$DEV_DATA"
    for ((i = 0; i < count; i++)); do
        local port=$((FIRST_PORT + i))
        urls+=("http://127.0.0.1:$port")
        if answers "$port"; then
            log "using the server already answering on 127.0.0.1:$port"
            continue
        fi
        local pidfile="$DEV_DATA/stampede-$port.pid" logfile="$DEV_DATA/stampede-$port.log"
        log "starting stampede serve on 127.0.0.1:$port (log: $logfile; stop with: make stop)"
        BIND_ADDR="127.0.0.1:$port" $(command -v setsid || true) nohup "$binary" serve </dev/null >>"$logfile" 2>&1 &
        local pid=$!
        echo "$pid" >"$pidfile"
        local waited=0
        until answers "$port" ready; do
            if ! alive "$pid"; then
                tail -n 30 "$logfile" >&2
                rm -f "$pidfile"
                die "stampede on port $port exited during startup (log: $logfile)"
            fi
            ((waited++ < READY_TIMEOUT * 2)) || die "stampede (pid $pid) not ready on port $port after ${READY_TIMEOUT}s"
            sleep 0.5
        done
        log "stampede ready on 127.0.0.1:$port (pid $pid)"
    done
    local IFS=,
    echo "${urls[*]}"
}

cmd_stop() {
    local pidfile pid
    shopt -s nullglob
    # stampede.pid: the single instance of an earlier `make load`.
    for pidfile in "$DEV_DATA"/stampede-*.pid "$DEV_DATA"/stampede.pid; do
        [[ -f "$pidfile" ]] || continue
        pid="$(tr -dc 0-9 <"$pidfile")"
        if [[ -n "$pid" ]] && alive "$pid"; then
            log "stopping stampede (pid $pid)"
            kill -TERM "$pid"
            for _ in $(seq $((STOP_TIMEOUT * 2))); do alive "$pid" || break; sleep 0.5; done
            alive "$pid" && die "stampede (pid $pid) still running after ${STOP_TIMEOUT}s"
        fi
        rm -f "$pidfile"
    done
}

case "${1:-}" in
    start)
        (($# >= 3 && $# <= 4)) || die "usage: $0 start <binary> <count> [single|cluster]"
        cmd_start "$2" "$3" "${4:-single}"
        ;;
    stop) cmd_stop ;;
    *) die "usage: $0 {start <binary> <count> [single|cluster]|stop}" ;;
esac
