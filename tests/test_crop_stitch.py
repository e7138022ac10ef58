"""Crop around the mask, cut back and stitch into the original (pure core; no ComfyUI).

Checks use known patterns and brute-force references, not the code under test: a decoded canvas painted with
one colour over the edit area and another over the reference strip, Chebyshev distances computed in numpy for the
blend weight, and the source pixels themselves for round trips.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ace_plus_core.canvas import build_canvas
from ace_plus_core.crop import ContextSpec, mask_crop_boxes
from canvas_helpers import build_canvas_around_mask
from ace_plus_core.geometry import canvas_to_crop
from ace_plus_core.stitch import blend_weight, cut_back, stitch

pytestmark = pytest.mark.numeric

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)
MAGENTA = torch.tensor([1.0, 0.0, 1.0])
GREEN = torch.tensor([0.0, 1.0, 0.0])


def _image(h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (1, h, w, 3), generator=g) / 255.0).float()  # exact 8-bit values


def _rect_mask(h: int, w: int, box: tuple[int, int, int, int]) -> torch.Tensor:
    m = torch.zeros(1, h, w)
    t, lf, bh, bw = box
    m[0, t : t + bh, lf : lf + bw] = 1.0
    return m


def _painted_canvas(result) -> torch.Tensor:
    """A stand-in for the decoded canvas: magenta over each edit area, green over the reference strip."""
    g = result.geometry[0]
    canvas = torch.zeros(len(result.geometry), g.canvas_h, g.canvas_w, 3)
    canvas[:] = GREEN
    for i, gi in enumerate(result.geometry):
        rows, cols = gi.edit_area_slice()
        canvas[i, rows, cols] = MAGENTA
        canvas[i, gi.edit_y0 :, gi.edit_x0 :] = MAGENTA  # padding too: it is never shown
    return canvas


def _rect_distance(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """Chebyshev distance of every pixel to the rectangle ``box`` (top, left, h, w), in closed form."""
    t, lf, bh, bw = box
    yy, xx = np.mgrid[0:h, 0:w]
    dy = np.maximum(np.maximum(t - yy, yy - (t + bh - 1)), 0)
    dx = np.maximum(np.maximum(lf - xx, xx - (lf + bw - 1)), 0)
    return np.maximum(dy, dx).astype(float)


masks = st.tuples(st.integers(24, 90), st.integers(24, 90)).flatmap(
    lambda hw: st.tuples(st.just(hw), st.integers(0, hw[0] - 1), st.integers(0, hw[1] - 1),
                         st.integers(1, hw[0]), st.integers(1, hw[1]))
)


@SETTINGS
@given(masks, st.integers(0, 6), st.integers(0, 9))
def test_blend_weight_matches_brute_force_distances(m, grow, feather):
    (h, w), t, lf, bh, bw = m
    box = (t, lf, min(bh, h - t), min(bw, w - lf))
    mask = _rect_mask(h, w, box)
    weight = blend_weight(mask, grow, feather)[0].numpy()
    dist = _rect_distance(h, w, box)
    reach = grow + 2 * math.ceil(feather / 2)
    assert np.all(weight[dist > reach] == 0)
    assert np.all(weight[dist <= grow] == 1)
    assert np.all((weight >= 0) & (weight <= 1))


@SETTINGS
@given(
    st.integers(40, 300), st.integers(40, 300), st.integers(0, 10_000),
    st.sampled_from([256, 1024, 4096]), st.booleans(), st.booleans(), st.integers(0, 12), st.integers(0, 20),
)
def test_stitched_output_keeps_unmasked_pixels_and_places_the_generated_area(h, w, seed, budget, with_ref, upscale,
                                                                            grow, feather):
    rng = np.random.default_rng(seed)
    bh, bw = int(rng.integers(4, max(5, h // 2))), int(rng.integers(4, max(5, w // 2)))
    t, lf = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
    image = _image(h, w, seed)
    mask = _rect_mask(h, w, (t, lf, bh, bw))
    ref = _image(64, 48, seed + 1) if with_ref else None
    spec = ContextSpec(margin_rel=0.25, margin_px=8, min_size=32, upscale=upscale)
    try:
        result = build_canvas_around_mask("lora", "repainting", "resize_to_height", ref, image, mask, budget,
                                          context=spec)
    except ValueError as exc:  # a budget too small for this crop is a clear error, never a crash
        assert "max_image_tokens" in str(exc)
        return
    g = result.geometry[0]
    assert g.tokens <= budget and g.canvas_h % 16 == 0 and g.canvas_w % 16 == 0
    # The crop box holds the whole mask.
    assert g.crop_top <= t and g.crop_left <= lf and t + bh <= g.crop_top + g.crop_h and lf + bw <= g.crop_left + g.crop_w
    out = stitch(_painted_canvas(result), result.geometry, image, mask, grow, feather)
    assert out.shape == image.shape
    dist = _rect_distance(h, w, (t, lf, bh, bw))
    reach = grow + 2 * math.ceil(feather / 2)
    outside = torch.from_numpy(dist > reach)
    to8 = lambda x: (x * 255).round().to(torch.uint8)  # noqa: E731
    assert torch.equal(to8(out[0][outside]), to8(image[0][outside]))
    # Inside the mask: the generated area, magenta (never the green reference strip).
    inside = out[0][mask[0] > 0.5]
    assert torch.allclose(inside, MAGENTA.expand_as(inside), atol=1e-5)
    assert not (out[0] - GREEN).abs().sum(-1).lt(1e-3).any()


@SETTINGS
@given(st.integers(17, 150), st.integers(17, 150), st.integers(0, 1000), st.booleans())
def test_round_trip_canvas_cut_back_is_exact_at_scale_one(h, w, seed, with_ref):
    """Odd sizes included: at scale 1 the edit pixels go into the canvas and come back out unchanged."""
    image = _image(h, w, seed)
    ref = _image(40, 30, seed) if with_ref else None
    result = build_canvas("lora", "no_preprocess", "resize_to_height", ref, image, None, 1e9)
    g = result.geometry[0]
    assert (g.crop_h, g.crop_w) == (h, w)  # beyond 4:1 the exact fit pads instead of cropping
    back = canvas_to_crop(result.image, g)
    src = image[:, g.crop_top : g.crop_top + g.crop_h, g.crop_left : g.crop_left + g.crop_w]
    # Not resampled: equal up to the float rounding of the canvas' gray shift (x - 0.5 + 0.5), same 8-bit values.
    assert back.shape == src.shape
    assert (back - src).abs().max() < 1e-6
    assert torch.equal((back * 255).round(), (src * 255).round())


def test_crop_spends_the_budget_on_the_masked_region():
    """A 300x380 face in a 2048x2048 photo: the crop is rendered with ~10x the pixels of the whole-image canvas."""
    image = torch.rand(1, 2048, 2048, 3)
    mask = _rect_mask(2048, 2048, (700, 900, 380, 300))
    whole = build_canvas("lora", "repainting", "resize_to_height", None, image, mask, 3072)
    cropped = build_canvas_around_mask("lora", "repainting", "resize_to_height", None, image, mask, 3072)
    gw, gc = whole.geometry[0], cropped.geometry[0]
    assert gc.tokens <= 3072
    rendered_whole = 380 * 300 * gw.scale_x * gw.scale_y
    rendered_crop = 380 * 300 * gc.scale_x * gc.scale_y
    assert rendered_crop >= 3 * rendered_whole


def test_batch_items_get_their_own_boxes_of_one_size():
    image = torch.rand(3, 400, 600, 3)
    mask = torch.zeros(3, 400, 600)
    mask[0, 10:60, 20:90] = 1
    mask[1, 300:390, 500:590] = 1
    mask[2, 150:200, 250:330] = 1
    boxes = mask_crop_boxes(mask, ContextSpec(min_size=64))
    assert len({(b[2], b[3]) for b in boxes}) == 1
    for b, (t, lf, bh, bw) in zip(boxes, [(10, 20, 50, 70), (300, 500, 90, 90), (150, 250, 50, 80)]):
        assert b[0] <= t and b[1] <= lf and t + bh <= b[0] + b[2] and lf + bw <= b[1] + b[3]
        assert b[0] >= 0 and b[1] >= 0 and b[0] + b[2] <= 400 and b[1] + b[3] <= 600
    result = build_canvas_around_mask("fft", "repainting", "keep_pixels_pad", None, image, mask, 2048)
    out = stitch(_painted_canvas(result), result.geometry, image, mask, 0, 0)
    assert torch.equal(out[mask == 0], image[mask == 0])
    assert torch.allclose(out[mask == 1], MAGENTA.expand(int(mask.sum()), 3))


def test_empty_mask_crops_nothing_and_replaces_everything():
    image = torch.rand(1, 120, 90, 3)
    result = build_canvas_around_mask("lora", "repainting", "resize_to_height", None, image, torch.zeros(1, 64, 64),
                                      4096)
    g = result.geometry[0]
    assert (g.crop_top, g.crop_left, g.crop_h, g.crop_w) == (0, 0, 120, 90)
    out = stitch(_painted_canvas(result), result.geometry, image, None, 0, 0)
    assert torch.allclose(out, MAGENTA.expand_as(out))


def test_reference_only_returns_the_generated_area():
    ref = torch.rand(1, 100, 80, 3)
    result = build_canvas("lora", "repainting", "resize_to_height", ref, None, None, 4096, height=256, width=192)
    out = stitch(_painted_canvas(result), result.geometry, None, None)
    assert out.shape == (1, 256, 192, 3)
    assert torch.allclose(out, MAGENTA.expand_as(out), atol=1e-5)


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"grow_px": -1}, "grow_mask_px"),
    ({"feather_px": 1.5}, "feather_px"),
])
def test_bad_stitch_values_name_the_input(kwargs, needle):
    image = torch.rand(1, 64, 64, 3)
    result = build_canvas("lora", "repainting", "resize_to_height", None, image, None, 4096)
    with pytest.raises(ValueError, match=needle):
        stitch(result.image, result.geometry, image, None, **{"grow_px": 0, "feather_px": 0, **kwargs})


def test_stitch_refuses_another_original():
    image = torch.rand(1, 64, 80, 3)
    result = build_canvas("lora", "repainting", "resize_to_height", None, image, None, 4096)
    with pytest.raises(ValueError, match="original_image is 81x64"):
        stitch(result.image, result.geometry, torch.rand(1, 64, 81, 3), None)


def test_decoded_batch_must_match_the_canvases_or_vary_one():
    """N images of N canvases, or N variations of one canvas; 3 images for 2 canvases are refused by name."""
    image = torch.rand(2, 64, 80, 3)
    two = build_canvas("lora", "repainting", "resize_to_height", None, image, None, 4096)
    g = two.geometry[0]
    three = torch.rand(3, g.canvas_h, g.canvas_w, 3)
    for call in (lambda: stitch(three, two.geometry, image, None), lambda: cut_back(three, two.geometry)):
        with pytest.raises(ValueError, match="image has a batch of 3 but geometry describes 2 canvases"):
            call()
    one = build_canvas("lora", "repainting", "resize_to_height", None, image[:1], None, 4096)
    assert cut_back(three, one.geometry).shape == (3, 64, 80, 3)
    assert stitch(three, one.geometry, image[:1], None).shape == (3, 64, 80, 3)


def test_derived_guidance_is_computed_on_the_whole_image_then_cropped():
    """canny/mosaic grids depend on the image size: with crop_to_mask they must match the whole-image guidance."""
    from ace_plus_core import control

    image = _image(200, 260, 5)
    mask = _rect_mask(200, 260, (60, 80, 50, 70))
    spec = ContextSpec(margin_rel=0.2, margin_px=8, min_size=32, upscale=False)
    for task, expected in (("mosaic_repainting", control.mosaic_repainting(image, 16)),
                           ("canny_repainting", control.canny_repainting(image, 100, 200))):
        r = build_canvas_around_mask("fft", task, "keep_pixels_pad", None, image, mask, 1e9, context=spec,
                                     control_options={"ratio": 16})
        g = r.geometry[0]
        c_area = canvas_to_crop(r.c_image, g)[0]
        sub_mask = mask[0, g.crop_top : g.crop_top + g.crop_h, g.crop_left : g.crop_left + g.crop_w] > 0.5
        want = expected[0, g.crop_top : g.crop_top + g.crop_h, g.crop_left : g.crop_left + g.crop_w]
        assert torch.allclose(c_area[sub_mask], want[sub_mask], atol=1e-6), task
