"""Resampling, cropping and padding of ``[..., H, W]`` tensors in pure torch, reproducing torchvision's tensor
transforms bit for bit (``Resize`` nearest-exact and antialiased bilinear, ``CenterCrop``, ``Pad``); both resizes
return the input unchanged when the size matches."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    h, w = (int(size[0]), int(size[1]))
    if h < 1 or w < 1:
        raise ValueError(f"cannot resize to {w}x{h} (width x height): both sides must be at least 1 px")
    return h, w


def _as_4d(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """View ``[..., H, W]`` as ``[N, 1, H, W]``; returns the view and the leading shape to restore."""
    if x.ndim < 2:
        raise ValueError(f"expected a tensor shaped [..., H, W], got shape {tuple(x.shape)}")
    lead = tuple(x.shape[:-2])
    if x.ndim == 4:  # already [N, C, H, W]: no copy (a permuted ComfyUI IMAGE stays channels-last)
        return x, lead
    return x.reshape(-1, 1, x.shape[-2], x.shape[-1]), lead


def nearest_exact_indices(in_size: int, out_size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Source index nearest-exact resampling reads per output position: an index ramp through ``F.interpolate``
    (torch's float32 scale differs from exact integer arithmetic for a few size pairs, e.g. 576 -> 464)."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"nearest-exact indices need positive sizes, got {in_size} -> {out_size}")
    if in_size > 1 << 24:
        raise ValueError(f"size {in_size} is too large to index exactly with a float32 ramp")
    ramp = torch.arange(in_size, dtype=torch.float32, device=device).view(1, 1, 1, in_size)
    idx = F.interpolate(ramp, size=(1, out_size), mode="nearest-exact")
    return idx.view(out_size).to(torch.long)


def resize_nearest_exact(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``[..., H, W]`` to ``size`` = (h, w) like ``T.Resize(size, NEAREST_EXACT)`` (pure sampling, any dtype)."""
    h, w = _check_size(size)
    H, W = x.shape[-2], x.shape[-1]
    if (H, W) == (h, w):
        return x
    rows = nearest_exact_indices(H, h, x.device)
    cols = nearest_exact_indices(W, w, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def resize_bilinear_aa(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize float ``[..., H, W]`` to ``size`` = (h, w) like ``T.Resize(size, BILINEAR, antialias=True)`` (float16
    and bfloat16 through float32)."""
    h, w = _check_size(size)
    if not x.is_floating_point():
        raise ValueError(f"bilinear resizing needs a float tensor, got {x.dtype}")
    if (x.shape[-2], x.shape[-1]) == (h, w):
        return x
    x4, lead = _as_4d(x)
    dtype = x4.dtype
    if dtype not in (torch.float32, torch.float64):
        x4 = x4.to(torch.float32)
    y = F.interpolate(x4, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return y.to(dtype).reshape(*lead, h, w)


def center_crop_box(height: int, width: int, crop_h: int, crop_w: int) -> tuple[int, int]:
    """(top, left) of a centred ``crop_h`` x ``crop_w`` box, ``T.CenterCrop``'s ``int(round((H - h) / 2.0))``
    (halves to even: a 3 px surplus puts 2 px before the box, a 5 px one 2 before and 3 after)."""
    if not (0 < crop_h <= height and 0 < crop_w <= width):
        raise ValueError(f"a {crop_w}x{crop_h} centre crop does not fit in a {width}x{height} image")
    return int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))


def pad_constant(x: torch.Tensor, left: int, top: int, right: int, bottom: int, value: float = 0.0) -> torch.Tensor:
    """Pad ``[..., H, W]`` with a constant, like ``T.Pad((left, top, right, bottom), fill=value)``."""
    if min(left, top, right, bottom) < 0:
        raise ValueError(f"padding must be non-negative, got left={left} top={top} right={right} bottom={bottom}")
    if left == top == right == bottom == 0:
        return x
    return F.pad(x, (left, right, top, bottom), mode="constant", value=float(value))


def pad_replicate(x: torch.Tensor, right: int, bottom: int) -> torch.Tensor:
    """Pad ``[..., H, W]`` on the right and bottom by repeating the last column and row (edge replication)."""
    if right < 0 or bottom < 0:
        raise ValueError(f"padding must be non-negative, got right={right} bottom={bottom}")
    if right == 0 and bottom == 0:
        return x
    if bottom:
        x = torch.cat([x, x[..., -1:, :].expand(*x.shape[:-2], bottom, x.shape[-1])], dim=-2)
    if right:
        x = torch.cat([x, x[..., :, -1:].expand(*x.shape[:-1], right)], dim=-1)
    return x
