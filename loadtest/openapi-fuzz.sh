#!/usr/bin/env bash
# OpenAPI fuzzing: schemathesis generates requests from /openapi.json and checks every answer against it
# (`--checks all`: no 5xx, only documented statuses, bodies matching their schema, schema-valid requests
# accepted, invalid ones refused). Run by `make test`; exits non-zero on any failure.
#
# Twice: with a valid user token (for user 1, the first user the fuzzing creates), so generated requests reach
# the handlers, and with none, where every user-acting operation must answer 401 and nothing a 5xx. The admin
# token goes with the `admin` scheme either way. The per-user rate limits are off, so the first run is not cut
# short by 429s.
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
secret="fuzz-secret-$RANDOM$RANDOM-of-at-least-32-bytes"

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
DATABASE_URL="$server_url/$database" REDIS_PREFIX="fuzz:$RANDOM:" ADMIN_TOKEN="$token" AUTH_JWT_SECRET="$secret" \
    RATE_LIMIT_USER=0 RATE_LIMIT_ISSUE=0 BIND_ADDR="127.0.0.1:$port" RUST_LOG=warn "$binary" serve &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/health/ready" >/dev/null && break
    kill -0 "$server" 2>/dev/null || { echo "openapi-fuzz: stampede exited during start-up" >&2; exit 1; }
    sleep 0.2
done

base="http://127.0.0.1:$port"
# loadtest/schemathesis.toml takes both tokens from the environment, per security scheme.
export FUZZ_ADMIN_TOKEN="$token"
echo "openapi-fuzz: with a user token"
FUZZ_USER_TOKEN="$(AUTH_JWT_SECRET="$secret" "$binary" token --user 1 --ttl 1h)" \
    "$venv/bin/st" --config-file loadtest/schemathesis.toml run "$base/openapi.json" \
    --checks all --max-examples "$MAX_EXAMPLES" --no-color

echo "openapi-fuzz: without a user token"
FUZZ_USER_TOKEN="" "$venv/bin/st" --config-file loadtest/schemathesis.toml run "$base/openapi.json" \
    --checks all --max-examples "$((MAX_EXAMPLES / 5 + 1))" --no-color
# And the exact answer of each user-acting operation to a request without credentials.
for call in "POST /api/v1/coupons/1/issue" "GET /api/v1/users/1/coupons" "GET /api/v1/users/1/balance" \
    "POST /api/v1/users/1/balance/charge" "GET /api/v1/users/1/balance/history" "POST /api/v1/orders" \
    "POST /api/v1/orders/1/pay" "GET /api/v1/orders/1"; do
    method="${call%% *}" path="${call#* }" data=()
    [[ "$method" == POST ]] && data=(--data '{}')
    status="$(curl -s -o /dev/null -w '%{http_code}' -X "$method" -H 'Content-Type: application/json' \
        "${data[@]}" "$base$path")"
    [[ "$status" == 401 ]] || { echo "openapi-fuzz: $call without a token answered $status, not 401" >&2; exit 1; }
done
echo "openapi-fuzz: every user-acting operation answers 401 without a token"
