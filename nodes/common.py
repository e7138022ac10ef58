"""Shared bits of the node layer: the menu root, custom socket types and widget checks."""

from __future__ import annotations

from comfy_api.v0_0_2 import io

from ..ace_plus_core import validate

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


def check_widgets(node_cls: type[io.ComfyNode], _given: bool = True, **values) -> None:
    """Check widget values against the node's own schema (kind, finite, min..max); ``ValueError`` naming the input.

    Nodes call this from ``validate_inputs`` (so the user sees the problem before the run) and again at the top of
    ``execute`` (values that arrive through links, or direct calls, are not seen by ``validate_inputs``). ComfyUI
    skips its own min/max check for every input that ``validate_inputs`` takes, so this one must cover them.
    In ``execute`` every value must be given (``_given``); for ``validate_inputs`` None means "not given or
    linked" and passes.
    """
    specs = {i.id: i for i in node_cls.define_schema().inputs}
    for name, value in values.items():
        if value is None:
            if _given:
                raise ValueError(f"{name} has no value; set the widget (or connect a value to it).")
            continue
        spec = specs[name]
        if isinstance(spec, io.Int.Input):
            validate.check_number(value, name, spec.min, spec.max, integer=True)
        elif isinstance(spec, io.Float.Input):
            validate.check_number(value, name, spec.min, spec.max)
        elif isinstance(spec, io.Combo.Input):
            validate.check_choice(value, name, spec.options)


def widget_message(node_cls: type[io.ComfyNode], check=None, **values) -> bool | str:
    """``validate_inputs`` result: True, or the message of the first failing widget check (then ``check``)."""

    def run() -> None:
        check_widgets(node_cls, False, **values)
        if check is not None:
            check(**values)

    return validate.message_of(run)

