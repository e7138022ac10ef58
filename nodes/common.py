"""Shared bits of the node layer: the menu root, custom socket types and the check of values given to execute."""

from __future__ import annotations

import logging

from comfy_api.v0_0_2 import io

from ..ace_plus_core import validate
from . import compat

logger = logging.getLogger(__name__)

CATEGORY = "ACE++"
#: Widgets most users never change, folded away where the frontend and ComfyUI support it.
ADVANCED = compat.input_options(advanced=True)


def aliases(*words: str) -> dict:
    """Search aliases for the node library, where the running ComfyUI supports them."""
    return compat.schema_options(search_aliases=list(words))

# Canvas geometry (a tuple of ace_plus_core.geometry.CanvasGeometry, one per batch item), carried from the canvas
# node to the conditioning and cut-back/stitch nodes.
Geometry = io.Custom("ACE_PLUS_GEOMETRY")

TASK_TOOLTIP = (
    "repainting: the masked area is blanked and generated from the prompt/reference. no_preprocess: the pixels "
    "under the mask are guidance (a control image, a low-resolution image to refine). Control tasks put guidance "
    "under the mask: recolorizing derives it (grayscale) from the edit image, no download; contour_repainting and "
    "depth_repainting need a line drawing / depth map connected to control_image (e.g. from a preprocessor node). "
    "A connected control_image is used as the guidance by every task but repainting."
)
CANVAS_TASK_TOOLTIP = TASK_TOOLTIP + (
    " canny_repainting (Canny edges, thresholds below) and mosaic_repainting (pixelated, mosaic_ratio) are derived "
    "from the edit image too."
)


def check_widgets(node_cls: type[io.ComfyNode], **values) -> None:
    """Check values given to ``execute`` against the node's own schema (kind, finite, min..max, options); a
    ``ValueError`` naming the input. ComfyUI checks widget values before the run, but not values that arrive
    through links (a widget converted to an input) or direct calls."""
    specs = {i.id: i for i in node_cls.define_schema().inputs}
    for name, value in values.items():
        spec = specs[name]
        if isinstance(spec, io.Combo.Input):
            if not isinstance(value, str) or value not in spec.options:
                raise ValueError(f"{name} must be one of {tuple(spec.options)}, got {value!r}.")
        else:
            validate.check_number(value, name, spec.min, spec.max, integer=isinstance(spec, io.Int.Input))


def warning_ui(node_cls: type[io.ComfyNode], message: str | None) -> dict | None:
    """Say ``message`` where the user looks: a WARNING in the log, text on the node in the frontend (the server's
    progress text, shown under the node; the node's schema asks for the hidden ``unique_id``) and the node's ui
    output ``{"text": [message]}`` (in the prompt's history, for API clients). None (no ui) without a message."""
    if message is None:
        return None
    name = node_cls.define_schema().display_name
    logger.warning("%s: %s", name, message)
    node_id = node_cls.hidden.unique_id if node_cls.hidden is not None else None
    try:
        from server import PromptServer
    except ImportError:  # ComfyUI without its server module (an embedding): the log and ui output remain
        PromptServer = None
    server = getattr(PromptServer, "instance", None)  # absent when ComfyUI runs headless (no web server)
    if node_id is not None and server is not None and hasattr(server, "send_progress_text"):
        server.send_progress_text(f"Warning: {message}", node_id)
    return {"text": [message]}
