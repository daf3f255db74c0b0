#!/usr/bin/env bash
# Installs the vendors' own libraries the tests check our code against (never used by the
# product): PyPI `twilio` signs webhooks and shows the requests Twilio's client makes.
# Into a virtualenv under target/, once; the tests find its Python there.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/oracle-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import twilio" 2>/dev/null; then
  mkdir -p target
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q twilio==9.13.0
fi
