"""The ACE++ canvas: reference left, edit image right, one mask, fitted to a token budget.

ACE++ ("context-aware content filling", FLUX.1-Fill-dev) turns every task into filling the masked part of one
canvas::

    +----------------------+-----------------------------+
    | reference (optional) | edit image                  |     mask: 0 over the reference,
    | mask = 0             | mask = edit mask (1 = edit) |           the edit mask over the edit image
    +----------------------+-----------------------------+

Pipeline (per batch item; every edit image in a batch gets its own canvas):

1. **Inputs.** ComfyUI tensors: IMAGE ``[B, H, W, C]`` float in [0, 1] (``[H, W, C]`` is a batch of one; 1 or 4
   channels are accepted, alpha is dropped; NaN/inf pixels are a ``ValueError``, values outside [0, 1] are clamped:
   :mod:`.validate`), MASK ``[B, H, W]``. The batch size is the edit image's (without an
   edit image, the reference's). A reference, mask or guidance of batch 1 is used for every item; other
   mismatches are a ``ValueError`` (see :mod:`.masks`).
2. **Mask.** Binarized at 0.5; an all-zero mask (ComfyUI's ``LoadImage`` gives a 64x64 one for images without
   alpha) means "edit everything"; a mask of another size is rescaled when the aspect ratios agree within 1 %, else
   a ``ValueError`` (:func:`.masks.normalize_mask`).
3. **Task.** ``repainting`` blanks the masked pixels to 0.5 gray (the content is unknown); ``no_preprocess`` keeps
   them (they are guidance: a control image, a low-resolution image ...). The control tasks (:data:`GUIDED_TASKS`)
   put guidance under the mask, in place of the edit pixels, as the official annotator output is composited: a
   ``guidance`` image if one is given (any control image, resized to the edit image if its aspect ratio matches
   within 1 %), otherwise ``recolorizing``, ``mosaic_repainting`` and ``canny_repainting`` derive it from the full
   edit image, before the aspect crop, as officially (:mod:`.control`; ``control_options`` sets the Canny
   thresholds and the mosaic ratio). ``contour_repainting`` and ``depth_repainting`` need neural annotators, which
   this pack does not run: without ``guidance`` they are a ``ValueError`` naming the input to connect. Unlike the
   official composite, an empty mask ("edit everything") puts the guidance everywhere.
4. **Aspect limit.** A reference whose long side exceeds 4x its short side is centre-cropped along the long side
   to exactly 4x the short side, with torchvision ``CenterCrop``'s offset rule ``int(round((L - 4 S) / 2))``
   (halves round to even). So is the edit image in ``fit="official"`` (the edit mask and guidance get the same box,
   recorded in the geometry); there an explicit mask that marks pixels outside the crop is a ``ValueError`` (they
   would silently stay unedited; an empty mask, "edit everything", is cropped as officially). In ``fit="exact"``
   the edit image is never cut: its strip is padded on the short side to 4:1 instead (step 7).
5. **Reference-only generation** (no edit image): the edit area is 0.5 gray of the requested ``height`` x
   ``width`` with an all-ones mask.
6. **Reference arrangement.** ``resize_to_height`` (what the LoRA models were trained on): antialiased bilinear to
   the edit height. ``keep_pixels_pad`` (FFT): if the reference is taller than ``keep_pixels_rate`` x edit height it
   is shrunk to that height (never enlarged), then padded vertically, centred, with 0.5 gray to the edit height.
7. **Budget fit** (one token = 16x16 px), two variants:

   * ``fit="official"`` (drop-in processors, :func:`official_processor`): exactly the official arithmetic. The
     canvas is assembled at the edit image's resolution, ``scale = min(1, sqrt(budget / ((H/16)(W/16))))``, both
     sides floored to multiples of 16, and canvas and mask are resampled nearest-exact to that size **even when
     scale == 1** (so released models see what they were trained on). The LoRA processor's budget is
     ``2 x max_seq_length``, the FFT processor's ``1 x``. ``SLICE_W`` is the exact first column of the resampled
     canvas that samples the edit image.
   * ``fit="exact"`` (canvas node, :func:`build_canvas`): the budget is the canvas' image tokens. The edit area is
     the crop scaled by one factor ``s <= 1`` (the largest that fits, see :func:`.geometry.plan_exact`); at
     ``s == 1`` its pixels are untouched. Reference and edit area are resized separately (antialiased bilinear for
     images, nearest-exact and re-binarized for masks) and each strip is then padded **right and bottom by edge
     replication** (image and mask alike, at most 15 px) to a multiple of 16. An edit image beyond 4:1 gets its
     strip padded further, below or right, to 4:1 (:func:`.geometry.plan_exact`; the padding counts against the
     budget): edge-replicated pixels (repainting: after blanking, so nothing from under the mask shows), mask 0
     (context, not generated), and 0.5 gray beside it in the reference strip. The padding is recorded in the
     geometry and removed exactly when cutting back; the edit area starts at column ``ref_strip_w``, a multiple of
     16, so the boundary is exact and token-aligned.

8. **Outputs.** LoRA layout: the canvas (masked pixels gray for repainting) and the mask. FFT layout: also **UC**
   (canvas with the masked area gray) and **C** (gray except under the mask, where it holds the guidance pixels;
   all gray for repainting). Images ``[B, H, W, 3]`` in [0, 1], mask ``[B, H, W]`` in {0, 1}, one
   :class:`.geometry.CanvasGeometry` per item. Everything stays on the input tensors' device.

Differences from the official processors that are fixed even in ``fit="official"``: no crash for aspect ratios
above 4:1 (the official writes the cropped tensor back into the old shape), a mask of a different size is never
silently replaced by ones, every batch item is processed, ``SLICE_W`` is the true boundary (not ``+30``), and bad
values (``keep_pixels_rate`` 0, a budget that rounds the canvas to nothing) are ``ValueError`` s, not crashes.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from . import control, validate
from .geometry import (
    FITS,
    LAYOUTS,
    REFERENCE_MODES,
    TOKEN_PX,
    CanvasGeometry,
    official_canvas_size,
    official_reference_size,
    plan_exact,
)
from .masks import batch_size_of, broadcast_batch, match_guidance, normalize_mask
from .resize import (
    center_crop_box,
    nearest_exact_indices,
    pad_constant,
    pad_replicate,
    resize_bilinear_aa,
    resize_nearest_exact,
)

__all__ = [
    "ALL_TASKS",
    "EXTRA_TASKS",
    "GUIDED_TASKS",
    "MAX_ASPECT_RATIO",
    "TASKS",
    "CanvasResult",
    "OfficialResult",
    "aspect_crop_box",
    "build_canvas",
    "check_canvas_options",
    "official_processor",
]

logger = logging.getLogger(__name__)

#: Task names of the official ComfyUI nodes, in the official order.
TASKS = ("repainting", "no_preprocess", "contour_repainting", "depth_repainting", "recolorizing")
#: Control tasks of the official local-editing config beyond the ComfyUI nodes' list.
EXTRA_TASKS = ("canny_repainting", "mosaic_repainting")
ALL_TASKS = TASKS + EXTRA_TASKS
#: Tasks whose guidance the official code derives from the edit image with an annotator.
GUIDED_TASKS = ("contour_repainting", "depth_repainting", "recolorizing", "canny_repainting", "mosaic_repainting")
#: Longest side / shortest side above which an image is centre-cropped.
MAX_ASPECT_RATIO = 4
#: The official FFT processor's default keep_pixels_rate.
DEFAULT_KEEP_PIXELS_RATE = 0.8


@dataclass(frozen=True)
class CanvasResult:
    """A batch of canvases.

    ``image``: ``[B, H, W, 3]`` the canvas (LoRA: the conditioning image; FFT: the canvas before the UC/C split).
    ``mask``: ``[B, H, W]`` in {0, 1}, 0 over the reference. ``uc_image`` / ``c_image``: FFT only (None for LoRA).
    ``geometry``: one :class:`CanvasGeometry` per batch item.
    """

    image: torch.Tensor
    mask: torch.Tensor
    uc_image: torch.Tensor | None
    c_image: torch.Tensor | None
    geometry: tuple[CanvasGeometry, ...]


@dataclass(frozen=True)
class OfficialResult(CanvasResult):
    """:class:`CanvasResult` plus the official processors' integer outputs.

    ``out_h`` / ``out_w``: the edit image size before budget resizing (after the aspect crop; the requested size
    for reference-only generation). ``slice_w``: the first canvas column of the edit area (0 without reference).
    """

    out_h: int
    out_w: int
    slice_w: int


@dataclass
class _Prepared:
    """Inputs after batching, mask rules, guidance and aspect crop.

    The edit image stays in [0, 1] at full resolution (no full-size copies); the fits shift it by -0.5 (gray == 0,
    as the official code computes) and blank it after sampling, where that is exact. The reference is shifted.
    """

    edit: torch.Tensor  # [B, 3, ch, cw] in [0, 1] (a view of the input where possible)
    mask: torch.Tensor  # [B, 1, ch, cw], {0, 1}
    ref: torch.Tensor | None  # [B or 1, 3, Hr, Wr], shifted by -0.5
    source_hw: tuple[int, int]
    crop_box: tuple[int, int, int, int]  # top, left, h, w
    reference_only: bool
    repaint: bool


# ==================================================================== public API


def build_canvas(
    layout: str,
    task: str,
    reference_mode: str,
    reference_image: torch.Tensor | None = None,
    edit_image: torch.Tensor | None = None,
    edit_mask: torch.Tensor | None = None,
    max_image_tokens: float = 4096,
    keep_pixels_rate: float | None = None,
    height: int = 1024,
    width: int = 1024,
    *,
    guidance: torch.Tensor | None = None,
    fit: str = "exact",
    control_options: Mapping[str, Any] | None = None,
    guidance_name: str = "guidance",
    budget_name: str = "max_image_tokens",
) -> CanvasResult:
    """Build ACE++ canvases (see the module docstring for the layout and every rule).

    Args:
        layout: ``"lora"`` (canvas + mask) or ``"fft"`` (also UC and C).
        task: one of :data:`ALL_TASKS`.
        reference_mode: ``"resize_to_height"`` or ``"keep_pixels_pad"``.
        reference_image: IMAGE or None; placed left of the edit area.
        edit_image: IMAGE or None (None: reference-only generation of ``height`` x ``width``).
        edit_mask: MASK or None (None or empty: edit everything). Ignored without an edit image.
        max_image_tokens: token budget of the whole canvas (16x16 px per token). With ``fit="official"`` this is the
            budget as the official formula uses it (pass ``2 * max_seq_length`` for the LoRA processor).
        keep_pixels_rate: in (0, 1], required by ``keep_pixels_pad`` (None there means the official 0.8).
        height, width: size of the generated area for reference-only generation.
        guidance: IMAGE or None; for tasks other than repainting, replaces the edit pixels under the mask (resized to
            the edit image if its aspect ratio matches within 1 %). Without it the control tasks derive their
            guidance (:mod:`.control`); ``contour_repainting`` and ``depth_repainting`` require it.
        fit: ``"exact"`` (default) or ``"official"``.
        control_options: keyword arguments of :func:`.control.derive_guidance` (``low_threshold``,
            ``high_threshold``, ``ratio``); None: the official defaults.
        guidance_name: how error messages call ``guidance`` (the node input that feeds it).
        budget_name: how error messages call ``max_image_tokens``.

    Raises:
        ValueError: bad input (the message names the input and the fix).
    """
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    budget, keep_pixels_rate = check_canvas_options(layout, reference_mode, max_image_tokens, keep_pixels_rate,
                                                    budget_name)

    prepared = _prepare(
        task, reference_image, edit_image, edit_mask, guidance, height, width, control.check_options(control_options),
        guidance_name, fit,
    )
    if fit == "official":
        canvas, mask, geometry = _fit_official(prepared, layout, reference_mode, keep_pixels_rate, budget,
                                               budget_name)
    else:
        canvas, mask, geometry = _fit_exact(prepared, layout, reference_mode, keep_pixels_rate, budget)
    return _finish(canvas, mask, layout, geometry)


def official_processor(
    layout: str,
    reference_image: torch.Tensor | None = None,
    edit_image: torch.Tensor | None = None,
    edit_mask: torch.Tensor | None = None,
    use_reference: bool = True,
    task_type: str = "repainting",
    height: int = 1024,
    width: int = 1024,
    max_seq_length: float = 3072,
    keep_pixels_rate: float | None = None,
    *,
    guidance: torch.Tensor | None = None,
    control_options: Mapping[str, Any] | None = None,
    guidance_name: str = "guidance",
) -> OfficialResult:
    """Drop-in for the official ``AcePlusLoraProcessor`` (``layout="lora"``) / ``AcePlusFFTProcessor`` (``"fft"``).

    Same inputs and the same canvas as the official ``preprocess`` (``fit="official"``: LoRA budget
    ``2 x max_seq_length`` with the reference resized to the edit height; FFT budget ``max_seq_length`` with the
    reference shrunk to ``keep_pixels_rate`` x edit height and padded), with the defects listed in the module
    docstring fixed. As officially, ``use_reference=False`` drops the reference only when there is an edit image.
    ``keep_pixels_rate`` is only used by the FFT layout (None: 0.8). ``guidance``, ``control_options`` and
    ``guidance_name`` are as in :func:`build_canvas` (the official nodes have no control-image input).

    Outputs map to the official sockets: LoRA ``IMAGE=image, MASK=mask``; FFT ``UC_IMAGE=uc_image,
    C_IMAGE=c_image, MASK=mask``; both ``OUT_H=out_h, OUT_W=out_w, SLICE_W=slice_w``.
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
    result = build_canvas(
        layout,
        task_type,
        reference_mode,
        reference_image,
        edit_image,
        edit_mask,
        budget,
        keep_pixels_rate,
        height,
        width,
        guidance=guidance,
        fit="official",
        control_options=control_options,
        guidance_name=guidance_name,
        budget_name="max_seq_length",
    )
    g = result.geometry[0]
    return OfficialResult(
        image=result.image,
        mask=result.mask,
        uc_image=result.uc_image,
        c_image=result.c_image,
        geometry=result.geometry,
        out_h=g.crop_h,
        out_w=g.crop_w,
        slice_w=g.edit_x0,
    )


def aspect_crop_box(height: int, width: int, max_aspect: int = MAX_ASPECT_RATIO) -> tuple[int, int, int, int]:
    """(top, left, h, w) of the centre crop that limits ``height`` x ``width`` to ``max_aspect``:1 (whole image if
    it already fits). The long side is cut to exactly ``max_aspect`` x the short side, torchvision's offset rule."""
    if height > max_aspect * width:
        h = max_aspect * width
        top, left = center_crop_box(height, width, h, width)
        return top, left, h, width
    if width > max_aspect * height:
        w = max_aspect * height
        top, left = center_crop_box(height, width, height, w)
        return top, left, height, w
    return 0, 0, height, width


# ==================================================================== validation helpers


def check_canvas_options(
    layout: str, reference_mode: str, max_image_tokens: float, keep_pixels_rate: float | None,
    budget_name: str = "max_image_tokens",
) -> tuple[float, float | None]:
    """Check the layout, reference mode, budget and keep_pixels_rate of a canvas; returns (budget, rate)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if reference_mode not in REFERENCE_MODES:
        raise ValueError(f"reference_mode must be one of {REFERENCE_MODES}, got {reference_mode!r}")
    budget = _check_budget(max_image_tokens, budget_name)
    if reference_mode == "keep_pixels_pad":
        keep_pixels_rate = _check_keep_pixels_rate(keep_pixels_rate)
    return budget, keep_pixels_rate


def _check_budget(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of image tokens (16x16 px each), got {value!r}")
    return value


def _check_keep_pixels_rate(rate: float | None) -> float:
    if rate is None:
        return DEFAULT_KEEP_PIXELS_RATE
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (0.0 < rate <= 1.0):
        raise ValueError(
            f"keep_pixels_rate must be in (0, 1] (the largest reference height as a fraction of the edit height), "
            f"got {rate!r}; the official default is {DEFAULT_KEEP_PIXELS_RATE}."
        )
    return float(rate)


def _wxh(h: int, w: int) -> str:
    return f"{w}x{h}"


def _ceil16(n: int) -> int:
    return -(-n // TOKEN_PX) * TOKEN_PX


def _to_bchw(image: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Checked IMAGE (:func:`.validate.check_image`) -> ``[B, 3, H, W]`` view on ``device`` in ``dtype``."""
    c = image.shape[-1]
    if c == 4:
        image = image[..., :3]
    elif c == 1:
        image = image.expand(*image.shape[:-1], 3)
    return image.to(device=device, dtype=dtype).permute(0, 3, 1, 2)


# ==================================================================== preparation


def _prepare(
    task: str,
    reference_image: torch.Tensor | None,
    edit_image: torch.Tensor | None,
    edit_mask: torch.Tensor | None,
    guidance: torch.Tensor | None,
    height: int,
    width: int,
    control_options: Mapping[str, Any],
    guidance_name: str,
    fit: str,
) -> _Prepared:
    if task not in ALL_TASKS:
        raise ValueError(f"task must be one of {ALL_TASKS}, got {task!r}")
    repaint = task == "repainting"
    # Every image is checked (shape, channels, finite; clamped to [0, 1]) before any work is done.
    edit_image = validate.check_image(edit_image, "edit_image", optional=True)
    reference_image = validate.check_image(reference_image, "reference_image", optional=True)
    guidance = validate.check_image(guidance, guidance_name, optional=True)
    if guidance is not None and edit_image is None:
        raise ValueError(f"{guidance_name} needs an edit_image: it replaces the edit image's pixels under the mask.")
    if guidance is not None and repaint:
        raise ValueError(
            f"{guidance_name} is not used by task 'repainting' (it blanks the masked area); use "
            f"'no_preprocess' or a control task to keep guidance pixels under the mask, or disconnect "
            f"{guidance_name}."
        )
    anchor = edit_image if edit_image is not None else reference_image
    device = anchor.device if isinstance(anchor, torch.Tensor) else torch.device("cpu")
    dtype = torch.float64 if isinstance(anchor, torch.Tensor) and anchor.dtype == torch.float64 else torch.float32

    if edit_image is not None:
        batch, owner = batch_size_of(edit_image, 3), "edit_image"
    elif reference_image is not None:
        batch, owner = batch_size_of(reference_image, 3), "reference_image"
    else:
        batch, owner = 1, "the blank edit area"

    if edit_image is None:
        if edit_mask is not None:
            logger.warning("edit_mask is ignored without an edit_image (reference-only generation edits everything)")
        height = validate.check_side(height, "height")
        width = validate.check_side(width, "width")
        # Constant planes as stride-0 views: a 16384 px blank area costs no memory (the fits never copy it whole).
        edit = torch.full((1, 1, 1, 1), 0.5, dtype=dtype, device=device).expand(batch, 3, height, width)
        mask = torch.ones((1, 1, 1, 1), dtype=dtype, device=device).expand(batch, 1, height, width)
        source_hw, crop_box, reference_only = (height, width), (0, 0, height, width), True
    else:
        edit = _to_bchw(edit_image, device, dtype)
        H, W = int(edit.shape[-2]), int(edit.shape[-1])
        mask = normalize_mask(edit_mask, (H, W), batch, device=device, dtype=dtype).unsqueeze(1)
        # The exact fit pads an edit image beyond 4:1 instead of cutting it (see _fit_exact).
        crop_box = aspect_crop_box(H, W) if fit == "official" else (0, 0, H, W)
        top, left, ch, cw = crop_box
        if (ch, cw) != (H, W):
            marked = mask.flatten(1).sum(dim=1)
            cut = (mask[..., top : top + ch, left : left + cw].flatten(1).sum(dim=1) < marked) & (marked < H * W)
            if bool(cut.any()):
                raise ValueError(
                    f"edit_mask (item {int(cut.nonzero()[0, 0])}) marks pixels outside the part of edit_image that "
                    f"the official processors use: edit_image is {_wxh(H, W)}, beyond {MAX_ASPECT_RATIO}:1, so only "
                    f"its centre {_wxh(ch, cw)} goes into the canvas and those pixels would not be edited. Crop the "
                    f"photo around the area to edit (aspect ratio at most {MAX_ASPECT_RATIO}:1) and pass the "
                    "matching mask, or use ACE++ Canvas, which pads such photos instead of cutting them."
                )
        if task in GUIDED_TASKS and guidance is None:
            if task in control.EXTERNAL_TASKS:
                what = "line drawing" if task == "contour_repainting" else "depth map"
                raise ValueError(
                    f"task {task!r} needs a control image ({what} of the edit image): connect one to "
                    f"{guidance_name} (e.g. from a lineart / depth preprocessor node). This pack does not run the "
                    "neural annotators (they would download weights)."
                )
            guidance = control.derive_guidance(task, edit_image, **control_options)
        if guidance is not None:
            g = _to_bchw(guidance, device, dtype)
            g = broadcast_batch(g, batch, guidance_name, owner)
            g = match_guidance(g, (H, W), name=guidance_name)
            edit = torch.where(mask > 0.5, g, edit)
        if (ch, cw) != (H, W):
            edit = edit[..., top : top + ch, left : left + cw]
            mask = mask[..., top : top + ch, left : left + cw]
            logger.info(
                "edit_image %s centre-cropped to %s (aspect ratio > %d:1)", _wxh(H, W), _wxh(ch, cw), MAX_ASPECT_RATIO
            )
        source_hw, reference_only = (H, W), False

    ref = None
    if reference_image is not None:
        ref = _to_bchw(reference_image, device, dtype)
        broadcast_batch(ref, batch, "reference_image", owner)  # checks the batch; the fits expand a batch of 1
        rH, rW = int(ref.shape[-2]), int(ref.shape[-1])
        top, left, ch, cw = aspect_crop_box(rH, rW)
        if (ch, cw) != (rH, rW):
            logger.info(
                "reference_image %s centre-cropped to %s (aspect ratio > %d:1)",
                _wxh(rH, rW),
                _wxh(ch, cw),
                MAX_ASPECT_RATIO,
            )
            ref = ref[..., top : top + ch, left : left + cw]
        ref = ref - 0.5
    return _Prepared(edit, mask, ref, source_hw, crop_box, reference_only, repaint)


def _reference_too_small(ref_hw: tuple[int, int], size: tuple[int, int], edit_h: int) -> ValueError:
    return ValueError(
        f"reference_image ({_wxh(*ref_hw)}) would shrink to {_wxh(*size)} next to an edit area {edit_h} px high; "
        "raise keep_pixels_rate or pass a less extreme reference."
    )


# ==================================================================== budget fitting


def _geometry(p: _Prepared, layout: str, fit: str, **kw) -> CanvasGeometry:
    top, left, ch, cw = p.crop_box
    return CanvasGeometry(
        layout=layout,
        fit=fit,
        source_h=p.source_hw[0],
        source_w=p.source_hw[1],
        crop_top=top,
        crop_left=left,
        crop_h=ch,
        crop_w=cw,
        reference_only=p.reference_only,
        **kw,
    )


def _fit_official(
    p: _Prepared, layout: str, reference_mode: str, rate: float | None, budget: float, budget_name: str
) -> tuple[torch.Tensor, torch.Tensor, CanvasGeometry]:
    """The official processors' canvas: assemble at the edit resolution, then nearest-exact to the floored size."""
    batch = p.edit.shape[0]
    ch, cw = int(p.edit.shape[-2]), int(p.edit.shape[-1])
    ref, ref_w = None, 0
    if p.ref is not None:
        ref_hw = (int(p.ref.shape[-2]), int(p.ref.shape[-1]))
        tH, tW = official_reference_size(ref_hw, ch, reference_mode, rate)
        if tH < 1 or tW < 1:
            raise _reference_too_small(ref_hw, (tH, tW), ch)
        ref = resize_bilinear_aa(p.ref, (tH, tW))
        if tH < ch:  # keep_pixels_pad: centre vertically on gray (0 in the shifted space)
            top = (ch - tH) // 2
            ref = pad_constant(ref, 0, top, 0, ch - tH - top, value=0.0)
        ref_w = tW

    H, W = ch, ref_w + cw
    rH, rW = official_canvas_size(H, W, budget)
    rows = nearest_exact_indices(H, rH, p.edit.device) if rH >= TOKEN_PX else None
    cols = nearest_exact_indices(W, rW, p.edit.device) if rW >= TOKEN_PX else None
    slice_w = int((cols < ref_w).sum()) if cols is not None else 0
    if rows is None or cols is None or slice_w >= rW:
        if budget >= (H / TOKEN_PX) * (W / TOKEN_PX):  # scale 1: the sizes themselves are below one token
            what = f"height x width ({_wxh(ch, cw)})" if p.reference_only else f"edit_image ({_wxh(ch, cw)})"
            raise ValueError(
                f"{what} is too small for the official canvas, which floors its sides to multiples of 16 px (one "
                f"token) and here keeps no row or column of the edit area"
                + (f" beside the {ref_w} px wide reference_image" if ref_w else "")
                + ". Use an edit area of at least 16x16 px (ACE++ Canvas pads small images instead)."
            )
        raise ValueError(
            f"the token budget {budget:g} is too small for a {_wxh(H, W)} canvas: it rounds to {_wxh(rH, rW)}"
            + (" with no column left for the edit image" if rH and rW else "")
            + f". Raise {budget_name} (or use a smaller reference_image)."
        )

    # Nearest-exact sampling of cat([ref, edit]) without materialising the full-resolution canvas. Sampling is
    # pure selection, so shifting and blanking after it gives the official values bit for bit (the official blanks
    # by multiplying with (1 - mask); same values, and NaN-free here).
    edit_cols = cols[slice_w:] - ref_w
    edit = p.edit.index_select(-2, rows).index_select(-1, edit_cols) - 0.5
    mask = p.mask.index_select(-2, rows).index_select(-1, edit_cols)
    if p.repaint:
        edit = torch.where(mask > 0.5, torch.zeros((), dtype=edit.dtype, device=edit.device), edit)
    if slice_w:
        ref_part = ref.index_select(-2, rows).index_select(-1, cols[:slice_w]).expand(batch, -1, -1, -1)
        edit = torch.cat([ref_part, edit], dim=-1)
        mask = torch.cat([mask.new_zeros((batch, 1, rH, slice_w)), mask], dim=-1)

    geometry = _geometry(
        p,
        layout,
        "official",
        canvas_h=rH,
        canvas_w=rW,
        ref_w=slice_w,
        edit_x0=slice_w,
        edit_y0=0,
        edit_w=rW - slice_w,
        edit_h=rH,
        pad_right=0,
        pad_bottom=0,
        scale_x=rW / W,
        scale_y=rH / H,
    )
    return edit, mask, geometry


def _fit_exact(
    p: _Prepared, layout: str, reference_mode: str, rate: float | None, budget: float
) -> tuple[torch.Tensor, torch.Tensor, CanvasGeometry]:
    """Exact fit: one scale for the edit area (untouched at scale 1), strips padded to multiples of 16."""
    batch = p.edit.shape[0]
    ch, cw = int(p.edit.shape[-2]), int(p.edit.shape[-1])
    ref_hw = (int(p.ref.shape[-2]), int(p.ref.shape[-1])) if p.ref is not None else None
    if ref_hw is not None and reference_mode == "keep_pixels_pad" and ref_hw[0] >= rate * ch:
        if int(ch * rate) < 1:
            raise _reference_too_small(ref_hw, (int(ch * rate), 0), ch)
    plan = plan_exact((ch, cw), ref_hw, reference_mode, rate, budget, None if p.reference_only else MAX_ASPECT_RATIO)
    h, w = plan.edit_h, plan.edit_w
    h16, w16 = _ceil16(h), _ceil16(w)

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
        lost = ~mask.flatten(1).any(dim=1)
        if bool(lost.any()):
            logger.warning("the edit mask is too thin to survive downscaling to %s: nothing will be edited", _wxh(h, w))
    if p.repaint:  # blanked before padding: the replicated edge never shows what lies under the mask
        edit = torch.where(mask > 0.5, torch.zeros((), dtype=edit.dtype, device=edit.device), edit)
    # Edge replication to multiples of 16; beyond them (the 4:1 padding of a wider or taller image) the mask is 0.
    edit = pad_replicate(edit, plan.edit_strip_w - w, plan.canvas_h - h)
    mask = pad_replicate(mask, w16 - w, h16 - h)
    mask = pad_constant(mask, 0, 0, plan.edit_strip_w - w16, plan.canvas_h - h16, value=0.0)
    if plan.canvas_h > h16 or plan.edit_strip_w > w16:
        logger.info("edit_image area %s padded to %s (aspect ratio > %d:1)", _wxh(h, w),
                    _wxh(plan.canvas_h, plan.edit_strip_w), MAX_ASPECT_RATIO)

    if p.ref is not None:
        rh, rw = max(1, plan.ref_h), max(1, plan.ref_w)
        ref = resize_bilinear_aa(p.ref, (rh, rw)).clamp(-0.5, 0.5)
        if rh < h:  # keep_pixels_pad: centre vertically on gray
            top = (h - rh) // 2
            ref = pad_constant(ref, 0, top, 0, h - rh - top, value=0.0)
        ref = pad_replicate(ref, plan.ref_strip_w - rw, h16 - h)
        ref = pad_constant(ref, 0, 0, 0, plan.canvas_h - h16, value=0.0).expand(batch, -1, -1, -1)
        edit = torch.cat([ref, edit], dim=-1)
        mask = torch.cat([mask.new_zeros((batch, 1, plan.canvas_h, plan.ref_strip_w)), mask], dim=-1)

    geometry = _geometry(
        p,
        layout,
        "exact",
        canvas_h=plan.canvas_h,
        canvas_w=plan.canvas_w,
        ref_w=plan.ref_strip_w,
        edit_x0=plan.ref_strip_w,
        edit_y0=0,
        edit_w=w,
        edit_h=h,
        pad_right=plan.edit_strip_w - w,
        pad_bottom=plan.canvas_h - h,
        scale_x=w / cw,
        scale_y=h / ch,
    )
    return edit, mask, geometry


def _finish(canvas: torch.Tensor, mask: torch.Tensor, layout: str, geometry: CanvasGeometry) -> CanvasResult:
    """Shifted ``[B, 3, H, W]`` canvas + ``[B, 1, H, W]`` mask -> ComfyUI tensors (and UC / C for FFT)."""
    batch = canvas.shape[0]
    zero = torch.zeros((), dtype=canvas.dtype, device=canvas.device)
    marked = mask > 0.5

    def to_image(x: torch.Tensor) -> torch.Tensor:
        return (x + 0.5).permute(0, 2, 3, 1).contiguous()

    uc = c = None
    if layout == "fft":
        uc = to_image(torch.where(marked, zero, canvas))
        c = to_image(torch.where(marked, canvas, zero))
    return CanvasResult(
        image=to_image(canvas),
        mask=mask[:, 0].contiguous(),
        uc_image=uc,
        c_image=c,
        geometry=(geometry,) * batch,
    )
