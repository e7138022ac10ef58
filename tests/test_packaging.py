"""pyproject.toml as the registry and installers read it: no runtime dependencies, the URLs comfy-cli reads, an
icon that exists in the repository."""

from __future__ import annotations

import tomllib
from pathlib import Path

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
