"""Control tasks computed in the pack (no scepter, no annotator weights, no network), in vectorized torch:
recolorizing (ITU-R 601 luma), mosaic_repainting (cell means) and canny_repainting (``cv2.Canny`` on 8-bit RGB).
contour and depth need neural annotators: their control image comes from outside (:data:`EXTERNAL_TASKS`). IMAGE
``[B, H, W, C]`` in, ``[B, H, W, 3]`` out, in the input's dtype and device; the rules are in docs/CANVAS.md."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from . import validate

#: Control tasks whose guidance this module derives from the edit image.
DERIVED_TASKS = ("recolorizing", "mosaic_repainting", "canny_repainting")
#: Control tasks that need a control image from outside (neural annotators: contour drawing, depth).
EXTERNAL_TASKS = ("contour_repainting", "depth_repainting")

#: Official local-editing defaults (``models/model_zoo.yaml``).
DEFAULT_CANNY_LOW = 100
DEFAULT_CANNY_HIGH = 200
DEFAULT_MOSAIC_RATIO = 64
#: Keyword options of :func:`derive_guidance`.
OPTION_NAMES = ("low_threshold", "high_threshold", "ratio")

# ITU-R BT.601 luma weights, as PIL's "L" conversion (L = R * 299/1000 + G * 587/1000 + B * 114/1000).
_LUMA = (0.299, 0.587, 0.114)

# OpenCV's Canny sector test in fixed point: tan(22.5 deg) * 2**15, rounded.
_CANNY_SHIFT = 15
_TG22 = int(0.4142135623730950488016887242097 * (1 << _CANNY_SHIFT) + 0.5)


# ==================================================================== input handling


def _image(image: torch.Tensor, name: str = "image") -> tuple[torch.Tensor, torch.dtype]:
    """Checked IMAGE -> ``[B, H, W, 1 or 3]`` in float32/float64, plus the dtype to return."""
    image = validate.check_image(image, name)
    out_dtype = image.dtype
    if image.shape[-1] == 4:
        image = image[..., :3]
    work = torch.float64 if image.dtype == torch.float64 else torch.float32
    return image.to(work), out_dtype


def _to_rgb(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[B, H, W, 1 or 3]`` -> contiguous ``[B, H, W, 3]`` in ``dtype``."""
    if x.shape[-1] == 1:
        x = x.expand(*x.shape[:-1], 3)
    return x.to(dtype).contiguous()


def check_canny_thresholds(
    low_threshold: float, high_threshold: float, names: tuple[str, str] = ("canny low_threshold", "high_threshold")
) -> tuple[float, float]:
    """Both thresholds valid and ``low <= high``; ``names``: how messages call them (the node's widget names)."""
    what = f"on the 0-255 gradient scale, default {DEFAULT_CANNY_LOW} low / {DEFAULT_CANNY_HIGH} high"
    low, high = (validate.check_number(v, n, 0, what=what) for v, n in zip((low_threshold, high_threshold), names))
    if low > high:
        raise ValueError(f"{names[0]} ({low:g}) must not exceed {names[1]} ({high:g}); swap them (official "
                         f"{DEFAULT_CANNY_LOW} / {DEFAULT_CANNY_HIGH}).")
    return low, high


# ==================================================================== the derived tasks


def recolorizing(image: torch.Tensor) -> torch.Tensor:
    """Grayscale guidance: ITU-R 601 luma (PIL ``convert("L")`` weights) in all 3 channels, without rounding."""
    x, dtype = _image(image)
    if x.shape[-1] == 3:
        r, g, b = _LUMA
        x = x[..., 0:1] * r + x[..., 1:2] * g + x[..., 2:3] * b
    return _to_rgb(x, dtype)


def mosaic_repainting(image: torch.Tensor, ratio: int = DEFAULT_MOSAIC_RATIO) -> torch.Tensor:
    """Pixelated guidance: ``max(1, H // ratio) x max(1, W // ratio)`` cells, each the mean of its pixels.

    Pixel ``(y, x)`` belongs to cell ``(y * nh // H, x * nw // W)`` (the official nearest-neighbour upscale's
    grid).
    """
    validate.check_number(ratio, "mosaic ratio", 1, integer=True,
                          what=f"the downscale factor: cells about ratio px wide; official {DEFAULT_MOSAIC_RATIO}")
    x, dtype = _image(image)
    _, H, W, _ = x.shape
    nh, nw = max(1, H // int(ratio)), max(1, W // int(ratio))
    rows = torch.arange(H, device=x.device) * nh // H
    cols = torch.arange(W, device=x.device) * nw // W
    sums = x.new_zeros((x.shape[0], nh, W, x.shape[-1])).index_add_(1, rows, x)
    sums = x.new_zeros((x.shape[0], nh, nw, x.shape[-1])).index_add_(2, cols, sums)
    counts = torch.bincount(rows, minlength=nh).to(x.dtype)[:, None] * torch.bincount(cols, minlength=nw).to(x.dtype)
    means = sums / counts[None, :, :, None]
    return _to_rgb(means.index_select(1, rows).index_select(2, cols), dtype)


def canny_repainting(
    image: torch.Tensor, low_threshold: float = DEFAULT_CANNY_LOW, high_threshold: float = DEFAULT_CANNY_HIGH
) -> torch.Tensor:
    """Edge guidance: ``cv2.Canny(rgb_uint8, low_threshold, high_threshold)`` in torch, white edges on black.

    Thresholds are on OpenCV's scale (L1 magnitude of the 3x3 Sobel of 0-255 values, at most 2040).
    """
    low, high = check_canny_thresholds(low_threshold, high_threshold)
    x, dtype = _image(image)
    # 8-bit levels as the official annotator sees them; small integers stay exact in float32 through the Sobel.
    q = (x.clamp(0.0, 1.0) * 255.0).round().to(torch.float32).permute(0, 3, 1, 2)  # [B, C, H, W]
    p = F.pad(q, (1, 1, 1, 1), mode="replicate")
    smooth_v = p[..., :-2, :] + 2 * p[..., 1:-1, :] + p[..., 2:, :]  # [1 2 1] down the rows
    smooth_h = p[..., :, :-2] + 2 * p[..., :, 1:-1] + p[..., :, 2:]  # [1 2 1] along the columns
    gx = smooth_v[..., :, 2:] - smooth_v[..., :, :-2]
    gy = smooth_h[..., 2:, :] - smooth_h[..., :-2, :]
    mag = gx.abs() + gy.abs()
    if mag.shape[1] > 1:  # multi-channel: the channel with the largest magnitude (first on ties), as OpenCV
        best = mag.argmax(dim=1, keepdim=True)
        mag, gx, gy = (t.gather(1, best) for t in (mag, gx, gy))
    edges = _hysteresis(*_non_maximum_candidates(mag, gx, gy, low, high))
    return _to_rgb(edges.to(x.dtype).permute(0, 2, 3, 1), dtype)


def _non_maximum_candidates(
    mag: torch.Tensor, gx: torch.Tensor, gy: torch.Tensor, low: float, high: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weak (``> low``) and strong (``> high``) pixels that survive non-maximum suppression. ``[B, 1, H, W]``."""
    ix, iy = gx.to(torch.int64), gy.to(torch.int64)
    xs, ys = ix.abs(), iy.abs() << _CANNY_SHIFT
    tg22x = xs * _TG22
    tg67x = tg22x + (xs << (_CANNY_SHIFT + 1))
    horizontal = ys < tg22x  # gradient mostly along x: compare left / right
    vertical = ~horizontal & (ys > tg67x)  # mostly along y: compare above / below

    mp = F.pad(mag, (1, 1, 1, 1))  # magnitudes outside the image are 0
    left, right = mp[..., 1:-1, :-2], mp[..., 1:-1, 2:]
    up, down = mp[..., :-2, 1:-1], mp[..., 2:, 1:-1]
    up_left, up_right = mp[..., :-2, :-2], mp[..., :-2, 2:]
    down_left, down_right = mp[..., 2:, :-2], mp[..., 2:, 2:]
    keep_h = (mag > left) & (mag >= right)
    keep_v = (mag > up) & (mag >= down)
    same_sign = torch.bitwise_xor(ix, iy) >= 0  # gradient towards down-right / up-left: that diagonal
    keep_d = torch.where(same_sign, (mag > up_left) & (mag > down_right), (mag > up_right) & (mag > down_left))
    keep = torch.where(horizontal, keep_h, torch.where(vertical, keep_v, keep_d))
    weak = keep & (mag > low)
    return weak, weak & (mag > high)


def _hysteresis(weak: torch.Tensor, strong: torch.Tensor) -> torch.Tensor:
    """Weak pixels 8-connected (through weak pixels) to a strong one. ``[B, 1, H, W]`` bool in and out.

    Connected components of the weak pixels by hooking and pointer jumping (Shiloach-Vishkin style): each round
    hooks every root onto the largest neighbouring root, then jumps pointers; roots only grow, so the loop ends.
    """
    shape = weak.shape
    B, _, H, W = shape
    weak, strong = weak.reshape(B, H, W), strong.reshape(-1)
    if not bool(strong.any()):
        return torch.zeros(shape, dtype=torch.bool, device=weak.device)
    flat_weak = weak.reshape(-1)
    pixels = flat_weak.nonzero().squeeze(1)  # node -> flat pixel index
    n = int(pixels.numel())
    node_of = torch.full((flat_weak.numel(),), -1, dtype=torch.int64, device=weak.device)
    node_of[pixels] = torch.arange(n, device=weak.device)
    node_grid = node_of.view(B, H, W)

    us, vs = [], []
    for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):  # each 8-neighbour pair once
        a_cols = slice(max(0, -dx), W - max(0, dx))
        b_cols = slice(max(0, dx), W - max(0, -dx))
        a, b = node_grid[:, : H - dy, a_cols], node_grid[:, dy:, b_cols]
        both = (a >= 0) & (b >= 0)
        us.append(a[both])
        vs.append(b[both])
    u, v = torch.cat(us), torch.cat(vs)

    parent = torch.arange(n, device=weak.device)
    for _ in range(n + 1):
        hooked = parent.clone()
        pu, pv = parent[u], parent[v]
        hooked.scatter_reduce_(0, pu, pv, reduce="amax")
        hooked.scatter_reduce_(0, pv, pu, reduce="amax")
        for _ in range(n + 1):  # pointer jumping until every node points at its root
            jumped = hooked[hooked]
            if torch.equal(jumped, hooked):
                break
            hooked = jumped
        if torch.equal(hooked, parent):
            break
        parent = hooked

    keep_root = torch.zeros(n, dtype=torch.bool, device=weak.device)
    keep_root[parent[node_of[strong & flat_weak]]] = True
    edges = torch.zeros(flat_weak.numel(), dtype=torch.bool, device=weak.device)
    edges[pixels] = keep_root[parent]
    return edges.view(shape)


# ==================================================================== dispatch and composite


def check_options(options, name: str = "control_options") -> dict:
    """``options`` (None or a mapping with keys among :data:`OPTION_NAMES`) as a dict; a ``ValueError`` otherwise.
    The values are checked where they are used."""
    if options is None:
        return {}
    if not isinstance(options, Mapping) or not set(options) <= set(OPTION_NAMES):
        raise ValueError(f"{name} must be a mapping with keys among {OPTION_NAMES}, got {options!r}")
    return dict(options)


def derive_guidance(
    task: str, image: torch.Tensor, *, low_threshold: float = DEFAULT_CANNY_LOW,
    high_threshold: float = DEFAULT_CANNY_HIGH, ratio: int = DEFAULT_MOSAIC_RATIO,
) -> torch.Tensor:
    """The full-image guidance ``[B, H, W, 3]`` of a task in :data:`DERIVED_TASKS` (canny: the thresholds; mosaic:
    ``ratio``); :data:`EXTERNAL_TASKS` need a control image from outside (``ValueError``)."""
    if task == "recolorizing":
        return recolorizing(image)
    if task == "mosaic_repainting":
        return mosaic_repainting(image, ratio)
    if task == "canny_repainting":
        return canny_repainting(image, low_threshold, high_threshold)
    if task in EXTERNAL_TASKS:
        raise ValueError(
            f"task {task!r} needs a neural annotator that this pack does not run (it would download weights): "
            "pass a control image from a preprocessor node instead."
        )
    raise ValueError(f"task must be one of {DERIVED_TASKS} to derive guidance, got {task!r}")

