"""Canvas geometry (where each part of a canvas came from) and the arithmetic that sizes the canvas.

One :class:`CanvasGeometry` per batch item lets stitching cut the edit area out of a decoded canvas and put it back
into the edit image; the diagram and the field rules are in docs/CANVAS.md. Plain data (``to_dict`` / ``from_dict``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from . import validate
from .resize import resize_bilinear_aa, resize_nearest_exact

#: Pixels per token side (VAE factor 8, then 2x2 patches).
TOKEN_PX = 16
LAYOUTS = ("lora", "fft")
FITS = ("official", "exact")
REFERENCE_MODES = ("resize_to_height", "keep_pixels_pad")
#: Longest side / shortest side beyond which an image is centre-cropped (reference) or padded (exact fit).
MAX_ASPECT_RATIO = 4


@dataclass(frozen=True)
class CanvasGeometry:
    """Geometry of one canvas (one batch item). All sizes in pixels; fields as in docs/CANVAS.md."""

    layout: str  #: "lora" or "fft"
    fit: str  #: "official" (drop-in processors) or "exact" (canvas node)
    canvas_h: int  #: final canvas height (multiple of 16)
    canvas_w: int  #: final canvas width (multiple of 16)
    ref_w: int  #: reference strip width in the final canvas (0 without reference)
    edit_x0: int  #: first column of the edit area in the final canvas
    edit_y0: int  #: first row of the edit area in the final canvas
    edit_w: int  #: edit area width in the final canvas (padding excluded)
    edit_h: int  #: edit area height in the final canvas (padding excluded)
    pad_right: int  #: replicated columns right of the edit area (exact fit)
    pad_bottom: int  #: replicated rows below the edit area (exact fit)
    scale_x: float  #: edit_w / crop_w (official fit: canvas scale rW / W)
    scale_y: float  #: edit_h / crop_h (official fit: canvas scale rH / H)
    source_h: int  #: original edit image height (reference-only generation: the requested height)
    source_w: int  #: original edit image width
    crop_top: int  #: crop box in the source that the edit area represents
    crop_left: int
    crop_h: int
    crop_w: int
    reference_only: bool  #: True when there was no edit image (a blank edit area was generated)
    outpaint_top: int = 0  #: rows of gray added above the edit image (outpainting); the source includes them
    outpaint_bottom: int = 0
    outpaint_left: int = 0
    outpaint_right: int = 0

    # ---------------------------------------------------------------- views
    @property
    def tokens(self) -> int:
        """Image tokens of the canvas (one per 16x16 pixels)."""
        return (self.canvas_h // TOKEN_PX) * (self.canvas_w // TOKEN_PX)

    @property
    def crop_box(self) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the source region the edit area represents."""
        return (self.crop_top, self.crop_left, self.crop_h, self.crop_w)

    def edit_area_slice(self) -> tuple[slice, slice]:
        """(rows, cols) slices of the edit area in the canvas: ``canvas[:, rows, cols]`` for ``[B, H, W, C]``."""
        return slice(self.edit_y0, self.edit_y0 + self.edit_h), slice(self.edit_x0, self.edit_x0 + self.edit_w)


def check_geometries(geometry: Any, name: str = "geometry") -> tuple[CanvasGeometry, ...]:
    """A non-empty sequence of :class:`CanvasGeometry` (one per batch item) as a tuple; ``ValueError`` otherwise."""
    if isinstance(geometry, CanvasGeometry):
        return (geometry,)
    if not isinstance(geometry, (tuple, list)) or not geometry or not all(
        isinstance(g, CanvasGeometry) for g in geometry
    ):
        raise ValueError(
            f"{name} must be the geometry output of an ACE++ Canvas (one CanvasGeometry per batch item), got "
            f"{type(geometry).__name__}; connect the canvas node's geometry output."
        )
    return tuple(geometry)


def check_canvas_images(geometry: tuple[CanvasGeometry, ...], **images: Any) -> None:
    """Each IMAGE in ``images`` (name -> tensor) has one item per geometry and the canvas size it describes."""
    g = geometry[0]
    for name, image in images.items():
        image = validate.check_image(image, name)
        if image.shape[0] != len(geometry) or (image.shape[1], image.shape[2]) != (g.canvas_h, g.canvas_w):
            raise ValueError(
                f"{name} is {image.shape[2]}x{image.shape[1]} (batch {image.shape[0]}) but geometry describes "
                f"{len(geometry)} canvas(es) of {g.canvas_w}x{g.canvas_h}; connect both from the same ACE++ Canvas."
            )


def canvas_to_crop(
    canvas: torch.Tensor, geometry: CanvasGeometry, *, is_mask: bool = False, name: str = "canvas"
) -> torch.Tensor:
    """The edit area of a decoded canvas IMAGE (or, ``is_mask``, a MASK) resized to its crop box: antialiased
    bilinear for images (untouched when the size already matches), nearest-exact for masks. ``name``: for messages.
    """
    if not isinstance(geometry, CanvasGeometry):
        raise ValueError(f"geometry must be one CanvasGeometry (one batch item), got {type(geometry).__name__}")
    if is_mask:
        x = validate.check_mask(canvas, name, soft=True)  # float32, NaN -> 0, clamped to [0, 1]
    else:
        x = validate.check_image(canvas, name)
    h, w = int(x.shape[1]), int(x.shape[2])
    if (h, w) != (geometry.canvas_h, geometry.canvas_w):
        raise ValueError(
            f"the decoded canvas ({name}) is {w}x{h} but its geometry describes a "
            f"{geometry.canvas_w}x{geometry.canvas_h} canvas; decode the latent that was made from this canvas "
            "(without upscaling it)."
        )
    rows, cols = geometry.edit_area_slice()
    area = x[:, rows, cols]
    size = (geometry.crop_h, geometry.crop_w)
    if is_mask:
        return resize_nearest_exact(area, size)
    if (area.shape[1], area.shape[2]) == size:
        return area
    # A fresh tensor: clamping in place costs nothing and removes float overshoot of the filter weights.
    return resize_bilinear_aa(area.movedim(-1, 1), size).movedim(1, -1).clamp_(0.0, 1.0)


# ==================================================================== sizing arithmetic


def official_reference_size(
    ref_hw: tuple[int, int], edit_h: int, reference_mode: str, keep_pixels_rate: float | None
) -> tuple[int, int]:
    """Size the official processors resize the reference to (before padding), with their float arithmetic:
    ``resize_to_height`` to ``edit_h``; ``keep_pixels_pad`` to ``int(edit_h * rate)`` when at least that tall, else
    kept (never enlarged)."""
    H, W = ref_hw
    if reference_mode == "resize_to_height":
        return edit_h, int(W * (edit_h / H))
    if reference_mode == "keep_pixels_pad":
        if H >= keep_pixels_rate * edit_h:
            tH = int(edit_h * keep_pixels_rate)
            return tH, int(W * (tH / H)) if tH > 0 else 0
        return H, W
    raise ValueError(f"reference_mode must be one of {REFERENCE_MODES}, got {reference_mode!r}")


def official_canvas_size(height: int, width: int, budget: float) -> tuple[int, int]:
    """Official budget fit: ``scale = min(1, sqrt(budget / ((H/16)(W/16))))``, sides floored to multiples of 16
    (possibly 0: the caller reports that)."""
    d = TOKEN_PX
    scale = min(1.0, math.sqrt(budget / ((height / d) * (width / d))))
    return int(height * scale) // d * d, int(width * scale) // d * d


def ceil16(n: int) -> int:
    return -(-n // TOKEN_PX) * TOKEN_PX


def _round_div(num: int, den: int) -> int:
    """round(num / den) for non-negative integers, halves up, exactly."""
    return (2 * num + den) // (2 * den)


@dataclass(frozen=True)
class ExactPlan:
    """Sizes chosen by :func:`plan_exact` (content sizes, then the padded strips)."""

    edit_h: int  #: edit content height in the canvas
    edit_w: int  #: edit content width in the canvas
    refs: tuple[tuple[int, int], ...]  #: (h, w) of each reference after resizing, in canvas order
    canvas_h: int  #: ceil16(edit_h), or more to keep the edit strip within max_aspect:1
    ref_strips: tuple[int, ...]  #: ceil16(w) of each reference
    edit_strip_w: int  #: ceil16(edit_w), or more to keep the edit strip within max_aspect:1

    @property
    def ref_h(self) -> int:  #: the first reference's height (0 without reference)
        return self.refs[0][0] if self.refs else 0

    @property
    def ref_w(self) -> int:
        return self.refs[0][1] if self.refs else 0

    @property
    def ref_strip_w(self) -> int:
        return sum(self.ref_strips)

    @property
    def canvas_w(self) -> int:
        return self.ref_strip_w + self.edit_strip_w

    @property
    def tokens(self) -> int:
        return (self.canvas_h // TOKEN_PX) * (self.canvas_w // TOKEN_PX)


def reference_sizes(ref_hw) -> tuple[tuple[int, int], ...]:
    """``ref_hw`` (None, one (h, w) or a sequence of them) as a tuple of (h, w)."""
    if ref_hw is None:
        return ()
    if len(ref_hw) == 2 and all(isinstance(v, int) for v in ref_hw):
        return (tuple(ref_hw),)
    return tuple(tuple(hw) for hw in ref_hw)


def _exact_sizes(
    h: int, crop_hw: tuple[int, int], ref_hws: tuple[tuple[int, int], ...], reference_mode: str,
    keep_pixels_rate: float | None, max_aspect: int | None = None,
) -> ExactPlan:
    ch, cw = crop_hw
    w = max(1, _round_div(cw * h, ch))
    refs = []
    for Hr, Wr in ref_hws:
        if reference_mode == "resize_to_height":
            rh = h
        else:
            # The official rule at the source scale (shrink to rate x edit height, never enlarge), then scaled with
            # the edit area so the reference keeps its size relative to the edit image.
            tH = int(ch * keep_pixels_rate) if Hr >= keep_pixels_rate * ch else Hr
            rh = min(h, max(1, _round_div(tH * h, ch)))
        refs.append((rh, max(1, _round_div(Wr * rh, Hr))))
    strip_h, strip_w = ceil16(h), ceil16(w)
    if max_aspect and (cw > max_aspect * ch or ch > max_aspect * cw):
        # Pad the short side (bottom or right) so that the edit strip is within max_aspect:1.
        strip_h = max(strip_h, ceil16(-(-strip_w // max_aspect)))
        strip_w = max(strip_w, ceil16(-(-strip_h // max_aspect)))
    return ExactPlan(edit_h=h, edit_w=w, refs=tuple(refs), canvas_h=strip_h,
                     ref_strips=tuple(ceil16(rw) for _, rw in refs), edit_strip_w=strip_w)


def plan_exact(
    crop_hw: tuple[int, int], ref_hw, reference_mode: str, keep_pixels_rate: float | None, max_image_tokens: float,
    max_aspect: int | None = None,
) -> ExactPlan:
    """The exact-fit sizes: the largest edit height (at most the crop's) whose canvas fits ``max_image_tokens``.

    Edit area = crop x ``s = edit_h / crop_h``; each reference (``ref_hw``: None, one (h, w) or several) is sized from
    the same ``edit_h``; strips are padded to multiples of 16 and, with ``max_aspect``, a crop beyond it to
    ``max_aspect``:1. An edit side below 16 px (or its original size if smaller) is a ``ValueError``.
    """
    ch, cw = crop_hw
    ref_hws = reference_sizes(ref_hw)

    def plan(h: int) -> ExactPlan:
        return _exact_sizes(h, crop_hw, ref_hws, reference_mode, keep_pixels_rate, max_aspect)

    full = plan(ch)
    if full.tokens <= max_image_tokens:
        return full
    # Smallest acceptable edit height: both edit sides at least min(16, original side).
    lo = min(16, ch)
    while lo < ch and plan(lo).edit_w < min(16, cw):
        lo += 1
    smallest = plan(lo)
    if smallest.tokens > max_image_tokens:
        raise ValueError(
            f"max_image_tokens={max_image_tokens:g} is too small: the smallest canvas that keeps the edit area at "
            f"least 16 px ({smallest.canvas_w}x{smallest.canvas_h}) needs {smallest.tokens} tokens. Raise "
            f"max_image_tokens to at least {smallest.tokens}."
        )
    # Tokens grow monotonically with the edit height: binary search the largest height that fits.
    good, bad = lo, ch
    while bad - good > 1:
        mid = (good + bad) // 2
        if plan(mid).tokens <= max_image_tokens:
            good = mid
        else:
            bad = mid
    return plan(good)
