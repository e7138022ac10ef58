"""Shorthands for core calls that many tests make."""

from __future__ import annotations

from ace_plus_core.canvas import build_canvas
from ace_plus_core.crop import ContextSpec


def build_canvas_around_mask(*args, context: ContextSpec | None = None, **kwargs):
    """What ACE++ Canvas does with crop_to_mask: :func:`build_canvas` (exact fit) around each item's mask."""
    return build_canvas(*args, context=context or ContextSpec(), **kwargs)
