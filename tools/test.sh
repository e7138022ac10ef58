#!/usr/bin/env bash
# The test command (README): builds/reuses the host, lints, validates the registry metadata, runs pytest.
# Extra arguments go to pytest (e.g. `bash tools/test.sh -k canvas`).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
bash tools/setup_host.sh
host=${ACE_HOST_DIR:-$HOME/.cache/ace-plus-host}
py=$host/venv/bin/python

echo "== browser test dependencies (Debian chromium, playwright-core from npm; no browser download)"
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if command -v npm >/dev/null; then
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

echo "== ruff"
"$py" -m ruff check .
echo "== comfy node validate"
"$host/cli-venv/bin/comfy" --skip-prompt --no-enable-telemetry node validate
echo "== pytest"
"$py" -m pytest -q -p no:cacheprovider "$@"
