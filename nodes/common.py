"""Shared bits of the node layer: the menu root, custom socket types and error translation."""

from __future__ import annotations

from comfy_api.v0_0_2 import io

CATEGORY = "ACE++"

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
