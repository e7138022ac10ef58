"""Where the tests find things outside the repository."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def official_workflows_dir() -> Path:
    """The nine official ACE++ workflows: $ACE_OFFICIAL_WORKFLOWS, else shared/ beside the checkout (as on the
    development machines and in CI), else the developers' fixed path."""
    env = os.environ.get("ACE_OFFICIAL_WORKFLOWS")
    if env:
        return Path(env)
    for candidate in (REPO.parent / "shared" / "official_workflows", Path("/work/shared/official_workflows")):
        if candidate.is_dir():
            return candidate
    return REPO.parent / "shared" / "official_workflows"


OFFICIAL_WORKFLOWS = official_workflows_dir()
