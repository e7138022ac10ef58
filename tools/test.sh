#!/usr/bin/env bash
# The test command (README): builds/reuses the host, lints, validates the registry metadata, runs pytest.
# Extra arguments go to pytest (e.g. `bash tools/test.sh -k canvas`).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
bash tools/setup_host.sh
host=${ACE_HOST_DIR:-$HOME/.cache/ace-plus-host}
py=$host/venv/bin/python

echo "== ruff"
"$py" -m ruff check .
echo "== comfy node validate"
"$host/cli-venv/bin/comfy" --skip-prompt --no-enable-telemetry node validate
echo "== pytest"
"$py" -m pytest -q -p no:cacheprovider "$@"
