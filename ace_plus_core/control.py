"""Control tasks computed in the pack: no scepter, no annotator weights, no network.

The official ACE++ code derives the guidance of its control tasks with scepter annotators (``edit_preprocess``):
it converts the edit image to 8-bit RGB, runs the annotator, and pastes the annotator output over the edit image
under the mask binarized at 0.5 (``Image.composite``). Three of those annotators are plain image processing and are
reproduced here in vectorized torch; the other two are neural networks and need an external control image:

* ``recolorizing`` (official ``GrayAnnotator``): :func:`recolorizing`, ITU-R 601 luma
  ``L = 0.299 R + 0.587 G + 0.114 B`` (PIL's ``convert("L")`` weights), replicated to 3 channels, kept in float
  (no 8-bit rounding). The official annotator calls ``cv2.cvtColor(rgb, COLOR_BGR2GRAY)`` on an RGB array, i.e.
  it swaps the red and blue weights; this pack uses the standard weights.
* ``mosaic_repainting`` (official ``ColorAnnotator``, ``RATIO: 64`` in the official local-editing config
  ``models/model_zoo.yaml`` and ``config/ace_plus_fft.yaml``): :func:`mosaic_repainting`. ``ratio`` is a
  **downscale factor**, not a block count: the official annotator resizes an ``H x W`` image to
  ``(H // ratio) x (W // ratio)`` cells (bicubic) and back with nearest neighbour, so cells are about
  ``ratio`` px wide (a 1024x1024 image becomes 16x16 cells of 64x64 px). Here the grid is the same - there are
  ``nh = max(1, H // ratio)`` by ``nw = max(1, W // ratio)`` cells and pixel ``(y, x)`` lies in cell
  ``(y * nh // H, x * nw // W)``, which is where nearest-neighbour upscaling puts it - but each cell holds the
  **mean** of its pixels (the official bicubic downscale has no antialiasing and samples a few pixels near the
  cell centre, which flickers with small shifts). The official code fails for images smaller than ``ratio``
  (a zero-size resize); here such a side has one cell.
* ``canny_repainting`` (official ``CannyAnnotator``, ``LOW_THRESHOLD: 100``, ``HIGH_THRESHOLD: 200``):
  :func:`canny_repainting`, OpenCV's ``cv2.Canny(rgb_uint8, low, high)`` with its defaults (3x3 Sobel,
  ``L2gradient=False``) re-implemented step by step. The official annotator calls ``cv2.Canny`` directly on the
  8-bit **RGB** image: no grayscale conversion and no Gaussian blur before it (``cv2.Canny`` itself does not blur
  either). So: quantize to 0..255 (``round(x * 255)``), 3x3 Sobel per channel with replicated borders, L1 magnitude
  ``|gx| + |gy|``, per pixel keep the channel with the largest magnitude (the first on ties, as OpenCV does for
  multi-channel input), non-maximum suppression along 4 directions with OpenCV's fixed-point ``tan(22.5 deg)``
  sectors and its tie rules (magnitudes outside the image count as 0), double threshold (weak: ``> low``,
  strong: ``> high``), then hysteresis: every weak pixel 8-connected through weak pixels to a strong one is an
  edge. Hysteresis is a connected-components labelling of the weak pixels on the sparse graph of their
  8-neighbour pairs (hooking and pointer jumping, iterated until nothing changes; bounded by the number of weak
  pixels, typically a handful of rounds), not a pixel-by-pixel stack. On the test images the edge maps are
  identical to ``cv2.Canny``'s. Output: white edges on black, 3 channels.
* ``contour_repainting`` (``InfoDrawContourAnnotator``) and ``depth_repainting`` (``MidasDetector``) are neural
  annotators whose weights the official code downloads at run time; this pack never downloads anything, so these
  tasks take the control image from outside (any ComfyUI preprocessor node's output), see :data:`EXTERNAL_TASKS`.

:func:`apply_under_mask` is the official composite without its 8-bit round trip: guidance where the mask is above
0.5, the original pixels (bit for bit) elsewhere.

Every function takes ComfyUI IMAGE tensors ``[B, H, W, C]`` (or ``[H, W, C]``; C = 1, 3 or 4, alpha ignored) with
values in [0, 1], processes every batch item, stays on the input's device and returns ``[B, H, W, 3]`` in the
input's floating dtype.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from . import validate

__all__ = [
    "DEFAULT_CANNY_HIGH",
    "DEFAULT_CANNY_LOW",
    "DEFAULT_MOSAIC_RATIO",
    "DERIVED_TASKS",
    "EXTERNAL_TASKS",
    "OPTION_NAMES",
    "apply_under_mask",
    "canny_repainting",
    "check_options",
    "derive_guidance",
    "mosaic_repainting",
    "recolorizing",
]

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
    """IMAGE -> ``[B, H, W, C]`` (C = 1 or 3) in float32/float64, plus the dtype to return.

    Checked by :func:`.validate.check_image` (NaN/inf: ``ValueError``; values outside [0, 1] clamped)."""
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


def _check_threshold(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a number >= 0 on the 0-255 gradient scale (default: "
                         f"{DEFAULT_CANNY_LOW} low / {DEFAULT_CANNY_HIGH} high), got {value!r}")
    return float(value)


def check_canny_thresholds(
    low_threshold: float, high_threshold: float, names: tuple[str, str] = ("canny low_threshold", "high_threshold")
) -> tuple[float, float]:
    """Both thresholds valid and ``low <= high``; ``names``: how messages call them (the node's widget names)."""
    low = _check_threshold(low_threshold, names[0])
    high = _check_threshold(high_threshold, names[1])
    if low > high:
        raise ValueError(
            f"{names[0]} ({low:g}) must not exceed {names[1]} ({high:g}); swap them (official "
            f"{DEFAULT_CANNY_LOW} / {DEFAULT_CANNY_HIGH})."
        )
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
    grid); see the module docstring for how this relates to the official ``ColorAnnotator``.
    """
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Integral) or ratio < 1:
        raise ValueError(
            f"mosaic ratio must be an integer >= 1 (the downscale factor: cells are about ratio px wide; official "
            f"default {DEFAULT_MOSAIC_RATIO}), got {ratio!r}"
        )
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

    Thresholds are on OpenCV's scale (L1 magnitude of the 3x3 Sobel of 0-255 values, at most 2040). See the
    module docstring for every step.
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

    Connected components of the weak pixels, on the sparse graph of their 8-neighbour pairs, by hooking and
    pointer jumping (Shiloach-Vishkin style): every weak pixel starts as its own root; each round hooks every root
    onto the largest root among its neighbours' (``scatter_reduce`` amax), then jumps pointers until every pixel
    points at its root. Roots only grow, so no cycles form; a round that changes nothing has labelled the
    components, and every other round removes at least one root, so the loop (bounded by the number of weak
    pixels) always finishes, typically in a handful of rounds. A component is kept if it holds a strong pixel.
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
    task: str,
    image: torch.Tensor,
    *,
    low_threshold: float = DEFAULT_CANNY_LOW,
    high_threshold: float = DEFAULT_CANNY_HIGH,
    ratio: int = DEFAULT_MOSAIC_RATIO,
) -> torch.Tensor:
    """The full-image guidance of a control task in :data:`DERIVED_TASKS` (``[B, H, W, 3]``).

    ``low_threshold`` / ``high_threshold`` are used by ``canny_repainting``, ``ratio`` by ``mosaic_repainting``.
    Tasks in :data:`EXTERNAL_TASKS` need a control image from outside and raise a ``ValueError`` here.
    """
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


def apply_under_mask(guidance: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``guidance`` where ``mask > 0.5``, ``image`` elsewhere (bit for bit): the official ``Image.composite``.

    ``guidance`` and ``image``: IMAGE ``[B, H, W, C]`` of the same size (alpha dropped, 1 channel expanded; a
    batch of 1 is used for every item); ``mask``: MASK ``[B, H, W]`` or ``[H, W]`` of the same size. Returns
    ``[B, H, W, 3]`` in ``image``'s dtype.
    """
    g, _ = _image(guidance, "guidance")
    image = validate.check_image(image, "image")
    x, dtype = _image(image, "image")
    mask = validate.check_mask(mask, "mask")
    hw = tuple(x.shape[1:3])
    if tuple(g.shape[1:3]) != hw or tuple(mask.shape[1:]) != hw:
        raise ValueError(
            f"guidance {tuple(g.shape[1:3])}, image {hw} and mask {tuple(mask.shape[1:])} must have the same "
            "height x width"
        )
    batch = max(g.shape[0], x.shape[0], mask.shape[0])
    for name, n in (("guidance", g.shape[0]), ("image", x.shape[0]), ("mask", mask.shape[0])):
        if n not in (1, batch):
            raise ValueError(f"{name} has a batch of {n}, expected 1 or {batch}")
    x = image  # original values (after the [0, 1] clamp), bit for bit
    x = x[..., :3] if x.shape[-1] == 4 else x.expand(*x.shape[:-1], 3) if x.shape[-1] == 1 else x
    return torch.where((mask > 0.5).to(x.device).unsqueeze(-1), g.to(device=x.device, dtype=dtype), x)
