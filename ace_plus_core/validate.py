"""Input checks shared by the core and the node layer, one rule per kind of input (docs/INPUTS.md): a ``ValueError``
naming the input, saying what was expected and what to do. Cheap: one ``aminmax`` per image, no full-size temporary
unless a value has to change."""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable
from typing import Any

import torch

logger = logging.getLogger(__name__)

#: Channel counts an IMAGE may have (gray, RGB, RGBA; alpha is dropped).
IMAGE_CHANNELS = (1, 3, 4)


def _nonfinite_message(x: torch.Tensor, name: str, what: str) -> str:
    nan = int(torch.isnan(x).sum())
    inf = int(torch.isinf(x).sum())
    parts = [f"{nan} NaN" if nan else "", f"{inf} infinite" if inf else ""]
    return (
        f"{name} contains {' and '.join(p for p in parts if p)} {what} value(s); the node that made it failed "
        f"(e.g. a VAE decoding in fp16 overflows). Fix that node (e.g. run the VAE in fp32/bf16: --fp32-vae or "
        f"--bf16-vae) or connect another {what}."
    )


def check_image(image: Any, name: str, *, optional: bool = False) -> torch.Tensor | None:
    """A ComfyUI IMAGE, checked: ``[B, H, W, C]`` (a batch dim added to ``[H, W, C]``), same dtype and channels.

    NaN/inf pixels are a ``ValueError``; finite values outside [0, 1] are clamped (a copy, with a warning). With
    ``optional`` None passes through. See the module docstring for the rules.
    """
    if image is None:
        if optional:
            return None
        raise ValueError(f"{name} is required: connect an IMAGE.")
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"{name} must be an IMAGE tensor [B, H, W, C], got {type(image).__name__}.")
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[-1] not in IMAGE_CHANNELS:
        raise ValueError(f"{name} must be an IMAGE shaped [B, H, W, C] with C = 1, 3 or 4 channels, got shape "
                         f"{tuple(image.shape)}. Connect an IMAGE output (a MASK or LATENT does not fit here).")
    if image.shape[0] < 1:
        raise ValueError(f"{name} is an empty batch (0 images); connect a node that outputs at least one image.")
    if image.shape[1] < 1 or image.shape[2] < 1:
        raise ValueError(f"{name} is {image.shape[2]}x{image.shape[1]} pixels; it needs at least 1x1.")
    if not image.is_floating_point():
        raise ValueError(
            f"{name} must be a float IMAGE with values in [0, 1], got dtype {image.dtype}; convert it (x / 255)."
        )
    lo, hi = (float(v) for v in torch.aminmax(image))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(_nonfinite_message(image, name, "pixel"))
    if lo < 0.0 or hi > 1.0:
        logger.warning("%s has values outside [0, 1] (min %.4g, max %.4g); clamped to [0, 1]", name, lo, hi)
        image = image.clamp(0.0, 1.0)
    return image


def rgb(image: torch.Tensor) -> torch.Tensor:
    """A checked IMAGE as RGB ``[..., 3]``: gray expanded (a view), alpha dropped (a view)."""
    c = image.shape[-1]
    if c == 4:
        return image[..., :3]
    if c == 1:
        return image.expand(*image.shape[:-1], 3)
    return image


def check_mask(mask: Any, name: str, *, soft: bool = False, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A ComfyUI MASK, checked and shaped ``[B, H, W]`` (from ``[H, W]`` or ``[B, 1, H, W]``).

    Without ``soft`` the values are returned as they are (the caller binarizes; NaN counts as 0 there, a warning is
    logged here). With ``soft`` the result is ``dtype`` with NaN replaced by 0 and values clamped to [0, 1] (a copy
    only when something changes, with a warning).
    """
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"{name} must be a MASK tensor [B, H, W], got {type(mask).__name__}.")
    if mask.ndim == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim != 3:
        raise ValueError(
            f"{name} must be shaped [B, H, W] or [H, W] (a ComfyUI MASK), got shape {tuple(mask.shape)}. Connect a "
            "MASK output (an IMAGE does not fit here: convert it with ImageToMask)."
        )
    if mask.shape[0] < 1:
        raise ValueError(f"{name} is an empty batch (0 masks); connect a node that outputs at least one mask.")
    if mask.shape[1] < 1 or mask.shape[2] < 1:
        raise ValueError(f"{name} is {mask.shape[2]}x{mask.shape[1]} pixels; it needs at least 1x1.")
    if mask.is_complex():
        raise ValueError(f"{name} must hold real values (0 = keep, 1 = edit), got dtype {mask.dtype}.")
    if not mask.is_floating_point():
        if not soft:
            return mask
        mask = mask.to(dtype)  # integer masks (0 / 255) are clamped below like float ones
    lo, hi = (float(v) for v in torch.aminmax(mask))
    nan = math.isnan(lo) or math.isnan(hi)
    if nan:
        logger.warning("%s contains NaN values; they count as 0 (not edited)", name)
    if not soft:
        return mask
    if nan or lo < 0.0 or hi > 1.0:
        if not nan:
            logger.warning("%s has values outside [0, 1] (min %.4g, max %.4g); clamped to [0, 1]", name, lo, hi)
        mask = torch.nan_to_num(mask.to(dtype), nan=0.0).clamp_(0.0, 1.0)
    return mask.to(dtype)


def check_number(
    value: Any, name: str, lo: float | None = None, hi: float | None = None, *, integer: bool = False,
    low_open: bool = False, what: str = "",
) -> int | float:
    """``value`` as an int (``integer``) or float, finite and within ``[lo, hi]`` (``(lo, hi]`` with
    ``low_open``); a ``ValueError`` naming ``name`` otherwise. ``what`` describes the value for the message."""
    kind = "an integer" if integer else "a number"
    lo_b = "(" if low_open else "["
    bounds = f" in {lo_b}{lo:g}, {hi:g}]" if lo is not None and hi is not None else (
        f" {'>' if low_open else '>='} {lo:g}" if lo is not None else f" <= {hi:g}" if hi is not None else ""
    )
    desc = f" ({what})" if what else ""
    ok_type = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, ok_type):
        raise ValueError(f"{name}{desc} must be {kind}{bounds}, got {value!r}.")
    if not integer and not math.isfinite(float(value)):
        raise ValueError(f"{name}{desc} must be a finite number{bounds}, got {value!r}.")
    v = int(value) if integer else float(value)
    too_low = lo is not None and (v <= lo if low_open else v < lo)
    if too_low or (hi is not None and v > hi):
        raise ValueError(f"{name}{desc} must be {kind}{bounds}, got {value!r}.")
    return v


def check_side(value: Any, name: str, max_side: int) -> int:
    """A generated area's side in pixels: an integer in [1, max_side] (``limits.MAX_SIDE``)."""
    return int(check_number(value, name, 1, max_side, integer=True, what="pixels"))


def message_of(check: Callable[..., Any], *args: Any, **kwargs: Any) -> bool | str:
    """Run ``check``; ``True`` when it passes, its ``ValueError`` message when not (for ``validate_inputs``)."""
    try:
        check(*args, **kwargs)
    except ValueError as e:
        return str(e)
    return True
