#!/usr/bin/env bash
# OpenAPI fuzzing: schemathesis generates requests from /openapi.json and checks every answer against it
# (`--checks all`: no 5xx, only documented statuses, bodies matching their schema, schema-valid requests
# accepted, invalid ones refused). Run by `make test`; exits non-zero on any failure.
#
#   loadtest/openapi-fuzz.sh <stampede binary>
#
# Needs DATABASE_URL (a server URL; a database of its own is created) and REDIS_URL in the environment, as
# `scripts/services.sh env test` prints them. schemathesis is installed once into .data/venv-schemathesis.
# What a valid request may be refused for beyond its schema is listed in loadtest/schemathesis.toml.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SCHEMATHESIS_VERSION=4.32.5
# Examples per operation: ~30 s for the whole API on 2 cores.
MAX_EXAMPLES="${MAX_EXAMPLES:-50}"
binary="${1:?usage: $0 <stampede binary>}"
venv=.data/venv-schemathesis
token="fuzz-$RANDOM$RANDOM"

if [[ ! -x "$venv/bin/st" ]] || ! "$venv/bin/st" --version | grep -q "$SCHEMATHESIS_VERSION"; then
    echo "openapi-fuzz: installing schemathesis $SCHEMATHESIS_VERSION into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

database="openapi_fuzz"
server_url="${DATABASE_URL%/*}"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
mariadb --no-defaults -h127.0.0.1 -P"${server_url##*:}" -u"$(sed -E 's#mysql://([^:@]+).*#\1#' <<<"$server_url")" \
    -p"$(sed -E 's#mysql://[^:]+:([^@]+)@.*#\1#' <<<"$server_url")" \
    -e "DROP DATABASE IF EXISTS $database; CREATE DATABASE $database CHARACTER SET utf8mb4"
DATABASE_URL="$server_url/$database" REDIS_PREFIX="fuzz:$RANDOM:" ADMIN_TOKEN="$token" \
    BIND_ADDR="127.0.0.1:$port" RUST_LOG=warn "$binary" serve &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/health/ready" >/dev/null && break
    kill -0 "$server" 2>/dev/null || { echo "openapi-fuzz: stampede exited during start-up" >&2; exit 1; }
    sleep 0.2
done

"$venv/bin/st" --config-file loadtest/schemathesis.toml run "http://127.0.0.1:$port/openapi.json" \
    --checks all --max-examples "$MAX_EXAMPLES" -H "Authorization: Bearer $token" --no-color
