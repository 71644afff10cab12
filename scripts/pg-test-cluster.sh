#!/usr/bin/env bash
# Starts and stops a throwaway PostgreSQL cluster for the tests, from Debian's packages.
#
#   scripts/pg-test-cluster.sh start   prints the folder, then the postgres:// URL, one a line
#   scripts/pg-test-cluster.sh restart DIR stops the server in DIR (fast shutdown), keeps DIR
#                                         and starts the server again on the same port
#   scripts/pg-test-cluster.sh stop DIR stops the cluster in DIR and removes DIR
#
# The cluster lives in a new temporary folder, listens only on 127.0.0.1 on a free port, trusts
# every local connection (it holds test data only), and keeps fsync on so that the durability
# tests mean something. PostgreSQL refuses to run as root, so as root the server runs as the
# `postgres` user, which the Debian packages create.
set -euo pipefail

bin_dir() {
    local initdb
    initdb=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1)
    if [[ -z "$initdb" ]]; then
        echo "pg-test-cluster: initdb not found under /usr/lib/postgresql: install the" \
            "postgresql package (apt-get install postgresql)" >&2
        exit 1
    fi
    dirname "$initdb"
}

# Runs a command as the cluster's owner.
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
    local bin dir port
    bin=$(bin_dir)
    dir=$(mktemp -d "${TMPDIR:-/tmp}/oaj-pg.XXXXXX")
    if [[ $(id -u) -eq 0 ]]; then
        chown postgres: "$dir"
    fi
    as_owner "$bin/initdb" --pgdata="$dir/data" --username=postgres --auth=trust \
        --encoding=UTF8 --no-locale >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        exit 1
    }
    port=$(free_port)
    # `restart` reads the port back from here.
    echo "$port" >"$dir/port"
    server_start "$bin" "$dir" "$port"
    echo "$dir"
    echo "postgres://postgres@127.0.0.1:$port/postgres"
}

server_start() {
    local bin=$1 dir=$2 port=$3
    # The socket folder is the cluster folder, so no shared /var/run path is needed.
    as_owner "$bin/pg_ctl" --pgdata="$dir/data" --log="$dir/server.log" --wait \
        --options="-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir \
-c fsync=on -c max_connections=300" start >/dev/null || {
        cat "$dir/server.log" >&2
        exit 1
    }
}

# Stops the server with a fast shutdown, which ends every session, and starts it again on the
# port that `start` chose. The data folder stays, so committed rows survive.
restart() {
    local dir=${1:?usage: pg-test-cluster.sh restart DIR}
    local bin
    bin=$(bin_dir)
    if [[ ! -f "$dir/port" ]]; then
        echo "pg-test-cluster: $dir/port not found: DIR must be a folder that" \
            "'pg-test-cluster.sh start' printed" >&2
        exit 1
    fi
    as_owner "$bin/pg_ctl" --pgdata="$dir/data" --wait --mode=fast stop >/dev/null
    server_start "$bin" "$dir" "$(cat "$dir/port")"
}

stop() {
    local dir=${1:?usage: pg-test-cluster.sh stop DIR}
    local pid_file="$dir/data/postmaster.pid"
    if [[ -f "$pid_file" ]]; then
        local pid
        pid=$(head -n 1 "$pid_file")
        # SIGINT is PostgreSQL's fast shutdown: it ends sessions and stops cleanly.
        kill -INT "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -rf "$dir"
}

case "${1:-}" in
    start) start ;;
    restart) restart "${2:-}" ;;
    stop) stop "${2:-}" ;;
    *)
        echo "usage: pg-test-cluster.sh start | restart DIR | stop DIR" >&2
        exit 2
        ;;
esac
