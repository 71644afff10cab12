#!/usr/bin/env bash
# Runs every test: on SQLite, and on a throwaway PostgreSQL cluster that this script starts.
#
# Debian's PostgreSQL packages are installed when they are missing (with sudo unless run as
# root). The cluster listens on a free loopback port and is stopped and removed however the
# script ends. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    sudo_cmd=()
    if [[ $(id -u) -ne 0 ]]; then
        sudo_cmd=(sudo)
    fi
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq postgresql >/dev/null
fi
cluster=$(scripts/pg-test-cluster.sh start)
pg_dir=$(sed -n 1p <<<"$cluster")
trap 'scripts/pg-test-cluster.sh stop "$pg_dir"' EXIT
OAJ_TEST_DATABASE_URL=$(sed -n 2p <<<"$cluster")
export OAJ_TEST_DATABASE_URL

cargo test --workspace --locked "$@"
