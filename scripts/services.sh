#!/usr/bin/env bash
# Local Redis + MariaDB for stampede, run as plain processes under <repo>/.data/<profile>/.
#
#   scripts/services.sh {install|start|stop|status|env} [dev|test] [single|cluster]
#
#   install  install redis-server, mariadb-server and python3-venv with apt-get if missing
#   start    install, then start (or reuse) the Redis and MariaDB and create the stampede database/user
#   stop     stop every server of the profile this script started (only the pids in our pid files),
#            the single Redis and the cluster alike
#   status   show what is running; exit 0 if the Redis and MariaDB are up, 3 otherwise
#   env      print `export DATABASE_URL=...` / `export REDIS_URL=...`
#            (use as: eval "$(scripts/services.sh env dev)")
#
# The third argument chooses the Redis that start, status and env mean:
#   single   (default) one redis-server
#   cluster  a Redis Cluster of three masters without replicas on loopback (docs/scaling.md);
#            REDIS_URL=redis-cluster://127.0.0.1:<first>?node=127.0.0.1:<second>&node=...
#
# Profiles:
#   dev   Redis 127.0.0.1:6390, cluster 6392-6394, MariaDB 127.0.0.1:3390, data kept in .data/dev/
#   test  Redis 127.0.0.1:6391, cluster 6395-6397, MariaDB 127.0.0.1:3391, each server's data wiped when it
#         starts fresh, durability relaxed (no AOF, innodb_flush_log_at_trx_commit=0)
#
# The distro's own redis/mariadb services (ports 6379/3306) are never touched.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
# mariadbd lives in /usr/sbin on Debian, which is not on every user's PATH.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

DB_NAME=stampede
# How often the dev Redis fsyncs its append-only file: `everysec` (the default) can lose about the last
# second of issuances if the machine or Redis dies, `always` loses none and costs issue throughput
# (docs/operations.md#redis-persistence has the measured cost). The test profile runs without AOF.
REDIS_APPENDFSYNC="${REDIS_APPENDFSYNC:-everysec}"
DB_USER=stampede
DB_PASSWORD=stampede
STOP_TIMEOUT=30
MARIADB_START_TIMEOUT=60
REDIS_START_TIMEOUT=15
# How long a new or restarted cluster may take to agree on its slots (cluster_state:ok): gossip between three
# local nodes settles in a second or two.
CLUSTER_OK_TIMEOUT=30

usage() {
    echo "usage: $0 {install|start|stop|status|env} [dev|test] [single|cluster]" >&2
    exit 2
}

log() { echo "services: $*" >&2; }
die() {
    echo "services: error: $*" >&2
    exit 1
}

# ---------------------------------------------------------------------------- arguments

[[ $# -ge 1 && $# -le 3 ]] || usage
CMD="$1"
PROFILE="${2:-dev}"
REDIS_KIND="${3:-single}"

case "$PROFILE" in
    dev)
        REDIS_PORT=6390
        CLUSTER_PORTS=(6392 6393 6394)
        MARIADB_PORT=3390
        ;;
    test)
        REDIS_PORT=6391
        CLUSTER_PORTS=(6395 6396 6397)
        MARIADB_PORT=3391
        ;;
    *) usage ;;
esac
case "$REDIS_KIND" in
    single | cluster) ;;
    *) usage ;;
esac

DATA="$REPO_ROOT/.data/$PROFILE"
REDIS_DIR="$DATA/redis"
REDIS_PID="$DATA/redis.pid"
REDIS_LOG="$DATA/redis.log"
MARIADB_DIR="$DATA/mariadb"
MARIADB_SOCK="$DATA/mariadb.sock"
MARIADB_PID="$DATA/mariadb.pid"
MARIADB_ERR="$DATA/mariadb.err"
MARIADB_INSTALL_LOG="$DATA/mariadb-install.log"

CLUSTER_DIR="$DATA/cluster"

DATABASE_URL="mysql://$DB_USER:$DB_PASSWORD@127.0.0.1:$MARIADB_PORT/$DB_NAME"
if [[ "$REDIS_KIND" == cluster ]]; then
    # fred's cluster URL: the first node in the authority, the others as `node` parameters (any one suffices
    # to discover the rest; naming all lets the service start while one is down).
    REDIS_URL="redis-cluster://127.0.0.1:${CLUSTER_PORTS[0]}?node=127.0.0.1:${CLUSTER_PORTS[1]}&node=127.0.0.1:${CLUSTER_PORTS[2]}"
else
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
fi

# ---------------------------------------------------------------------------- helpers

# First of the given program names found on PATH (PATH already includes the sbin dirs).
find_bin() {
    local name
    for name in "$@"; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return 0
        fi
    done
    return 1
}

need_bin() {
    find_bin "$@" || die "none of [$*] found on PATH or in /usr/sbin; run: $0 install"
}

# True if the pid is a running process (a zombie waiting to be reaped counts as gone).
is_alive() {
    kill -0 "$1" 2>/dev/null || return 1
    if command -v ps >/dev/null 2>&1; then
        local stat
        stat="$(ps -p "$1" -o stat= 2>/dev/null || true)"
        [[ -n "$stat" && "$stat" != Z* && "$stat" != *Z ]] || return 1
    fi
}

# Prints the pid from a pid file if it names a live process whose command matches one of the
# given names (guards against a stale file whose pid was reused by something else).
live_pid() {
    local file="$1"
    shift
    [[ -f "$file" ]] || return 1
    local pid comm name
    pid="$(tr -dc '0-9' <"$file" 2>/dev/null || true)"
    [[ -n "$pid" ]] || return 1
    is_alive "$pid" || return 1
    if command -v ps >/dev/null 2>&1; then
        comm="$(ps -p "$pid" -o comm= 2>/dev/null || true)"
        comm="${comm##*/}"
        for name in "$@"; do
            [[ "$comm" == "$name"* ]] && {
                echo "$pid"
                return 0
            }
        done
        return 1
    fi
    echo "$pid"
}

redis_live_pid() { live_pid "$REDIS_PID" redis-server redis-check; }
mariadb_live_pid() { live_pid "$MARIADB_PID" mariadbd mysqld; }

# True if something accepts TCP connections on 127.0.0.1:<port>.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run '$*' and sudo is not installed; run it as root or use: docker compose up"
    fi
}

mariadb_client() {
    local client
    client="$(need_bin mariadb mysql)"
    "$client" --no-defaults --protocol=socket --socket="$MARIADB_SOCK" -uroot
}

mariadb_ping() {
    local admin
    admin="$(need_bin mariadb-admin mysqladmin)"
    "$admin" --no-defaults --protocol=socket --socket="$MARIADB_SOCK" -uroot \
        --connect-timeout=2 ping >/dev/null 2>&1
}

# Holds an exclusive lock for the rest of the script so two concurrent starts/stops of the same
# profile (e.g. `make run` and `make load` in two terminals) do not race.
take_lock() {
    mkdir -p "$REPO_ROOT/.data"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$REPO_ROOT/.data/.$PROFILE.lock"
        if ! flock -n 9; then
            log "waiting for another services.sh on the $PROFILE profile..."
            flock 9
        fi
    fi
}

# ---------------------------------------------------------------------------- install

cmd_install() {
    local missing=()
    find_bin redis-server >/dev/null || missing+=(redis-server)
    find_bin mariadbd mysqld >/dev/null || missing+=(mariadbd)
    # The OpenAPI fuzzing of `make test` runs schemathesis in a throw-away virtualenv.
    python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
    if [[ ${#missing[@]} -eq 0 ]]; then
        return 0
    fi
    log "missing: ${missing[*]}"
    if ! command -v apt-get >/dev/null 2>&1; then
        cat >&2 <<EOF
services: error: ${missing[*]} not installed and this is not an apt-based system.
  Install Redis (>= 7) and MariaDB (>= 10.6) with your package manager so that
  redis-server and mariadbd are on PATH, or run everything in containers instead:
      docker compose up
EOF
        exit 1
    fi
    log "installing redis-server, mariadb-server and python3-venv with apt-get"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server mariadb-server python3-venv
    find_bin redis-server >/dev/null || die "redis-server still missing after apt-get install"
    find_bin mariadbd mysqld >/dev/null || die "mariadbd still missing after apt-get install"
}

# ---------------------------------------------------------------------------- redis

REDIS_STATE=""

# Starts a daemonized redis-server on 127.0.0.1:<port> with its data in <dir> and waits until it answers
# PING. Extra arguments go to redis-server after the common ones.
launch_redis() {
    local port="$1" dir="$2" pidfile="$3" logfile="$4"
    shift 4
    local redis_server appendonly=yes
    redis_server="$(need_bin redis-server)"
    if [[ "$PROFILE" == test ]]; then appendonly=no; fi
    mkdir -p "$dir"

    log "starting redis on 127.0.0.1:$port"
    "$redis_server" \
        --daemonize yes \
        --bind 127.0.0.1 \
        --port "$port" \
        --dir "$dir" \
        --pidfile "$pidfile" \
        --logfile "$logfile" \
        --appendonly "$appendonly" \
        --appendfsync "$REDIS_APPENDFSYNC" \
        --maxmemory-policy noeviction \
        --save "" \
        "$@" \
        9>&-

    local redis_cli deadline=$((SECONDS + REDIS_START_TIMEOUT))
    redis_cli="$(need_bin redis-cli)"
    local reply
    until reply="$("$redis_cli" -h 127.0.0.1 -p "$port" ping 2>&1)" && [[ "$reply" == PONG ]]; do
        # Loading a large AOF takes a while (a 1.6 GB one took 14 s here); Redis answers LOADING
        # meanwhile, so the timeout only counts time without that progress.
        if [[ "$reply" == *LOADING* ]]; then
            deadline=$((SECONDS + REDIS_START_TIMEOUT))
        fi
        if ((SECONDS >= deadline)); then
            echo "--- tail of $logfile" >&2
            tail -n 30 "$logfile" >&2 2>/dev/null || true
            die "redis did not answer PING on port $port within ${REDIS_START_TIMEOUT}s"
        fi
        sleep 0.2
    done
}

start_redis() {
    local pid
    if pid="$(redis_live_pid)"; then
        REDIS_STATE="reused (pid $pid)"
        log "redis already running (pid $pid), reusing it"
        return 0
    fi
    rm -f "$REDIS_PID"
    if port_in_use "$REDIS_PORT"; then
        die "127.0.0.1:$REDIS_PORT is already in use by a process we did not start (no live $REDIS_PID)"
    fi
    launch_redis "$REDIS_PORT" "$REDIS_DIR" "$REDIS_PID" "$REDIS_LOG"
    pid="$(redis_live_pid)" || die "redis answers but $REDIS_PID names no live redis-server"
    REDIS_STATE="started (pid $pid)"
}

# ---------------------------------------------------------------------------- redis cluster

# Each node lives in .data/<profile>/cluster/<port>/ (nodes.conf, AOF, redis.pid, redis.log).
cluster_node_pid() { live_pid "$CLUSTER_DIR/$1/redis.pid" redis-server redis-check; }

# True if every node of the cluster runs.
cluster_all_live() {
    local port
    for port in "${CLUSTER_PORTS[@]}"; do
        cluster_node_pid "$port" >/dev/null || return 1
    done
}

# True if some node of the cluster runs.
cluster_any_live() {
    local port
    for port in "${CLUSTER_PORTS[@]}"; do
        cluster_node_pid "$port" >/dev/null && return 0
    done
    return 1
}

# One field of CLUSTER INFO on a node (empty if the node does not answer).
cluster_info() {
    local redis_cli
    redis_cli="$(need_bin redis-cli)"
    "$redis_cli" -h 127.0.0.1 -p "$1" cluster info 2>/dev/null | tr -d '\r' |
        awk -F: -v field="$2" '$1 == field { print $2 }'
}

# True once every node says cluster_state:ok and knows all the others.
cluster_ok() {
    local port
    for port in "${CLUSTER_PORTS[@]}"; do
        [[ "$(cluster_info "$port" cluster_state)" == ok ]] || return 1
        [[ "$(cluster_info "$port" cluster_known_nodes)" == "${#CLUSTER_PORTS[@]}" ]] || return 1
    done
}

start_cluster() {
    local port pid started=0
    for port in "${CLUSTER_PORTS[@]}"; do
        local dir="$CLUSTER_DIR/$port"
        if pid="$(cluster_node_pid "$port")"; then
            log "cluster node $port already running (pid $pid), reusing it"
            continue
        fi
        rm -f "$dir/redis.pid"
        if port_in_use "$port"; then
            die "127.0.0.1:$port is already in use by a process we did not start (no live $dir/redis.pid)"
        fi
        # nodes.conf (relative to --dir) keeps the node's id and slots, so a restarted node rejoins as itself.
        launch_redis "$port" "$dir" "$dir/redis.pid" "$dir/redis.log" \
            --cluster-enabled yes \
            --cluster-config-file nodes.conf \
            --cluster-node-timeout 5000
        started=$((started + 1))
    done

    # Nodes that have never formed the cluster know no slots: create it. Nodes that did (a restart) find
    # each other through their nodes.conf.
    local unassigned=0
    for port in "${CLUSTER_PORTS[@]}"; do
        if [[ "$(cluster_info "$port" cluster_slots_assigned)" == 0 ]]; then unassigned=$((unassigned + 1)); fi
    done
    if ((unassigned == ${#CLUSTER_PORTS[@]})); then
        local redis_cli nodes=()
        redis_cli="$(need_bin redis-cli)"
        for port in "${CLUSTER_PORTS[@]}"; do nodes+=("127.0.0.1:$port"); done
        log "creating the cluster of ${nodes[*]} (log: $CLUSTER_DIR/create.log)"
        if ! "$redis_cli" --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes \
            </dev/null >"$CLUSTER_DIR/create.log" 2>&1; then
            tail -n 30 "$CLUSTER_DIR/create.log" >&2
            die "redis-cli --cluster create failed"
        fi
    elif ((unassigned > 0)); then
        die "$unassigned of the cluster's nodes know no slots while the others do (a lost nodes.conf?); stop the profile and remove ${CLUSTER_DIR#"$REPO_ROOT"/}/ to start afresh"
    fi

    local deadline=$((SECONDS + CLUSTER_OK_TIMEOUT))
    until cluster_ok; do
        if ((SECONDS >= deadline)); then
            for port in "${CLUSTER_PORTS[@]}"; do
                echo "--- node $port: cluster_state:$(cluster_info "$port" cluster_state) known_nodes:$(cluster_info "$port" cluster_known_nodes)" >&2
            done
            die "the cluster did not reach cluster_state:ok within ${CLUSTER_OK_TIMEOUT}s"
        fi
        sleep 0.2
    done
    if ((started == 0)); then
        REDIS_STATE="reused (ports ${CLUSTER_PORTS[*]})"
    else
        REDIS_STATE="started $started node(s) (ports ${CLUSTER_PORTS[*]})"
    fi
}

stop_cluster() {
    local port rc=0
    for port in "${CLUSTER_PORTS[@]}"; do
        stop_one "cluster node $port" "$CLUSTER_DIR/$port/redis.pid" redis-server redis-check || rc=1
    done
    return $rc
}

# ---------------------------------------------------------------------------- mariadb

MARIADB_STATE=""

init_mariadb_datadir() {
    [[ -d "$MARIADB_DIR/mysql" ]] && return 0
    local install_db
    install_db="$(need_bin mariadb-install-db mysql_install_db)"
    mkdir -p "$MARIADB_DIR"
    log "initialising MariaDB data directory $MARIADB_DIR (log: $MARIADB_INSTALL_LOG)"
    # --no-defaults: ignore /etc/mysql (the distro's datadir, pid file, socket...).
    # --rpm: only skips the banner, the hostname check and chown-ing the system-wide
    #        auth_pam_tool_dir to the --user, which we must not modify.
    if ! "$install_db" --no-defaults \
        --datadir="$MARIADB_DIR" \
        --user="$(id -un)" \
        --auth-root-authentication-method=normal \
        --skip-test-db \
        --skip-name-resolve \
        --rpm \
        </dev/null >"$MARIADB_INSTALL_LOG" 2>&1 9>&-; then
        echo "--- tail of $MARIADB_INSTALL_LOG" >&2
        tail -n 30 "$MARIADB_INSTALL_LOG" >&2
        # Leave no half-initialised datadir behind: the next start would skip the init.
        rm -rf "$MARIADB_DIR"
        die "mariadb-install-db failed"
    fi
}

start_mariadb() {
    local pid
    if pid="$(mariadb_live_pid)"; then
        MARIADB_STATE="reused (pid $pid)"
        log "mariadb already running (pid $pid), reusing it"
        return 0
    fi
    rm -f "$MARIADB_PID"
    if port_in_use "$MARIADB_PORT"; then
        die "127.0.0.1:$MARIADB_PORT is already in use by a process we did not start (no live $MARIADB_PID)"
    fi
    # The unix socket path is limited to ~107 bytes.
    if ((${#MARIADB_SOCK} > 100)); then
        die "socket path $MARIADB_SOCK is too long for a unix socket; move the repo to a shorter path"
    fi

    local mariadbd
    mariadbd="$(need_bin mariadbd mysqld)"
    init_mariadb_datadir

    local args=(
        --no-defaults
        --datadir="$MARIADB_DIR"
        --socket="$MARIADB_SOCK"
        --pid-file="$MARIADB_PID"
        --port="$MARIADB_PORT"
        --bind-address=127.0.0.1
        --skip-name-resolve
        --log-error="$MARIADB_ERR"
        --innodb-buffer-pool-size=256M
        --max-connections=500
        # --no-defaults also drops Debian's utf8mb4 default; without this it would be latin1.
        --character-set-server=utf8mb4
        --collation-server=utf8mb4_unicode_ci
    )
    # mariadbd refuses to run as root unless told to.
    if [[ "$(id -u)" -eq 0 ]]; then args+=(--user=root); fi
    if [[ "$PROFILE" == test ]]; then args+=(--innodb-flush-log-at-trx-commit=0); fi

    log "starting mariadb on 127.0.0.1:$MARIADB_PORT"
    local launcher=(nohup)
    # Own session: a Ctrl-C in the terminal that ran `make run` must not reach mariadbd.
    if command -v setsid >/dev/null 2>&1; then launcher=(setsid nohup); fi
    # 9>&- : the daemon must not inherit (and keep holding) our lock.
    "${launcher[@]}" "$mariadbd" "${args[@]}" </dev/null >>"$MARIADB_ERR" 2>&1 9>&- &
    local child=$!
    disown "$child" 2>/dev/null || true

    local deadline=$((SECONDS + MARIADB_START_TIMEOUT))
    until mariadb_ping; do
        if ! is_alive "$child" && ! mariadb_live_pid >/dev/null; then
            echo "--- tail of $MARIADB_ERR" >&2
            tail -n 30 "$MARIADB_ERR" >&2 2>/dev/null || true
            die "mariadbd exited during startup"
        fi
        if ((SECONDS >= deadline)); then
            echo "--- tail of $MARIADB_ERR" >&2
            tail -n 30 "$MARIADB_ERR" >&2 2>/dev/null || true
            die "mariadbd did not answer ping on $MARIADB_SOCK within ${MARIADB_START_TIMEOUT}s (it may still be running; see $MARIADB_ERR)"
        fi
        sleep 0.3
    done
    pid="$(mariadb_live_pid)" || die "mariadb answers but $MARIADB_PID names no live mariadbd"
    MARIADB_STATE="started (pid $pid)"
}

provision_mariadb() {
    mariadb_client <<SQL || die "could not create the $DB_NAME database/user (see above)"
CREATE DATABASE IF NOT EXISTS \`$DB_NAME\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
GRANT ALL ON *.* TO '$DB_USER'@'127.0.0.1';
GRANT ALL ON *.* TO '$DB_USER'@'localhost';
SQL
}

# ---------------------------------------------------------------------------- commands

# Removes a test-profile data folder (and nothing outside .data/test/).
wipe_test_dir() {
    case "$1" in
        */.data/test/*) rm -rf "$1" ;;
        *) die "refusing to wipe unexpected path $1" ;;
    esac
}

cmd_start() {
    cmd_install
    take_lock

    if [[ "$PROFILE" == test ]]; then
        # Each server starts on fresh data; one already running is reused as it is (data not wiped).
        if [[ "$REDIS_KIND" == single ]] && ! redis_live_pid >/dev/null; then
            wipe_test_dir "$REDIS_DIR"
        fi
        if [[ "$REDIS_KIND" == cluster ]] && ! cluster_all_live; then
            # A cluster is only created from empty nodes: stop what is left of an old one.
            if cluster_any_live; then stop_cluster; fi
            wipe_test_dir "$CLUSTER_DIR"
        fi
        if ! mariadb_live_pid >/dev/null; then
            wipe_test_dir "$MARIADB_DIR"
        fi
    fi
    mkdir -p "$DATA"

    if [[ "$REDIS_KIND" == cluster ]]; then
        mkdir -p "$CLUSTER_DIR"
        start_cluster
    else
        start_redis
    fi
    start_mariadb
    provision_mariadb

    cat <<EOF
stampede services ($PROFILE profile):
  redis    $REDIS_STATE  $REDIS_URL
  mariadb  $MARIADB_STATE  $DATABASE_URL
  data     ${DATA#"$REPO_ROOT"/}/   (stop with: $0 stop $PROFILE)
EOF
}

# Sends TERM to the pid in the pid file and waits for it to go away.
stop_one() {
    local name="$1" file="$2"
    shift 2
    local pid
    if ! pid="$(live_pid "$file" "$@")"; then
        if [[ -f "$file" ]]; then
            log "$name: stale pid file removed"
            rm -f "$file"
        else
            log "$name: not running"
        fi
        return 0
    fi
    log "$name: stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while is_alive "$pid"; do
        if ((SECONDS >= deadline)); then
            log "$name: pid $pid still running after ${STOP_TIMEOUT}s; left alone (pid file kept)"
            return 1
        fi
        sleep 0.2
    done
    rm -f "$file"
    log "$name: stopped"
}

stop_all() {
    local rc=0
    stop_one redis "$REDIS_PID" redis-server redis-check || rc=1
    stop_cluster || rc=1
    stop_one mariadb "$MARIADB_PID" mariadbd mysqld || rc=1
    return $rc
}

cmd_stop() {
    take_lock
    stop_all
}

cmd_status() {
    local pid rc=0
    echo "stampede services ($PROFILE profile, data in ${DATA#"$REPO_ROOT"/}/):"
    if pid="$(redis_live_pid)"; then
        echo "  redis    running (pid $pid)  redis://127.0.0.1:$REDIS_PORT"
    else
        echo "  redis    stopped"
        if [[ "$REDIS_KIND" == single ]]; then rc=3; fi
    fi
    if cluster_all_live && cluster_ok; then
        echo "  cluster  running, cluster_state:ok (ports ${CLUSTER_PORTS[*]})"
    else
        if cluster_any_live; then
            echo "  cluster  partly running or not ok (ports ${CLUSTER_PORTS[*]})"
        else
            echo "  cluster  stopped"
        fi
        if [[ "$REDIS_KIND" == cluster ]]; then rc=3; fi
    fi
    if pid="$(mariadb_live_pid)"; then
        if mariadb_ping; then
            echo "  mariadb  running (pid $pid)  $DATABASE_URL"
        else
            echo "  mariadb  starting or unresponsive (pid $pid)"
            rc=3
        fi
    else
        echo "  mariadb  stopped"
        rc=3
    fi
    return $rc
}

cmd_env() {
    # Quoted: a cluster URL holds `?` and `&`.
    echo "export DATABASE_URL='$DATABASE_URL'"
    echo "export REDIS_URL='$REDIS_URL'"
}

case "$CMD" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *) usage ;;
esac
