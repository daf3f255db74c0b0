#!/usr/bin/env bash
# Runs every test (unit and integration) against real PostgreSQL and RabbitMQ, starting
# them first if needed. Builds use the committed .sqlx/ query data, so no database is
# needed to compile.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
bash scripts/oracles.sh
export DATABASE_URL="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/test}"
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export SQLX_OFFLINE=true
# The parallel suite first; then the tests that restart RabbitMQ and PostgreSQL, which
# would disturb any test running beside them: the restart tests, then the chaos run
# (reduced; CHAOS_PROFILE=full for the full one, see docs/RELIABILITY.md).
cargo test --locked --lib --bins --test it "$@"
cargo test --locked --test restarts "$@" -- --test-threads=1
bash scripts/chaos.sh ci
