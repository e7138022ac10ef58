"""Stitch a generated canvas back into the original, full-resolution edit image.

Per batch item, with the item's :class:`.geometry.CanvasGeometry`:

1. The edit area is cut out of the decoded canvas at its exact boundary and scaled back to the size of its box in
   the source image (:func:`.geometry.canvas_to_crop`: antialiased bilinear, untouched when no scaling happened).
2. The blend weight is the edit mask (binarized; empty = everything), **grown** by ``grow_px`` (square dilation)
   and **feathered** outward over ``feather_px`` pixels (dilate by ceil(f/2), then a box blur of radius ceil(f/2)):
   1 on the grown mask, falling to 0 at most ``feather_px`` px further out, and 0 outside the box.
3. Optionally (``color_match``) the generated area's per-channel mean and spread are matched to the original's
   over the unchanged context of the box (where the weight is 0), which removes the colour shift seams come from.
4. ``out = original * (1 - w) + generated * w`` where ``w > 0``; everywhere else the original pixels are returned
   unchanged, bit for bit.

Only the box (plus the grow/feather margin) is processed, so a 8192x8192 photo costs one copy of the image plus
work proportional to the box. Reference-only canvases have nothing to stitch into: their generated area is
returned at the requested size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .geometry import CanvasGeometry, canvas_to_crop
from .masks import normalize_mask

__all__ = ["blend_weight", "stitch"]


def _check_px(value, name: str, hi: int = 4096) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not (0 <= value <= hi):
        raise ValueError(f"{name} must be an integer number of pixels between 0 and {hi}, got {value!r}")
    return value


def blend_weight(mask: torch.Tensor, grow_px: int, feather_px: int) -> torch.Tensor:
    """Blend weight ``[B, H, W]`` in [0, 1] from a binary mask ``[B, H, W]`` (see the module docstring)."""
    w = (mask > 0.5).to(torch.float32).unsqueeze(1)
    if grow_px > 0:
        w = F.max_pool2d(w, 2 * grow_px + 1, stride=1, padding=grow_px)
    if feather_px > 0:
        r = math.ceil(feather_px / 2)
        w = F.max_pool2d(w, 2 * r + 1, stride=1, padding=r)
        w = F.avg_pool2d(w, 2 * r + 1, stride=1, padding=r, count_include_pad=False)
        # Inside the grown mask every window is all ones: the weight is exactly 1 there.
        w = torch.where(w > 1.0 - 1e-6, torch.ones_like(w), w)
    return w.squeeze(1)


def _match_colors(gen: torch.Tensor, orig: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """Shift/scale ``gen`` [h, w, C] per channel so its statistics over ``context`` [h, w] match ``orig``'s."""
    if int(context.sum()) < 16:
        return gen
    g, o = gen[context], orig[context]
    g_mean, o_mean = g.mean(0), o.mean(0)
    g_std, o_std = g.std(0), o.std(0)
    ratio = torch.where(g_std > 1e-4, o_std / g_std.clamp_min(1e-4), torch.ones_like(g_std)).clamp(0.5, 2.0)
    return ((gen - g_mean) * ratio + o_mean).clamp(0.0, 1.0)


def stitch(
    decoded: torch.Tensor,
    geometry: tuple[CanvasGeometry, ...],
    original: torch.Tensor | None,
    mask: torch.Tensor | None,
    grow_px: int = 8,
    feather_px: int = 16,
    color_match: bool = False,
) -> torch.Tensor:
    """Composite each decoded canvas ``[B, Hc, Wc, C]`` into ``original`` ``[B or 1, H, W, C]``; returns
    ``[B, H, W, 3]`` (reference-only geometry: the generated areas, ``original`` may be None)."""
    grow_px = _check_px(grow_px, "grow_mask_px")
    feather_px = _check_px(feather_px, "feather_px")
    if decoded.ndim != 4:
        raise ValueError(f"image must be a decoded canvas IMAGE [B, H, W, C], got {tuple(decoded.shape)}")
    if decoded.shape[0] != len(geometry):
        raise ValueError(
            f"image has a batch of {decoded.shape[0]} but geometry describes {len(geometry)} canvases; decode the "
            "latent sampled from the same ACE++ Canvas."
        )
    if all(g.reference_only for g in geometry):
        parts = [canvas_to_crop(decoded[i : i + 1], g) for i, g in enumerate(geometry)]
        return torch.cat(parts)[..., :3]
    if original is None:
        raise ValueError("original_image is required: connect the edit image the canvas was made from")
    orig = original if original.ndim == 4 else original.unsqueeze(0)
    batch = len(geometry)
    if orig.shape[0] not in (1, batch):
        raise ValueError(f"original_image has a batch of {orig.shape[0]} but the canvas has {batch}")
    src_h, src_w = geometry[0].source_h, geometry[0].source_w
    if tuple(orig.shape[1:3]) != (src_h, src_w):
        raise ValueError(
            f"original_image is {orig.shape[2]}x{orig.shape[1]} but the canvas was made from a {src_w}x{src_h} edit "
            "image; connect the same image that went into ACE++ Canvas."
        )
    full_mask = normalize_mask(mask, (src_h, src_w), batch, name="mask", image_name="original_image",
                               device=orig.device)
    margin = grow_px + 2 * math.ceil(feather_px / 2)
    out = orig[..., :3].expand(batch, -1, -1, -1).clone()
    for i, g in enumerate(geometry):
        gen = canvas_to_crop(decoded[i : i + 1], g)[0, ..., :3].to(out.device, out.dtype)
        t, lf, h, w = g.crop_top, g.crop_left, g.crop_h, g.crop_w
        # Weight on the box plus the margin the dilation/blur can reach, then cut to the box.
        et, el = max(0, t - margin), max(0, lf - margin)
        eb, er = min(src_h, t + h + margin), min(src_w, lf + w + margin)
        weight = blend_weight(full_mask[i : i + 1, et:eb, el:er], grow_px, feather_px)[0]
        weight = weight[t - et : t - et + h, lf - el : lf - el + w].to(out.dtype)
        box = out[i, t : t + h, lf : lf + w]
        if color_match:
            gen = _match_colors(gen, box, weight == 0)
        a = weight.unsqueeze(-1)
        out[i, t : t + h, lf : lf + w] = torch.where(a > 0, box * (1 - a) + gen * a, box)
    return out
