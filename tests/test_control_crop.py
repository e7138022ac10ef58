"""Big photos: the control tasks, repainting_scale and outpainting are computed over the crop box (plus the context
each operator needs), never over the whole photo, and give the whole photo's values there.

References: ``cv2.Canny`` of the WHOLE image (the official annotator's call) cut to the box, a numpy block mean of
the whole image's mosaic cells, the float64 luma, and the outpainted photo built explicitly in numpy. The structural
checks spy on the windows the operators read (``control._image``, the entry of every derived task) and on the
canvas' reads of the photo (``canvas._window``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from canvas_helpers import build_canvas_around_mask
from test_control import astronaut_u8, independent_guidance, mosaic_reference, rect_mask, to_image

from ace_plus_core import canvas as canvas_mod
from ace_plus_core import control
from ace_plus_core.crop import ContextSpec

cv2 = pytest.importorskip("cv2")

# Crop to mask without enlarging or shrinking the crop: the canvas' edit area is the crop box, pixel for pixel.
AS_IS = ContextSpec(upscale=False)
BIG_BUDGET = 65536


def photo(h: int, w: int) -> np.ndarray:
    """The astronaut mirrored out to ``h`` x ``w`` (natural edges everywhere, and the seams' mirror edges)."""
    u8 = astronaut_u8()
    reps = (-(-h // u8.shape[0]), -(-w // u8.shape[1]))
    return np.ascontiguousarray(np.pad(u8, ((0, reps[0] * 512 - 512), (0, reps[1] * 512 - 512), (0, 0)),
                                       mode="symmetric")[:h, :w])


def reads(monkeypatch) -> list[tuple[int, ...]]:
    """Every window a derived task reads (its shape), by a spy on ``control._image``."""
    seen: list[tuple[int, ...]] = []
    real = control._image

    def spy(image, *args, **kwargs):
        seen.append(tuple(image.shape))
        return real(image, *args, **kwargs)

    monkeypatch.setattr(control, "_image", spy)
    return seen


def in_box(task: str, u8: np.ndarray, box, **options) -> np.ndarray:
    img = to_image(u8)
    out = control.guidance_in_box(task, control.image_reader(img), u8.shape[:2], box, **options)
    return out[0].double().numpy()


def canny_box(u8: np.ndarray, box, low=100, high=200) -> np.ndarray:
    return in_box("canny_repainting", u8, box, low_threshold=low, high_threshold=high)[..., 0] > 0.5


def cv2_box(u8: np.ndarray, box, low=100, high=200) -> np.ndarray:
    t, lf, h, w = box
    return (cv2.Canny(u8, low, high) > 0)[t : t + h, lf : lf + w]


# ==================================================================== Canny over a box == cv2.Canny of the whole


@pytest.mark.parametrize("box", [
    (0, 0, 96, 128),  # the image's corner: replicated Sobel border, zero NMS border
    (517, 700, 83, 100),  # bottom-right corner
    (0, 300, 40, 500),  # along the top edge
    (250, 0, 300, 1),  # one column at the left edge
    (300, 480, 70, 90),  # inside, across the mirror seam at column 512 (strong edges cross the box sides)
    (123, 77, 1, 1),  # one pixel
    (0, 0, 600, 800),  # the whole image
])
def test_canny_over_a_box_is_opencv_canny_of_the_whole_image(box):
    u8 = photo(600, 800)
    ours, ref = canny_box(u8, box), cv2_box(u8, box)
    assert np.array_equal(ours, ref)


def test_canny_over_random_boxes_and_thresholds_is_opencv_canny_of_the_whole_image():
    u8 = photo(700, 900)
    rng = np.random.default_rng(20)
    crossing = 0
    for _ in range(25):
        h, w = (int(v) for v in rng.integers(1, 400, 2))
        t, lf = int(rng.integers(0, 700 - h + 1)), int(rng.integers(0, 900 - w + 1))
        low = int(rng.integers(10, 160))
        high = low + int(rng.integers(0, 200))
        ref_full = cv2.Canny(u8, low, high) > 0
        ours = canny_box(u8, (t, lf, h, w), low, high)
        assert np.array_equal(ours, ref_full[t : t + h, lf : lf + w]), ((t, lf, h, w), low, high)
        # How many boxes have edges crossing their sides (edge pixels on both sides of the box border)?
        crossing += bool(ref_full[max(t - 1, 0), lf : lf + w].any() and ours[0].any())
    assert crossing >= 5  # the boxes do cut through edges


def _weak_line(strong_end: bool) -> np.ndarray:
    """A 1-px line of contrast 40 (Sobel magnitude 160: weak at 100 / 200) along row 200 from column 180 to 590;
    with ``strong_end`` its last 10 px are white (magnitude 1020: strong), 300+ px away from the box below."""
    img = np.zeros((400, 600), np.uint8)
    img[200, 180:590] = 40
    if strong_end:
        img[200, 580:590] = 255
    return np.repeat(img[..., None], 3, axis=2)


@pytest.mark.parametrize("strong_end", [True, False])
def test_hysteresis_follows_a_weak_edge_out_of_the_box_until_it_is_settled(strong_end):
    """The line enters the box (rows 150-249, columns 150-249) and its only strong pixels lie 330 px to the right:
    cv2.Canny keeps it (hysteresis), and without them drops it. The first context (32 px) cannot tell; the box's
    result must still be cv2's, so the context grows on the right, reading only new bands, until the line is
    settled."""
    u8, box = _weak_line(strong_end), (150, 150, 100, 100)
    boxes, real = [], control.image_reader(to_image(u8))

    def read(*b):
        boxes.append(b)
        return real(*b)

    ours = control.canny_repainting_in_box(read, u8.shape[:2], box)[0, ..., 0].numpy() > 0.5
    ref = cv2_box(u8, box)
    assert ref.any() == strong_end
    assert np.array_equal(ours, ref)
    first = 150 - control.CANNY_MARGIN - control.CANNY_SUPPORT
    assert boxes[0] == (first, first, 100 + 2 * (150 - first), 100 + 2 * (150 - first))
    assert len(boxes) > 1  # it grew ...
    region_right = 250 + control.CANNY_MARGIN
    for t, lf, h, w in boxes[1:]:  # ... only to the right, one new band at a time
        assert lf >= region_right - control.CANNY_SUPPORT and t == first
        region_right = lf + w - control.CANNY_SUPPORT * (lf + w < 600)
    assert region_right >= 590


def test_canny_reads_the_box_and_its_first_context_on_a_photo(monkeypatch):
    """A 300x200 box in a 1500x2000 photo: one read of the box plus 32 + 2 px a side (where the edges are settled
    there, as on this photo), never the photo."""
    u8 = photo(1500, 2000)
    box = (600, 900, 300, 200)
    seen = reads(monkeypatch)
    assert np.array_equal(canny_box(u8, box), cv2_box(u8, box))
    pad = 2 * (control.CANNY_MARGIN + control.CANNY_SUPPORT)
    assert seen == [(1, 300 + pad, 200 + pad, 3)]


# ==================================================================== mosaic and recolorizing over a box


@pytest.mark.parametrize(("hw", "ratio", "box"), [
    ((333, 517), 64, (0, 0, 50, 70)),
    ((333, 517), 64, (100, 130, 100, 300)),
    ((333, 517), 64, (300, 500, 33, 17)),
    ((100, 130), 7, (13, 29, 41, 3)),
    ((1500, 1001), 64, (700, 400, 1, 1)),
])
def test_mosaic_over_a_box_is_the_whole_image_mosaic_there(monkeypatch, hw, ratio, box):
    """Cells on the whole image's grid (a box's own grid would differ); read: the whole cells the box touches."""
    h, w = hw
    img = np.random.default_rng(h + w).random((h, w, 3))
    seen = reads(monkeypatch)
    out = control.mosaic_repainting_in_box(control.image_reader(torch.from_numpy(img)[None]), hw, box, ratio)
    t, lf, bh, bw = box
    np.testing.assert_allclose(out[0].numpy(), mosaic_reference(img, ratio)[t : t + bh, lf : lf + bw],
                               rtol=0, atol=1e-12)
    cell_h, cell_w = -(-h // max(1, h // ratio)), -(-w // max(1, w // ratio))  # the largest cell
    ((_, rh, rw, _),) = seen
    assert rh <= bh + 2 * (cell_h - 1) and rw <= bw + 2 * (cell_w - 1)


def test_recolorizing_over_a_box_reads_only_the_box(monkeypatch):
    u8 = photo(300, 400)
    seen = reads(monkeypatch)
    out = in_box("recolorizing", u8, (10, 20, 30, 40))
    want = independent_guidance("recolorizing", u8)[10:40, 20:60]
    np.testing.assert_allclose(out, want, rtol=0, atol=atol("recolorizing", u8.shape[:2]))
    assert seen == [(1, 30, 40, 3)]


# ==================================================================== in the canvas


def atol(task: str, hw: tuple[int, int], ratio: int = control.DEFAULT_MOSAIC_RATIO) -> float:
    """Float32 guidance vs a float64 reference: a mosaic cell's mean sums its n pixels (values in [0, 1]) in
    float32, n * 2**-24 at worst; the luma is 3 products and 2 sums, a few ulp; Canny is exact (0 or 1)."""
    if task == "mosaic_repainting":
        n = -(-hw[0] // max(1, hw[0] // ratio)) * -(-hw[1] // max(1, hw[1] // ratio))
        return n * 2.0**-24
    return 8 * 2.0**-24


def _canvas_edit_area(res, i: int = 0) -> torch.Tensor:
    g = res.geometry[i]
    rows, cols = g.edit_area_slice()
    return res.image[i, rows, cols]


@pytest.mark.parametrize("task", control.DERIVED_TASKS)
@pytest.mark.parametrize("where", ["corner", "bottom_edge", "inside"])
def test_crop_to_mask_guidance_is_the_whole_photos_guidance_over_the_crop(monkeypatch, task, where):
    """Masks at the photo's corner, at its bottom edge and inside: under the mask the canvas holds the guidance
    of the whole photo (cv2.Canny / numpy mosaic / luma of all 1200x1600 px) over the crop; the operators read no
    more than the crop and their context, and nothing reads the whole photo."""
    h, w = 1200, 1600
    u8 = photo(h, w)
    box = {"corner": (0, 0, 60, 80), "bottom_edge": (1150, 700, 50, 90), "inside": (500, 650, 120, 100)}[where]
    mask = rect_mask(h, w, box)
    seen, windows = reads(monkeypatch), []
    real_window = canvas_mod._window

    def window_spy(image, box, outpaint):
        windows.append(box)
        return real_window(image, box, outpaint)

    monkeypatch.setattr(canvas_mod, "_window", window_spy)
    res = build_canvas_around_mask("lora", task, "resize_to_height", None, to_image(u8), mask, BIG_BUDGET,
                                   context=AS_IS)
    g = res.geometry[0]
    assert (g.edit_h, g.edit_w) == (g.crop_h, g.crop_w) and g.crop_h < h  # scale 1, a crop
    crop = (slice(g.crop_top, g.crop_top + g.crop_h), slice(g.crop_left, g.crop_left + g.crop_w))
    want = torch.from_numpy(independent_guidance(task, u8)[crop]).float()
    inside = (mask[0][crop] > 0.5).unsqueeze(-1).expand_as(want)
    got = _canvas_edit_area(res)
    torch.testing.assert_close(got[inside], want[inside], rtol=0, atol=atol(task, (h, w)))
    assert not any(s[1:3] == (h, w) for s in seen) and all(b[2:] != (h, w) for b in windows)
    context = {"recolorizing": 0, "mosaic_repainting": 2 * 63,
               "canny_repainting": 2 * (control.CANNY_MARGIN + control.CANNY_SUPPORT)}[task]
    assert max(s[1] * s[2] for s in seen) <= (g.crop_h + context) * (g.crop_w + context)


@pytest.mark.parametrize("task", ["canny_repainting", "mosaic_repainting", "repainting"])
def test_outpainting_pads_only_each_items_crop(monkeypatch, task):
    """Two items of a 200x1000 photo, outpainted 64 px right, with masks at different places near that side: each
    canvas' edit area is its crop of the photo padded with 0.5 gray built explicitly in numpy (and for the control
    tasks, under the mask, the guidance of that whole padded photo); no read covers the padded photo."""
    h, w, (t, b, lf, r) = 200, 1000, (0, 0, 0, 64)
    u8 = photo(h, w)
    masks = torch.cat([rect_mask(h, w, (10, 820, 40, 60)), rect_mask(h, w, (150, 950, 40, 40))])
    edit = to_image(np.stack([u8, u8[::-1].copy()]))
    windows = []
    real_window = canvas_mod._window
    monkeypatch.setattr(canvas_mod, "_window", lambda image, box, pads: windows.append(box) or real_window(
        image, box, pads))
    res = build_canvas_around_mask("lora", task, "resize_to_height", None, edit, masks, BIG_BUDGET,
                                   context=ContextSpec(upscale=False, min_size=64), outpaint=(t, b, lf, r))
    H, W = h + t + b, w + lf + r
    assert all(bx[2] * bx[3] < H * W / 2 for bx in windows)
    for i in range(2):
        src = np.asarray(edit[i].double())
        padded = np.full((H, W, 3), 0.5)
        padded[t : t + h, lf : lf + w] = src
        g = res.geometry[i]
        assert (g.source_h, g.source_w) == (H, W) and (g.edit_h, g.edit_w) == (g.crop_h, g.crop_w)
        crop = (slice(g.crop_top, g.crop_top + g.crop_h), slice(g.crop_left, g.crop_left + g.crop_w))
        got = _canvas_edit_area(res, i).double().numpy()
        user = np.zeros((H, W), bool)
        user[t : t + h, lf : lf + w] = masks[i].numpy() > 0.5
        marked = (user | (np.pad(np.zeros((h, w)), ((t, b), (lf, r)), constant_values=1) > 0))[crop]
        np.testing.assert_allclose(got[~marked], padded[crop][~marked], rtol=0, atol=2.0**-24)
        if task == "repainting":
            assert (got[marked] == 0.5).all()
        else:
            u8_padded = np.round(padded * 255).astype(np.uint8)  # 0.5 gray -> 128, as the annotator quantizes it
            want = (independent_guidance(task, u8_padded) if task == "canny_repainting"
                    else mosaic_reference(padded, control.DEFAULT_MOSAIC_RATIO))[crop]
            np.testing.assert_allclose(got[marked], want[marked], rtol=0, atol=atol(task, (H, W)))
        assert g.crop_w < W / 2


@pytest.mark.parametrize("task", control.DERIVED_TASKS)
def test_each_item_gets_the_guidance_over_its_own_box(task):
    """A batch of two photos with masks far apart: two boxes, each with the whole photo's guidance."""
    h, w = 500, 700
    u8 = np.stack([photo(h, w), photo(h, w)[::-1, ::-1]])
    masks = torch.cat([rect_mask(h, w, (20, 30, 50, 40)), rect_mask(h, w, (400, 600, 60, 50))])
    res = build_canvas_around_mask("lora", task, "resize_to_height", None, to_image(u8), masks, BIG_BUDGET,
                                   context=AS_IS)
    assert res.geometry[0].crop_box != res.geometry[1].crop_box
    for i in range(2):
        g = res.geometry[i]
        crop = (slice(g.crop_top, g.crop_top + g.crop_h), slice(g.crop_left, g.crop_left + g.crop_w))
        want = torch.from_numpy(independent_guidance(task, np.ascontiguousarray(u8[i]))[crop]).float()
        inside = (masks[i][crop] > 0.5).unsqueeze(-1).expand_as(want)
        torch.testing.assert_close(_canvas_edit_area(res, i)[inside], want[inside], rtol=0, atol=atol(task, (h, w)))


def test_repainting_scale_fades_only_the_crop(monkeypatch):
    """repainting_scale 0.4 with crop to mask: the crop is the float64 formula of the source pixels; the photo is
    read only inside the crop box."""
    h, w = 900, 1200
    u8 = photo(h, w)
    mask = rect_mask(h, w, (400, 500, 60, 70))
    windows = []
    real_window = canvas_mod._window
    monkeypatch.setattr(canvas_mod, "_window", lambda image, box, pads: windows.append(box) or real_window(
        image, box, pads))
    res = build_canvas_around_mask("lora", "repainting", "resize_to_height", None, to_image(u8), mask, BIG_BUDGET,
                                   context=AS_IS, repainting_scale=0.4)
    g = res.geometry[0]
    crop = (slice(g.crop_top, g.crop_top + g.crop_h), slice(g.crop_left, g.crop_left + g.crop_w))
    x = u8.astype(np.float64)[crop] / 255
    m = (mask[0].numpy() > 0.5)[crop][..., None]
    want = np.where(m, 0.5 + (x - 0.5) * 0.6, x)
    np.testing.assert_allclose(_canvas_edit_area(res).double().numpy(), want, rtol=0, atol=2.0**-23)
    assert windows == [g.crop_box]


def test_canny_in_bands_of_rows_is_opencv_canny_of_the_whole_image(monkeypatch):
    """A region taller than CANNY_BAND_PIXELS allows is computed in bands of rows (each with its 2 px support): the
    band seams change nothing."""
    monkeypatch.setattr(control, "CANNY_BAND_PIXELS", 7000)  # 25 rows of the 268 px wide region a band
    u8, box = photo(600, 800), (100, 300, 300, 200)
    seen = reads(monkeypatch)
    assert np.array_equal(canny_box(u8, box), cv2_box(u8, box))
    assert len(seen) >= 14
