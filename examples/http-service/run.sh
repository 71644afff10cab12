#!/usr/bin/env bash
# Starts the scoring service on a free loopback port, runs the workflow against it, and stops the
# service. Run from the repository root: bash examples/http-service/run.sh
set -euo pipefail
here=$(dirname "$0")
SCORER_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
SERVICE_TOKEN=${SERVICE_TOKEN:-example-token}
export SCORER_PORT SERVICE_TOKEN
python3 "$here/service.py" "$SCORER_PORT" &
service=$!
trap 'kill "$service"' EXIT
# Wait until the service accepts connections.
for _ in $(seq 50); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $SCORER_PORT), 0.2)" 2>/dev/null && break
  sleep 0.1
done
oaj=${OAJ:-target/release/oaj}
"$oaj" run "$here/workflow.json" --input @"$here/input.json" "$@"
