#!/usr/bin/env bash
# Makes sure PostgreSQL and RabbitMQ are installed, running and ready on 127.0.0.1, with the
# role and database the tests and the demo use. Safe to run again; sourced or executed.
set -euo pipefail

log() { printf '[services] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  log "installing $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    apt_install postgresql postgresql-client
  fi
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    log "starting PostgreSQL $version"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  fi
  for _ in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 -p 5432 && break
    sleep 1
  done
  pg_isready -q -h 127.0.0.1 -p 5432 || { log "PostgreSQL did not become ready"; exit 1; }
  # The tests connect over TCP as postgres/postgres: a password that trust auth ignores and
  # password auth (a fresh Debian install) accepts.
  if ! PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
    log "setting the postgres role's password"
    as_root su postgres -c "psql -qc \"alter role postgres password 'postgres'\"" >/dev/null
  fi
  if ! PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d postgres -Atqc "select 1 from pg_database where datname = 'test'" | grep -q 1; then
    PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d postgres -qc 'create database test'
  fi
}

rabbit_ready() {
  (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && rabbitmqctl -q status >/dev/null 2>&1
}

ensure_rabbitmq() {
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    apt_install rabbitmq-server
  fi
  if ! rabbit_ready; then
    log "starting RabbitMQ"
    as_root rabbitmq-server -detached >/dev/null 2>&1 || true
    as_root rabbitmqctl -q await_startup --timeout 120 >/dev/null 2>&1 || true
  fi
  for _ in $(seq 1 120); do
    rabbit_ready && break
    sleep 1
  done
  rabbit_ready || { log "RabbitMQ did not become ready"; exit 1; }
}

command -v curl >/dev/null 2>&1 || apt_install curl
# The demo's callback receiver and the CI's schemathesis run on Python.
command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
ensure_postgres
ensure_rabbitmq
log "PostgreSQL and RabbitMQ are ready"
