#!/usr/bin/env bash
# Fuzzes the HTTP API against its own OpenAPI document with schemathesis: starts `oaj serve` on a
# temporary database and a free loopback port, generates requests from /v1/openapi.json, and fails
# on any 5xx or any response that the document does not describe.
#
# Usage: scripts/api-fuzz.sh [MAX_SECONDS]   (default 90)
# Needs the `schemathesis` command (tested with 4.32.5) and builds oaj with cargo unless OAJ_BIN
# names a binary.
set -euo pipefail
cd "$(dirname "$0")/.."

max_seconds="${1:-90}"
if ! command -v schemathesis >/dev/null; then
    echo "error: schemathesis not found: pip install schemathesis==4.32.5" >&2
    exit 2
fi
if [[ -z "${OAJ_BIN:-}" ]]; then
    cargo build --quiet -p oaj
    OAJ_BIN="${CARGO_TARGET_DIR:-target}/debug/oaj"
fi

work="$(mktemp -d)"
server_pid=""
stop_server() {
    if [[ -n "$server_pid" ]]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap stop_server EXIT

# The token reaches the server through the environment, so it is not on any command line.
token="fuzz-$RANDOM$RANDOM"
OAJ_TOKEN="$token" "$OAJ_BIN" serve --db "$work/oaj.db" --listen 127.0.0.1:0 --workers 2 \
    2>"$work/serve.log" &
server_pid=$!

address=""
for _ in $(seq 1 100); do
    address="$(sed -n 's/^listening on //p' "$work/serve.log" | head -n 1)"
    [[ -n "$address" ]] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "error: oaj serve exited before listening:" >&2
        cat "$work/serve.log" >&2
        exit 1
    fi
    sleep 0.1
done
if [[ -z "$address" ]]; then
    echo "error: oaj serve printed no 'listening on' line within 10 seconds" >&2
    exit 1
fi
echo "oaj serve (pid $server_pid) listening on $address"

# /v1/events is an endless stream, so a generated request to it would only hit the request
# timeout; the stream has its own tests in crates/oaj-server/tests/api/events.rs.
# schemathesis keeps state in .schemathesis/ of its working folder, so it runs in the temporary one.
status=0
(cd "$work" && schemathesis run "http://$address/v1/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --exclude-path /v1/events \
    --phases examples,coverage,fuzzing \
    --max-examples 50 \
    --max-time "$max_seconds" \
    --request-timeout 10 \
    --workers 2 \
    --seed 1 \
    --generation-database none \
    --no-color) || status=$?

if grep -q 'request failed' "$work/serve.log"; then
    echo "server log lines for internal errors:" >&2
    grep 'request failed' "$work/serve.log" | head -n 20 >&2
fi
exit "$status"
