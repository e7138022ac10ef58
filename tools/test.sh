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
# The browser test's second frontend: the newest comfyui-frontend-package, beside the pinned one (not in the
# venv; served with --front-end-root). Cached; refreshed when older than a week. ComfyUI's templates come with
# its requirements.txt (setup_host.sh).
latest_fe=$host/frontend-latest
if [ ! -d "$latest_fe/comfyui_frontend_package" ] || [ -n "$(find "$latest_fe" -maxdepth 0 -mtime +7)" ]; then
  tmp=$(mktemp -d "$host/frontend-latest.XXXXXX")
  if "$py" -m pip install --disable-pip-version-check -q --no-deps --target "$tmp" comfyui-frontend-package; then
    rm -rf "$latest_fe" && mv "$tmp" "$latest_fe" && touch "$latest_fe"
  else
    rm -rf "$tmp"
    echo "   newest comfyui-frontend-package not installed: the browser test skips it (fails under CI)"
  fi
fi

echo "== ruff"
"$py" -m ruff check .
echo "== comfy node validate"
"$host/cli-venv/bin/comfy" --skip-prompt --no-enable-telemetry node validate
echo "== pytest"
"$py" -m pytest -q -p no:cacheprovider "$@"
