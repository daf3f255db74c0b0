#!/usr/bin/env bash
# The chaos run on its own: `bash scripts/chaos.sh` for the reduced run CI makes, `bash
# scripts/chaos.sh full` for the full one (10,000 jobs, 20 worker kills, 3 broker and 3
# database restarts; about 6 minutes). It restarts RabbitMQ and PostgreSQL: run nothing
# else against them meanwhile. Results: the table it prints and
# target/tmp/chaos-<profile>/report.json, beside the processes' logs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
export DATABASE_URL="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/test}"
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export SQLX_OFFLINE=true
export CHAOS_PROFILE="${1:-ci}"
cargo test --locked --test chaos -- --test-threads=1 --nocapture
