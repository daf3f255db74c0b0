#!/usr/bin/env bash
# Regenerates .sqlx/ (the query metadata that lets builds run with SQLX_OFFLINE=true) from
# a scratch database migrated to the current schema. Run it after changing a query or a
# migration, and commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
db=otp_courier_sqlx_prepare
admin="postgres://postgres:postgres@127.0.0.1:5432/postgres"
psql "$admin" -qc "drop database if exists $db" -c "create database $db"
export DATABASE_URL="postgres://postgres:postgres@127.0.0.1:5432/$db"
for migration in migrations/*.sql; do
  psql "$DATABASE_URL" -q -v ON_ERROR_STOP=1 -f "$migration"
done
rm -rf .sqlx && mkdir .sqlx
cargo clean -p otp-courier
SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$PWD/.sqlx" cargo check --all-targets
psql "$admin" -qc "drop database $db"
echo "wrote $(ls .sqlx | wc -l) query files to .sqlx/"
