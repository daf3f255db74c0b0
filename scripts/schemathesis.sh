#!/usr/bin/env bash
# Property-based API testing: schemathesis (PyPI) generates requests from /openapi.json and
# fails on any 5xx, any answer that breaks the documented schema, or a wrong content type.
# Runs `otp-courier serve` on a scratch database with the `file` provider (nothing leaves
# the machine).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
port="${OTP_SCHEMATHESIS_PORT:-18090}"
dir=target/schemathesis
venv=target/schemathesis-venv
mkdir -p "$dir"
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q schemathesis==4.32.5
fi

db=otp_courier_schemathesis
psql "postgres://postgres:postgres@127.0.0.1:5432/postgres" -qc "drop database if exists $db" -c "create database $db"
key=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
cat > "$dir/config.toml" <<TOML
[database]
url = "postgres://postgres:postgres@127.0.0.1:5432/$db"
[amqp]
send_queue = "otp.schemathesis.send"
dead_letter_queue = "otp.schemathesis.send.dlq"
[api]
listen = "127.0.0.1:$port"
[limits.send_per_app]
max = 100000
window_seconds = 1
[limits.send_per_phone]
max = 100000
window_seconds = 600
[limits.send_per_phone_all_apps]
max = 100000
window_seconds = 600
[pin]
active_key = "st"
[pin.keys]
st = "$key"
[routing]
sms = "file"
whatsapp = "file"
[providers.file]
kind = "file"
path = "$PWD/$dir/messages.jsonl"
TOML
export OTP_CONFIG="$PWD/$dir/config.toml"
SQLX_OFFLINE=true cargo build --locked --quiet
bin=target/debug/otp-courier
"$bin" migrate
"$bin" apps create --id st --template 'Code {{pin}}' > "$dir/app.txt"
api_key=$(awk '/^api key/ {print $3}' "$dir/app.txt")
api_secret=$(awk '/^api secret/ {print $3}' "$dir/app.txt")

"$bin" serve > "$dir/serve.log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 60); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
  sleep 0.5
done

# One worker: on Python 3.11, hypothesis parsing lambdas' source in several threads at once
# trips CPython's shared AST recursion counter ("AST constructor recursion depth mismatch").
auth="Authorization: Basic $(printf '%s:%s' "$api_key" "$api_secret" | base64 -w0)"
"$venv/bin/schemathesis" run "http://127.0.0.1:$port/openapi.json" \
  --header "$auth" \
  --checks not_a_server_error,response_schema_conformance,content_type_conformance \
  --phases examples,coverage,fuzzing \
  --max-examples "${OTP_SCHEMATHESIS_EXAMPLES:-40}" \
  --workers 1 \
  --request-timeout 20 \
  --generation-deterministic
if grep -q 'panicked' "$dir/serve.log"; then
  echo "the server panicked during the run:"; grep -B2 -A5 'panicked' "$dir/serve.log"; exit 1
fi
