"""Stitch a generated canvas back into the original, full-resolution edit image (the rules: docs/CANVAS.md).

``out = original * (1 - w) + generated * w`` where the blend weight ``w`` (the mask grown, then feathered) is > 0,
the original pixels bit for bit elsewhere; only the crop box is processed, in bands of :data:`BAND_ROWS` rows."""

from __future__ import annotations

import math

import torch

from . import limits, validate
from .geometry import CanvasGeometry, canvas_to_crop, check_geometries
from .masks import normalize_mask, outpaint_mask
from .resize import pad_constant

#: Rows of the box blended at a time (bounds the temporaries of the blend).
BAND_ROWS = 512


def _window(n: int, r: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Ends [lo, hi) of the windows [i - r, i + r] clipped to [0, n), for every i."""
    i = torch.arange(n, device=device)
    return (i - r).clamp_(min=0), (i + r + 1).clamp_(max=n)


def _window_sum(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """Exact sums of an int32 tensor over the windows [i - r, i + r] (clipped) along ``dim``, from prefix sums
    padded with r + 1 zeros in front and r copies of the total behind."""
    n = x.shape[dim]
    c = x.cumsum(dim, dtype=torch.int32)
    front, back = list(c.shape), list(c.shape)
    front[dim], back[dim] = r + 1, r
    padded = torch.cat([c.new_zeros(front), c, c.narrow(dim, n - 1, 1).expand(back)], dim)
    return padded.narrow(dim, 2 * r + 1, n) - padded.narrow(dim, 0, n)


def _dilate(m: torch.Tensor, r: int) -> torch.Tensor:
    """Square dilation of radius ``r`` of a 0/1 integer ``[N, H, W]`` (outside counts as empty), separably."""
    m = (_window_sum(m, r, 1) > 0).to(torch.int32)
    return (_window_sum(m, r, 2) > 0).to(torch.int32)


def blend_weight(mask: torch.Tensor, grow_px: int, feather_px: int) -> torch.Tensor:
    """Blend weight ``[B, H, W]`` in [0, 1] from a binary mask ``[B, H, W]``: grown, then feathered by a box blur
    that divides by the window's pixels inside the image (``count_include_pad=False``)."""
    m = (mask > 0.5).to(torch.int32)
    if grow_px > 0:
        m = _dilate(m, grow_px)
    if feather_px <= 0:
        return m.to(torch.float32)
    r = math.ceil(feather_px / 2)
    m = _dilate(m, r)
    sums = _window_sum(_window_sum(m, r, 1), r, 2)
    lo_h, hi_h = _window(m.shape[1], r, m.device)
    lo_w, hi_w = _window(m.shape[2], r, m.device)
    counts = (hi_h - lo_h).view(-1, 1) * (hi_w - lo_w).view(1, -1)
    # Inside the grown mask every window is all ones: the weight is exactly 1 there (sums == counts).
    return sums.to(torch.float32) / counts.to(torch.float32)


def _bands(h: int):
    for r0 in range(0, h, BAND_ROWS):
        yield r0, min(h, r0 + BAND_ROWS)


def _color_transform(gen: torch.Tensor, orig_box: torch.Tensor, weight_of) -> tuple | None:
    """Per-channel float32 (g_mean, ratio, o_mean) that match ``gen``'s statistics over the untouched context of
    the box (weight 0) to the original's; None when the context has fewer than 16 pixels. Float32 (MPS has no
    float64), band statistics merged with Chan et al.'s pairwise update, so no large sums of squares cancel."""
    n, mean, m2 = 0, None, None  # [2, C] each: gen, orig
    for r0, r1 in _bands(gen.shape[0]):
        context = torch.ones(r1 - r0, gen.shape[1], dtype=torch.bool, device=gen.device)
        part = weight_of(r0, r1)
        if part is not None:
            a, c0, c1 = part
            context[:, c0:c1] = a == 0
        x = torch.stack([gen[r0:r1][context], orig_box[r0:r1][context]]).float()  # [2, k, C]
        k = int(x.shape[1])
        if k == 0:
            continue
        b_mean = x.mean(1)
        b_m2 = (x - b_mean[:, None]).square_().sum(1)
        if mean is None:
            n, mean, m2 = k, b_mean, b_m2
            continue
        delta = b_mean - mean
        total = n + k
        mean = mean + delta * (k / total)
        m2 = m2 + b_m2 + delta.square() * (n * k / total)
        n = total
    if n < 16:
        return None
    g_std, o_std = (m2 / (n - 1)).sqrt()
    ratio = torch.where(g_std > 1e-4, o_std / g_std.clamp_min(1e-4), torch.ones_like(g_std)).clamp(0.5, 2.0)
    return mean[0], ratio, mean[1]


def _check_decoded(decoded, geometry) -> tuple[torch.Tensor, tuple[CanvasGeometry, ...]]:
    """The decoded canvas batch and its geometry, one per item: N images of N canvases, or N images of one canvas
    (variations, e.g. the latent through RepeatLatentBatch: the geometry is used for every image, the way a mask
    of batch 1 is)."""
    geometry = check_geometries(geometry, "geometry")
    decoded = validate.check_image(decoded, "image")
    n = int(decoded.shape[0])
    if n == len(geometry):
        return decoded, geometry
    if len(geometry) == 1:
        return decoded, geometry * n
    raise ValueError(
        f"image has a batch of {n} but geometry describes {len(geometry)} canvases; decode the latent sampled from "
        f"the same ACE++ Canvas: {len(geometry)} images (one per canvas), or any number of variations of a single "
        "canvas (make the canvas from one photo)."
    )


def cut_back(decoded: torch.Tensor, geometry: tuple[CanvasGeometry, ...]) -> torch.Tensor:
    """Each item's generated area at its size in the source (``[B, crop_h, crop_w, 3]``), no blending.

    Error messages call the inputs by the ACE++ Cut Back node's names (``image``, ``geometry``).
    """
    decoded, geometry = _check_decoded(decoded, geometry)
    parts = [validate.rgb(canvas_to_crop(decoded[i : i + 1], g, name="image")) for i, g in enumerate(geometry)]
    if len({p.shape for p in parts}) != 1:
        raise ValueError("geometry: the batch items were cut back to different sizes; run them one at a time")
    return torch.cat(parts).to(torch.float32)  # a ComfyUI IMAGE, whatever the decoded dtype


def stitch(
    decoded: torch.Tensor, geometry: tuple[CanvasGeometry, ...], original: torch.Tensor | None,
    mask: torch.Tensor | None, grow_px: int = 8, feather_px: int = 16, color_match: bool = False,
) -> torch.Tensor:
    """Composite each decoded canvas ``[B, Hc, Wc, C]`` into ``original`` ``[B or 1, H, W, C]``; returns
    ``[B, H, W, 3]`` (reference-only geometry: the generated areas, ``original`` may be None).

    Error messages call the inputs by the ACE++ Stitch node's names: ``image`` (``decoded``), ``geometry``,
    ``original_image``, ``mask``, ``grow_mask_px``, ``feather_px``, ``color_match``.
    """
    grow_px = limits.GROW_MASK_PX.check(grow_px, "grow_mask_px")  # values through links are not range-checked
    feather_px = limits.FEATHER_PX.check(feather_px, "feather_px")
    if not isinstance(color_match, bool):
        raise ValueError(f"color_match must be True or False, got {color_match!r}")
    decoded, geometry = _check_decoded(decoded, geometry)
    kinds = {g.reference_only for g in geometry}
    if kinds == {True}:
        return cut_back(decoded, geometry)
    if len(kinds) != 1:
        raise ValueError("geometry mixes reference-only and edit canvases; connect the geometry of one ACE++ Canvas")
    if original is None:
        raise ValueError("original_image is required: connect the edit image the canvas was made from")
    orig = validate.rgb(validate.check_image(original, "original_image"))
    batch = len(geometry)
    if orig.shape[0] not in (1, batch):
        raise ValueError(f"original_image has a batch of {orig.shape[0]} but the canvas has {batch}")
    src_h, src_w = geometry[0].source_h, geometry[0].source_w
    if any((g.source_h, g.source_w) != (src_h, src_w) for g in geometry):
        raise ValueError("geometry describes edit images of different sizes; connect the geometry of one ACE++ Canvas")
    g0 = geometry[0]
    pads = (g0.outpaint_top, g0.outpaint_bottom, g0.outpaint_left, g0.outpaint_right)
    oh, ow = src_h - pads[0] - pads[1], src_w - pads[2] - pads[3]  # the original, without outpainting
    if tuple(orig.shape[1:3]) != (oh, ow):
        raise ValueError(
            f"original_image is {orig.shape[2]}x{orig.shape[1]} but the canvas was made from a {ow}x{oh} edit "
            "image; connect the same image that went into ACE++ Canvas."
        )
    out = orig.to(torch.float32).expand(batch, -1, -1, -1)  # a ComfyUI IMAGE (float32)
    if any(pads):  # the enlarged image: the original in place, the new area generated (weight 1, never feathered)
        # Only the given mask is grown and feathered; the new area gets weight 1 below.
        full_mask = outpaint_mask(mask, (oh, ow), batch, pads, name="mask", new_area=0.0, device=orig.device) > 0.5
        out = pad_constant(out.permute(0, 3, 1, 2), pads[2], pads[0], pads[3], pads[1], value=0.5).permute(0, 2, 3, 1)
    else:
        full_mask = normalize_mask(mask, (src_h, src_w), batch, name="mask", image_name="original_image",
                                   device=orig.device, dtype=torch.bool)
    out = out.clone()
    margin = grow_px + 2 * math.ceil(feather_px / 2)
    for i, g in enumerate(geometry):
        gen = validate.rgb(canvas_to_crop(decoded[i : i + 1], g, name="image")[0]).to(out.device, out.dtype)
        t, lf, h, w = g.crop_top, g.crop_left, g.crop_h, g.crop_w
        box = out[i, t : t + h, lf : lf + w]

        def weight_of(r0: int, r1: int, i=i, t=t, lf=lf, w=w):
            """Weight of box rows [r0, r1) as (weight, c0, c1) over box columns [c0, c1) (0 elsewhere), or None
            when it is 0 everywhere. Computed on the mask rows and columns the dilation and blur can reach: 2 x
            margin around the marked columns, so no window that matters is cut by the slab's edges."""
            et, eb = max(0, t + r0 - margin), min(src_h, t + r1 + margin)
            el, er = max(0, lf - margin), min(src_w, lf + w + margin)
            slab = full_mask[i, et:eb, el:er]
            marked = slab.any(dim=0).nonzero()
            if marked.numel() == 0:
                return None
            s0 = max(0, int(marked[0]) - 2 * margin)
            s1 = min(er - el, int(marked[-1]) + 1 + 2 * margin)
            weight = blend_weight(slab[None, :, s0:s1], grow_px, feather_px)[0]
            c0, c1 = max(el + s0, lf), min(el + s1, lf + w)  # source columns, cut to the box
            if c0 >= c1:
                return None
            weight = weight[t + r0 - et : t + r1 - et, c0 - el - s0 : c1 - el - s0]
            return weight, c0 - lf, c1 - lf

        def outpainted_weight_of(r0: int, r1: int, t=t, lf=lf, w=w, mask_weight=weight_of):
            """``weight_of``, and 1 over the outpainted area."""
            part = mask_weight(r0, r1)
            rows = torch.arange(t + r0, t + r1, device=out.device)
            cols = torch.arange(lf, lf + w, device=out.device)
            new = ((rows < pads[0]) | (rows >= src_h - pads[1]))[:, None] | ((cols < pads[2]) | (cols >= src_w - pads[3]))
            if not bool(new.any()):
                return part
            full = torch.zeros(new.shape, dtype=torch.float32, device=out.device)
            if part is not None:
                full[:, part[1] : part[2]] = part[0]
            return torch.maximum(full, new.to(torch.float32)), 0, w

        if any(pads):
            weight_of = outpainted_weight_of

        transform = _color_transform(gen, box, weight_of) if color_match else None
        for r0, r1 in _bands(h):
            part = weight_of(r0, r1)
            if part is None:
                continue
            weight, c0, c1 = part
            a = weight.to(out.dtype).unsqueeze(-1)
            if not bool((a > 0).any()):
                continue
            gb = gen[r0:r1, c0:c1]
            if transform is not None:
                g_mean, ratio, o_mean = transform
                gb = ((gb.float() - g_mean) * ratio + o_mean).clamp_(0.0, 1.0).to(out.dtype)
            bb = box[r0:r1, c0:c1]
            bb.copy_(torch.where(a > 0, bb * (1 - a) + gb * a, bb))
    return out
