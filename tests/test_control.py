"""Control tasks computed in the pack (ace_plus_core.control) and their place in the canvas.

References: PIL's ``convert("L")`` for the grayscale, OpenCV's ``cv2.Canny`` (what the official CannyAnnotator
calls, on the 8-bit RGB image) for the edges, a numpy block mean for the mosaic. Nothing here touches the network:
the last tests run every task with sockets blocked.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tolerances import assert_catches, sum_bound

from ace_plus_core import control
from ace_plus_core.canvas import ALL_TASKS, TASKS, build_canvas, official_processor

pytestmark = pytest.mark.numeric

ASTRONAUT = Path(__file__).resolve().parent.parent / "workflow_example_lora" / "inputs" / "astronaut.png"


def astronaut_u8() -> np.ndarray:
    return np.asarray(Image.open(ASTRONAUT).convert("RGB")).copy()


def to_image(u8: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, C] or [B, H, W, C] -> ComfyUI IMAGE (as LoadImage makes it: value / 255 in float32)."""
    t = torch.from_numpy(np.ascontiguousarray(u8)).float() / 255.0
    return t if t.ndim == 4 else t.unsqueeze(0)


def guidance_tol(task: str, hw: tuple[int, int], **options) -> float:
    """float32 guidance against the float64 oracles: a mosaic cell's mean sums the cell's pixels, the luma sums 3
    products, edges and copies round once; the canvas' -0.5 shift and back adds 2 roundings."""
    h, w = hw
    ratio = options.get("ratio", control.DEFAULT_MOSAIC_RATIO)
    terms = {"mosaic_repainting": math.ceil(h / max(1, h // ratio)) * math.ceil(w / max(1, w // ratio)),
             "recolorizing": 3}.get(task, 1)
    return assert_catches(sum_bound(terms + 2))


def rand_u8(h: int, w: int, seed: int, c: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def rect_mask(h: int, w: int, box: tuple[int, int, int, int]) -> torch.Tensor:
    m = torch.zeros((1, h, w))
    top, left, bh, bw = box
    m[:, top : top + bh, left : left + bw] = 1.0
    return m


# ------------------------------------------------------------------------------------------------ recolorizing


@pytest.mark.parametrize("source", ["astronaut", "random_a", "random_b"])
def test_grayscale_matches_pil_convert_L_within_one_level(source):
    u8 = astronaut_u8() if source == "astronaut" else rand_u8(123, 77 if source == "random_a" else 256, seed=len(source))
    ours = control.recolorizing(to_image(u8))
    assert ours.shape == (1, *u8.shape[:2], 3)
    assert torch.equal(ours[..., 0], ours[..., 1]) and torch.equal(ours[..., 0], ours[..., 2])
    pil = np.asarray(Image.fromarray(u8, "RGB").convert("L")).astype(np.float64)
    diff = np.abs(ours[0, ..., 0].double().numpy() * 255.0 - pil)
    assert diff.max() <= 1.0  # PIL rounds to 8 bits (measured: at most 0.5 level + float32 noise); we keep floats


def test_grayscale_of_gray_and_rgba_inputs():
    g = torch.rand((2, 9, 7, 1), generator=torch.Generator().manual_seed(0))
    assert torch.equal(control.recolorizing(g), g.expand(-1, -1, -1, 3))
    rgba = torch.rand((1, 9, 7, 4), generator=torch.Generator().manual_seed(1))
    assert torch.equal(control.recolorizing(rgba), control.recolorizing(rgba[..., :3]))


# ------------------------------------------------------------------------------------------------ canny


def _dilate(edges: np.ndarray) -> np.ndarray:
    p = np.pad(edges, 1)
    h, w = edges.shape
    return np.max([p[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)], axis=0)


def edge_f1(ours: np.ndarray, ref: np.ndarray, tolerance: int) -> float:
    """F1 of edge pixels; with ``tolerance`` 1 an edge pixel counts as matched if the other map has an edge
    within one pixel (8-neighbourhood)."""
    if not ours.any() and not ref.any():
        return 1.0
    ref_near, ours_near = (_dilate(ref), _dilate(ours)) if tolerance else (ref, ours)
    precision = (ours & ref_near).sum() / max(ours.sum(), 1)
    recall = (ref & ours_near).sum() / max(ref.sum(), 1)
    return float(2 * precision * recall / max(precision + recall, 1e-12))


def _shapes() -> np.ndarray:
    """Rectangles, a disc and a ramp on a noisy background (hard and soft edges, all orientations)."""
    h, w = 160, 224
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3))
    img[..., 0] = xx / w * 120
    img[20:70, 30:110] = (220, 40, 40)
    img[90:150, 140:210] = (30, 200, 90)
    img[((yy - 100) ** 2 + (xx - 70) ** 2) < 40**2] = (40, 60, 230)
    img += np.random.default_rng(3).normal(0, 6, img.shape)
    return np.clip(img, 0, 255).round().astype(np.uint8)


def _weak_snake() -> np.ndarray:
    """A serpentine 1-px line whose contrast is weak (Sobel magnitude 160) except one bright strong end: only
    hysteresis along the whole snake (about 14 000 px) keeps it."""
    img = np.zeros((300, 301), np.uint8)
    for r in range(2, 296, 6):
        img[r, 2:299] = 40
        img[r : r + 7, 298 if (r // 6) % 2 == 0 else 2] = 40
    img[2, 2:10] = 255
    return np.repeat(img[..., None], 3, axis=2)


def _blurred_noise() -> np.ndarray:
    cv2 = pytest.importorskip("cv2")
    return cv2.GaussianBlur(rand_u8(140, 190, seed=5), (5, 5), 1.5)


CANNY_CASES = {
    "astronaut": (astronaut_u8, 100, 200),
    "astronaut_50_150": (astronaut_u8, 50, 150),
    "astronaut_gray": (lambda: astronaut_u8()[..., :1], 100, 200),
    "shapes": (_shapes, 100, 200),
    "weak_snake": (_weak_snake, 100, 200),
    "blurred_noise": (_blurred_noise, 100, 200),
    "raw_noise": (lambda: rand_u8(64, 96, seed=9), 100, 200),
}


@pytest.mark.parametrize("case", list(CANNY_CASES))
def test_canny_agrees_with_opencv(case):
    """Agreement with cv2.Canny(uint8 image, low, high) (aperture 3, L1 gradient: the official annotator's call).

    Measures: per-pixel F1 of the edge maps (bound 0.999) and F1 allowing a one-pixel offset (bound 0.99).
    Measured with opencv-python-headless 5.0.0.93: both 1.0 on every case - the edge maps are identical.
    """
    cv2 = pytest.importorskip("cv2")
    make, low, high = CANNY_CASES[case]
    u8 = np.ascontiguousarray(make())
    ref = cv2.Canny(u8 if u8.shape[-1] > 1 else u8[..., 0], low, high) > 0
    out = control.canny_repainting(to_image(u8), low, high)
    assert out.shape == (1, *u8.shape[:2], 3) and out.dtype == torch.float32
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    ours = out[0, ..., 0].numpy() > 0.5
    assert ref.sum() > 100
    assert edge_f1(ours, ref, tolerance=0) >= 0.999
    assert edge_f1(ours, ref, tolerance=1) >= 0.99


def test_canny_is_batch_aware_and_thresholds_are_checked():
    a, b = to_image(_shapes()), to_image(astronaut_u8()[:160, :224])
    both = control.canny_repainting(torch.cat([a, b]))
    assert torch.equal(both[0:1], control.canny_repainting(a)) and torch.equal(both[1:2], control.canny_repainting(b))
    assert not control.canny_repainting(torch.full((1, 32, 32, 3), 0.3)).any()
    with pytest.raises(ValueError, match="low_threshold .* must not exceed high_threshold"):
        control.canny_repainting(a, 200, 100)
    with pytest.raises(ValueError, match=r"low_threshold \(.*\) must be a number >= 0"):
        control.canny_repainting(a, -1, 100)


# ------------------------------------------------------------------------------------------------ mosaic


def mosaic_reference(img: np.ndarray, ratio: int) -> np.ndarray:
    """Independent block mean: nh x nw cells (H // ratio, W // ratio, at least 1); row y is in cell y * nh // H."""
    h, w, _ = img.shape
    nh, nw = max(1, h // ratio), max(1, w // ratio)
    out = np.empty_like(img, dtype=np.float64)
    for i in range(nh):
        ys = [y for y in range(h) if y * nh // h == i]
        for j in range(nw):
            xs = [x for x in range(w) if x * nw // w == j]
            out[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1] = img[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1].mean(axis=(0, 1))
    return out


@pytest.mark.parametrize(("h", "w", "ratio"), [(512, 512, 64), (333, 517, 64), (100, 130, 7), (40, 90, 64)])
def test_mosaic_matches_a_numpy_block_mean(h, w, ratio):
    img = np.random.default_rng(h + w).random((2, h, w, 3))
    out = control.mosaic_repainting(torch.from_numpy(img), ratio)
    assert out.dtype == torch.float64 and out.shape == (2, h, w, 3)
    # A cell's mean sums its pixels (values in [0, 1]): the worst case of that sum in each dtype.
    cell = math.ceil(h / max(1, h // ratio)) * math.ceil(w / max(1, w // ratio))
    for k in range(2):
        np.testing.assert_allclose(out[k].numpy(), mosaic_reference(img[k], ratio), rtol=0,
                                   atol=sum_bound(cell, torch.float64))
    f32 = control.mosaic_repainting(torch.from_numpy(img).float(), ratio)
    np.testing.assert_allclose(f32[0].numpy(), mosaic_reference(img[0], ratio), rtol=0,
                               atol=assert_catches(sum_bound(cell)))


def official_mosaic_cells(h: int, w: int, ratio: int = 64) -> np.ndarray:
    """Cell id of every pixel where the official ColorAnnotator puts it: cv2.resize of the (H // ratio) x
    (W // ratio) cells back to H x W with INTER_NEAREST (pushed through cv2 as an image of cell ids)."""
    cv2 = pytest.importorskip("cv2")
    nh, nw = h // ratio, w // ratio
    cells = (np.arange(nh)[:, None] * nw + np.arange(nw)[None]).astype(np.float32)
    return cv2.resize(cells, (w, h), interpolation=cv2.INTER_NEAREST).astype(np.int64)


@pytest.mark.parametrize(("h", "w"), [(512, 512), (333, 517), (1500, 1001), (65, 1000)])
def test_mosaic_cells_lie_where_the_official_nearest_upscale_puts_them(h, w):
    """Random pixels (no cell is constant in the input): every pixel gets the numpy mean of the pixels that the
    official nearest upscale puts in its cell."""
    ids = official_mosaic_cells(h, w)
    img = np.random.default_rng(h * w).random((h, w, 3))
    n = int(ids.max()) + 1
    counts = np.bincount(ids.ravel(), minlength=n)
    means = np.stack([np.bincount(ids.ravel(), img[..., c].ravel(), n) / counts for c in range(3)], axis=-1)
    out = control.mosaic_repainting(torch.from_numpy(img)[None])
    assert out.shape == (1, h, w, 3)
    np.testing.assert_allclose(out[0].numpy(), means[ids], rtol=0, atol=sum_bound(int(counts.max()), torch.float64))


def test_mosaic_ratio_is_checked():
    with pytest.raises(ValueError, match=r"mosaic ratio \(.*\) must be an integer >= 1"):
        control.mosaic_repainting(torch.rand((1, 8, 8, 3)), 0)


# ------------------------------------------------------------------------------------------------ dispatch, mask


def independent_guidance(task: str, u8: np.ndarray, **options) -> np.ndarray:
    """The derived guidance of an 8-bit RGB image [H, W, 3], from the oracles above (float64 [H, W, 3])."""
    x = u8.astype(np.float64) / 255.0
    if task == "recolorizing":  # ITU-R 601 luma, PIL's convert("L") weights, without the 8-bit rounding
        return np.repeat((x @ np.array([0.299, 0.587, 0.114]))[..., None], 3, axis=2)
    if task == "mosaic_repainting":
        return mosaic_reference(x, options.get("ratio", control.DEFAULT_MOSAIC_RATIO))
    cv2 = pytest.importorskip("cv2")
    low, high = options.get("low_threshold", 100), options.get("high_threshold", 200)
    return np.repeat((cv2.Canny(np.ascontiguousarray(u8), low, high) > 0)[..., None], 3, axis=2).astype(np.float64)


def test_derive_guidance_dispatches_and_refuses_neural_tasks():
    u8 = rand_u8(48, 64, seed=1)
    img = to_image(u8)
    for task, options in [
        ("recolorizing", {}),
        ("mosaic_repainting", {"ratio": 8}),
        ("canny_repainting", {"low_threshold": 20, "high_threshold": 40}),
    ]:
        out = control.derive_guidance(task, img, **options)[0].double().numpy()
        np.testing.assert_allclose(out, independent_guidance(task, u8, **options), rtol=0,
                                   atol=guidance_tol(task, u8.shape[:2], **options), err_msg=task)
    for task in control.EXTERNAL_TASKS:
        with pytest.raises(ValueError, match="pass a control image"):
            control.derive_guidance(task, img)


# ------------------------------------------------------------------------------------------------ in the canvas


def _control_guidance(task: str, edit: torch.Tensor) -> torch.Tensor | None:
    """An external control image for the neural tasks (any image: the pack does not interpret it)."""
    if task in control.EXTERNAL_TASKS:
        return torch.rand(edit.shape, generator=torch.Generator().manual_seed(11))
    return None


@pytest.mark.parametrize("fit", ["exact", "official"])
@pytest.mark.parametrize("task", ALL_TASKS)
def test_pixels_outside_the_mask_are_untouched_by_every_task(task, fit):
    """Outside the mask every task gives, bit for bit, the canvas of the plain edit image; under it, the guidance.

    (The canvas itself stores pixels shifted by -0.5, the official convention, so values below 0.25 come back within
    2**-25 of the input rather than bit for bit; 8-bit values round-trip exactly. That is the canvas' rule, the
    same for every task.)
    """
    edit_u8 = astronaut_u8()[96:224, 160:320]
    edit = to_image(edit_u8)  # 128 x 160: a multiple of 16, so neither fit resamples
    mask = rect_mask(128, 160, (30, 40, 50, 60))
    guidance = _control_guidance(task, edit)
    res = build_canvas("fft", task, "keep_pixels_pad", None, edit, mask, 100_000, control_image=guidance, fit=fit)
    plain = build_canvas("fft", "no_preprocess", "keep_pixels_pad", None, edit, mask, 100_000, fit=fit)
    canvas, c = res.image[0], res.c_image[0]
    assert canvas.shape == edit[0].shape
    inside = (mask[0] > 0.5).unsqueeze(-1).expand_as(canvas)
    assert torch.equal(canvas[~inside], plain.image[0][~inside])
    assert torch.equal(res.uc_image, plain.uc_image)
    torch.testing.assert_close(canvas[~inside], edit[0][~inside], rtol=0, atol=2.0**-25)
    assert torch.equal((canvas[~inside] * 255).round(), (edit[0][~inside] * 255).round())
    if task == "repainting":
        assert (canvas[inside] == 0.5).all()
        return
    if guidance is not None:
        expected = guidance[0]
    elif task in control.DERIVED_TASKS:
        expected = torch.from_numpy(independent_guidance(task, edit_u8)).float()
    else:  # no_preprocess: the edit pixels themselves are the guidance
        expected = edit[0]
    tol = guidance_tol(task, edit_u8.shape[:2])
    torch.testing.assert_close(canvas[inside], expected[inside], rtol=0, atol=tol)
    torch.testing.assert_close(c[inside], expected[inside], rtol=0, atol=tol)


def test_guidance_is_derived_from_the_full_edit_image_before_the_aspect_crop():
    """Official fit: a 48x240 (5:1) image is centre-cropped to columns 24..215; the edges are those of the full
    image (cv2.Canny of all 240 columns), not of the crop (which would have edges along its cut borders)."""
    u8 = rand_u8(48, 240, seed=4)
    res = build_canvas("lora", "canny_repainting", "resize_to_height", None, to_image(u8), None, 100_000,
                       fit="official")
    g = res.geometry[0]
    assert g.crop_box == (0, 24, 48, 192) and (g.canvas_h, g.canvas_w) == (48, 192)  # scale 1: no resampling
    full = torch.from_numpy(independent_guidance("canny_repainting", u8)[:, 24:216]).float()
    cropped = torch.from_numpy(independent_guidance("canny_repainting", u8[:, 24:216])).float()
    assert torch.equal(res.image[0], full)
    assert not torch.equal(full, cropped)


def test_control_options_reach_the_annotators():
    u8 = astronaut_u8()[:128, :128]
    edit, mask = to_image(u8), rect_mask(128, 128, (0, 0, 128, 128))
    for task, options in [("mosaic_repainting", {"ratio": 16}), ("canny_repainting", {"low_threshold": 30,
                                                                                     "high_threshold": 60})]:
        res = build_canvas("lora", task, "resize_to_height", None, edit, mask, 100_000, control_options=options)
        expected = independent_guidance(task, u8, **options)
        np.testing.assert_allclose(res.image[0].double().numpy(), expected, rtol=0,
                                   atol=guidance_tol(task, u8.shape[:2], **options), err_msg=task)
        default = independent_guidance(task, u8)
        assert np.abs(default - expected).max() > 0.1, "the option must make a difference for this test to count"


@pytest.mark.parametrize("task", control.EXTERNAL_TASKS)
def test_neural_tasks_without_a_control_image_name_the_input(task):
    edit = to_image(rand_u8(32, 32, seed=0))
    with pytest.raises(ValueError, match=f"task '{task}' needs a control image .* connect one to control_image"):
        official_processor("fft", None, edit, None, task_type=task, max_seq_length=1024)
    with pytest.raises(ValueError, match="connect one to control_image"):
        build_canvas("lora", task, "resize_to_height", None, edit)


# ------------------------------------------------------------------------------------------------ no network


def test_every_task_runs_with_sockets_blocked(no_network):
    edit = to_image(astronaut_u8()[::2, ::2])
    ref = to_image(astronaut_u8()[:200, :150])
    mask = rect_mask(256, 256, (60, 70, 100, 90))
    for task in ALL_TASKS:
        guidance = _control_guidance(task, edit)
        for layout in ("lora", "fft"):
            res = build_canvas(layout, task, "resize_to_height", ref, edit, mask, 1024, control_image=guidance)
            assert torch.isfinite(res.image).all()
        if task in TASKS:
            for layout in ("lora", "fft"):
                res = official_processor(layout, ref, edit, mask, task_type=task, max_seq_length=1024,
                                         control_image=guidance)
                assert torch.isfinite(res.image).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tasks_run_on_the_image_device_and_agree_with_the_cpu():
    img = to_image(astronaut_u8())
    for task in control.DERIVED_TASKS:
        cpu = control.derive_guidance(task, img)
        gpu = control.derive_guidance(task, img.cuda())
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-6)
