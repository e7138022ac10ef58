"""Where the tests find things outside the repository."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """The project's read-only shared/ folder: $ACE_SHARED_DIR, else beside the checkout (as on the development
    machines and in CI), else the developers' fixed path (a git worktree elsewhere)."""
    env = os.environ.get("ACE_SHARED_DIR")
    if env:
        return Path(env)
    for candidate in (REPO.parent / "shared", Path("/work/shared")):
        if candidate.is_dir():
            return candidate
    return REPO.parent / "shared"


def official_workflows_dir() -> Path:
    """The nine official ACE++ workflows: $ACE_OFFICIAL_WORKFLOWS, else shared/official_workflows."""
    env = os.environ.get("ACE_OFFICIAL_WORKFLOWS")
    return Path(env) if env else shared_dir() / "official_workflows"


def third_party_dir() -> Path:
    """Unchanged third-party trees for tests (ComfyUI 0.33.0, ComfyUI-GGUF): shared/third_party."""
    return shared_dir() / "third_party"


OFFICIAL_WORKFLOWS = official_workflows_dir()
