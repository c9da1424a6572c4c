#!/usr/bin/env bash
# Installs what tidepool's demo and tests need on a fresh Debian/Ubuntu machine with Rust:
# PostgreSQL server binaries, Patroni, etcd and repmgr, prometheus-pgbouncer-exporter, and the rustfmt/clippy components. Idempotent and quiet when
# everything is already there.
set -euo pipefail

have_initdb() {
    [ -n "${TIDEPOOL_PG_BIN:-}" ] && [ -x "$TIDEPOOL_PG_BIN/initdb" ] && return 0
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1
}

apt_install() {
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "$@" >/dev/null
}

missing=()
have_initdb || missing+=(postgresql postgresql-contrib)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
command -v pgbench >/dev/null 2>&1 || missing+=(postgresql-contrib)
# Driver tests (psycopg, asyncpg, node-postgres) install those from PyPI/npm themselves; they
# need python3 with venv, and node with npm.
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
# HA manager tests (tests/ha_managers.rs): Patroni with etcd, and repmgr for PostgreSQL 15.
command -v patroni >/dev/null 2>&1 || missing+=(patroni)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
ls /usr/lib/postgresql/*/bin/repmgr >/dev/null 2>&1 || missing+=(postgresql-15-repmgr)
command -v npm >/dev/null 2>&1 || missing+=(npm)
# Admin console consumer test (tests/pgbouncer_exporter.rs): Debian's PgBouncer exporter. (Its
# service, where systemd runs, is tied to a pgbouncer.service the tests never create.)
command -v prometheus-pgbouncer-exporter >/dev/null 2>&1 || missing+=(prometheus-pgbouncer-exporter)
# PgBouncer 1.25 (tests/pgbouncer_compat.rs, tests/import_pgbouncer.rs; found at
# $TIDEPOOL_PGBOUNCER or ../shared/tools/pgbouncer/pgbouncer) links against these.
ldconfig -p 2>/dev/null | grep -q 'libevent-2.1.so.7' || missing+=(libevent-2.1-7)
ldconfig -p 2>/dev/null | grep -q 'libssl.so.3' || missing+=(libssl3)
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    apt_install "${missing[@]}"
fi

# The Debian package starts a cluster on port 5432; tidepool's tests never use it, so leave it.
# Likewise the etcd and patroni packages' services (not started in containers without systemd):
# the tests run their own on free ports.

if command -v rustup >/dev/null 2>&1; then
    rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi
