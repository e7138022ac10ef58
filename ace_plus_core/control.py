"""Control tasks computed in the pack (no scepter, no annotator weights, no network), in vectorized torch:
recolorizing (ITU-R 601 luma), mosaic_repainting (cell means) and canny_repainting (``cv2.Canny`` on 8-bit RGB).
contour and depth need neural annotators: their control image comes from outside (:data:`EXTERNAL_TASKS`). IMAGE
``[B, H, W, C]`` in, ``[B, H, W, 3]`` out, in the input's dtype and device; the rules are in docs/CANVAS.md."""

from __future__ import annotations

from collections.abc import Callable, Mapping

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
#
# Each task is computed for a box of its source image from a window that a reader returns, ``read(top, left, height,
# width)`` -> the source IMAGE's pixels there (the canvas' reader also serves outpainted images without building
# them). The window is the box plus what the operator reads around it: nothing for recolorizing, the rest of the
# cells the box touches for mosaic, for canny the 3x3 Sobel's and the non-maximum suppression's 2 px plus the
# context that settles hysteresis. The result is the whole image's guidance over the box, at the cost of the box.

#: ``(top, left, height, width)`` in source pixels.
Box = tuple[int, int, int, int]
#: ``read(top, left, height, width)`` -> the source IMAGE's pixels in that box, ``[B, height, width, C]``.
Reader = Callable[[int, int, int, int], torch.Tensor]

#: Pixels beyond a region that Canny's weak/strong candidates there depend on: the 3x3 Sobel (1) and the
#: non-maximum suppression's neighbours (1).
CANNY_SUPPORT = 2
#: Context first read around a box for Canny's hysteresis (px on every side); multiplied by
#: :data:`CANNY_MARGIN_GROWTH` while a weak edge through the box leaves the context without meeting a strong one.
CANNY_MARGIN = 32
CANNY_MARGIN_GROWTH = 4
#: Pixels whose Canny candidates are computed at once (a taller region goes in bands of rows).
CANNY_BAND_PIXELS = 1 << 20


def image_reader(image: torch.Tensor) -> Reader:
    """The :data:`Reader` of a whole IMAGE ``[B, H, W, C]`` (views)."""
    return lambda top, left, h, w: image[:, top : top + h, left : left + w]


def _whole(image: torch.Tensor) -> tuple[Reader, tuple[int, int], Box]:
    """Reader, size and whole-image box of a checked IMAGE."""
    image = validate.check_image(image, "image")
    h, w = int(image.shape[1]), int(image.shape[2])
    return image_reader(image), (h, w), (0, 0, h, w)


def _grown(box: Box, by: int, hw: tuple[int, int]) -> Box:
    """``box`` grown by ``by`` px on every side, clamped to an image of ``hw``."""
    top, left = max(0, box[0] - by), max(0, box[1] - by)
    return top, left, min(hw[0], box[0] + box[2] + by) - top, min(hw[1], box[1] + box[3] + by) - left


def _within(inner: Box, outer: Box) -> tuple[slice, slice]:
    """(rows, cols) slices of ``inner`` in an array that covers ``outer``."""
    top, left = inner[0] - outer[0], inner[1] - outer[1]
    return slice(top, top + inner[2]), slice(left, left + inner[3])


def recolorizing(image: torch.Tensor) -> torch.Tensor:
    """Grayscale guidance: ITU-R 601 luma (PIL ``convert("L")`` weights) in all 3 channels, without rounding."""
    return recolorizing_in_box(*_whole(image))


def recolorizing_in_box(read: Reader, hw: tuple[int, int], box: Box) -> torch.Tensor:
    """:func:`recolorizing` of the source over ``box`` (a pixel-wise rule: from the box's pixels alone)."""
    x, dtype = _image(read(*box))
    if x.shape[-1] == 3:
        r, g, b = _LUMA
        x = x[..., 0:1] * r + x[..., 1:2] * g + x[..., 2:3] * b
    return _to_rgb(x, dtype)


def mosaic_repainting(image: torch.Tensor, ratio: int = DEFAULT_MOSAIC_RATIO) -> torch.Tensor:
    """Pixelated guidance: ``max(1, H // ratio) x max(1, W // ratio)`` cells, each the mean of its pixels.

    Pixel ``(y, x)`` belongs to cell ``(y * nh // H, x * nw // W)`` (the official nearest-neighbour upscale's
    grid).
    """
    return mosaic_repainting_in_box(*_whole(image), ratio)


def _cell_span(start: int, length: int, size: int, cells: int) -> tuple[int, int]:
    """Rows [first, end) of the whole cells (``cells`` over ``size`` px, row y in cell ``y * cells // size``) that
    rows [start, start + length) touch."""
    first, last = start * cells // size, (start + length - 1) * cells // size
    return -(-first * size // cells), -(-(last + 1) * size // cells)


def mosaic_repainting_in_box(read: Reader, hw: tuple[int, int], box: Box, ratio: int = DEFAULT_MOSAIC_RATIO
                             ) -> torch.Tensor:
    """:func:`mosaic_repainting` of the source (``hw``, the cells on its grid) over ``box``, from the whole cells
    that the box touches."""
    validate.check_number(ratio, "mosaic ratio", 1, integer=True,
                          what=f"the downscale factor: cells about ratio px wide; official {DEFAULT_MOSAIC_RATIO}")
    H, W = hw
    top, left, h, w = box
    nh, nw = max(1, H // int(ratio)), max(1, W // int(ratio))
    (r0, r1), (c0, c1) = _cell_span(top, h, H, nh), _cell_span(left, w, W, nw)
    x, dtype = _image(read(r0, c0, r1 - r0, c1 - c0))
    rows = torch.arange(r0, r1, device=x.device) * nh // H
    cols = torch.arange(c0, c1, device=x.device) * nw // W
    rows, cols = rows - rows[0], cols - cols[0]  # the window's cells, from 0
    nh, nw = int(rows[-1]) + 1, int(cols[-1]) + 1
    sums = x.new_zeros((x.shape[0], nh, x.shape[2], x.shape[-1])).index_add_(1, rows, x)
    sums = x.new_zeros((x.shape[0], nh, nw, x.shape[-1])).index_add_(2, cols, sums)
    counts = torch.bincount(rows, minlength=nh).to(x.dtype)[:, None] * torch.bincount(cols, minlength=nw).to(x.dtype)
    means = sums / counts[None, :, :, None]
    rows, cols = rows[top - r0 : top - r0 + h], cols[left - c0 : left - c0 + w]
    return _to_rgb(means.index_select(1, rows).index_select(2, cols), dtype)


def canny_repainting(
    image: torch.Tensor, low_threshold: float = DEFAULT_CANNY_LOW, high_threshold: float = DEFAULT_CANNY_HIGH
) -> torch.Tensor:
    """Edge guidance: ``cv2.Canny(rgb_uint8, low_threshold, high_threshold)`` in torch, white edges on black.

    Thresholds are on OpenCV's scale (L1 magnitude of the 3x3 Sobel of 0-255 values, at most 2040).
    """
    check_canny_thresholds(low_threshold, high_threshold)
    return canny_repainting_in_box(*_whole(image), low_threshold, high_threshold)


def canny_repainting_in_box(
    read: Reader, hw: tuple[int, int], box: Box, low_threshold: float = DEFAULT_CANNY_LOW,
    high_threshold: float = DEFAULT_CANNY_HIGH,
) -> torch.Tensor:
    """:func:`canny_repainting` of the whole source over ``box``, pixel for pixel, from a window around the box.

    Sobel and non-maximum suppression are local: a region's weak and strong pixels need :data:`CANNY_SUPPORT` px
    around it. Hysteresis is not: a weak pixel is an edge when a chain of weak pixels, of any length, joins it to
    a strong one. So the region is the box plus :data:`CANNY_MARGIN` px of context; a weak chain that enters the
    box is settled when it holds a strong pixel in the region (an edge) or ends inside it (not one); while one
    leaves the region unsettled, the context on the sides it reaches grows :data:`CANNY_MARGIN_GROWTH`-fold (up
    to the whole image, where every chain is settled); only the new bands are read and computed.
    """
    low, high = check_canny_thresholds(low_threshold, high_threshold)
    H, W = hw
    top, left, h, w = box
    margins = [CANNY_MARGIN] * 4  # top, bottom, left, right
    region, weak, strong = None, None, None
    while True:
        region_top, region_left = max(0, top - margins[0]), max(0, left - margins[2])
        grown = (region_top, region_left, min(H, top + h + margins[1]) - region_top,
                 min(W, left + w + margins[3]) - region_left)
        if region is None:
            weak, strong, dtype = _candidates_over(read, hw, grown, low, high)
        else:  # what was computed stays; only the new bands are read
            weak, strong = _enlarged(weak, grown, region), _enlarged(strong, grown, region)
            for band in _bands(grown, region):
                rows, cols = _within(band, grown)
                weak[:, rows, cols], strong[:, rows, cols], _ = _candidates_over(read, hw, band, low, high)
        region = grown
        open_sides = (region[0] > 0, region[0] + region[2] < H, region[1] > 0, region[1] + region[3] < W)
        rows, cols = _within(box, region)
        edges, unsettled = _hysteresis(weak, strong, open_sides, (rows, cols))
        if not any(unsettled):
            return _to_rgb(edges[:, rows, cols, None].to(dtype), dtype)
        margins = [m * CANNY_MARGIN_GROWTH if grow else m for m, grow in zip(margins, unsettled)]


def _candidates_over(read: Reader, hw: tuple[int, int], region: Box, low: float, high: float
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.dtype]:
    """:func:`_canny_candidates` over ``region``, read with its support in bands of at most
    :data:`CANNY_BAND_PIXELS` (the float temporaries take about 100 B a pixel), and the dtype to return guidance in."""
    top, left, h, w = region
    step = max(1, CANNY_BAND_PIXELS // w)
    weak, strong = [], []
    for band_top in range(top, top + h, step):
        band = (band_top, left, min(step, top + h - band_top), w)
        window = _grown(band, CANNY_SUPPORT, hw)
        x, dtype = _image(read(*window))
        rows, cols = _within(band, window)
        for out, t in zip((weak, strong), _canny_candidates(x, low, high)):
            out.append(t[:, rows, cols])
    if len(weak) == 1:
        return weak[0], strong[0], dtype
    return torch.cat(weak, dim=1), torch.cat(strong, dim=1), dtype


def _enlarged(x: torch.Tensor, outer: Box, inner: Box) -> torch.Tensor:
    """``[B, h, w]`` over ``inner`` placed in a zero ``[B, H, W]`` over ``outer``."""
    out = x.new_zeros((x.shape[0], outer[2], outer[3]))
    rows, cols = _within(inner, outer)
    out[:, rows, cols] = x
    return out


def _bands(outer: Box, inner: Box) -> list[Box]:
    """``outer`` minus ``inner`` (which it contains) as up to four boxes: top, bottom (full width), left, right."""
    top, left, h, w = outer
    i_top, i_left, i_h, i_w = inner
    bands = [(top, left, i_top - top, w), (i_top + i_h, left, top + h - i_top - i_h, w),
             (i_top, left, i_h, i_left - left), (i_top, i_left + i_w, i_h, left + w - i_left - i_w)]
    return [b for b in bands if b[2] > 0 and b[3] > 0]


def _canny_candidates(x: torch.Tensor, low: float, high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Weak (``> low``) and strong (``> high``) pixels of ``[B, H, W, C]`` in [0, 1] that survive non-maximum
    suppression, ``[B, H, W]`` bool; exact at least :data:`CANNY_SUPPORT` px inside the edges of ``x`` that are
    not the image's.

    The gradients are small integers (``|gx|, |gy| <= 1020``): int16; OpenCV's fixed-point sector test, written as
    ``|gy| * 2**15 < |gx| * tg22`` and ``(|gy| - 2 |gx|) * 2**15 > |gx| * tg22``, in int32.
    """
    # 8-bit levels as the official annotator sees them (x is checked: within [0, 1]), as contiguous int16
    # [B, C, H, W] planes: every Sobel value fits (|gx|, |gy| <= 1020, magnitude <= 2040) in half float32's bytes.
    q = torch.round(x.permute(0, 3, 1, 2) * 255.0).to(torch.int16, memory_format=torch.contiguous_format)
    # OpenCV's Sobel replicates the border: constant padding (every dtype, every device), then the edges copied.
    p = F.pad(q, (1, 1, 1, 1))
    p[..., 0, :], p[..., -1, :] = p[..., 1, :], p[..., -2, :]
    p[..., :, 0], p[..., :, -1] = p[..., :, 1], p[..., :, -2]
    smooth_v = torch.add(p[..., :-2, :] + p[..., 2:, :], p[..., 1:-1, :], alpha=2)  # [1 2 1] down the rows
    smooth_h = torch.add(p[..., :, :-2] + p[..., :, 2:], p[..., :, 1:-1], alpha=2)  # [1 2 1] along the columns
    gx = smooth_v[..., :, 2:] - smooth_v[..., :, :-2]
    gy = smooth_h[..., 2:, :] - smooth_h[..., :-2, :]
    mag = gx.abs() + gy.abs()
    if mag.shape[1] > 1:  # multi-channel: the channel with the largest magnitude (first on ties), as OpenCV
        best = mag.argmax(dim=1, keepdim=True)
        mag, gx, gy = (t.gather(1, best) for t in (mag, gx, gy))
    mag, gx, gy = mag[:, 0], gx[:, 0], gy[:, 0]
    ax, ay = gx.abs().to(torch.int32), gy.abs().to(torch.int32)

    tg22x = ax * _TG22
    horizontal = ay * (1 << _CANNY_SHIFT) < tg22x  # gradient mostly along x: compare left / right
    # Mostly along y: above / below (OpenCV's |gy| << 15 > tg22x + (|gx| << 16), which excludes horizontal).
    vertical = (ay - 2 * ax) * (1 << _CANNY_SHIFT) > tg22x
    # Diagonal otherwise (then gx, gy != 0): towards down-right / up-left when their signs agree.
    same_sign = torch.bitwise_xor(gx, gy) >= 0

    # The two neighbours along the gradient; the first must be exceeded, the second matched (horizontal,
    # vertical) or exceeded (diagonal: compared with its magnitude + 1, as magnitudes are integers).
    mp = F.pad(mag, (1, 1, 1, 1))  # magnitudes outside the image are 0
    mp1 = mp + 1
    first = torch.where(horizontal, mp[..., 1:-1, :-2], torch.where(
        vertical, mp[..., :-2, 1:-1], torch.where(same_sign, mp[..., :-2, :-2], mp[..., :-2, 2:])))
    second = torch.where(horizontal, mp[..., 1:-1, 2:], torch.where(
        vertical, mp[..., 2:, 1:-1], torch.where(same_sign, mp1[..., 2:, 2:], mp1[..., 2:, :-2])))
    keep = (mag > first) & (mag >= second)
    weak = keep & (mag > low)
    return weak, weak & (mag > high)


def _hysteresis(
    weak: torch.Tensor, strong: torch.Tensor, open_sides: tuple[bool, bool, bool, bool] = (False,) * 4,
    box: tuple[slice, slice] = (slice(None), slice(None)),
) -> tuple[torch.Tensor, tuple[bool, bool, bool, bool]]:
    """Weak pixels 8-connected (through weak pixels) to a strong one: ``[B, H, W]`` bool in and out.

    ``open_sides`` (top, bottom, left, right): the sides of the region beyond which the image goes on. Also
    returned: which of them a weak chain through ``box`` (rows, cols) reaches without meeting a strong pixel;
    the pixels beyond decide it, and then the edges are not final.
    """
    none = torch.zeros(weak.shape, dtype=torch.bool, device=weak.device)
    settled = (False,) * 4
    if not bool(weak[:, box[0], box[1]].any()) or not (any(open_sides) or bool(strong.any())):
        return none, settled
    node_grid, pixels, root = _weak_components(weak)
    keep_root = torch.zeros(int(pixels.numel()), dtype=torch.bool, device=weak.device)
    keep_root[root.masked_select(strong.reshape(-1).index_select(0, pixels))] = True
    none.view(-1).index_copy_(0, pixels, keep_root.index_select(0, root))
    if not any(open_sides):
        return none, settled
    unsettled = []
    through_box = None
    for side, line in zip(open_sides, (node_grid[:, 0], node_grid[:, -1], node_grid[:, :, 0], node_grid[:, :, -1])):
        if side:
            open_root = torch.zeros_like(keep_root)
            open_root[root.index_select(0, line[line >= 0])] = True
            open_root &= ~keep_root
            if bool(open_root.any()):
                if through_box is None:
                    through_box = node_grid[:, box[0], box[1]]
                    through_box = root.index_select(0, through_box[through_box >= 0])
                side = bool(open_root.index_select(0, through_box).any())
            else:
                side = False
        unsettled.append(side)
    return none, tuple(unsettled)


def _weak_components(weak: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """8-connected components of ``[B, H, W]`` weak pixels: the node of each pixel (-1 off them), each node's pixel
    (flat index) and each node's component root.

    Connected components by hooking and pointer jumping (Shiloach-Vishkin style): each round hooks every node's
    pointer target onto the largest neighbouring one, then jumps pointers twice; pointers only grow, so the loop
    ends.
    """
    B, H, W = weak.shape
    flat_weak = weak.reshape(-1)
    pixels = flat_weak.nonzero().squeeze(1)  # node -> flat pixel index
    n = int(pixels.numel())
    nodes = torch.arange(n, device=weak.device)
    node_of = torch.full((flat_weak.numel() + W + 1,), -1, dtype=torch.int64, device=weak.device)
    node_of.index_copy_(0, pixels, nodes)
    row, col = (pixels // W) % H, pixels % W
    below, not_left, not_right = row < H - 1, col > 0, col < W - 1
    us, vs = [], []
    for offset, inside in ((1, not_right), (W - 1, below & not_left), (W, below), (W + 1, below & not_right)):
        other = node_of.index_select(0, pixels + offset)  # each 8-neighbour pair once; ``inside``: same row / item
        pair = inside & (other >= 0)
        us.append(nodes.masked_select(pair))
        vs.append(other.masked_select(pair))
    u, v = torch.cat(us), torch.cat(vs)

    # index_select, not advanced indexing: the same gather, several times faster on the CPU.
    parent = nodes
    for _ in range(n + 1):
        hooked = parent.clone()
        pu, pv = parent.index_select(0, u), parent.index_select(0, v)
        hooked.scatter_reduce_(0, pu, pv, reduce="amax")
        hooked.scatter_reduce_(0, pv, pu, reduce="amax")
        hooked = hooked.index_select(0, hooked)  # two pointer jumps a round (fewest operations measured)
        hooked = hooked.index_select(0, hooked)
        if torch.equal(hooked, parent):  # nothing moved: every pointer is a root, every pair joins equal roots
            break
        parent = hooked
    return node_of[: flat_weak.numel()].view(B, H, W), pixels, parent


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
    return guidance_in_box(task, *_whole(image), low_threshold=low_threshold, high_threshold=high_threshold,
                           ratio=ratio)


def guidance_in_box(
    task: str, read: Reader, hw: tuple[int, int], box: Box, *, low_threshold: float = DEFAULT_CANNY_LOW,
    high_threshold: float = DEFAULT_CANNY_HIGH, ratio: int = DEFAULT_MOSAIC_RATIO,
) -> torch.Tensor:
    """:func:`derive_guidance` of a source image of size ``hw`` over ``box`` ``[B, h, w, 3]``, computed from
    the windows around the box that ``read`` returns (see "the derived tasks" above)."""
    if task == "recolorizing":
        return recolorizing_in_box(read, hw, box)
    if task == "mosaic_repainting":
        return mosaic_repainting_in_box(read, hw, box, ratio)
    if task == "canny_repainting":
        return canny_repainting_in_box(read, hw, box, low_threshold, high_threshold)
    if task in EXTERNAL_TASKS:
        raise ValueError(
            f"task {task!r} needs a neural annotator that this pack does not run (it would download weights): "
            "pass a control image from a preprocessor node instead."
        )
    raise ValueError(f"task must be one of {DERIVED_TASKS} to derive guidance, got {task!r}")
