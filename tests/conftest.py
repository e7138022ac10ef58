"""Test fixtures: a real ComfyUI booted in-process on the CPU, with this pack in its custom_nodes/.

Tests that only need ``ace_plus_core`` do not touch these fixtures and never import ComfyUI.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
for p in (REPO, REPO / "tools"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

TEST_NODES = Path(__file__).resolve().parent / "comfy_test_nodes"


@pytest.fixture(scope="session")
def comfy_host(tmp_path_factory):
    """ComfyUI booted once per test session (it keeps process-wide state), the pack loaded by its own loader."""
    import comfy_host as host_module

    return host_module.boot(tmp_path_factory.mktemp("comfy_base"), extra_custom_nodes=(TEST_NODES,))
