"""The layers of ARCHITECTURE.md and what each may import, read from the source (no ComfyUI, no import run)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STDLIB = set(sys.stdlib_module_names)
COMFYUI = {"comfy", "comfy_api", "comfy_execution", "execution", "folder_paths", "node_helpers", "nodes", "server",
           "utils", "comfyui_version"}
# layer -> third-party / project modules it may import (besides the standard library and itself)
ALLOWED = {
    "ace_plus_core": {"torch", "numpy", "PIL", "safetensors"},
    "nodes": {"torch", "numpy", "PIL", "safetensors"} | COMFYUI,
    "runner": {"torch", "numpy", "PIL", "safetensors", "comfy_host", "tiny_models", "workflow_convert",
               "run_workflow"} | COMFYUI,
    "tools": {"torch", "numpy", "PIL", "comfy_host", "tiny_models", "workflow_convert", "run_workflow"} | COMFYUI,
    "bench": {"torch", "numpy", "PIL", "safetensors", "ace_plus_core", "machine", "comfy_host", "tiny_models",
              "tiny_flux_detection",
              "cv2"} | COMFYUI,  # OpenCV: the benchmarks' reference (cv2.Canny), from the test extra
}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import; relative ones keep their dots."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.lineno, "." * node.level + (node.module or "")))
    return out


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_what_it_may(layer):
    wrong = []
    for path in sorted((REPO / layer).glob("*.py")):
        for line, module in _imports(path):
            if module.startswith(".."):  # up from the node layer: only into the core
                ok = layer == "nodes" and module.split(".")[2] == "ace_plus_core"
            elif module.startswith("."):
                ok = True  # within the layer's own package
            else:
                root = module.split(".")[0]
                ok = root in STDLIB or root in ALLOWED[layer]
            if not ok:
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_release_differences_of_comfyui_live_in_compat():
    """Version checks of ComfyUI (``comfyui_version``, ``__version__``) only in nodes/compat.py (runner:
    runner/comfy_host.py)."""
    places = {REPO / "nodes" / "compat.py", REPO / "runner" / "comfy_host.py"}
    wrong = [f"{p.relative_to(REPO)}" for layer in ("ace_plus_core", "nodes", "runner") for p in (REPO / layer).glob("*.py")
             if p not in places and "comfyui_version" in p.read_text()]
    assert not wrong, wrong
