"""Crop to mask: the box around each item's mask and the upscale that spends the budget on it (docs/CANVAS.md).

The canvas (:func:`.canvas.build_canvas` with ``context``) plans the box and the scale in its one preparation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import limits, validate
from .geometry import MAX_ASPECT_RATIO, plan_exact

#: Upscaling a small crop aims at the budget, but never beyond this many tokens (the canvas node's largest budget,
#: a 4096x4096 canvas): an enormous budget must not turn an 8192 px crop into a 32768 px one.
MAX_UPSCALE_TOKENS = 65536


@dataclass(frozen=True)
class ContextSpec:
    """How much context around the mask the canvas keeps (docs/CANVAS.md, step 4)."""

    margin_rel: float = 0.25  #: grow the mask box by this fraction of its own height/width on every side
    margin_px: int = 32  #: plus this many pixels on every side
    min_size: int = 384  #: the box is at least this many px on each side (when the image allows)
    upscale: bool = True  #: enlarge small crops so the canvas uses the budget
    max_upscale: float = 4.0  #: at most this factor

    def __post_init__(self) -> None:
        limits.CONTEXT_MARGIN.check(self.margin_rel, "context_margin")
        limits.CONTEXT_PIXELS.check(self.margin_px, "context_pixels")
        limits.MIN_CROP_SIZE.check(self.min_size, "min_crop_size")
        validate.check_number(self.max_upscale, "max_upscale", 1.0, 16.0)


Box = tuple[int, int, int, int]  # top, left, height, width


def _grow_to(start: int, length: int, target: int, limit: int) -> tuple[int, int]:
    """Grow the span [start, start+length) to ``target`` (<= limit) around its centre, shifted into [0, limit)."""
    target = min(max(target, length), limit)
    new_start = (2 * start + length - target) // 2  # twice the centre, to stay in integers
    return min(max(new_start, 0), limit - target), target


def _single_box(mask: torch.Tensor, spec: ContextSpec) -> Box:
    h, w = int(mask.shape[-2]), int(mask.shape[-1])
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    if rows.numel() == 0 or bool(mask.all()):
        return 0, 0, h, w
    top, bh = int(rows[0]), int(rows[-1]) + 1 - int(rows[0])
    left, bw = int(cols[0]), int(cols[-1]) + 1 - int(cols[0])
    top, bh = _grow_to(top, bh, bh + 2 * (math.ceil(bh * spec.margin_rel) + spec.margin_px), h)
    left, bw = _grow_to(left, bw, bw + 2 * (math.ceil(bw * spec.margin_rel) + spec.margin_px), w)
    top, bh = _grow_to(top, bh, spec.min_size, h)
    left, bw = _grow_to(left, bw, spec.min_size, w)
    # Within 4:1 by growing the short side (never cutting the mask off); where the image is too narrow for that,
    # the canvas pads the box to 4:1.
    if bw > MAX_ASPECT_RATIO * bh:
        top, bh = _grow_to(top, bh, -(-bw // MAX_ASPECT_RATIO), h)
    elif bh > MAX_ASPECT_RATIO * bw:
        left, bw = _grow_to(left, bw, -(-bh // MAX_ASPECT_RATIO), w)
    return top, left, bh, bw


def mask_crop_boxes(mask: torch.Tensor, spec: ContextSpec) -> list[Box]:
    """One box per item of a binary ``[B, H, W]`` mask, all of the batch's largest size, each around its centre."""
    if mask.ndim != 3:
        raise ValueError(f"mask must be [B, H, W], got {tuple(mask.shape)}")
    h, w = int(mask.shape[-2]), int(mask.shape[-1])
    boxes = [_single_box(m > 0.5, spec) for m in mask]
    bh, bw = max(b[2] for b in boxes), max(b[3] for b in boxes)
    return [(*_grow_to(t, th, bh, h)[:1], *_grow_to(lf, tw, bw, w)[:1], bh, bw) for t, lf, th, tw in boxes]


def upscale_size(
    box_hw: tuple[int, int], ref_hws: tuple[tuple[int, int], ...], spec: ContextSpec, reference_mode: str,
    keep_pixels_rate: float | None, max_image_tokens: float,
) -> tuple[int, int] | None:
    """The size a box is enlarged to so that the canvas uses the budget (at most ``max_upscale`` x, never above
    :data:`MAX_UPSCALE_TOKENS`); None when it is not enlarged."""
    if not spec.upscale:
        return None
    at_one = plan_exact(box_hw, ref_hws, reference_mode, keep_pixels_rate or 0.8, float("inf"), MAX_ASPECT_RATIO)
    factor = min(spec.max_upscale, math.sqrt(min(max_image_tokens, MAX_UPSCALE_TOKENS) / at_one.tokens))
    if factor <= 1.0:
        return None
    return max(1, round(box_hw[0] * factor)), max(1, round(box_hw[1] * factor))

