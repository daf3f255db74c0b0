#!/usr/bin/env bash
# End to end on this machine: PostgreSQL and RabbitMQ up, a fresh demo database migrated,
# `otp-courier serve` running (worker + HTTP API + dispatcher), a demo app created, one OTP job
# published to RabbitMQ and delivered through the `file` provider (a local file standing in
# for a phone), the code read from that "phone" verified through the HTTP API, and the signed
# status callbacks received (and their signatures checked) by a local receiver.
# Leaves the server running when --keep is given; otherwise stops it gracefully.
set -euo pipefail
cd "$(dirname "$0")/.."
keep=false
[ "${1:-}" = "--keep" ] && keep=true

bash scripts/services.sh
demo=.demo
mkdir -p "$demo"
rm -f "$demo/messages.jsonl" "$demo/serve.log" "$demo/callbacks.jsonl"
hook_port=${OTP_DEMO_HOOK_PORT:-8081}

psql "postgres://postgres:postgres@127.0.0.1:5432/postgres" -qc "drop database if exists otp_courier_demo" \
  -c "create database otp_courier_demo"

# A fresh PIN key for this demo; production keys come from a secret store.
key=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
cat > "$demo/config.toml" <<TOML
[database]
url = "postgres://postgres:postgres@127.0.0.1:5432/otp_courier_demo"

[amqp]
send_queue = "otp.demo.send"
dead_letter_queue = "otp.demo.send.dlq"

[api]
listen = "127.0.0.1:${OTP_DEMO_PORT:-8080}"

[pin]
active_key = "demo"
[pin.keys]
demo = "$key"

# The demo's callback receiver runs on loopback, which the SSRF guard refuses unless allowlisted.
[callbacks]
allow_http = true
allow_networks = ["127.0.0.1/32"]

[routing]
sms = "phone-file"

[providers.phone-file]
kind = "file"
path = "$PWD/$demo/messages.jsonl"
TOML
export OTP_CONFIG="$PWD/$demo/config.toml"

SQLX_OFFLINE=true cargo build --locked --quiet
bin=target/debug/otp-courier

"$bin" serve >"$demo/serve.log" 2>&1 &
server=$!
trap '[ "$keep" = true ] || { kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true; }' EXIT

for _ in $(seq 1 60); do
  grep -q 'consuming' "$demo/serve.log" 2>/dev/null && grep -q 'HTTP API listening' "$demo/serve.log" && break
  kill -0 $server 2>/dev/null || { cat "$demo/serve.log"; echo "otp-courier serve exited"; exit 1; }
  sleep 0.5
done

"$bin" apps create --id demo --name "Demo shop" --from DemoShop \
  --template 'Your DemoShop code is {{pin}}. It expires in {{ttl_minutes}} minutes.' \
  --localized 'fr=Votre code DemoShop : {{pin}}. Il expire dans {{ttl_minutes}} minutes.' \
  --callback-url "http://127.0.0.1:$hook_port/hooks/otp" | tee "$demo/app.txt"
api_key=$(awk '/^api key/ {print $3}' "$demo/app.txt")
api_secret=$(awk '/^api secret/ {print $3}' "$demo/app.txt")
webhook_secret=$(awk '/^webhook secret/ {print $3}' "$demo/app.txt")

python3 scripts/demo-receiver.py "$hook_port" "$webhook_secret" "$demo/callbacks.jsonl" &
receiver=$!
for _ in $(seq 1 40); do
  curl -s -o /dev/null "http://127.0.0.1:$hook_port/" && break
  sleep 0.25
done
trap '[ "$keep" = true ] || { kill -TERM $server $receiver 2>/dev/null; wait $server 2>/dev/null || true; }' EXIT

echo "publishing a send job for +33 6 12 34 56 78 (a French number: the French template is chosen)"
"$bin" enqueue --app demo --phone "+33612345678" --request-id "demo-$(date +%s)"

for _ in $(seq 1 60); do
  [ -s "$demo/messages.jsonl" ] && break
  sleep 0.5
done
[ -s "$demo/messages.jsonl" ] || { cat "$demo/serve.log"; echo "no message was delivered"; exit 1; }

echo
echo "delivered through the file provider ($demo/messages.jsonl):"
cat "$demo/messages.jsonl"
otp_id=$(grep -o '"otpId":"[^"]*"' "$demo/messages.jsonl" | head -n 1 | cut -d'"' -f4)
code=$(grep -o '"text":"[^"]*"' "$demo/messages.jsonl" | head -n 1 | grep -oE '[0-9]{6}' | head -n 1)
api="http://127.0.0.1:${OTP_DEMO_PORT:-8080}"
echo
echo "verifying the code the phone received through the HTTP API:"
echo "  POST $api/v1/otp/verify {\"otpId\": \"$otp_id\", \"code\": \"$code\"}"
curl -sS --fail-with-body -u "$api_key:$api_secret" -H 'content-type: application/json' \
  -d "{\"otpId\": \"$otp_id\", \"code\": \"$code\"}" "$api/v1/otp/verify"
echo
echo "verifying it a second time (codes are single-use):"
curl -sS -u "$api_key:$api_secret" -H 'content-type: application/json' \
  -d "{\"otpId\": \"$otp_id\", \"code\": \"$code\"}" "$api/v1/otp/verify"
echo
echo
for _ in $(seq 1 60); do
  [ -f "$demo/callbacks.jsonl" ] && [ "$(wc -l < "$demo/callbacks.jsonl")" -ge 2 ] && break
  sleep 0.5
done
echo "status callbacks the receiver got on 127.0.0.1:$hook_port ($demo/callbacks.jsonl):"
cat "$demo/callbacks.jsonl"
grep -q '"type": "otp.verified"' "$demo/callbacks.jsonl" || { cat "$demo/serve.log"; echo "no otp.verified callback"; exit 1; }
! grep -q INVALID "$demo/callbacks.jsonl" || { echo "a callback signature did not verify"; exit 1; }
echo
echo "state in PostgreSQL:"
psql "postgres://postgres:postgres@127.0.0.1:5432/otp_courier_demo" -c \
  "select o.id, o.status, o.delivery, o.locale, o.parts, o.attempts, (select string_agg(event_type || ':' || state, ',' order by seq) from outbox where otp_id = o.id) as callbacks from otps o"
if [ "$keep" = true ]; then
  echo "otp-courier serve keeps running (pid $server); logs in $demo/serve.log"
fi
