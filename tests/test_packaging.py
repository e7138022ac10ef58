"""pyproject.toml as the registry and installers read it (no runtime dependencies, the URLs comfy-cli reads, an
icon that exists in the repository), the archive `comfy node pack` builds for the registry (its content, its size,
and that ComfyUI loads the pack from it), and the workflow that publishes it."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest
import python_subprocess

REPO = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_no_runtime_dependencies():
    # ComfyUI ships torch, numpy, pillow, safetensors and einops; a declared torch makes installers replace it.
    assert PROJECT["project"]["dependencies"] == []


def test_urls_have_the_keys_comfy_cli_reads():
    assert {"Homepage", "Documentation", "Repository", "Issues"} <= set(PROJECT["project"]["urls"])


def test_the_icon_named_in_tool_comfy_is_in_the_repository():
    from PIL import Image

    icon = PROJECT["tool"]["comfy"]["Icon"]
    path = REPO / icon.split("/main/", 1)[1]
    assert path.is_file(), f"[tool.comfy] Icon names {icon}, but {path} is not in the repository"
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] == img.size[1] >= 128


# --- the registry archive ---------------------------------------------------------------------------------------
# `comfy node pack` (what the publish action uploads) zips the git-tracked files minus .comfyignore. The test packs
# a fresh repository holding what a clean clone of this tree holds (tracked files plus untracked ones git does not
# ignore, i.e. the tree as the coordinator will commit it), so it sees what CI and the publish action see.
SHIPPED = (
    "__init__.py",
    "README.md",
    "LICENSE",
    "pyproject.toml",
    "icon.png",
    "nodes",
    "ace_plus_core",
    "runner",
    "web",
    "locales",
    "workflow_example_lora",
    "workflow_example_fft",
    "example_workflows",
)
# The pack is ~1 MB zipped (code ~0.3 MB; example inputs ~1.4 MB of already compressed PNG/JPEG). 3 MB leaves room
# for example previews but not for the screenshots (2.7 MB) plus that; no shipped file is near 1 MB, while every
# model file is tens of MB or more.
MAX_ARCHIVE_BYTES = 3_000_000
MAX_FILE_BYTES = 1_000_000


def _expected_in_archive(path: str) -> bool:
    top = path.split("/", 1)[0]
    if top == "docs":  # the documents the README links to, not the screenshots
        return path.count("/") == 1 and path.endswith(".md")
    return top in SHIPPED


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> tuple[Path, list[str]]:
    """(node.zip built by comfy-cli's `comfy node pack`, the git-tracked files of the clean copy it packed)."""
    import comfy_host

    comfy = comfy_host.default_host_dir() / "cli-venv" / "bin" / "comfy"
    if not comfy.is_file():
        pytest.skip(f"comfy-cli is not installed at {comfy} (tools/setup_host.sh installs it)")
    if shutil.which("git") is None:
        pytest.skip("git is not installed: `comfy node pack` archives the git-tracked files")
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
    )
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout, so the archive's content is undefined: {listed.stderr.strip()}")
    src = tmp_path_factory.mktemp("clean_clone")
    for rel in filter(None, listed.stdout.split("\0")):
        if (REPO / rel).is_file():  # a tracked file deleted in the tree is not in the clone
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    subprocess.run(["git", "init", "-q"], cwd=src, check=True)
    subprocess.run(["git", "add", "-A"], cwd=src, check=True)
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=src, check=True, capture_output=True, text=True).stdout
    tracked = [p for p in tracked.split("\0") if p]
    result = subprocess.run(
        [str(comfy), "--skip-prompt", "--no-enable-telemetry", "node", "pack"],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and (src / "node.zip").is_file(), result.stdout + result.stderr
    return src / "node.zip", tracked


def test_archive_holds_exactly_what_runs_in_comfyui(packed):
    archive, tracked = packed
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
    leaked = sorted(
        n
        for n in names
        if n.startswith(("tests/", "bench/", "tools/", "docs/screenshots/", ".ci/", ".github/", "output/"))
        or "__pycache__" in n
    )
    assert not leaked, f"development files in the archive: {leaked}"
    expected = {p for p in tracked if _expected_in_archive(p)}
    assert not expected - names, f"missing from the archive: {sorted(expected - names)}"
    assert not names - expected, f"unexpected in the archive: {sorted(names - expected)}"
    # What ComfyUI and the registry read from the installed folder.
    assert {"__init__.py", "nodes/__init__.py", "ace_plus_core/__init__.py", "pyproject.toml", "LICENSE"} <= names
    assert PROJECT["tool"]["comfy"]["Icon"].split("/main/", 1)[1] in names


def test_archive_size(packed):
    archive, _ = packed
    with zipfile.ZipFile(archive) as zf:
        big = [(i.filename, i.file_size) for i in zf.infolist() if i.file_size > MAX_FILE_BYTES]
    assert not big, f"files over {MAX_FILE_BYTES} bytes in the archive (model weights?): {big}"
    size = archive.stat().st_size
    assert size <= MAX_ARCHIVE_BYTES, f"node.zip is {size} bytes, over the {MAX_ARCHIVE_BYTES} bound"


def test_archive_loads_in_comfyui(packed, tmp_path):
    from test_host_loader import EXPECTED_NODE_IDS

    archive, _ = packed
    pack = tmp_path / "unzipped" / "ace_plus"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(pack)
    code = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(REPO / "runner")!r})
        import comfy_host
        from pathlib import Path
        host = comfy_host.boot({str(tmp_path / "base")!r}, pack_dir=Path({str(pack)!r}))
        import nodes  # ComfyUI's, now first on the path
        ids = host.pack_node_ids()
        files = [sys.modules[nodes.NODE_CLASS_MAPPINGS[i].__module__].__file__ for i in ids]
        print(json.dumps({{"ids": ids, "files": files}}))
        """
    )
    result = python_subprocess.run(["-c", code], timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    booted = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(booted["ids"]) == EXPECTED_NODE_IDS, f"registered from the archive: {booted['ids']}"
    outside = [f for f in booted["files"] if not Path(f).resolve().is_relative_to(pack.resolve())]
    assert not outside, f"node classes loaded from outside the unzipped archive: {outside}"


# --- the publish workflow -----------------------------------------------------------------------------------------
def test_publish_workflow_runs_the_registry_action_on_version_bumps():
    import yaml

    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "publish.yml").read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` key as true
    assert "workflow_dispatch" in triggers
    assert triggers["push"]["branches"] == ["main"] and triggers["push"]["paths"] == ["pyproject.toml"]
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    publish = [step for step in steps if step.get("uses", "").startswith("Comfy-Org/publish-node-action@")]
    assert len(publish) == 1, f"steps: {steps}"
    assert publish[0]["with"] == {"personal_access_token": "${{ secrets.REGISTRY_ACCESS_TOKEN }}"}
