"""The ACE++ canvas: reference left, edit image right, one mask, fitted to a token budget.

One preparation per call (mask rules, guidance, crop box, upscale), then one of two fits: ``"official"`` (the
drop-in processors' arithmetic) or ``"exact"`` (the canvas node). The full specification: docs/CANVAS.md.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from . import control, limits, validate
from .crop import ContextSpec, mask_crop_boxes, upscale_size
from .geometry import (
    FITS, LAYOUTS, MAX_ASPECT_RATIO, REFERENCE_MODES, TOKEN_PX, CanvasGeometry, official_canvas_size,
    ceil16, official_reference_size, plan_exact,
)
from .masks import broadcast_batch, match_guidance, normalize_mask, outpaint_mask, wxh
from .stitch import blend_weight
from .resize import (
    center_crop_box, nearest_exact_indices, pad_constant, pad_replicate, resize_bilinear_aa, resize_nearest_exact,
)

logger = logging.getLogger(__name__)

#: Task names of the official ComfyUI nodes, in the official order.
TASKS = ("repainting", "no_preprocess", "contour_repainting", "depth_repainting", "recolorizing")
#: Control tasks of the official local-editing config beyond the ComfyUI nodes' list.
EXTRA_TASKS = ("canny_repainting", "mosaic_repainting")
ALL_TASKS = TASKS + EXTRA_TASKS
#: Tasks whose guidance the official code derives from the edit image with an annotator.
GUIDED_TASKS = ("contour_repainting", "depth_repainting", "recolorizing", "canny_repainting", "mosaic_repainting")
#: The official FFT processor's default keep_pixels_rate.
DEFAULT_KEEP_PIXELS_RATE = 0.8

Box = tuple[int, int, int, int]  # top, left, height, width


@dataclass(frozen=True)
class CanvasResult:
    """Canvases ``image`` ``[B, H, W, 3]`` and ``mask`` ``[B, H, W]`` (0 over the reference); FFT also ``uc_image``
    and ``c_image`` (None for LoRA); one :class:`CanvasGeometry` per item."""

    image: torch.Tensor
    mask: torch.Tensor
    uc_image: torch.Tensor | None
    c_image: torch.Tensor | None
    geometry: tuple[CanvasGeometry, ...]


@dataclass(frozen=True)
class OfficialResult(CanvasResult):
    """Plus the official integer outputs: the edit size before budget resizing and the edit area's first column."""

    out_h: int
    out_w: int
    slice_w: int


@dataclass
class _Prepared:
    """The edit area of every item, cropped (and upscaled), guidance composited; the reference shifted by -0.5."""

    edit: torch.Tensor  # [B, 3, h, w] in [0, 1]
    mask: torch.Tensor  # [B, 1, h, w] in {0, 1}
    refs: list[torch.Tensor]  # each [B or 1, 3, Hr, Wr], shifted by -0.5, in canvas order
    source_hw: tuple[int, int]  # of the edit image, outpainting included
    boxes: list[Box]  # per item, in source pixels
    reference_only: bool
    repaint: bool  # blank the masked area (task repainting at repainting_scale 1)
    outpaint: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, bottom, left, right


#: Input names of the references, in canvas order (left to right).
REFERENCE_NAMES = ("reference_image", "reference_image_2", "reference_image_3")


# ==================================================================== public API


def build_canvas(
    layout: str, task: str, reference_mode: str, reference_image: torch.Tensor | None = None,
    edit_image: torch.Tensor | None = None, edit_mask: torch.Tensor | None = None, max_image_tokens: float = 4096,
    keep_pixels_rate: float | None = None, height: int = 1024, width: int = 1024, *,
    control_image: torch.Tensor | None = None, fit: str = "exact", control_options: Mapping[str, Any] | None = None,
    context: ContextSpec | None = None, repainting_scale: float = 1.0,
    outpaint: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> CanvasResult:
    """Build ACE++ canvases (docs/CANVAS.md).

    ``layout`` ``"lora"`` / ``"fft"``; ``task`` in :data:`ALL_TASKS`; ``reference_mode`` ``"resize_to_height"`` /
    ``"keep_pixels_pad"`` (``keep_pixels_rate`` None: 0.8). Without ``edit_image`` a blank ``height`` x ``width``
    area is generated. ``control_image`` replaces the edit pixels under the mask (control tasks, ``no_preprocess``);
    ``control_options``: :func:`.control.derive_guidance`'s options. ``context`` (exact fit): crop around the mask.
    ``reference_image`` may be a sequence of up to three references (exact fit), laid left to right.
    ``repainting_scale`` (task repainting): the masked area becomes ``0.5 + (x - 0.5) * (1 - scale)`` before
    resizing (1 blanks it). ``outpaint`` (top, bottom, left, right) px extend the edit image with a masked gray area.
    Bad input is a ``ValueError`` naming the input as the nodes do.
    """
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    if context is not None:
        if edit_image is None:
            raise ValueError(
                "edit_image is required to crop around the mask; disconnect crop_to_mask for reference-only"
            )
        if not isinstance(context, ContextSpec) or fit != "exact":
            raise ValueError(f"context must be a ContextSpec (exact fit only), got {type(context).__name__}")
    if task not in ALL_TASKS:
        raise ValueError(f"task must be one of {ALL_TASKS}, got {task!r}")
    budget, keep_pixels_rate = check_canvas_options(layout, reference_mode, max_image_tokens, keep_pixels_rate)
    refs = _references(reference_image, fit)
    scale = limits.REPAINTING_SCALE.check(repainting_scale, "repainting_scale")
    outpaint = _check_outpaint(outpaint, edit_image)
    p = _prepare(task, refs, edit_image, edit_mask, control_image, height, width, control.check_options(control_options),
                 fit, context, (reference_mode, keep_pixels_rate, budget), scale, outpaint)
    if fit == "official":
        canvas, mask, geometry = _fit_official(p, reference_mode, keep_pixels_rate, budget)
    else:
        canvas, mask, geometry = _fit_exact(p, reference_mode, keep_pixels_rate, budget)
    return _finish(canvas, mask, p, layout, fit, geometry)


def official_processor(
    layout: str, reference_image: torch.Tensor | None = None, edit_image: torch.Tensor | None = None,
    edit_mask: torch.Tensor | None = None, use_reference: bool = True, task_type: str = "repainting",
    height: int = 1024, width: int = 1024, max_seq_length: float = 3072, keep_pixels_rate: float | None = None, *,
    control_image: torch.Tensor | None = None, control_options: Mapping[str, Any] | None = None,
) -> OfficialResult:
    """Drop-in for the official ``AcePlusLoraProcessor`` (``layout="lora"``) / ``AcePlusFFTProcessor`` (``"fft"``).

    The official canvas (LoRA budget ``2 x max_seq_length``, reference resized to the edit height; FFT budget
    ``max_seq_length``, reference shrunk to ``keep_pixels_rate`` x edit height and padded) without its defects. As
    officially, ``use_reference=False`` drops the reference only when there is an edit image. Sockets: LoRA
    ``IMAGE, MASK``; FFT ``UC_IMAGE, C_IMAGE, MASK``; both ``OUT_H, OUT_W, SLICE_W``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if task_type not in ALL_TASKS:
        raise ValueError(f"task_type must be one of {ALL_TASKS}, got {task_type!r}")
    if not use_reference and edit_image is not None:
        reference_image = None
    budget = _check_budget(max_seq_length, "max_seq_length")
    if layout == "lora":
        reference_mode, budget = "resize_to_height", 2 * budget
    else:
        reference_mode = "keep_pixels_pad"
    result = build_canvas(layout, task_type, reference_mode, reference_image, edit_image, edit_mask, budget,
                          keep_pixels_rate, height, width, control_image=control_image, fit="official",
                          control_options=control_options)
    g = result.geometry[0]
    return OfficialResult(result.image, result.mask, result.uc_image, result.c_image, result.geometry,
                          out_h=g.crop_h, out_w=g.crop_w, slice_w=g.edit_x0)


def soft_mask(mask: torch.Tensor, geometry: tuple[CanvasGeometry, ...], seam_px: int) -> torch.Tensor:
    """A soft copy of a canvas ``mask`` for the sampler's noise mask: grown by ``seam_px // 2`` and feathered outward
    over ``seam_px`` (:func:`.stitch.blend_weight`), 0 over the reference strips. The model's mask stays binary."""
    seam_px = limits.SOFT_SEAM_PX.check(seam_px, "soft_seam_px")
    soft = blend_weight(mask > 0.5, seam_px // 2, seam_px)
    for i, g in enumerate(geometry):
        soft[i, :, : g.edit_x0] = 0
    return soft


def aspect_crop_box(height: int, width: int, max_aspect: int = MAX_ASPECT_RATIO) -> Box:
    """The centre crop (top, left, h, w) that limits an image to ``max_aspect``:1 (torchvision's offset rule)."""
    h, w = min(height, max_aspect * width), min(width, max_aspect * height)
    return (*center_crop_box(height, width, h, w), h, w)


def check_canvas_options(
    layout: str, reference_mode: str, max_image_tokens: float, keep_pixels_rate: float | None
) -> tuple[float, float | None]:
    """Check the layout, reference mode, budget and keep_pixels_rate of a canvas; returns (budget, rate)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if reference_mode not in REFERENCE_MODES:
        raise ValueError(f"reference_mode must be one of {REFERENCE_MODES}, got {reference_mode!r}")
    budget = _check_budget(max_image_tokens, "max_image_tokens")
    if reference_mode == "keep_pixels_pad":
        keep_pixels_rate = _check_keep_pixels_rate(keep_pixels_rate)
    return budget, keep_pixels_rate


def _references(reference_image, fit: str) -> list[tuple[str, torch.Tensor]]:
    """(name, checked IMAGE) of each connected reference, in canvas order."""
    given = reference_image if isinstance(reference_image, (list, tuple)) else [reference_image]
    if len(given) > len(REFERENCE_NAMES):
        raise ValueError(f"at most {len(REFERENCE_NAMES)} references fit a canvas, got {len(given)}")
    refs = [(n, validate.check_image(r, n)) for n, r in zip(REFERENCE_NAMES, given) if r is not None]
    if len(refs) > 1 and fit != "exact":
        raise ValueError("the official canvas takes one reference_image; use ACE++ Canvas for several references")
    return refs


def _check_outpaint(outpaint, edit_image) -> tuple[int, int, int, int]:
    sides = tuple(limits.OUTPAINT_PX.check(v, f"outpaint_{n}") for v, n in
                  zip(outpaint, ("top", "bottom", "left", "right"), strict=True))
    if any(sides) and edit_image is None:
        raise ValueError("outpainting extends the edit_image: connect one, or set the outpaint_* widgets to 0")
    return sides


def _check_budget(value: float, name: str) -> float:
    return validate.check_number(value, name, 0, low_open=True, what="image tokens, 16x16 px each")


def _check_keep_pixels_rate(rate: float | None) -> float:
    return DEFAULT_KEEP_PIXELS_RATE if rate is None else validate.check_number(
        rate, "keep_pixels_rate", 0, 1, low_open=True, what="the largest reference height / the edit height")


def _to_bchw(image: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Checked IMAGE -> RGB ``[B, 3, H, W]`` view on ``device`` in ``dtype``."""
    return validate.rgb(image).to(device=device, dtype=dtype).permute(0, 3, 1, 2)


def _centred(ref: torch.Tensor, h: int) -> torch.Tensor:
    """A (shifted) reference shorter than ``h`` centred vertically on gray, 0 here (keep_pixels_pad)."""
    top = (h - ref.shape[-2]) // 2
    return pad_constant(ref, 0, top, 0, h - ref.shape[-2] - top)


def _crop(x: torch.Tensor, boxes: list[Box]) -> torch.Tensor:
    """Each item's box of ``[B, C, H, W]`` (a view when all boxes agree)."""
    if len(set(boxes)) == 1:
        t, lf, h, w = boxes[0]
        return x[..., t : t + h, lf : lf + w]
    return torch.stack([x[i, :, t : t + h, lf : lf + w] for i, (t, lf, h, w) in enumerate(boxes)])


# ==================================================================== preparation


def _prepare(
    task: str, refs: list[tuple[str, torch.Tensor]], edit_image: torch.Tensor | None, edit_mask: torch.Tensor | None,
    guidance: torch.Tensor | None, height: int, width: int, control_options: Mapping[str, Any], fit: str,
    context: ContextSpec | None, plan_args: tuple[str, float | None, float], scale: float = 1.0,
    outpaint: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> _Prepared:
    repaint = task == "repainting"
    fade = repaint and 0 < scale < 1  # repainting_scale below 1 keeps a faint version of the masked content
    # Every image is checked (shape, channels, finite; clamped to [0, 1]) before any work is done.
    edit_image = validate.check_image(edit_image, "edit_image", optional=True)
    guidance = validate.check_image(guidance, "control_image", optional=True)
    if guidance is not None and edit_image is None:
        raise ValueError("control_image needs an edit_image: it replaces the edit image's pixels under the mask.")
    if guidance is not None and context is not None and guidance.shape[1:3] != edit_image.shape[1:3]:
        raise ValueError(
            f"control_image is {guidance.shape[2]}x{guidance.shape[1]} but edit_image is {edit_image.shape[2]}x"
            f"{edit_image.shape[1]}; with crop_to_mask the control_image must have the edit image's size."
        )
    if guidance is not None and repaint:
        raise ValueError("control_image is not used by task 'repainting' (it blanks the masked area); use "
                         "'no_preprocess' or a control task to keep guidance pixels under the mask, or disconnect "
                         "control_image.")
    anchor = edit_image if edit_image is not None else refs[0][1] if refs else None
    device = anchor.device if anchor is not None else torch.device("cpu")
    dtype = torch.float64 if anchor is not None and anchor.dtype == torch.float64 else torch.float32
    owner = "edit_image" if edit_image is not None else refs[0][0] if refs else "the blank edit area"
    batch = int(anchor.shape[0]) if anchor is not None else 1  # checked IMAGEs are [B, H, W, C]

    prepared_refs, raw_ref_hws = [], [(int(image.shape[1]), int(image.shape[2])) for _, image in refs]
    for name, image in refs:
        ref = _to_bchw(image, device, dtype)
        broadcast_batch(ref, batch, name, owner)  # checks the batch; the fits expand a batch of 1
        rH, rW = int(ref.shape[-2]), int(ref.shape[-1])
        top, left, ch, cw = aspect_crop_box(rH, rW)
        if (ch, cw) != (rH, rW):
            logger.info("%s %s centre-cropped to %s (aspect ratio > %d:1)", name, wxh((rH, rW)), wxh((ch, cw)),
                        MAX_ASPECT_RATIO)
            ref = ref[..., top : top + ch, left : left + cw]
        prepared_refs.append(ref - 0.5)
    ref_hws = [(int(r.shape[-2]), int(r.shape[-1])) for r in prepared_refs]

    if edit_image is None:
        if edit_mask is not None:
            logger.warning("edit_mask is ignored without an edit_image (reference-only generation edits everything)")
        height = validate.check_side(height, "height", limits.MAX_SIDE)
        width = validate.check_side(width, "width", limits.MAX_SIDE)
        # Constant planes as stride-0 views: a 16384 px blank area costs no memory (the fits never copy it whole).
        edit = torch.full((1, 1, 1, 1), 0.5, dtype=dtype, device=device).expand(batch, 3, height, width)
        mask = torch.ones((1, 1, 1, 1), dtype=dtype, device=device).expand(batch, 1, height, width)
        return _Prepared(edit, mask, prepared_refs, (height, width), [(0, 0, height, width)] * batch, True, repaint)

    if any(outpaint):
        edit_mask = _outpainted_mask(edit_image, edit_mask, guidance, outpaint, batch)
    # The source: edit_image extended by ``outpaint``; only the crop boxes of it (and the operators' context) are
    # ever read (:func:`_window`), so a big photo costs what reaches the canvas.
    H, W = _outpainted_hw(edit_image, outpaint)
    mask = normalize_mask(edit_mask, (H, W), batch, device=device, dtype=dtype).unsqueeze(1)
    if context is not None:
        boxes = mask_crop_boxes(mask[:, 0], context)
    else:  # the exact fit pads an edit image beyond 4:1 instead of cutting it, where the padded canvas fits
        whole = fit == "exact" and _padding_fits((H, W), ref_hws, *plan_args)
        boxes = [(0, 0, H, W) if whole else aspect_crop_box(H, W)] * batch
    top, left, ch, cw = boxes[0]
    if context is None and (ch, cw) != (H, W):
        marked = mask.flatten(1).sum(dim=1)
        cut = (mask[..., top : top + ch, left : left + cw].flatten(1).sum(dim=1) < marked) & (marked < H * W)
        if bool(cut.any()):
            raise ValueError(
                f"edit_mask (item {int(cut.nonzero()[0, 0])}) marks pixels outside the part of edit_image that "
                f"goes into the canvas: edit_image is {wxh((H, W))}, beyond {MAX_ASPECT_RATIO}:1, so only its "
                f"centre {wxh((ch, cw))} is used and those pixels would not be edited. Crop the photo around the "
                f"area to edit (aspect ratio at most {MAX_ASPECT_RATIO}:1) and pass the matching mask, or use "
                "ACE++ Canvas, which pads such photos instead of cutting them (raise max_image_tokens if the padded "
                "photo does not fit)."
            )
        logger.info("edit_image %s centre-cropped to %s (aspect ratio > %d:1)", wxh((H, W)), wxh((ch, cw)),
                    MAX_ASPECT_RATIO)
    if guidance is not None:  # the edit image's size (checked with crop to mask and outpainting), else resized to it
        guidance = broadcast_batch(guidance, batch, "control_image", owner)
        hw = (int(edit_image.shape[1]), int(edit_image.shape[2]))
        if tuple(guidance.shape[1:3]) != hw:
            guidance = match_guidance(_to_bchw(guidance, device, dtype), hw, name="control_image").permute(0, 2, 3, 1)
        guidance = _boxed(guidance, boxes, outpaint)
    elif task in GUIDED_TASKS:
        if task in control.EXTERNAL_TASKS:
            what = "line drawing" if task == "contour_repainting" else "depth map"
            raise ValueError(
                f"task {task!r} needs a control image ({what} of the edit image): connect one to "
                f"control_image (e.g. from a lineart / depth preprocessor node). This pack does not run the "
                "neural annotators (they would download weights)."
            )
        guidance = _derived_guidance(task, edit_image, boxes, outpaint, control_options)
    up = upscale_size(boxes[0][2:], raw_ref_hws, context, *plan_args) if context is not None else None
    mask = _crop(mask, boxes)

    def area(x: torch.Tensor, fade: bool = False) -> torch.Tensor:
        """The boxes' pixels ``[B, h, w, C]`` as the canvas' edit area; enlarged (``up``) in their own dtype."""
        x = _to_bchw(x, device, x.dtype if up else dtype)
        if fade:  # the official formula, x * (1 - mask * scale) in [-1, 1], at the source resolution
            x = torch.where(mask > 0.5, 0.5 + (x - 0.5) * (1 - scale), x)
        return resize_bilinear_aa(x, up).clamp(0, 1).to(dtype) if up else x

    edit = area(_boxed(edit_image, boxes, outpaint), fade)
    if up:
        mask = resize_nearest_exact(mask, up)
    if guidance is not None:
        edit = torch.where(mask > 0.5, area(guidance), edit)
    return _Prepared(edit, mask, prepared_refs, (H, W), boxes, False, repaint and scale == 1, outpaint)


def _outpainted_mask(edit_image: torch.Tensor, edit_mask, guidance, outpaint: tuple[int, int, int, int], batch: int):
    """The mask of the edit image extended by ``outpaint`` (top, bottom, left, right): the given one over the
    original, an empty one marking nothing; 1 over the new area. A control image must have the edit image's size."""
    hw = (int(edit_image.shape[1]), int(edit_image.shape[2]))
    if guidance is not None and tuple(guidance.shape[1:3]) != hw:
        raise ValueError(f"control_image is {wxh(tuple(guidance.shape[1:3]))} but edit_image is {wxh(hw)}; with "
                         "outpainting the control_image must have the edit image's size.")
    return outpaint_mask(edit_mask, hw, batch, outpaint, device=edit_image.device)


def _window(image: torch.Tensor, box: Box, outpaint: tuple[int, int, int, int]) -> torch.Tensor:
    """The pixels ``[B, h, w, C]`` (alpha dropped) in ``box`` of IMAGE ``image`` extended by ``outpaint`` (top,
    bottom, left, right) px of 0.5 gray: a view of ``image`` unless the box reaches the gray."""
    image = image[..., :3]
    pads, starts = [], []
    for start, length, size, before in ((box[0], box[2], image.shape[1], outpaint[0]),
                                        (box[1], box[3], image.shape[2], outpaint[2])):
        start -= before  # in the image's own pixels
        pads += [max(0, min(length, -start)), max(0, min(length, start + length - size))]
        starts.append(min(max(start, 0), size))
    (top_pad, bottom_pad, left_pad, right_pad), (top, left) = pads, starts
    x = image[:, top : top + box[2] - top_pad - bottom_pad, left : left + box[3] - left_pad - right_pad]
    if any(pads):
        x = F.pad(x, (0, 0, left_pad, right_pad, top_pad, bottom_pad), value=0.5)
    return x


def _outpainted_hw(image: torch.Tensor, outpaint: tuple[int, int, int, int]) -> tuple[int, int]:
    return int(image.shape[1]) + outpaint[0] + outpaint[1], int(image.shape[2]) + outpaint[2] + outpaint[3]


def _per_box(fn, image: torch.Tensor, boxes: list[Box]) -> torch.Tensor:
    """``fn(items, box)`` for each item's box, concatenated ``[B, ...]``; one call when all boxes agree."""
    if len(set(boxes)) == 1:
        return fn(image, boxes[0])
    return torch.cat([fn(image[i : i + 1], box) for i, box in enumerate(boxes)])


def _boxed(image: torch.Tensor, boxes: list[Box], outpaint: tuple[int, int, int, int]) -> torch.Tensor:
    """Each item's box of (outpainted) IMAGE ``image`` (batch ``len(boxes)``), ``[B, h, w, C]``: a view when all
    boxes agree and none reaches the outpainted area."""
    return _per_box(lambda items, box: _window(items, box, outpaint), image, boxes)


def _derived_guidance(task: str, edit_image: torch.Tensor, boxes: list[Box], outpaint: tuple[int, int, int, int],
                      options: Mapping[str, Any]) -> torch.Tensor:
    """The guidance of a derived control task over each item's box ``[B, h, w, 3]``: the operator over the whole
    (outpainted) edit image, computed from the box and the context the operator needs (:mod:`.control`)."""
    hw = _outpainted_hw(edit_image, outpaint)

    def over(items: torch.Tensor, box: Box) -> torch.Tensor:
        return control.guidance_in_box(task, lambda *b: _window(items, b, outpaint), hw, box, **options)

    return _per_box(over, edit_image, boxes)


def _reference_too_small(ref_hw: tuple[int, int], size: tuple[int, int], edit_h: int) -> ValueError:
    return ValueError(f"reference_image ({wxh(ref_hw)}) would shrink to {wxh(size)} next to an edit area {edit_h} px "
                      "high; raise keep_pixels_rate or pass a less extreme reference.")


# ==================================================================== budget fitting


def _fit_official(
    p: _Prepared, reference_mode: str, rate: float | None, budget: float
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """The official processors' canvas: assemble at the edit resolution, then nearest-exact to the floored size."""
    batch = p.edit.shape[0]
    ch, cw = int(p.edit.shape[-2]), int(p.edit.shape[-1])
    ref, ref_w = None, 0
    for r in p.refs:  # one at the most (checked)
        ref_hw = (int(r.shape[-2]), int(r.shape[-1]))
        tH, tW = official_reference_size(ref_hw, ch, reference_mode, rate)
        if tH < 1 or tW < 1:
            raise _reference_too_small(ref_hw, (tH, tW), ch)
        ref = _centred(resize_bilinear_aa(r, (tH, tW)), ch)
        ref_w = tW

    H, W = ch, ref_w + cw
    rH, rW = official_canvas_size(H, W, budget)
    rows = nearest_exact_indices(H, rH, p.edit.device) if rH >= TOKEN_PX else None
    cols = nearest_exact_indices(W, rW, p.edit.device) if rW >= TOKEN_PX else None
    slice_w = int((cols < ref_w).sum()) if cols is not None else 0
    if rows is None or cols is None or slice_w >= rW:
        if budget >= (H / TOKEN_PX) * (W / TOKEN_PX):  # scale 1: the sizes themselves are below one token
            what = f"height x width ({wxh((ch, cw))})" if p.reference_only else f"edit_image ({wxh((ch, cw))})"
            beside = f" beside the {ref_w} px wide reference_image" if ref_w else ""
            raise ValueError(f"{what} is too small for the official canvas, which floors its sides to multiples of 16 "
                             f"px (one token) and here keeps no row or column of the edit area{beside}. Use an edit "
                             "area of at least 16x16 px (ACE++ Canvas pads small images instead).")
        left = " with no column left for the edit image" if rH and rW else ""
        raise ValueError(f"the token budget {budget:g} is too small for a {wxh((H, W))} canvas: it rounds to "
                         f"{wxh((rH, rW))}{left}. Raise max_seq_length (or use a smaller reference_image).")

    # Nearest-exact sampling of cat([ref, edit]) without materialising the full-resolution canvas. Sampling is
    # pure selection, so shifting and blanking after it gives the official values bit for bit.
    edit_cols = cols[slice_w:] - ref_w
    edit = p.edit.index_select(-2, rows).index_select(-1, edit_cols) - 0.5
    mask = p.mask.index_select(-2, rows).index_select(-1, edit_cols)
    if p.repaint:
        edit = torch.where(mask > 0.5, torch.zeros((), dtype=edit.dtype, device=edit.device), edit)
    if slice_w:
        ref_part = ref.index_select(-2, rows).index_select(-1, cols[:slice_w]).expand(batch, -1, -1, -1)
        edit = torch.cat([ref_part, edit], dim=-1)
        mask = torch.cat([mask.new_zeros((batch, 1, rH, slice_w)), mask], dim=-1)
    return edit, mask, dict(canvas_h=rH, canvas_w=rW, ref_w=slice_w, edit_w=rW - slice_w, edit_h=rH, pad_right=0,
                            pad_bottom=0, scale_x=rW / W, scale_y=rH / H)


def _padding_fits(hw: tuple[int, int], ref_hw, reference_mode: str, rate, budget: float) -> bool:
    """Whether an edit image beyond 4:1, padded to 4:1, still fits the budget at the smallest allowed scale."""
    try:
        plan_exact(hw, ref_hw, reference_mode, rate, budget, MAX_ASPECT_RATIO)
    except ValueError:
        return False
    return True


def _fit_exact(
    p: _Prepared, reference_mode: str, rate: float | None, budget: float
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Exact fit: one scale for the edit area (untouched at scale 1), strips padded to multiples of 16."""
    batch = p.edit.shape[0]
    ch, cw = int(p.edit.shape[-2]), int(p.edit.shape[-1])
    ref_hws = [(int(r.shape[-2]), int(r.shape[-1])) for r in p.refs]
    for ref_hw in ref_hws:
        if reference_mode == "keep_pixels_pad" and ref_hw[0] >= rate * ch and int(ch * rate) < 1:
            raise _reference_too_small(ref_hw, (int(ch * rate), 0), ch)
    plan = plan_exact((ch, cw), ref_hws, reference_mode, rate, budget, None if p.reference_only else MAX_ASPECT_RATIO)
    h, w = plan.edit_h, plan.edit_w
    h16, w16 = ceil16(h), ceil16(w)

    edit = p.edit
    if p.reference_only:
        # The blank area is a constant plane (a stride-0 view): build it at the fitted size, gray (0 when shifted).
        edit = p.edit.new_zeros((batch, 3, h, w))
        mask = p.mask.new_ones((batch, 1, h, w))
    else:
        if p.repaint and (h, w) != (ch, cw):
            # Blank before the antialiasing filter so that no masked content leaks into the neighbouring pixels.
            edit = torch.where(p.mask > 0.5, torch.full((), 0.5, dtype=edit.dtype, device=edit.device), edit)
        # Clamped: the filter's weights can sum to 1 + 1 ulp, which would leave [0, 1] by as much.
        edit = (resize_bilinear_aa(edit, (h, w)) - 0.5).clamp_(-0.5, 0.5)
        mask = resize_nearest_exact(p.mask, (h, w))
    if (h, w) != (ch, cw) and not p.reference_only:
        mask = (mask > 0.5).to(p.mask.dtype)
        if bool((~mask.flatten(1).any(dim=1)).any()):
            logger.warning("the edit mask is too thin to survive downscaling to %s: nothing will be edited", wxh((h, w)))
    if p.repaint:  # blanked before padding: the replicated edge never shows what lies under the mask
        edit = torch.where(mask > 0.5, torch.zeros((), dtype=edit.dtype, device=edit.device), edit)
    # Edge replication to multiples of 16; beyond them (the 4:1 padding of a wider or taller image) the mask is 0.
    edit = pad_replicate(edit, plan.edit_strip_w - w, plan.canvas_h - h)
    mask = pad_replicate(mask, w16 - w, h16 - h)
    mask = pad_constant(mask, 0, 0, plan.edit_strip_w - w16, plan.canvas_h - h16, value=0.0)
    if plan.canvas_h > h16 or plan.edit_strip_w > w16:
        logger.info("edit_image area %s padded to %s (aspect ratio > %d:1)", wxh((h, w)),
                    wxh((plan.canvas_h, plan.edit_strip_w)), MAX_ASPECT_RATIO)

    strips = []
    for r, (rh, rw), strip_w in zip(p.refs, plan.refs, plan.ref_strips):
        ref = _centred(resize_bilinear_aa(r, (max(1, rh), max(1, rw))).clamp(-0.5, 0.5), h)
        ref = pad_replicate(ref, strip_w - max(1, rw), h16 - h)
        strips.append(pad_constant(ref, 0, 0, 0, plan.canvas_h - h16, value=0.0).expand(batch, -1, -1, -1))
    if strips:
        edit = torch.cat([*strips, edit], dim=-1)
        mask = torch.cat([mask.new_zeros((batch, 1, plan.canvas_h, plan.ref_strip_w)), mask], dim=-1)
    return edit, mask, dict(canvas_h=plan.canvas_h, canvas_w=plan.canvas_w, ref_w=plan.ref_strip_w, edit_w=w,
                            edit_h=h, pad_right=plan.edit_strip_w - w, pad_bottom=plan.canvas_h - h)


def _finish(
    canvas: torch.Tensor, mask: torch.Tensor, p: _Prepared, layout: str, fit: str, sizes: dict[str, Any]
) -> CanvasResult:
    """Shifted ``[B, 3, H, W]`` canvas + ``[B, 1, H, W]`` mask -> ComfyUI tensors (and UC / C for FFT), geometry."""
    zero = torch.zeros((), dtype=canvas.dtype, device=canvas.device)
    marked = mask > 0.5

    def to_image(x: torch.Tensor) -> torch.Tensor:  # ComfyUI IMAGE / MASK tensors are float32
        return (x + 0.5).permute(0, 2, 3, 1).to(torch.float32).contiguous()

    uc = c = None
    if layout == "fft":
        uc = to_image(torch.where(marked, zero, canvas))
        c = to_image(torch.where(marked, canvas, zero))
    geometry = []
    for top, left, h, w in p.boxes:
        scales = {} if fit == "official" else dict(scale_x=sizes["edit_w"] / w, scale_y=sizes["edit_h"] / h)
        geometry.append(CanvasGeometry(
            layout=layout, fit=fit, source_h=p.source_hw[0], source_w=p.source_hw[1], crop_top=top, crop_left=left,
            crop_h=h, crop_w=w, reference_only=p.reference_only, edit_x0=sizes["ref_w"], edit_y0=0,
            outpaint_top=p.outpaint[0], outpaint_bottom=p.outpaint[1], outpaint_left=p.outpaint[2],
            outpaint_right=p.outpaint[3], **sizes, **scales,
        ))
    return CanvasResult(to_image(canvas), mask[:, 0].to(torch.float32).contiguous(), uc, c, tuple(geometry))
