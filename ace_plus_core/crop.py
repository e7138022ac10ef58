"""Crop around the mask: spend the whole token budget on the region that changes (local edits).

For face swap, try-on, logo paste and regional edits only a small part of a large photo changes. Fitting the whole
photo to the budget renders that part with few pixels (a 300x380 face in a 2048x2048 photo gets about 80x100 px at
3072 tokens). Instead, per batch item:

1. **Box.** The bounding box of the (binarized, normalized: see :func:`.masks.normalize_mask`) mask, grown on every
   side by ``margin_rel`` x its own size plus ``margin_px`` pixels, then enlarged (around its centre) to at least
   ``min_size`` px on each side and to at most ``max_aspect``:1, and clamped into the image (shifted, not shrunk,
   when it runs over an edge; the image size is the limit). An empty mask means "edit everything": the box is the
   whole image. A box still beyond 4:1 (the image is too narrow or short to widen it) is never cut: the canvas pads
   its short side to 4:1 (:func:`.canvas.build_canvas`, exact fit), so every marked pixel is in the canvas.
2. **Common size.** ComfyUI batches share one size, so every item's box gets the same height and width: the largest
   over the batch (each keeps its own centre, clamped into the image).
3. **Scale.** With ``upscale`` the crops are enlarged (antialiased bilinear, at most ``max_upscale`` x) so that the
   canvas uses the budget; the canvas fit (:func:`.canvas.build_canvas`, exact mode) then shrinks them if needed.
   Without it (or when the crop already exceeds the budget) the canvas only ever scales down. The upscale never
   aims above :data:`MAX_UPSCALE_TOKENS`, whatever the budget.
4. **Geometry.** Each item's :class:`.geometry.CanvasGeometry` records its box in the source image, so cutting back
   and stitching (:mod:`.stitch`) invert the whole chain exactly.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from . import control, validate
from .canvas import (
    ALL_TASKS,
    GUIDED_TASKS,
    MAX_ASPECT_RATIO,
    CanvasResult,
    check_canvas_options,
    build_canvas,
)
from .geometry import plan_exact
from .masks import broadcast_batch, normalize_mask
from .resize import resize_bilinear_aa

__all__ = ["MAX_UPSCALE_TOKENS", "ContextSpec", "build_canvas_around_mask", "mask_crop_boxes"]

#: Upscaling a small crop aims at the budget, but never beyond this many tokens (the canvas node's largest budget,
#: a 4096x4096 canvas): an enormous budget must not turn an 8192 px crop into a 32768 px one.
MAX_UPSCALE_TOKENS = 65536


@dataclass(frozen=True)
class ContextSpec:
    """How much context around the mask the canvas keeps (see the module docstring)."""

    margin_rel: float = 0.25  #: grow the mask box by this fraction of its own height/width on every side
    margin_px: int = 32  #: plus this many pixels on every side
    min_size: int = 384  #: the box is at least this many px on each side (when the image allows)
    upscale: bool = True  #: enlarge small crops so the canvas uses the budget
    max_upscale: float = 4.0  #: at most this factor

    def __post_init__(self) -> None:
        checks = [
            ("context_margin", self.margin_rel, 0.0, 16.0),
            ("context_pixels", self.margin_px, 0, 1 << 16),
            ("min_crop_size", self.min_size, 1, 1 << 16),
            ("max_upscale", self.max_upscale, 1.0, 16.0),
        ]
        for name, value, lo, hi in checks:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (lo <= value <= hi):
                raise ValueError(f"{name} must be between {lo} and {hi}, got {value!r}")


Box = tuple[int, int, int, int]  # top, left, height, width


def _grow_to(start: int, length: int, target: int, limit: int) -> tuple[int, int]:
    """Grow the span [start, start+length) to ``target`` (<= limit) around its centre, shifted into [0, limit)."""
    target = min(max(target, length), limit)
    centre2 = 2 * start + length  # twice the centre, to stay in integers
    new_start = (centre2 - target) // 2
    new_start = min(max(new_start, 0), limit - target)
    return new_start, target


def _single_box(mask: torch.Tensor, spec: ContextSpec) -> Box:
    h, w = int(mask.shape[-2]), int(mask.shape[-1])
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    if rows.numel() == 0 or bool(mask.all()):
        return 0, 0, h, w
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    left, right = int(cols[0]), int(cols[-1]) + 1
    bh, bw = bottom - top, right - left
    grow_h = math.ceil(bh * spec.margin_rel) + spec.margin_px
    grow_w = math.ceil(bw * spec.margin_rel) + spec.margin_px
    top, bh = _grow_to(top, bh, bh + 2 * grow_h, h)
    left, bw = _grow_to(left, bw, bw + 2 * grow_w, w)
    top, bh = _grow_to(top, bh, spec.min_size, h)
    left, bw = _grow_to(left, bw, spec.min_size, w)
    # Keep within the canvas' aspect limit by growing the short side (never cutting the mask off); where the image
    # is too narrow for that, the canvas pads the box to 4:1.
    if bw > MAX_ASPECT_RATIO * bh:
        top, bh = _grow_to(top, bh, -(-bw // MAX_ASPECT_RATIO), h)
    elif bh > MAX_ASPECT_RATIO * bw:
        left, bw = _grow_to(left, bw, -(-bh // MAX_ASPECT_RATIO), w)
    return top, left, bh, bw


def mask_crop_boxes(mask: torch.Tensor, spec: ContextSpec) -> list[Box]:
    """One box per item of a binary ``[B, H, W]`` mask, all of the same size (see the module docstring)."""
    if mask.ndim != 3:
        raise ValueError(f"mask must be [B, H, W], got {tuple(mask.shape)}")
    h, w = int(mask.shape[-2]), int(mask.shape[-1])
    boxes = [_single_box(m > 0.5, spec) for m in mask]
    bh = max(b[2] for b in boxes)
    bw = max(b[3] for b in boxes)
    common = []
    for top, left, th, tw in boxes:
        top, nh = _grow_to(top, th, bh, h)
        left, nw = _grow_to(left, tw, bw, w)
        common.append((top, left, nh, nw))
    return common


def _crop(x: torch.Tensor, boxes: list[Box]) -> torch.Tensor:
    return torch.stack([x[i, t : t + h, lf : lf + w] for i, (t, lf, h, w) in enumerate(boxes)])


def build_canvas_around_mask(
    layout: str,
    task: str,
    reference_mode: str,
    reference_image: torch.Tensor | None,
    edit_image: torch.Tensor,
    edit_mask: torch.Tensor | None,
    max_image_tokens: float,
    keep_pixels_rate: float | None = None,
    *,
    context: ContextSpec = ContextSpec(),  # noqa: B008 (frozen dataclass)
    guidance: torch.Tensor | None = None,
    control_options: dict | None = None,
    guidance_name: str = "guidance",
) -> CanvasResult:
    """:func:`.canvas.build_canvas` (exact fit) on the region around each item's mask, geometry in source pixels.

    Same arguments as ``build_canvas`` (an edit image is required: reference-only generation has nothing to crop).
    Derived control guidance (canny, mosaic, gray) is computed on the whole edit image, then cropped, so it does not
    depend on where the crop falls.
    """
    if edit_image is None:
        raise ValueError("edit_image is required to crop around the mask; disconnect crop_to_mask for reference-only")
    # Checks first (cheap), before any full-size work.
    if task not in ALL_TASKS:
        raise ValueError(f"task must be one of {ALL_TASKS}, got {task!r}")
    _, keep_pixels_rate = check_canvas_options(layout, reference_mode, max_image_tokens, keep_pixels_rate)
    image = validate.check_image(edit_image, "edit_image")
    reference_image = validate.check_image(reference_image, "reference_image", optional=True)
    guidance = validate.check_image(guidance, guidance_name, optional=True)
    control_options = control.check_options(control_options)
    if not isinstance(context, ContextSpec):
        raise ValueError(f"context must be a ContextSpec, got {type(context).__name__}")
    batch, src_h, src_w = int(image.shape[0]), int(image.shape[1]), int(image.shape[2])
    if reference_image is not None:
        broadcast_batch(reference_image, batch, "reference_image", "edit_image")
    mask = normalize_mask(edit_mask, (src_h, src_w), batch, device=image.device)
    boxes = mask_crop_boxes(mask, context)
    crops = _crop(image, boxes)
    crop_masks = _crop(mask, boxes)
    crop_guidance = None
    if guidance is None and task in GUIDED_TASKS and task not in control.EXTERNAL_TASKS:
        guidance = control.derive_guidance(task, image, **control_options)
    if guidance is not None:
        g = guidance
        if tuple(g.shape[1:3]) != (src_h, src_w):
            raise ValueError(
                f"{guidance_name} is {g.shape[2]}x{g.shape[1]} but edit_image is {src_w}x{src_h}; with crop_to_mask "
                f"the {guidance_name} must have the edit image's size."
            )
        g = broadcast_batch(g, batch, guidance_name, "edit_image")
        crop_guidance = _crop(g, boxes)

    box_h, box_w = boxes[0][2], boxes[0][3]
    if context.upscale:
        ref_hw = None
        if reference_image is not None:
            ref_hw = (int(reference_image.shape[-3]), int(reference_image.shape[-2]))
        at_one = plan_exact((box_h, box_w), ref_hw, reference_mode, keep_pixels_rate or 0.8, float("inf"),
                            MAX_ASPECT_RATIO)
        aim = min(max_image_tokens, MAX_UPSCALE_TOKENS)
        factor = min(context.max_upscale, math.sqrt(aim / at_one.tokens))
        if factor > 1.0:
            up = (max(1, round(box_h * factor)), max(1, round(box_w * factor)))
            crops = resize_bilinear_aa(crops.movedim(-1, 1)[:, :3], up).movedim(1, -1).clamp(0, 1)
            crop_masks = (torch.nn.functional.interpolate(crop_masks.unsqueeze(1), size=up, mode="nearest-exact")
                          .squeeze(1))
            if crop_guidance is not None:
                crop_guidance = resize_bilinear_aa(crop_guidance.movedim(-1, 1)[:, :3], up).movedim(1, -1).clamp(0, 1)

    result = build_canvas(layout, task, reference_mode, reference_image, crops, crop_masks, max_image_tokens,
                          keep_pixels_rate, guidance=crop_guidance, fit="exact", control_options=control_options,
                          guidance_name=guidance_name)
    return dataclasses.replace(result, geometry=tuple(
        _to_source(g, box, (int(crops.shape[1]), int(crops.shape[2])), (src_h, src_w))
        for g, box in zip(result.geometry, boxes)
    ))


def _to_source(g, box: Box, crops_hw: tuple[int, int], src_hw: tuple[int, int]):
    """Re-express a geometry made on a (possibly enlarged) crop in the source image's pixels."""
    t, lf, h, w = box
    ry, rx = h / crops_hw[0], w / crops_hw[1]  # 1 unless the crop was enlarged
    top = t + round(g.crop_top * ry)
    left = lf + round(g.crop_left * rx)
    ch = min(max(1, round(g.crop_h * ry)), t + h - top)
    cw = min(max(1, round(g.crop_w * rx)), lf + w - left)
    return dataclasses.replace(
        g, source_h=src_hw[0], source_w=src_hw[1], crop_top=top, crop_left=left, crop_h=ch, crop_w=cw,
        scale_x=g.edit_w / cw, scale_y=g.edit_h / ch,
    )
