#!/usr/bin/env bash
# Installs what the tests check our code against and drive it with (never used by the
# product): PyPI `twilio` signs webhooks and shows the requests Twilio's client makes;
# Playwright for Python drives Debian's Chromium (`chromium`, `chromium-driver`) through
# the console; PyPI `smscx-client` (sms.cx's SDK) drives our sms.cx layer. Python packages
# go into a virtualenv under target/, once; the tests find its Python there. The AsyncAPI
# initiative's parser (npm `@asyncapi/parser`) checks docs/asyncapi.json, from target/asyncapi. Playwright's own browser download (`playwright install`) is never used.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if [ ! -x /usr/bin/chromium ] || ! command -v chromedriver >/dev/null 2>&1; then
  echo "[oracles] installing chromium and chromium-driver" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

venv=target/oracle-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import twilio, playwright, smscx_client" 2>/dev/null; then
  mkdir -p target
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q twilio==9.13.0 playwright==1.65.2 smscx-client==0.1.13
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "[oracles] installing nodejs and npm" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -d target/asyncapi/node_modules/@asyncapi/parser ]; then
  mkdir -p target/asyncapi
  npm install --prefix target/asyncapi --silent --no-audit --no-fund @asyncapi/parser@3.6.6
fi
