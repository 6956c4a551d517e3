#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests and benchmarks of the usage store.
#
#   scripts/ci-postgres.sh         start it (installing Debian's postgresql if needed);
#                                  prints ONLY its SQLAlchemy URL on stdout
#   scripts/ci-postgres.sh stop    stop it and delete its data
#
# It is a separate cluster (named "arci" unless AR_CI_PG_CLUSTER says otherwise)
# next to any the machine already runs, listening on 127.0.0.1 only, on a free
# port (or AR_CI_PG_PORT). Its role may create databases, because the tests make
# one database per test. Running it again while the cluster exists prints the
# same URL. Everything but the URL goes to stderr, so callers can write
#
#   export AUTOGEN_RELIABILITY_TEST_PG_URL="$(scripts/ci-postgres.sh)"
#   trap 'scripts/ci-postgres.sh stop' EXIT
#
# Needs root (or sudo) for apt-get and for the cluster tools of postgresql-common.
set -euo pipefail

CLUSTER="${AR_CI_PG_CLUSTER:-arci}"
ROLE="arci"
DATABASE="arci"

log() { printf 'ci-postgres: %s\n' "$*" >&2; }

as_root() {
    if [[ $EUID -eq 0 ]]; then "$@"; else sudo -- "$@"; fi
}

as_postgres() {
    # From / so that psql does not complain about the caller's unreadable directory.
    if [[ $EUID -eq 0 ]]; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && sudo -u postgres -- "$@")
    fi
}

# The newest PostgreSQL major version installed from Debian's packages.
installed_version() {
    local dir
    dir=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/postgres' 2>/dev/null | sort -V | tail -n 1)
    [[ -n $dir ]] && basename "$(dirname "$(dirname "$dir")")"
}

cluster_exists() {
    local version=$1
    pg_lsclusters --no-header 2>/dev/null | awk -v v="$version" -v c="$CLUSTER" '$1 == v && $2 == c { found = 1 } END { exit !found }'
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

stop() {
    local version
    version=$(installed_version || true)
    if [[ -z $version ]] || ! cluster_exists "$version"; then
        log "no cluster $CLUSTER: nothing to stop"
    else
        log "dropping cluster $version/$CLUSTER"
        as_root pg_dropcluster --stop "$version" "$CLUSTER" >&2
    fi
    # pg_dropcluster leaves the configuration directory behind when it holds files of ours (ci-url).
    if [[ -n $version ]]; then
        as_root rm -rf "/etc/postgresql/$version/$CLUSTER"
    fi
}

start() {
    if ! command -v pg_createcluster >/dev/null 2>&1 || [[ -z $(installed_version || true) ]]; then
        log "installing postgresql from Debian's packages (takes a few minutes)"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2
    fi
    local version port url_file url password
    version=$(installed_version)
    url_file="/etc/postgresql/$version/$CLUSTER/ci-url"

    if ! cluster_exists "$version"; then
        port="${AR_CI_PG_PORT:-$(free_port)}"
        log "creating cluster $version/$CLUSTER on 127.0.0.1:$port"
        # Local (socket) connections as the postgres user need no password; TCP ones need the role's.
        as_root pg_createcluster "$version" "$CLUSTER" --port "$port" --start-conf manual \
            -- --auth-local=peer --auth-host=scram-sha-256 --encoding=UTF8 >&2
        # In conf.d, because pg_createcluster -o quotes an address value once too often.
        printf "listen_addresses = '127.0.0.1'\n" | as_root tee "/etc/postgresql/$version/$CLUSTER/conf.d/ci.conf" >/dev/null
    fi
    port=$(as_root pg_conftool -s "$version" "$CLUSTER" show port)

    if ! as_root pg_ctlcluster "$version" "$CLUSTER" status >/dev/null 2>&1; then
        log "starting cluster $version/$CLUSTER"
        as_root pg_ctlcluster "$version" "$CLUSTER" start >&2
    fi

    # The password is made once and kept with the cluster, so a re-run prints the same URL.
    if as_root test -s "$url_file"; then
        url=$(as_root cat "$url_file")
        password=${url#*://"$ROLE":}
        password=${password%%@*}
    else
        password=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
        url="postgresql+psycopg://$ROLE:$password@127.0.0.1:$port/$DATABASE"
    fi

    # Fed on stdin, so the password shows in no process list.
    as_postgres psql --port "$port" --quiet --no-psqlrc -v ON_ERROR_STOP=1 >&2 <<SQL
DO \$\$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$ROLE') THEN
        CREATE ROLE $ROLE LOGIN CREATEDB;
    END IF;
END \$\$;
ALTER ROLE $ROLE WITH LOGIN CREATEDB PASSWORD '$password';
SELECT 'CREATE DATABASE $DATABASE OWNER $ROLE' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DATABASE') \gexec
SQL

    (umask 077 && printf '%s\n' "$url" | as_root tee "$url_file" >/dev/null)
    log "ready: $version/$CLUSTER on 127.0.0.1:$port, database $DATABASE, role $ROLE"
    printf '%s\n' "$url"
}

# "VERSION CLUSTER" of the throw-away cluster, for pg_ctlcluster (the no-loss test stops and starts it).
cluster() {
    local version
    version=$(installed_version)
    cluster_exists "$version" || { log "no cluster $CLUSTER: start it first"; exit 1; }
    printf '%s %s\n' "$version" "$CLUSTER"
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    cluster) cluster ;;
    *)
        log "usage: $0 [start|stop|cluster]"
        exit 2
        ;;
esac
