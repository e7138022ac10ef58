"""ACE++ Stitch against independent references: the blend weight (grow + feather) against a scipy construction of
the documented rule, colour matching against a known colour cast and a float64 numpy recomputation, and the
statistics kept on the images' device without float64 (CUDA / MPS), proven on the CPU with a meta default device.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch.utils._python_dispatch import TorchDispatchMode

from ace_plus_core.canvas import build_canvas
from ace_plus_core.crop import ContextSpec
from canvas_helpers import build_canvas_around_mask
from ace_plus_core.stitch import blend_weight, stitch
from tolerances import assert_catches, sum_bound

pytestmark = pytest.mark.numeric

CAST = np.array([0.15, 0.0, -0.1])


# ----------------------------------------------------------------------------------------------- blend weight


def _square(r: int) -> np.ndarray:
    return np.ones((2 * r + 1, 2 * r + 1), bool)


def _oracle_weight(mask: np.ndarray, grow: int, feather: int) -> tuple[np.ndarray, np.ndarray]:
    """The documented rule, rebuilt with scipy: (weight, grown mask). Grow = square dilation by ``grow``; feather =
    square dilation by ceil(f/2), then the mean over the in-image pixels of the square window of that radius."""
    grown = mask > 0.5
    if grow:
        grown = ndimage.binary_dilation(grown, _square(grow))  # outside the image counts as empty
    if feather == 0:
        return grown.astype(np.float64), grown
    r = math.ceil(feather / 2)
    wide = ndimage.binary_dilation(grown, _square(r)).astype(np.int64)
    box = _square(r).astype(np.int64)
    sums = ndimage.correlate(wide, box, mode="constant", cval=0)
    counts = ndimage.correlate(np.ones_like(wide), box, mode="constant", cval=0)
    return sums / counts, grown


def _disc(h, w, cy, cx, radius):
    yy, xx = np.mgrid[0:h, 0:w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2


def _mask(shape: str) -> np.ndarray:
    h, w = (240, 300) if shape == "in_crop_box" else (96, 112)
    m = np.zeros((h, w), bool)
    if shape == "blob":
        m |= _disc(h, w, 44, 50, 14)
    elif shape == "two_blobs":  # close enough for their feathers to overlap
        m |= _disc(h, w, 30, 30, 10)
        m[40:60, 50:80] = True
    elif shape == "border":  # a corner and a strip along the right edge
        m[0:25, 0:30] = True
        m[50:96, 100:112] = True
    else:  # in_crop_box: a small mask in a big image; the box is cut tighter than the feathered margin
        m[100:130, 120:170] = True
        m |= _disc(h, w, 135, 175, 8)
    return m


def _stitched_weight(mask: np.ndarray, grow: int, feather: int, in_crop_box: bool):
    """Stitch's blend weight seen through its output: original all 0, generated area all 1. Returns (weight, box)."""
    h, w = mask.shape
    image = torch.zeros(1, h, w, 3)
    m = torch.from_numpy(mask[None].astype(np.float32))
    if in_crop_box:
        spec = ContextSpec(margin_rel=0.0, margin_px=1, min_size=16, upscale=False)
        result = build_canvas_around_mask("lora", "repainting", "resize_to_height", None, image, m, 1e9, context=spec)
    else:
        result = build_canvas("lora", "repainting", "resize_to_height", None, image, m, 1e9)
    g = result.geometry[0]
    decoded = torch.ones(1, g.canvas_h, g.canvas_w, 3)
    out = stitch(decoded, result.geometry, image, m, grow, feather).numpy()[0].astype(np.float64)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])
    box = np.zeros((h, w), bool)
    box[g.crop_top : g.crop_top + g.crop_h, g.crop_left : g.crop_left + g.crop_w] = True
    return out[..., 0], box


@pytest.mark.parametrize(("grow", "feather"), [(3, 6), (0, 5), (4, 1), (2, 10)])
@pytest.mark.parametrize("shape", ["blob", "two_blobs", "border", "in_crop_box"])
def test_blend_weight_is_the_grown_mask_feathered_by_a_box_mean(shape, grow, feather):
    mask = _mask(shape)
    want, grown = _oracle_weight(mask, grow, feather)
    dist = ndimage.distance_transform_cdt(~grown, metric="chessboard")  # Chebyshev distance to the grown mask
    reach = 2 * math.ceil(feather / 2)  # == feather for even values, one more for odd ones
    # The oracle itself has the documented form (so the comparisons below prove that form of the product).
    assert np.all(want[grown] == 1) and np.all(want[dist > reach] == 0)

    direct = blend_weight(torch.from_numpy(mask[None].astype(np.float32)), grow, feather)[0].numpy()
    seen, box = _stitched_weight(mask, grow, feather, shape == "in_crop_box")
    if shape == "in_crop_box":
        assert not box.all() and (want[~box] > 0).any()  # the feathered margin is cut by the box
    for weight, expected in ((direct, want), (seen, np.where(box, want, 0.0))):
        assert np.abs(weight - expected).max() <= 1e-6
        on = grown & (expected > 0)
        assert np.all(weight[on] == 1.0), "the grown mask must be blended with weight exactly 1"
        assert np.all(weight[dist > reach] == 0.0), "no weight beyond the feather"
        if feather % 2 == 0:
            assert np.all(weight[dist > feather] == 0.0)
    band = (dist >= 1) & (dist <= feather) & box
    strictly = (direct[band] > 0) & (direct[band] < 1)
    assert strictly.mean() >= 0.9, f"only {strictly.mean():.2f} of the feather band is soft"
    # Non-increasing with the distance: per distance level, both the largest and the mean weight.
    levels = range(0, reach + 2)
    top = [direct[dist == d].max() for d in levels if (dist == d).any()]
    mean = [direct[dist == d].mean() for d in levels if (dist == d).any()]
    assert all(a >= b for a, b in zip(top, top[1:])) and all(a >= b - 1e-12 for a, b in zip(mean, mean[1:]))


def test_feather_is_a_linear_ramp_away_from_a_straight_edge():
    """Along a row leaving a half-plane mask: 1, then (2r + 1 - d) / (2r + 1) for d = 1..2r, then 0."""
    mask = np.zeros((40, 60), bool)
    mask[:, :20] = True
    for grow, feather in ((0, 8), (3, 6)):
        weight, _ = _stitched_weight(mask, grow, feather, in_crop_box=False)
        r = math.ceil(feather / 2)
        d = np.arange(60) - (19 + grow)
        ramp = np.clip((2 * r + 1 - d) / (2 * r + 1), 0, 1)
        assert np.abs(weight[20] - ramp).max() <= 1e-6


# ----------------------------------------------------------------------------------------------- colour match


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth content plus noise, every channel inside [0.15, 0.85] so the cast below never clips."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h - 1, w - 1])[:, None, None]
    rgb = np.stack([0.2 + 0.5 * xx, 0.3 + 0.4 * yy, 0.3 + 0.3 * np.sin(6 * xx) * np.cos(4 * yy) + 0.1], -1)
    return np.clip(rgb + rng.normal(0, 0.03, rgb.shape), 0.15, 0.85).astype(np.float32)


def _cast_canvas(photo: np.ndarray, mask: np.ndarray, cast=CAST, dtype=torch.float32):
    """(decoded canvas, geometry, original, mask): the edit area is the photo re-rendered with ``cast``."""
    image = torch.from_numpy(photo[None])
    m = torch.from_numpy(mask[None].astype(np.float32))
    spec = ContextSpec(margin_rel=0.5, margin_px=8, min_size=32, upscale=False)
    result = build_canvas_around_mask("lora", "repainting", "resize_to_height", None, image, m, 1e9, context=spec)
    g = result.geometry[0]
    assert (g.crop_h, g.crop_w) != photo.shape[:2]
    decoded = torch.zeros(1, g.canvas_h, g.canvas_w, 3)
    crop = photo[g.crop_top : g.crop_top + g.crop_h, g.crop_left : g.crop_left + g.crop_w]
    rows, cols = g.edit_area_slice()
    decoded[0, rows, cols] = torch.from_numpy((crop + cast).astype(np.float32))
    return decoded.to(dtype), result.geometry, image.to(dtype), m


def _shift_under_mask(out: torch.Tensor, photo: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return (out[0].double().numpy()[mask] - photo[mask]).mean(0)


def test_color_match_removes_a_colour_cast_and_off_keeps_it():
    photo = _photo(200, 240)
    mask = np.zeros((200, 240), bool)
    mask[70:130, 90:160] = True
    decoded, geometry, image, m = _cast_canvas(photo, mask)
    matched = stitch(decoded, geometry, image, m, 2, 6, color_match=True)
    plain = stitch(decoded, geometry, image, m, 2, 6, color_match=False)
    assert np.abs(_shift_under_mask(matched, photo, mask)).max() < 0.02
    # The cast is a pure per-channel offset, so matching mean and spread gives the photo back, not just its mean.
    assert np.abs(matched[0].numpy()[mask] - photo[mask]).max() < 1e-4
    assert np.abs(_shift_under_mask(plain, photo, mask) - CAST).max() < 1e-3


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_color_match_works_on_half_precision_images(dtype):
    photo = _photo(120, 150, seed=3)
    mask = np.zeros((120, 150), bool)
    mask[40:80, 50:100] = True
    decoded, geometry, image, m = _cast_canvas(photo, mask, dtype=dtype)
    out = stitch(decoded, geometry, image, m, 2, 6, color_match=True)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert np.abs(_shift_under_mask(out, photo, mask)).max() < 0.02
    plain = stitch(decoded, geometry, image, m, 2, 6, color_match=False)
    assert np.abs(_shift_under_mask(plain, photo, mask) - CAST).max() < 0.01


def test_color_match_statistics_match_float64_on_a_2048_box_near_one():
    """Float32 accumulation must not lose float64's accuracy: 2048 x 2048 box, values near 1, tiny spread."""
    h = w = 2048
    rng = np.random.default_rng(11)
    photo = (0.98 + 0.004 * rng.standard_normal((h, w, 3), np.float32)).clip(0, 1)
    gen = (0.95 + 0.003 * rng.standard_normal((h, w, 3), np.float32)).clip(0, 1)
    mask = np.zeros((h, w), bool)
    mask[700:1300, 800:1400] = True
    image = torch.from_numpy(photo[None])
    m = torch.from_numpy(mask[None].astype(np.float32))
    result = build_canvas("lora", "repainting", "resize_to_height", None, image, m, 1e9)
    g = result.geometry[0]
    assert (g.crop_top, g.crop_left, g.crop_h, g.crop_w) == (0, 0, h, w)
    decoded = torch.zeros(1, g.canvas_h, g.canvas_w, 3)
    rows, cols = g.edit_area_slice()
    decoded[0, rows, cols] = torch.from_numpy(gen)
    out = stitch(decoded, result.geometry, image, m, 0, 0, color_match=True)[0].numpy()
    del decoded
    # float64 reference from the rule: match mean and sample std over the context (weight 0 = outside the mask).
    ctx = ~mask
    g64, o64 = gen[ctx].astype(np.float64), photo[ctx].astype(np.float64)
    g_mean, o_mean = g64.mean(0), o64.mean(0)
    g_std, o_std = g64.std(0, ddof=1), o64.std(0, ddof=1)
    ratio = np.clip(np.where(g_std > 1e-4, o_std / np.maximum(g_std, 1e-4), 1.0), 0.5, 2.0)
    want = np.clip((gen[mask].astype(np.float64) - g_mean) * ratio + o_mean, 0, 1)
    # Float64's accuracy, in float32: the statistics summed pairwise (log2 of the context's size in roundings, as
    # any tree or blocked sum), then 4 operations per pixel (subtract, scale by a ratio up to 2, add, clip).
    tol = assert_catches(sum_bound(math.ceil(math.log2(ctx.sum())) + 4, magnitude=2.0))
    err = np.abs(out[mask] - want).max()
    assert err < tol, f"max abs error {err:.2e} (tolerance {tol:.1e})"
    assert np.array_equal(out[ctx], photo[ctx])


# ------------------------------------------------------------------------------ device and dtype (no GPU needed)


class _DtypeRecorder(TorchDispatchMode):
    """Records the dtype and device of every tensor an aten op returns."""

    def __init__(self):
        super().__init__()
        self.seen: set[tuple[str, torch.dtype, str]] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.seen.add((str(func), t.dtype, t.device.type))
        return out


@pytest.mark.parametrize("color_match", [True, False])
def test_stitch_allocates_on_the_images_device_and_never_in_float64(color_match):
    """With a meta default device, any tensor made without the images' device lands on "meta" and mixing it with
    the (CPU) images fails, as a CPU-allocated statistic would on CUDA; MPS has no float64 at all."""
    photo = _photo(100, 120, seed=5)
    mask = np.zeros((100, 120), bool)
    mask[30:70, 40:90] = True
    decoded, geometry, image, m = _cast_canvas(photo, mask)
    expected = stitch(decoded, geometry, image, m, 3, 6, color_match)
    recorder = _DtypeRecorder()
    with torch.device("meta"), recorder:
        out = stitch(decoded, geometry, image, m, 3, 6, color_match)
    assert out.device.type == "cpu"
    assert torch.allclose(out, expected, atol=1e-6)
    assert not [s for s in recorder.seen if s[1] == torch.float64], "float64 ops"
    assert not [s for s in recorder.seen if s[2] != "cpu"], "tensors off the images' device"
    if color_match:
        assert np.abs(_shift_under_mask(out, photo, mask)).max() < 0.02


# ------------------------------------------------------------------------------- the node in a real ComfyUI graph


@pytest.mark.parametrize(("grow", "feather"), [(0, 8), (3, 6), (2, 0)])
def test_stitch_node_grows_and_feathers_the_mask(comfy_host, grow, feather):
    """ACE++ Stitch as ComfyUI calls it: its grow and feather widgets reach the blend. Along a row leaving a
    half-plane mask the weight is 1 up to the grown edge, then (2r + 1 - d) / (2r + 1) for d = 1..2r, then 0
    (photo 0, generated canvas 1: the output is the weight)."""
    nodes = comfy_host.node_class_mappings
    mask = torch.zeros(1, 40, 60)
    mask[:, :, :20] = 1
    image = torch.zeros(1, 40, 60, 3)
    canvas, *_, geometry, _ = nodes["ACEPlusCanvas"].execute(
        layout="lora", task="repainting", reference_mode="auto", max_image_tokens=65536, keep_pixels_rate=0.8,
        width=1024, height=1024, crop_to_mask=False, edit_image=image, edit_mask=mask).result
    decoded = torch.ones_like(canvas)
    (out,) = nodes["ACEPlusStitch"].execute(image=decoded, geometry=geometry, grow_mask_px=grow, feather_px=feather,
                                            color_match=False, original_image=image, mask=mask).result
    assert out.shape == image.shape
    r = math.ceil(feather / 2)
    d = np.arange(60) - (19 + grow)
    ramp = np.clip((2 * r + 1 - d) / (2 * r + 1), 0, 1)
    tol = assert_catches(sum_bound((2 * r + 1) ** 2))  # a box mean of (2r + 1)^2 weights, then the blend
    assert np.abs(out[0, :, :, 0].double().numpy() - ramp).max() <= tol


def test_stitch_node_color_match_in_a_graph(comfy_host, input_image):
    """LoadImage -> ACE++ Canvas; the "decoded canvas" is the photo with a per-channel affine colour cast made by
    core ImageBlend nodes (screen: R' = c + (1 - c) R; multiply: B' = 0.8 B); ACE++ Stitch with and without
    color_match."""
    from graphs import Graph

    w, h, hole = 192, 160, (50, 60, 60, 70)
    name = input_image("stitch_cast.png", w, h, hole=hole, seed=4)
    g = Graph()
    img = g.add("LoadImage", image=name)
    cv = g.add("ACEPlusCanvas", layout="lora", task="repainting", reference_mode="auto", max_image_tokens=4096,
               keep_pixels_rate=0.8, width=1024, height=1024, crop_to_mask=False, edit_image=img[0],
               edit_mask=img[1])
    red = g.add("EmptyImage", width=w, height=h, batch_size=1, color=0x260000)
    fade_blue = g.add("EmptyImage", width=w, height=h, batch_size=1, color=0xFFFFCC)
    cast = g.add("ImageBlend", image1=img[0], image2=red[0], blend_factor=1.0, blend_mode="screen")
    cast = g.add("ImageBlend", image1=cast[0], image2=fade_blue[0], blend_factor=1.0, blend_mode="multiply")
    for on in (True, False):
        st = g.add("ACEPlusStitch", image=cast[0], geometry=cv[4], original_image=img[0], mask=img[1],
                   grow_mask_px=4, feather_px=8, color_match=on)
        g.add("ACEPlusTestOnlyProbe", label=f"stitch_cast_{on}", image=st[0])
    g.add("ACEPlusTestOnlyProbe", label="stitch_cast_photo", image=img[0])
    comfy_host.run(g.prompt())
    recorded = comfy_host.node_class_mappings["ACEPlusTestOnlyProbe"].RECORDED
    photo = recorded["stitch_cast_photo"][0].double().numpy()
    mask = np.zeros((h, w), bool)
    mask[hole[0] : hole[0] + hole[2], hole[1] : hole[1] + hole[3]] = True
    matched, plain = recorded["stitch_cast_True"], recorded["stitch_cast_False"]
    assert matched.shape == plain.shape == (1, h, w, 3)
    assert np.abs(_shift_under_mask(matched, photo, mask)).max() < 0.02
    assert np.abs(matched[0].double().numpy()[mask] - photo[mask]).max() < 1e-3
    shift = _shift_under_mask(plain, photo, mask)
    assert shift[0] > 0.05 and abs(shift[1]) < 1e-6 and shift[2] < -0.05


# ------------------------------------------------------------------------ variations: N images of one canvas

VARIATIONS = 4


@pytest.mark.parametrize("crop_to_mask", [False, True])
def test_variations_of_one_canvas_are_each_stitched(comfy_host, tiny_models, input_image, crop_to_mask):
    """ACE++ Canvas (one photo) -> ACE++ Conditioning -> RepeatLatentBatch 4 -> KSampler -> VAE Decode -> ACE++
    Stitch / ACE++ Cut Back: every variation is stitched with its own pixels. Reference (scipy, float64): outside
    the grown + feathered mask each item is the photo bit for bit; without crop_to_mask the canvas is the photo
    itself (96x80 fits the budget at scale 1, no padding), so cut back is the identity and every item is
    ``photo * (1 - w) + decoded_i * w`` with ``w`` the documented weight."""
    from graphs import Graph, sampler, tiny_loaders

    w, h, hole, grow, feather = 96, 80, (20, 28, 30, 36), 4, 6
    name = input_image("variations.png", w, h, hole=hole, seed=5)
    g = Graph()
    model, text, vae = tiny_loaders(g, "tiny_flux_fill.safetensors", "a red apple")
    img = g.add("LoadImage", image=name)
    cv = g.add("ACEPlusCanvas", layout="lora", task="repainting", reference_mode="auto", max_image_tokens=256,
               keep_pixels_rate=0.8, width=1024, height=1024, crop_to_mask=crop_to_mask, edit_image=img[0],
               edit_mask=img[1])
    cond = g.add("ACEPlusCanvasConditioning", model=model[0], positive=text[0], negative=text[0], vae=vae[0],
                 uc_image=cv[1], c_image=cv[2], mask=cv[3], geometry=cv[4], noise_mask=True)
    many = g.add("RepeatLatentBatch", samples=cond[3], amount=VARIATIONS)
    samples = sampler(g, cond[0], cond[1], cond[2], many[0], steps=1)
    decoded = g.add("VAEDecode", samples=samples[0], vae=vae[0])
    st = g.add("ACEPlusStitch", image=decoded[0], geometry=cv[4], original_image=img[0], mask=img[1],
               grow_mask_px=grow, feather_px=feather, color_match=False)
    cut = g.add("ACEPlusCutBack", image=decoded[0], geometry=cv[4])
    tag = f"variations_{crop_to_mask}"
    for label, node in (("decoded", decoded), ("stitched", st), ("cut", cut), ("photo", img)):
        g.add("ACEPlusTestOnlyProbe", label=f"{tag}_{label}", image=node[0])
    comfy_host.run(g.prompt())
    recorded = comfy_host.node_class_mappings["ACEPlusTestOnlyProbe"].RECORDED
    decoded_, stitched, cut_ = (recorded[f"{tag}_{k}"] for k in ("decoded", "stitched", "cut"))
    photo = recorded[f"{tag}_photo"][0].double().numpy()
    assert stitched.shape == (VARIATIONS, h, w, 3) and cut_.shape[0] == VARIATIONS
    mask = np.zeros((h, w), bool)
    mask[hole[0] : hole[0] + hole[2], hole[1] : hole[1] + hole[3]] = True
    weight, _ = _oracle_weight(mask, grow, feather)
    for i in range(VARIATIONS):
        out = stitched[i].double().numpy()
        assert np.array_equal(out[weight == 0], photo[weight == 0]), f"variation {i}: the photo changed"
        for j in range(i):  # each item keeps its own variation (not item 0's for all)
            assert np.abs(out[mask] - stitched[j].double().numpy()[mask]).max() > 1e-3, (i, j)
        if not crop_to_mask:
            gen = decoded_[i].double().numpy()
            assert decoded_.shape[1:3] == (h, w)
            assert np.array_equal(cut_[i].numpy(), decoded_[i].numpy())
            expected = photo * (1 - weight[..., None]) + gen * weight[..., None]
            assert np.abs(out - expected).max() < 4 * np.finfo(np.float32).eps  # values <= 1, two roundings
